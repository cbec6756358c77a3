//! The settlement service over HTTP, started in-process on `127.0.0.1:0` against real
//! PostgreSQL (own schema per test) and, for the embedded path, SQLite.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{TestApp, scalar, start_postgres, start_with, test_config};
use reservation_core::{
    AbortTo, BuyerId, IdempotencyKey, InMemoryStore, Qty, ReservationId, ReservationStore,
    ReserveRequest, Sku,
};
use serde_json::Value;
use settlement::CommitMode;
use testkit::{AsGateway, buyer, nobody, ops};

async fn body(response: reqwest::Response) -> anyhow::Result<(u16, Value)> {
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_duplicate_submissions_make_one_order() -> anyhow::Result<()> {
    let app = Arc::new(start_postgres().await?);
    app.put_product("DUP", 10).await?;
    let (rid, token) = app.token("DUP", "alice", 2)?;
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let (app, token) = (app.clone(), token.clone());
        tasks.push(tokio::spawn(async move {
            body(app.settle("alice", &token).await?).await
        }));
    }
    let mut statuses = Vec::new();
    let mut order_ids = HashSet::new();
    for task in tasks {
        let (status, order) = task.await??;
        statuses.push(status);
        order_ids.insert(order["order_id"].as_str().unwrap_or("").to_owned());
        assert_eq!(order["reservation_id"], rid.as_str());
        assert_eq!(order["total"], 3998);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1);
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 29);
    assert_eq!(order_ids.len(), 1, "every answer names one order");
    let db = app.db().await?;
    assert_eq!(
        scalar(&db, "SELECT CAST(COUNT(*) AS BIGINT) FROM orders").await?,
        1
    );
    assert_eq!(scalar(&db, "SELECT sold FROM products").await?, 2);
    Ok(())
}

/// How often one settlement is retried on 503 `database_busy` before the test gives up.
const BUSY_RETRIES: usize = 20;

