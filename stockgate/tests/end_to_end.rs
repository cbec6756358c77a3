//! End to end through real HTTP: the gateway and the real settlement service started
//! in-process on 127.0.0.1:0 (`all_in_one::start`), on the Redis reservation store and
//! PostgreSQL. Needs `REDIS_URL` and `DATABASE_URL` (scripts/test.sh sets both); a missing
//! service fails the test. Each test has its own Redis key prefix and PostgreSQL schema.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use testkit::{RealStack, body, fresh_key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_confirm_order_with_replays_on_redis_and_postgres() {
    let world = RealStack::start("gw", |_| {}).await;
    world.add_product("HOT", 10, 3).await;
    let alice = world.idp.token("alice");

    let (status, products) = body(
        world
            .http
            .get(world.url("/api/v1/products"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(products.to_string().contains("HOT"), "{products}");

    let (status, created) = world.reserve(&alice, "k1", "HOT", 2).await;
    assert_eq!(status, 201, "{created}");
    let (status, replay) = world.reserve(&alice, "k1", "HOT", 2).await;
    assert_eq!((status, &replay), (200, &created));

    let token = created["token"].as_str().unwrap();
    let (status, order) = world.confirm(&alice, &fresh_key(), token).await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["reservation_id"], created["reservation_id"]);
    assert_eq!(
        (order["qty"].as_u64(), order["status"].as_str()),
        (Some(2), Some("confirmed"))
    );
    let (status, again) = world.confirm(&alice, &fresh_key(), token).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["order_id"], order["order_id"]);

    // The buyer sees the order; another buyer does not.
    let order_id = order["order_id"].as_str().unwrap();
    let (status, mine) = body(
        world
            .http
            .get(world.url(&format!("/api/v1/orders/{order_id}")))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, mine["order_id"].as_str()), (200, Some(order_id)));
    let bob = world.idp.token("bob");
    let response = world
        .http
        .get(world.url(&format!("/api/v1/orders/{order_id}")))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert!(
        matches!(response.status().as_u16(), 403 | 404),
        "{}",
        response.status()
    );

    let snapshot = world.stock("HOT").await;
    assert_eq!(
        (
            snapshot.available,
            snapshot.held,
            snapshot.confirming,
            snapshot.sold
        ),
        (8, 0, 0, 2)
    );
    assert_eq!(world.orders_of_sku("HOT").await, 1);
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_release_and_foreign_tokens() {
    let world = RealStack::start("gw", |c| c.gateway.reservations.hold_ttl_secs = 1).await;
    world.add_product("HOT", 10, 5).await;
    let (alice, mallory) = (world.idp.token("alice"), world.idp.token("mallory"));

    // Expired hold, then confirm: 410 and the units are back.
    let (_, short) = world.reserve(&alice, "k-exp", "HOT", 2).await;
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (status, problem) = world
        .confirm(&alice, &fresh_key(), short["token"].as_str().unwrap())
        .await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (410, Some("reservation_expired")),
        "{problem}"
    );
    assert_eq!(world.stock("HOT").await.available, 10);

    // Another buyer's token: 403, nothing changes.
    let (_, held) = world.reserve(&alice, "k-held", "HOT", 1).await;
    let before = world.stock("HOT").await;
    let (status, _) = world
        .confirm(&mallory, &fresh_key(), held["token"].as_str().unwrap())
        .await;
    assert_eq!(status, 403);
    assert_eq!(world.stock("HOT").await, before);

    // Release: stock back.
    let id = held["reservation_id"].as_str().unwrap();
    let response = world
        .http
        .delete(world.url(&format!("/api/v1/reservations/{id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_eq!(world.stock("HOT").await.available, 10);
    assert_eq!(world.orders_of_sku("HOT").await, 0);
    world.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_buyers_on_fifty_units_make_exactly_fifty_orders() {
    let world =
        Arc::new(RealStack::start("gw", |c| c.gateway.reservations.hold_ttl_secs = 60).await);
    world.add_product("DROP", 50, 1).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let world = world.clone();
        tasks.push(tokio::spawn(async move {
            let token = world.idp.token(&format!("buyer-{i}"));
            let (status, reservation) = world.reserve(&token, "k", "DROP", 1).await;
            if status != 201 {
                assert_eq!(status, 409, "{reservation}");
                return 0;
            }
            let (status, order) = world
                .confirm(&token, &fresh_key(), reservation["token"].as_str().unwrap())
                .await;
            assert_eq!(status, 201, "{order}");
            1
        }));
    }
    let mut orders = 0;
    for task in tasks {
        orders += task.await.unwrap();
    }
    assert_eq!(orders, 50);
    assert_eq!(world.orders_of_sku("DROP").await, 50);
    let snapshot = world.stock("DROP").await;
    assert_eq!(
        (
            snapshot.available,
            snapshot.held,
            snapshot.confirming,
            snapshot.sold
        ),
        (0, 0, 0, 50)
    );
    assert!(snapshot.is_balanced());
    match Arc::try_unwrap(world) {
        Ok(world) => world.shutdown().await,
        Err(_) => panic!("a task still holds the world"),
    }
}

/// Issue 15 item 5 through the gateway: the restock route is ops only, a product edit needs
/// the version it changes, and every edit the gateway proxies — a restock, and a 412 (whose
/// editor saw a stale copy) — drops the cached page, so the next read is SQL's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_edits_through_the_gateway_need_the_version_and_drop_cached_pages() {
    let world = RealStack::start("gw", |c| c.gateway.cache.ttl_secs = 300).await;
    world.add_product("EDIT", 10, 3).await;
    let ops = world.idp.ops_token("olga");
    let page = || async {
        let response = world
            .http
            .get(world.url("/api/v1/products/EDIT"))
            .send()
            .await
            .unwrap();
        let cache = response
            .headers()
            .get("cache-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (_, product) = body(response).await;
        (
            product["total_stock"].as_i64(),
            product["version"].as_i64(),
            cache,
        )
    };
    let restock = |token: String, units: i64| {
        let request = world
            .http
            .post(world.url("/api/v1/admin/products/EDIT/restock"))
            .bearer_auth(token)
            .json(&json!({ "units": units }));
        async move { body(request.send().await.unwrap()).await }
    };
    // Let the creation's event pass, then warm the cache.
    tokio::time::sleep(Duration::from_millis(300)).await;
    page().await;
    let (_, _, cache) = page().await;
    assert!(cache.contains("hit"), "{cache}");

    let (status, problem) = restock(world.idp.token("bob"), 5).await;
    assert_eq!((status, problem["code"].as_str()), (403, Some("forbidden")));
    let (status, restocked) = restock(ops.clone(), 5).await;
    assert_eq!((status, restocked["total_stock"].as_i64()), (200, Some(15)));
    let (total, version, cache) = page().await;
    assert_eq!((total, version), (Some(15), Some(2)), "{cache}");
    assert!(
        !cache.contains("hit"),
        "the restock dropped the cached page: {cache}"
    );
    assert_eq!(world.stock("EDIT").await.total_stock, 15);

    // The console's whole-product PUT: without If-Match 428, with a stale one 412 (and the
    // cached page goes), with the current one 200.
    let product = json!({"name": "EDIT", "price_cents": 1999, "total_stock": 15,
                         "per_buyer_limit": 3, "sale_state": "paused"});
    let put = |if_match: Option<&'static str>| {
        testkit::put_product_if_match(&world.http, &world.base, &ops, "EDIT", &product, if_match)
    };
    // The restock's event passes first, so only the 412 can drop the copy read next.
    tokio::time::sleep(Duration::from_millis(500)).await;
    page().await;
    let (status, problem) = put(None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (428, Some("precondition_required"))
    );
    let (_, _, cache) = page().await;
    assert!(cache.contains("hit"), "{cache}");
    let (status, problem) = put(Some("\"1\"")).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (412, Some("stale_version"))
    );
    let (_, _, cache) = page().await;
    assert!(
        !cache.contains("hit"),
        "the 412 dropped the cached page: {cache}"
    );
    let (status, paused) = put(Some("\"2\"")).await;
    assert_eq!(
        (status, paused["sale_state"].as_str()),
        (200, Some("paused"))
    );
    assert_eq!(
        world.stock("EDIT").await.sale_state,
        reservation_core::SaleState::Paused
    );
    world.shutdown().await;
}
