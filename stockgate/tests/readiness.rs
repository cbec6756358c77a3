//! Readiness says whether THIS pod can serve, not whether its dependencies do (issue 14.5):
//! with the settlement service stopped, `/readyz` stays 200 (so no replica leaves the load
//! balancer), catalog reads are served stale, confirms answer 503 with `Retry-After` and keep
//! their holds, which are still readable meanwhile and confirm once settlement is back. The
//! dependency's state is on the admin listener (`/admin/health`, `stockgate_dependency_up`).
//! The real stack: gateway and settlement in-process on Redis under a private prefix and a
//! scratch PostgreSQL schema; settlement is stopped and restarted on its address.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use stockgate::all_in_one::AllInOne;
use testkit::{body, header};

/// Polls `/admin/health` until `dependency` is `up` (at most 10 s); returns the report.
async fn wait_for(http: &reqwest::Client, admin: &str, dependency: &str, up: bool) -> Value {
    let started = Instant::now();
    loop {
        let (status, report) = body(
            http.get(format!("{admin}/admin/health"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, 200, "{report}");
        if report["dependencies"][dependency]["up"] == json!(up) {
            return report;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{dependency} never became up={up}: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (at most 10 s) until the gateway's cache invalidation has handled the last event on
/// `stream`: a copy stored before the product's creation event arrived would be dropped by it.
async fn events_handled(edge: &gateway::edge::EdgeState, stream: &str) {
    let cache = edge.cache.as_ref().expect("the cache is on");
    let mut redis = testkit::redis_connection().await;
    let started = Instant::now();
    loop {
        let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
            .arg(stream)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut redis)
            .await
            .unwrap();
        let last = last.into_iter().next().map(|(id, _)| id);
        if last.is_some() && cache.stream_position() == last {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the gateway did not handle {stream} up to {last:?} (it is at {:?})",
            cache.stream_position()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_settlement_stopped_the_pod_stays_ready_serves_stale_and_keeps_holds() {
    let prefix = format!("sgtest:ready-{}", uuid::Uuid::new_v4().simple());
    let (mut config, _) = testkit::real_stack_config("readiness", &prefix).await;
    // A copy is stale after 1 s; then only stale-if-error serves it.
    config.gateway.cache.ttl_secs = 1;
    config.gateway.cache.jitter_percent = 0;
    config.gateway.cache.stale_while_revalidate_secs = 0;
    config.gateway.cache.stale_if_error_secs = 300;
    let data_dir = config.gateway.data_dir.clone();
    let (all, idp) = testkit::start_real_stack(config.clone()).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", all.public_addr());
    let admin = format!("http://{}", all.admin_addr());
    let alice = idp.token("alice");

    let created = http
        .put(format!("{base}/api/v1/admin/products/HOT"))
        .bearer_auth(idp.ops_token("olga"))
        .json(
            &json!({"name": "Hot", "price_cents": 1999, "total_stock": 10,
                      "per_buyer_limit": 2, "sale_state": "on_sale"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // The creation event drops HOT's copies: warm the cache only after it passed, or the copy
    // the stale answer below needs may be gone (seen: 503 instead of the stale copy).
    events_handled(&all.edge, &config.settlement.events_stream()).await;
    let product = format!("{base}/api/v1/products/HOT");
    assert_eq!(http.get(&product).send().await.unwrap().status(), 200);
    let warmed = Instant::now();
    let (status, hold) = body(
        http.post(format!("{base}/api/v1/reservations"))
            .bearer_auth(&alice)
            .header("idempotency-key", "r1")
            .json(&json!({"sku": "HOT", "qty": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{hold}");
    let token = hold["token"].as_str().unwrap().to_owned();
    let hold_url = format!(
        "{base}/api/v1/reservations/{}",
        hold["reservation_id"].as_str().unwrap()
    );
    let confirm = |key: &'static str| {
        http.post(format!("{base}/api/v1/orders"))
            .bearer_auth(&alice)
            .header("idempotency-key", key)
            .json(&json!({"reservation_token": token}))
            .send()
    };
    wait_for(&http, &admin, "settlement", true).await;

    // Settlement stops.
    let AllInOne {
        gateway,
        settlement,
        shared,
        ..
    } = all;
    let (settlement_addr, settlement_admin) = (settlement.addr, settlement.admin_addr);
    settlement.shutdown().await;
    let report = wait_for(&http, &admin, "settlement", false).await;
    assert_eq!(report["status"], "degraded", "{report}");
    assert_eq!(report["dependencies"]["database"]["up"], false, "{report}");
    let metrics = http
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"stockgate_dependency_up{dependency="settlement"} 0"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"stockgate_dependency_up{dependency="redis"} 1"#));

    // The detailed report is for ops on the admin listener only.
    let public = http
        .get(format!("{base}/admin/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), 404);

    // The pod still says it can serve.
    for _ in 0..5 {
        let (status, ready) = body(http.get(format!("{base}/readyz")).send().await.unwrap()).await;
        assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    }
    // The catalog comes from the stale copy (past its 1 s freshness however fast the
    // monitor saw settlement go: a fresh copy would answer as a plain hit).
    tokio::time::sleep(Duration::from_millis(1_200).saturating_sub(warmed.elapsed())).await;
    let stale = http.get(&product).send().await.unwrap();
    assert_eq!(stale.status(), 200);
    assert!(
        header(&stale, "cache-status").contains("stale-if-error"),
        "{stale:?}"
    );
    assert_eq!(stale.json::<Value>().await.unwrap()["price_cents"], 1999);
    // A confirm is refused with a retry hint, and the hold stays.
    let refused = confirm("c1").await.unwrap();
    assert!(!header(&refused, "retry-after").is_empty(), "{refused:?}");
    let (status, problem) = body(refused).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (503, Some("upstream_unavailable"))
    );
    let (status, kept) = body(
        http.get(&hold_url)
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, kept["state"].as_str()),
        (200, Some("held")),
        "{kept}"
    );

    // Settlement comes back on its address; the kept hold confirms.
    let mut settlement_config = config.settlement_config();
    settlement_config.listen_addr = settlement_addr;
    settlement_config.admin_listen_addr = settlement_admin;
    let settlement = settlement::start(
        settlement_config,
        settlement::SettlementDeps {
            store: shared.store.clone(),
            verifier: shared.verifier(),
            gateway_keys: shared.gateway_keys(&config.gateway).unwrap(),
            registry: prometheus::Registry::new(),
        },
    )
    .await
    .expect("settlement restarts on its address");
    let report = wait_for(&http, &admin, "settlement", true).await;
    assert_eq!(report["dependencies"]["database"]["up"], true, "{report}");
    let (status, order) = body(confirm("c2").await.unwrap()).await;
    assert_eq!(status, 201, "{order}");

    let _ = tokio::task::spawn_blocking(move || gateway.shutdown()).await;
    settlement.shutdown().await;
    let _ = std::fs::remove_dir_all(data_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_pod_is_not_ready() {
    let mut gw = testkit::start_gateway_with(|c| c.server.grace_period_secs = 3).await;
    let (status, _) = body(gw.http.get(gw.url("/readyz")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    // SIGTERM, as `RunningServer::shutdown` sends it: a 3 s grace period follows.
    let server = gw.server.take().unwrap();
    let stopping = tokio::task::spawn_blocking(move || server.shutdown());
    let started = Instant::now();
    while !gw.state.health.is_draining() {
        assert!(started.elapsed() < Duration::from_secs(2), "never drained");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Within the grace period, a probe is never told "ready": Pingora closes the listener and
    // idle keep-alive connections at once (connection refused), and a request already being
    // read meets `/readyz`'s 503 `draining`.
    let fresh = reqwest::Client::new();
    for _ in 0..5 {
        match fresh.get(gw.url("/readyz")).send().await {
            Ok(response) => {
                let (status, problem) = body(response).await;
                assert_eq!((status, problem["code"].as_str()), (503, Some("draining")));
            }
            Err(error) => assert!(error.is_connect(), "{error}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "checked within the grace period"
    );
    stopping.await.unwrap();
}