/// `requests` settlements of one unit each at once against SQL stock `stock`.
async fn sell_out(app: &Arc<TestApp>, requests: usize, stock: i64) -> anyhow::Result<()> {
    app.put_product("HOT", stock).await?;
    let mut tasks = Vec::new();
    for i in 0..requests {
        let buyer = format!("buyer-{i}");
        let (_, token) = app.token("HOT", &buyer, 1)?;
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            // 503 `database_busy` says nothing committed and to retry (a lock or statement
            // limit ran out: on a loaded CI machine 1,000 settlements at once can reach one);
            // the same token again is what a client does, and the count below must still hold.
            for _ in 0..BUSY_RETRIES {
                let answer = body(app.settle(&buyer, &token).await?).await?;
                if answer.0 != 503 || answer.1["code"] != "database_busy" {
                    return Ok::<_, anyhow::Error>(answer);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            anyhow::bail!("{buyer}: still database_busy after {BUSY_RETRIES} tries")
        }));
    }
    let (mut created, mut refused) = (0i64, 0usize);
    for task in tasks {
        match task.await?? {
            (201, _) => created += 1,
            (409, problem) if problem["code"] == "oversell_prevented" => refused += 1,
            other => anyhow::bail!("unexpected answer {other:?}"),
        }
    }
    let refusals = requests - stock as usize;
    assert_eq!((created, refused), (stock, refusals));
    let db = app.db().await?;
    let orders = scalar(
        &db,
        "SELECT CAST(COUNT(*) AS BIGINT) FROM orders WHERE sku = 'HOT'",
    );
    assert_eq!(orders.await?, stock);
    let sold = scalar(&db, "SELECT sold FROM products WHERE sku = 'HOT'");
    assert_eq!(sold.await?, stock);
    assert_eq!(
        app.running.metrics.oversell_prevented.get(),
        refusals as u64
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thousand_concurrent_settlements_on_stock_600_sell_exactly_600() -> anyhow::Result<()> {
    let mut config = test_config(&testkit::scratch_schema("settle").await);
    // 1,000 token checks at once in a debug build on a shared machine can starve the batch
    // worker for seconds; this test is about oversell, not about the deadline (db_limits.rs).
    config.group_commit.deadline_ms = 0;
    let app = Arc::new(start_with(config, Arc::new(InMemoryStore::new())).await?);
    sell_out(&app, 1000, 600).await?;
    // Group commit really grouped: far fewer transactions than requests.
    let batches = app.running.metrics.batch_size.get_sample_count();
    assert!(
        batches < 1000,
        "{batches} transactions for 1000 settlements"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_transaction_per_order_mode_never_oversells_either() -> anyhow::Result<()> {
    let url = testkit::scratch_schema("settle").await;
    let mut config = test_config(&url);
    config.commit_mode = CommitMode::PerOrder;
    // Hundreds of transactions queue for the one hot row here, longer than the production
    // lock_timeout: without group commit that is what happens, and this test is about
    // oversell, not about giving up (db_limits.rs).
    config.db_limits = backend_adapters::sql::SessionLimits::OFF;
    config.group_commit.deadline_ms = 0;
    let app = Arc::new(start_with(config, Arc::new(InMemoryStore::new())).await?);
    // Fewer requests: one transaction each holds the hot row's lock in turn, which is the
    // slow path the benchmark measures.
    sell_out(&app, 300, 180).await?;
    assert_eq!(app.running.metrics.batch_size.get_sample_count(), 300);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_needs_the_current_version() -> anyhow::Result<()> {
    let app = start_postgres().await?;
    app.put_product("CXL", 10).await?;
    let (_, token) = app.token("CXL", "bob", 3)?;
    let (status, order) = body(app.settle("bob", &token).await?).await?;
    assert_eq!(status, 201);
    let id = order["order_id"].as_str().unwrap_or_default().to_owned();

    let get = |sub: &'static str| {
        app.http
            .get(app.url(&format!("/api/v1/orders/{id}")))
            .send_as(&app.gateway, buyer(sub))
    };
    let mine = get("bob").await?;
    assert_eq!(mine.headers()["etag"], "\"1\"");
    assert_eq!(get("mallory").await?.status(), 404);

    let cancel = |if_match: Option<&'static str>| {
        let mut request = app
            .http
            .post(app.url(&format!("/api/v1/orders/{id}/cancel")))
            .header("x-request-id", "req-cancel");
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        request.send_as(&app.gateway, buyer("bob"))
    };
    let (status, problem) = body(cancel(None).await?).await?;
    assert_eq!(
        (status, problem["code"].as_str()),
        (428, Some("precondition_required"))
    );

    let stale = cancel(Some("\"0\"")).await?;
    assert_eq!(stale.headers()["content-type"], "application/problem+json");
    assert_eq!(stale.headers()["x-request-id"], "req-cancel");
    let (status, problem) = body(stale).await?;
    assert_eq!(status, 412);
    assert_eq!(problem["code"], "stale_version");
    assert_eq!(problem["request_id"], "req-cancel");

    let (status, cancelled) = body(cancel(Some("\"1\"")).await?).await?;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled"))
    );
    assert_eq!(cancelled["version"], 2);
    let (status, problem) = body(cancel(Some("\"2\"")).await?).await?;
    assert_eq!(
        (status, problem["code"].as_str()),
        (409, Some("not_cancellable"))
    );

    let db = app.db().await?;
    assert_eq!(scalar(&db, "SELECT sold FROM products").await?, 0);
    let list = app
        .http
        .get(app.url("/api/v1/orders"))
        .send_as(&app.gateway, buyer("bob"))
        .await?;
    let (_, orders) = body(list).await?;
    assert_eq!(orders.as_array().map(Vec::len), Some(1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_a_problem_with_code_and_request_id() -> anyhow::Result<()> {
    let app = start_postgres().await?;
    app.put_product("ERR", 5).await?;

    let (status, problem) = body(app.settle("alice", "not-a-token").await?).await?;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("invalid_reservation_token"))
    );
    assert_eq!(problem["request_id"], "req-test");

    let (_, token) = app.token("NOSUCH", "alice", 1)?;
    let (status, problem) = body(app.settle("alice", &token).await?).await?;
    assert_eq!(
        (status, problem["code"].as_str()),
        (404, Some("unknown_sku"))
    );

    let (_, token) = app.token("ERR", "alice", 1)?;
    let (status, problem) = body(app.settle("mallory", &token).await?).await?;
    assert_eq!((status, problem["code"].as_str()), (403, Some("not_owner")));

    let not_ops = app
        .http
        .put(app.url("/api/v1/admin/products/ERR"))
        .json(&serde_json::json!({}))
        .send_as(&app.gateway, buyer("alice"))
        .await?;
    let (status, problem) = body(not_ops).await?;
    assert_eq!((status, problem["code"].as_str()), (403, Some("forbidden")));

    let product = app
        .http
        .get(app.url("/api/v1/products/ERR"))
        .send_as(&app.gateway, nobody())
        .await?;
    assert!(product.headers().contains_key("x-request-id"));
    let etag = product.headers()["etag"].clone();
    let again = app
        .http
        .get(app.url("/api/v1/products/ERR"))
        .header("if-none-match", etag)
        .send_as(&app.gateway, nobody())
        .await?;
    assert_eq!(again.status(), 304);
    let nowhere = app.http.get(app.url("/nowhere"));
    let (status, problem) = body(nowhere.send_as(&app.gateway, ops("olga")).await?).await?;
    assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")));
    Ok(())
}

/// Probes and metrics are served on the admin listener only (issue 15.11): kubelet's probes
/// never queue behind a sale on the API listener, and the API port tells nobody about the
/// service's health.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_and_metrics_are_on_the_admin_listener_only() -> anyhow::Result<()> {
    let app = start_postgres().await?;
    assert_ne!(app.running.admin_addr, app.running.addr);
    let admin = format!("http://{}", app.running.admin_addr);
    let get = |url: String| app.http.get(url).send();
    let response = get(format!("{admin}/healthz")).await?;
    assert_eq!(
        (response.status().as_u16(), response.text().await?.as_str()),
        (200, "ok")
    );
    let response = get(format!("{admin}/readyz")).await?;
    assert_eq!(
        (response.status().as_u16(), response.text().await?.as_str()),
        (200, "ready")
    );
    let metrics = get(format!("{admin}/metrics")).await?.text().await?;
    assert!(metrics.contains("stockgate_settlement_"), "{metrics}");
    // On the public listener they are unknown paths, answered like any other: unsigned, the
    // caller is refused before routing; as the gateway, 404.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, problem) = body(get(app.url(path)).await?).await?;
        assert_eq!(
            (status, problem["code"].as_str()),
            (401, Some("service_auth_missing")),
            "public {path}, unsigned"
        );
        let signed = app.http.get(app.url(path)).send_as(&app.gateway, nobody());
        let (status, problem) = body(signed.await?).await?;
        assert_eq!(
            (status, problem["code"].as_str()),
            (404, Some("not_found")),
            "public {path}, as the gateway"
        );
    }
    // And the API is not on the admin listener.
    let (status, _) = body(get(format!("{admin}/api/v1/products")).await?).await?;
    assert_eq!(status, 404);
    Ok(())
}

