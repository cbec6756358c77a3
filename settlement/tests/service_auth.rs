//! Service authentication, the negative suite: settlement serves only the gateway. Every
//! route is called without an assertion, with garbage, with another key's, with an expired
//! one, with a gateway-signed token for the buyer audience, and with a valid assertion for
//! another request (other path, method, query or body: a replay), each time with forged
//! `x-user-sub` / `x-user-roles` headers riding along. Each answer is a 401 problem with the
//! verifier's code, and SQL and the store show that nothing changed. Then the same requests,
//! signed for what they are, go through: the refusals were the assertion's doing.

mod common;

use std::sync::Arc;

use common::{TestApp, start_with, test_config};
use reqwest::Method;
use reservation_core::assertion::{
    ASSERTION_HEADER, AssertionClaims, AssertionSigner, Bound, GATEWAY_ISSUER, Identity, body_hash,
};
use reservation_core::{
    BuyerId, IdempotencyKey, InMemoryStore, Qty, ReservationClaims, ReservationStore,
    ReserveRequest, Sku, TokenSigner,
};
use serde_json::{Value, json};
use testkit::{AsGateway, buyer, delete_keys_under, nobody, ops, redis_url, scratch_prefix};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One request as the gateway would legitimately send it.
#[derive(Clone)]
struct Call {
    method: Method,
    path: String,
    body: Option<String>,
    if_match: Option<&'static str>,
    who: Identity,
}

impl Call {
    fn new(method: Method, path: impl Into<String>, who: Identity) -> Self {
        Call {
            method,
            path: path.into(),
            body: None,
            if_match: None,
            who,
        }
    }

    fn json(mut self, body: Value) -> Self {
        self.body = Some(body.to_string());
        self
    }

    fn if_match(mut self, tag: &'static str) -> Self {
        self.if_match = Some(tag);
        self
    }

    fn body_bytes(&self) -> &[u8] {
        self.body.as_deref().unwrap_or_default().as_bytes()
    }

    /// The request with forged identity headers and `assertion` (none when `None`).
    fn request(&self, app: &TestApp, assertion: Option<&str>) -> reqwest::RequestBuilder {
        let mut request = app
            .http
            .request(self.method.clone(), app.url(&self.path))
            .header("x-user-sub", "alice")
            .header("x-user-roles", "ops");
        if let Some(body) = &self.body {
            request = request
                .header("content-type", "application/json")
                .body(body.clone());
        }
        if let Some(tag) = self.if_match {
            request = request.header("if-match", tag);
        }
        if let Some(assertion) = assertion {
            request = request.header(ASSERTION_HEADER, assertion);
        }
        request
    }

    /// This call's own assertion, as the gateway signs it at `at`.
    fn assertion(&self, signer: &AssertionSigner, at: u64) -> String {
        let bound = Bound::new(self.method.as_str(), &self.path, self.body_bytes())
            .with_if_match(self.if_match);
        signer.sign(&bound, &self.who, at).unwrap()
    }
}

/// A product, one order of alice's, and reservation tokens of bob's nobody has settled.
struct World {
    app: TestApp,
    store: Arc<dyn ReservationStore>,
    order_id: String,
    bob_token: String,
    bob_fate_token: String,
}

async fn world() -> anyhow::Result<World> {
    let url = testkit::scratch_schema("svcauth").await;
    world_with(test_config(&url)).await
}

async fn world_with(config: settlement::SettlementConfig) -> anyhow::Result<World> {
    let store: Arc<dyn ReservationStore> = Arc::new(InMemoryStore::new());
    let app = start_with(config, store.clone()).await?;
    app.put_product("SVC", 10).await?;
    let (_, alice_token) = app.token("SVC", "alice", 1)?;
    let settled = app.settle("alice", &alice_token).await?;
    anyhow::ensure!(
        settled.status() == 201,
        "alice's order: {}",
        settled.status()
    );
    let order: Value = settled.json().await?;
    let (_, bob_token) = app.token("SVC", "bob", 1)?;
    let (_, bob_fate_token) = app.token("SVC", "bob", 1)?;
    Ok(World {
        app,
        store,
        order_id: order["order_id"].as_str().unwrap_or_default().to_owned(),
        bob_token,
        bob_fate_token,
    })
}

