//! Refusals the store decides (limits, stock, sale state, unknown SKU) leave nothing behind
//! (DESIGN.md §6): a buyer at its limit who keeps sending reserves with fresh idempotency keys
//! cannot fill Redis. Run with `--nocapture` for the measured figure (RELIABILITY.md).

use std::time::Instant;

use serde_json::json;

use crate::world::{self, Abuse, refused};

/// Reserves with fresh keys sent by a buyer already at its per-buyer limit.
const REFUSED_RESERVES: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buyer_at_its_limit_sending_1000_refused_reserves_leaves_no_key() {
    let world = world::start(|_| {}).await;
    world.add_product("HOT", 100, 1).await;
    let alice = world.idp.token("alice");
    world.hold(&alice, "HOT", 1).await;
    let before = world.keys_with_pttl().await;

    let started = Instant::now();
    for i in 0..REFUSED_RESERVES {
        let key = format!("flood-{i}-{}", uuid::Uuid::new_v4().simple());
        let (status, problem) =
            testkit::post_reservation(&world.http, &world.base, &alice, &key, "HOT", 1).await;
        assert_eq!(
            (status, problem["code"].as_str()),
            (422, Some("purchase_limit")),
            "{problem}"
        );
    }
    let elapsed = started.elapsed();

    let after = world.keys_with_pttl().await;
    let left: Vec<(&String, &i64)> = after
        .iter()
        .filter(|(key, _)| !before.contains_key(*key))
        .collect();
    let pttls: Vec<i64> = left.iter().map(|(_, pttl)| **pttl).collect();
    println!(
        "{REFUSED_RESERVES} refused reserves (purchase_limit, fresh keys) in {elapsed:?}: \
         {} new keys under the prefix, PTTL min {:?} max {:?} ms",
        left.len(),
        pttls.iter().min(),
        pttls.iter().max(),
    );
    let sample: Vec<String> = left.iter().take(5).map(|(k, _)| (*k).clone()).collect();
    world.shutdown().await;
    assert!(sample.is_empty(), "left behind: {sample:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_the_store_decides_leaves_nothing() {
    let world = world::start(|_| {}).await;
    world.add_product("HOT", 10, 3).await;
    world.add_product("ONE", 1, 1).await;
    world.add_product("FEW", 2, 5).await;
    let ops = world.idp.ops_token("olga");
    let paused = json!({"name": "PAUSED", "price_cents": 100, "total_stock": 5,
                        "per_buyer_limit": 5, "sale_state": "paused"});
    let (status, product) =
        testkit::put_product(&world.http, &world.base, &ops, "PAUSED", &paused).await;
    assert_eq!(status, 201, "{product}");
    let (alice, bob) = (world.idp.token("alice"), world.idp.token("bob"));
    world.hold(&alice, "HOT", 3).await;
    world.hold(&bob, "ONE", 1).await;

    let cases = [
        ("at the per-buyer limit", "HOT", 1, (422, "purchase_limit")),
        ("sold out", "ONE", 1, (409, "sold_out")),
        ("more than in stock", "FEW", 3, (409, "insufficient_stock")),
        ("sale paused", "PAUSED", 1, (423, "sale_paused")),
        ("unknown sku", "NOPE", 1, (404, "unknown_sku")),
    ];
    for (name, sku, qty, expected) in cases {
        // The same key for every case: a refusal must not bind it to its SKU and quantity.
        let request = world
            .http
            .post(world.url("/api/v1/reservations"))
            .bearer_auth(&alice)
            .header("idempotency-key", "one-key-for-every-refusal")
            .json(&json!({"sku": sku, "qty": qty}));
        refused(&world, name, request, expected).await;
    }
    // The key is still free: it makes a hold of whatever the buyer asks for next.
    let (status, created) = testkit::post_reservation(
        &world.http,
        &world.base,
        &alice,
        "one-key-for-every-refusal",
        "FEW",
        2,
    )
    .await;
    assert_eq!(status, 201, "{created}");
    world.shutdown().await;
}
