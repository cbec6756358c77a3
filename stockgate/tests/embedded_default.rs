//! The embedded default as a new user runs it: in-memory store, an SQLite file, demo
//! products seeded, the dev identity key generated into the data dir, and a token from
//! `stockgate token` accepted by the gateway.

use std::time::Duration;

use gateway::auth::devkeys;
use serde_json::json;
use stockgate::all_in_one::{self, DEMO_PRODUCTS};
use testkit::body;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_serves_the_walk_through_and_survives_a_restart() {
    let mut config = testkit::embedded_config();
    // The dev identity, not the test one: this is what `stockgate token` signs with.
    config.gateway.auth = gateway::config::Config::default().auth;
    config.gateway.limits.header_read_timeout_ms = 10_000;
    let data_dir = config.gateway.data_dir.clone();

    let all = all_in_one::start(config.clone(), None, true).await.unwrap();
    let base = format!("http://{}", all.public_addr());
    let http = reqwest::Client::new();
    let token =
        devkeys::mint_dev_token(&config.gateway, "alice", &[], Duration::from_secs(600)).unwrap();

    let (status, products) = body(
        http.get(format!("{base}/api/v1/products"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(products.as_array().map(Vec::len), Some(DEMO_PRODUCTS.len()));

    let reserve = http
        .post(format!("{base}/api/v1/reservations"))
        .bearer_auth(&token)
        .header("idempotency-key", "demo-1")
        .json(&json!({"sku": "HOT", "qty": 1}))
        .send()
        .await
        .unwrap();
    let (status, reservation) = body(reserve).await;
    assert_eq!(status, 201, "{reservation}");
    let confirm = http
        .post(format!("{base}/api/v1/orders"))
        .bearer_auth(&token)
        .header("idempotency-key", "order-1")
        .json(&json!({"reservation_token": reservation["token"]}))
        .send()
        .await
        .unwrap();
    let (status, order) = body(confirm).await;
    assert_eq!(status, 201, "{order}");
    let (status, orders) = body(
        http.get(format!("{base}/api/v1/orders"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, orders.as_array().map(Vec::len)), (200, Some(1)));
    all.shutdown().await;

    // A second run on the same data dir: no second seeding, and the fresh in-memory store is
    // rebuilt from SQL, so the unit sold before is not for sale again.
    let all = all_in_one::start(config, None, true).await.unwrap();
    let base = format!("http://{}", all.public_addr());
    let (status, stock) = body(
        http.get(format!("{base}/api/v1/stock/HOT"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (stock["available"].as_u64(), stock["sold"].as_u64()),
        (Some(49), Some(1))
    );
    all.shutdown().await;
    let _ = std::fs::remove_dir_all(data_dir);
}