/// Every route of the public settlement router (and an unknown one: the fallback is behind
/// the same check), each as the gateway would call it.
fn calls(w: &World) -> Vec<Call> {
    let order = &w.order_id;
    vec![
        Call::new(Method::POST, "/internal/settlements", buyer("bob"))
            .json(json!({"reservation_token": w.bob_token})),
        Call::new(Method::POST, "/internal/settlements/fate", buyer("bob"))
            .json(json!({"reservation_token": w.bob_fate_token})),
        Call::new(Method::GET, "/api/v1/products", nobody()),
        Call::new(Method::GET, "/api/v1/products/SVC", nobody()),
        Call::new(Method::GET, "/api/v1/orders", buyer("alice")),
        Call::new(
            Method::GET,
            format!("/api/v1/orders/{order}"),
            buyer("alice"),
        ),
        Call::new(Method::PUT, "/api/v1/admin/products/SVC", ops("olga"))
            .json(
                json!({"name": "cheap", "price_cents": 1, "total_stock": 1000,
                     "per_buyer_limit": 1000, "max_per_order": 10, "sale_state": "on_sale"}),
            )
            .if_match("*"),
        Call::new(
            Method::POST,
            "/api/v1/admin/products/SVC/restock",
            ops("olga"),
        )
        .json(json!({"units": 5})),
        Call::new(
            Method::POST,
            format!("/api/v1/admin/orders/{order}/status"),
            ops("olga"),
        )
        .json(json!({"status": "shipped"})),
        Call::new(
            Method::POST,
            format!("/api/v1/orders/{order}/cancel"),
            buyer("alice"),
        )
        .if_match("*"),
        Call::new(Method::GET, "/api/v1/admin/reconcile", ops("olga")),
        Call::new(Method::GET, "/api/v1/nowhere", ops("olga")),
    ]
}

/// What SQL and the store hold: a refused request must leave all of it as it was.
async fn state(w: &World) -> anyhow::Result<Value> {
    let db = w.app.db().await?;
    let product: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT price_cents, total_stock, sold, version FROM products WHERE sku = 'SVC'",
    )
    .fetch_one(db.pool())
    .await?;
    let orders: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT user_sub, status, version FROM orders ORDER BY id")
            .fetch_all(db.pool())
            .await?;
    let count = |sql: &'static str| {
        let db = db.clone();
        async move { common::scalar(&db, sql).await }
    };
    let snapshot = w.store.snapshot(&Sku::parse("SVC")?).await?;
    Ok(json!({
        "product": [product.0, product.1, product.2, product.3],
        "orders": orders,
        "fates": count("SELECT count(*) FROM reservation_fates").await?,
        "history": count("SELECT count(*) FROM order_status_history").await?,
        "outbox": count("SELECT count(*) FROM outbox").await?,
        "store": [snapshot.available, snapshot.held, snapshot.sold],
    }))
}