/// The embedded default: SQLite, the in-memory store, no Redis. A reservation goes through
/// the store and settlement as the gateway drives it; the cancel's stock comes back to the
/// store through the outbox, applied in process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_sqlite_settles_and_returns_cancelled_stock_in_process() -> anyhow::Result<()> {
    let store: Arc<dyn ReservationStore> = Arc::new(InMemoryStore::new());
    let app = start_with(test_config(&common::sqlite_url()), store.clone()).await?;
    app.put_product("EMB", 10).await?;
    let sku = Sku::parse("EMB")?;
    let buyer = BuyerId::parse("erin")?;
    let reserved = store
        .reserve(&ReserveRequest {
            sku: sku.clone(),
            buyer: buyer.clone(),
            qty: Qty::new(2)?,
            idempotency_key: IdempotencyKey::parse("k1")?,
            hold_ttl_ms: 60_000,
        })
        .await?;
    let hold = store.begin_confirm(&reserved.hold.id, &buyer).await?;
    let claims = reservation_core::ReservationClaims::for_hold(&hold);
    let token = app.signer.sign(&claims)?;
    let (status, order) = body(app.settle("erin", &token).await?).await?;
    assert_eq!(status, 201);
    store.finish_confirm(&hold.id).await?;
    assert_eq!(store.snapshot(&sku).await?.sold, 2);

    let cancel = app
        .http
        .post(app.url(&format!(
            "/api/v1/orders/{}/cancel",
            order["order_id"].as_str().unwrap_or_default()
        )))
        .header("if-match", "\"1\"")
        .send_as(&app.gateway, testkit::buyer("erin"))
        .await?;
    assert_eq!(cancel.status(), 200);
    let mut snapshot = store.snapshot(&sku).await?;
    for _ in 0..100 {
        if snapshot.sold == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        snapshot = store.snapshot(&sku).await?;
    }
    assert_eq!((snapshot.sold, snapshot.available), (0, 10));
    let db = app.db().await?;
    assert_eq!(scalar(&db, "SELECT sold FROM products").await?, 0);

    // A second hold whose settlement is refused goes back to stock.
    let other = ReservationId::generate(&sku);
    assert!(
        store
            .abort_confirm(&other, AbortTo::Released)
            .await
            .is_err()
    );
    app.running.shutdown().await;
    Ok(())
}