/// Sends `call` with `assertion` and checks the refusal: 401 problem+json with `code`, and
/// nothing of alice's order in the body.
async fn refused(w: &World, call: &Call, assertion: Option<&str>, code: &str, case: &str) {
    let response = call.request(&w.app, assertion).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().await.unwrap();
    let what = format!("{} {} ({case})", call.method, call.path);
    assert_eq!(status, 401, "{what}: {text}");
    assert_eq!(content_type, "application/problem+json", "{what}");
    let problem: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(problem["code"], code, "{what}: {text}");
    assert!(problem["request_id"].is_string(), "{what}: {text}");
    if !call.path.contains(&w.order_id) {
        assert!(
            !text.contains(&w.order_id),
            "{what} leaked the order: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_refuses_a_caller_that_is_not_the_gateway() -> anyhow::Result<()> {
    let w = world().await?;
    let before = state(&w).await?;
    let gateway = &w.app.gateway;
    let stranger = AssertionSigner::new(TokenSigner::generate(w.app.gateway_key.kid()));
    let calls = calls(&w);
    for call in &calls {
        let t = now();
        refused(&w, call, None, "service_auth_missing", "no assertion").await;
        for garbage in ["garbage", "a.b.c", "", "Bearer x"] {
            refused(&w, call, Some(garbage), "service_auth_invalid", "garbage").await;
        }
        let forged = call.assertion(&stranger, t);
        refused(
            &w,
            call,
            Some(&forged),
            "service_auth_invalid",
            "another key, same kid",
        )
        .await;
        let old = call.assertion(gateway, t - 120);
        refused(&w, call, Some(&old), "service_auth_expired", "expired").await;
        // A JWT the gateway's key signed for the buyer audience (what a buyer token says) is
        // not an assertion, however well it matches the request.
        let buyer_audience = w.app.gateway_key.sign_json(&AssertionClaims {
            iss: GATEWAY_ISSUER.into(),
            aud: "stockgate".into(),
            iat: t,
            exp: t + 10,
            method: call.method.to_string(),
            path: call.path.clone(),
            bh: body_hash(call.body_bytes()),
            if_match: call.if_match.map(str::to_owned),
            jti: "buyer-audience".into(),
            sub: Some("alice".into()),
            roles: vec!["ops".into()],
        })?;
        refused(
            &w,
            call,
            Some(&buyer_audience),
            "service_auth_invalid",
            "buyer audience",
        )
        .await;

        // Valid assertions the gateway signed, for other requests: replayed onto this one.
        let other_path = Call::new(call.method.clone(), "/api/v1/products", ops("olga"));
        let other_method = Call {
            method: if call.method == Method::GET {
                Method::POST
            } else {
                Method::GET
            },
            ..call.clone()
        };
        let other_query = Call {
            path: format!("{}?page=2", call.path),
            ..call.clone()
        };
        let other_body = Call {
            body: Some(r#"{"units": 1000000}"#.into()),
            ..call.clone()
        };
        for (replayed, case) in [
            (other_path, "another path"),
            (other_method, "another method"),
            (other_query, "another query"),
            (other_body, "another body"),
        ] {
            if (&replayed.method, &replayed.path) == (&call.method, &call.path) {
                continue; // the catalog list is its own "other path"
            }
            let assertion = replayed.assertion(gateway, t);
            refused(&w, call, Some(&assertion), "service_auth_mismatch", case).await;
        }
    }
    assert_eq!(
        state(&w).await?,
        before,
        "a refused request changed something"
    );
    let metrics = w.app.running.metrics.render();
    assert!(
        metrics.contains(
            r#"stockgate_settlement_service_auth_refused_total{code="service_auth_mismatch"}"#
        ),
        "{metrics}"
    );

    // The same requests, signed for what they are, go through: each refusal above was the
    // assertion's doing.
    let expected = [201, 410, 200, 200, 200, 200, 200, 200, 200, 409, 200, 404];
    for (call, status) in calls.iter().zip(expected) {
        let signed = call.assertion(gateway, now());
        let response = call.request(&w.app, Some(&signed)).send().await?;
        let got = response.status().as_u16();
        assert_eq!(
            got,
            status,
            "{} {}: {}",
            call.method,
            call.path,
            response.text().await?
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_identity_headers_change_nothing_and_show_nothing() -> anyhow::Result<()> {
    let w = world().await?;
    let before = state(&w).await?;
    let app = &w.app;
    // A forged ops role: the price stays.
    let cheap = app
        .http
        .put(app.url("/api/v1/admin/products/SVC"))
        .header("x-user-sub", "mallory")
        .header("x-user-roles", "ops")
        .header("if-match", "*")
        .json(
            &json!({"name": "cheap", "price_cents": 1, "total_stock": 10,
                      "per_buyer_limit": 1000, "sale_state": "on_sale"}),
        )
        .send()
        .await?;
    assert_eq!(cheap.status(), 401);
    // A forged buyer: alice's orders stay hers.
    let listed = app
        .http
        .get(app.url("/api/v1/orders"))
        .header("x-user-sub", "alice")
        .send()
        .await?;
    assert_eq!(listed.status(), 401);
    // A bob the gateway did authenticate sees none of alice's orders.
    let bobs: Value = app
        .http
        .get(app.url("/api/v1/orders"))
        .header("x-user-sub", "alice")
        .send_as(&app.gateway, buyer("bob"))
        .await?
        .json()
        .await?;
    assert_eq!(bobs, json!([]));
    let alices = app
        .http
        .get(app.url(&format!("/api/v1/orders/{}", w.order_id)))
        .header("x-user-sub", "alice")
        .send_as(&app.gateway, buyer("bob"))
        .await?;
    assert_eq!(alices.status(), 404);
    assert_eq!(state(&w).await?, before);
    let price: i64 = sqlx::query_scalar("SELECT price_cents FROM products WHERE sku = 'SVC'")
        .fetch_one(app.db().await?.pool())
        .await?;
    assert_eq!(price, 1999);
    Ok(())
}

/// An assertion that names no buyer (the gateway's own catalog reads) opens no buyer's
/// data: before, settlement skipped the ownership check when the identity header was
/// missing and settled anyone's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ownership_checks_fail_closed_without_a_buyer() -> anyhow::Result<()> {
    let w = world().await?;
    let before = state(&w).await?;
    let app = &w.app;
    let anonymous = |method: Method, path: String, body: Option<Value>| {
        let mut request = app.http.request(method, app.url(&path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send_as(&app.gateway, nobody())
    };
    for path in ["/internal/settlements", "/internal/settlements/fate"] {
        let response = anonymous(
            Method::POST,
            path.into(),
            Some(json!({"reservation_token": w.bob_token})),
        )
        .await?;
        let status = response.status().as_u16();
        let problem: Value = response.json().await?;
        assert_eq!(
            (status, problem["code"].as_str()),
            (401, Some("unauthenticated")),
            "{path}"
        );
    }
    for path in [
        "/api/v1/orders".to_owned(),
        format!("/api/v1/orders/{}", w.order_id),
    ] {
        let response = anonymous(Method::GET, path.clone(), None).await?;
        assert_eq!(response.status(), 401, "{path}");
    }
    // Someone else's token, asserted for a buyer who does not own it.
    let stolen = app.settle("mallory", &w.bob_token).await?;
    let status = stolen.status().as_u16();
    let problem: Value = stolen.json().await?;
    assert_eq!((status, problem["code"].as_str()), (403, Some("not_owner")));
    assert_eq!(state(&w).await?, before);
    Ok(())
}

/// The reproduction of issue 14: a hold released with `DELETE` (its unit back on sale) and its
/// token posted straight to settlement became an order. Now a caller that is not the gateway
/// is refused, and the unit stays on sale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_reservation_posted_straight_to_settlement_is_refused() -> anyhow::Result<()> {
    let w = world().await?;
    let sku = Sku::parse("SVC")?;
    let bob = BuyerId::parse("bob")?;
    let reserved = w
        .store
        .reserve(&ReserveRequest {
            sku: sku.clone(),
            buyer: bob.clone(),
            qty: Qty::new(1)?,
            idempotency_key: IdempotencyKey::parse("k-released")?,
            hold_ttl_ms: 60_000,
        })
        .await?;
    let token = w
        .app
        .signer
        .sign(&ReservationClaims::for_hold(&reserved.hold))?;
    w.store.release(&reserved.hold.id, &bob).await?;
    let before = state(&w).await?;
    let posted = w
        .app
        .http
        .post(w.app.url("/internal/settlements"))
        .header("x-user-sub", "bob")
        .json(&json!({"reservation_token": token}))
        .send()
        .await?;
    let status = posted.status().as_u16();
    let problem: Value = posted.json().await?;
    assert_eq!(
        (status, problem["code"].as_str()),
        (401, Some("service_auth_missing"))
    );
    assert_eq!(state(&w).await?, before);
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders WHERE reservation_id = $1")
        .bind(reserved.hold.id.as_str())
        .fetch_one(w.app.db().await?.pool())
        .await?;
    assert_eq!(orders, 0);
    assert_eq!(
        w.store.snapshot(&sku).await?.available,
        10,
        "the released unit stays on sale"
    );
    Ok(())
}

/// A captured assertion of a write is good once, and its `If-Match` is part of it. Before
/// (attacker review): one captured restock posted three more times within its 30 s added its
/// units three more times, and a captured edit's `If-Match: "2"` could be swapped for `*`.
/// The settle and fate calls are exempt: a replayed settlement answers the same order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_write_assertion_is_good_once() -> anyhow::Result<()> {
    replays_are_refused(&world().await?).await
}

/// The same with Redis configured: the used ids are kept there (`<prefix>:once:<jti>`), so
/// every settlement replica refuses a replay, not only the one that served the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_captured_write_assertion_is_good_once_across_replicas() -> anyhow::Result<()> {
    let mut config = test_config(&testkit::scratch_schema("svcauth").await);
    let prefix = scratch_prefix("svcauth");
    config.redis_url = Some(redis_url());
    config.redis_key_prefix = prefix.clone();
    let w = world_with(config).await?;
    replays_are_refused(&w).await?;
    let mut redis = redis::Client::open(redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let used: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:once:*"))
        .query_async(&mut redis)
        .await?;
    assert!(!used.is_empty(), "no used assertion in Redis");
    delete_keys_under(&prefix).await;
    Ok(())
}

async fn replays_are_refused(w: &World) -> anyhow::Result<()> {
    let gateway = &w.app.gateway;
    let db = w.app.db().await?;
    let total = || common::scalar(&db, "SELECT total_stock FROM products WHERE sku = 'SVC'");
    let restock = Call::new(
        Method::POST,
        "/api/v1/admin/products/SVC/restock",
        ops("olga"),
    )
    .json(json!({"units": 5}));
    let captured = restock.assertion(gateway, now());
    let first = restock.request(&w.app, Some(&captured)).send().await?;
    assert_eq!(first.status(), 200, "{}", first.text().await?);
    let after_one = total().await?;
    for _ in 0..3 {
        refused(
            w,
            &restock,
            Some(&captured),
            "service_auth_replayed",
            "replay",
        )
        .await;
    }
    assert_eq!(total().await?, after_one, "a replay restocked again");

    // The edit's precondition cannot be swapped: signed for version 2, sent as `*`.
    let edit = Call::new(Method::PUT, "/api/v1/admin/products/SVC", ops("olga"))
        .json(
            json!({"name": "cheap", "price_cents": 1, "total_stock": 1000,
                     "per_buyer_limit": 1000, "max_per_order": 10, "sale_state": "on_sale"}),
        )
        .if_match("\"2\"");
    let signed_for_version_2 = edit.assertion(gateway, now());
    let swapped = edit.clone().if_match("*");
    refused(
        w,
        &swapped,
        Some(&signed_for_version_2),
        "service_auth_mismatch",
        "If-Match swapped",
    )
    .await;

    // A settlement replayed is answered with the same order, as any retry.
    let (_, token) = w.app.token("SVC", "carol", 1)?;
    let settle = Call::new(Method::POST, "/internal/settlements", buyer("carol"))
        .json(json!({ "reservation_token": token }));
    let assertion = settle.assertion(gateway, now());
    let mut orders = Vec::new();
    for expected in [201, 200] {
        let response = settle.request(&w.app, Some(&assertion)).send().await?;
        assert_eq!(response.status(), expected);
        let body: Value = response.json().await?;
        orders.push(body["order_id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(orders[0], orders[1]);
    assert!(!orders[0].is_empty());
    Ok(())
}