/// Regression (settlement-kill fault run): a confirm whose first try committed but whose
/// answer was lost is retried after the token expired. Settlement returns the order (200)
/// instead of 410; an expired token without an order stays 410, another buyer gets 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_of_a_placed_order_gets_the_order_back() -> anyhow::Result<()> {
    use reservation_core::ReservationClaims;
    use reservation_core::token::RESERVATION_AUDIENCE;
    let app = start_postgres().await?;
    app.put_product("LATE", 10).await?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = |rid: ReservationId, exp: u64| ReservationClaims {
        rid,
        sub: BuyerId::parse("alice").unwrap(),
        sku: Sku::parse("LATE").unwrap(),
        qty: Qty::new(1).unwrap(),
        iat: now - 120,
        exp,
        aud: RESERVATION_AUDIENCE.to_owned(),
    };
    let rid = ReservationId::generate(&Sku::parse("LATE")?);
    let live = app.signer.sign(&claims(rid.clone(), now + 600))?;
    let (status, order) = body(app.settle("alice", &live).await?).await?;
    assert_eq!(status, 201, "{order}");

    let expired = app.signer.sign(&claims(rid, now - 60))?;
    let (status, again) = body(app.settle("alice", &expired).await?).await?;
    assert_eq!(
        (status, &again["order_id"]),
        (200, &order["order_id"]),
        "{again}"
    );
    let (status, problem) = body(app.settle("mallory", &expired).await?).await?;
    assert_eq!((status, problem["code"].as_str()), (403, Some("not_owner")));

    let never_placed = ReservationId::generate(&Sku::parse("LATE")?);
    let expired = app.signer.sign(&claims(never_placed, now - 60))?;
    let (status, problem) = body(app.settle("alice", &expired).await?).await?;
    assert_eq!(
        (status, problem["code"].as_str()),
        (410, Some("reservation_expired"))
    );
    let db = app.db().await?;
    assert_eq!(scalar(&db, "SELECT sold FROM products").await?, 1);
    Ok(())
}
