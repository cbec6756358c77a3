//! Cache invalidation through the outbox, end to end: the real settlement service on
//! PostgreSQL, its relay publishing to the Redis stream, the gateway following it (XREAD, no
//! consumer group) dropping the cached copies. The price change goes to the settlement directly (not through this
//! gateway, which would drop its copies itself) so only the outbox path can make it visible.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use testkit::{AsGateway, RealStack, ops};

/// Creates `HOT` (no `if_match`) or changes the version `if_match` names, at the settlement.
async fn put_price(stack: &RealStack, price_cents: i64, if_match: Option<&str>) {
    let settlement = format!("http://{}", stack.all().settlement.addr);
    let mut request = stack
        .http
        .put(format!("{settlement}/api/v1/admin/products/HOT"));
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    // As a gateway sends it (this one's key: settlement serves nobody else).
    let response = request
        .json(
            &json!({"name": "Hot", "price_cents": price_cents, "total_stock": 10,
                      "per_buyer_limit": 2, "sale_state": "on_sale"}),
        )
        .send_as(&stack.shared().assertions, ops("olga"))
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "{:?}",
        response.text().await
    );
}

async fn price(http: &reqwest::Client, url: &str) -> (i64, String) {
    let response = http.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let status = testkit::header(&response, "cache-status");
    let product: Value = response.json().await.unwrap();
    (product["price_cents"].as_i64().unwrap(), status)
}

/// The real stack on PostgreSQL and Redis under a private prefix (the events stream is
/// `<prefix>:events`), with `HOT` created at 1999 and its creation event passed.
async fn start_stack() -> RealStack {
    let stack = RealStack::start("gwcache", |config| {
        config.settlement.outbox.stream = format!("{}:events", config.gateway.redis_key_prefix);
        // Long enough that expiry cannot be what makes the change visible.
        config.gateway.cache.ttl_secs = 300;
    })
    .await;
    put_price(&stack, 1999, None).await;
    // Let the creation event pass before warming the cache.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stack
}

/// Polls `url` until it shows `price_cents`, for at most 3 s; returns how long that took.
async fn wait_for_price(http: &reqwest::Client, url: &str, price_cents: i64) -> Duration {
    let changed = Instant::now();
    let mut seen = price(http, url).await.0;
    while seen != price_cents && changed.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        seen = price(http, url).await.0;
    }
    assert_eq!(seen, price_cents, "the new price never showed at {url}");
    changed.elapsed()
}

/// Issue 15.10: each gateway used to create a consumer group named after its pod on the events
/// stream and never destroy it, so Redis grew with every rollout and scale-up. The gateway
/// follows the stream with XREAD now: the update still reaches its cache, and the stream has
/// no group (before the fix: `<prefix>-gateway-<pod>`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_follows_the_stream_without_leaving_a_consumer_group() {
    let stack = start_stack().await;
    let http = &stack.http;
    let product_url = stack.url("/api/v1/products/HOT");
    assert_eq!(price(http, &product_url).await.0, 1999);
    put_price(&stack, 2599, Some("\"1\"")).await;
    wait_for_price(http, &product_url, 2599).await;

    let stream = &stack.config.settlement.outbox.stream;
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut stack.redis())
        .await
        .unwrap();
    assert!(
        groups.is_empty(),
        "consumer groups left on {stream}: {groups:?}"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_price_update_reaches_the_cache_through_the_outbox_within_a_second() {
    let stack = start_stack().await;
    let http = &stack.http;
    let product_url = stack.url("/api/v1/products/HOT");
    assert_eq!(price(http, &product_url).await.0, 1999);
    let (cached, status) = price(http, &product_url).await;
    assert_eq!(cached, 1999);
    assert!(status.contains("hit"), "{status}");

    put_price(&stack, 2499, Some("\"1\"")).await;
    let took = wait_for_price(http, &product_url, 2499).await;
    assert!(took < Duration::from_secs(1), "visible after {took:?}");
    assert!(stack.metrics().cache_count("hit") >= 1);
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_event_drops_a_copy_first_fetched_percent_encoded() {
    let stack = start_stack().await;
    let http = &stack.http;
    // First fetched as `%48OT`; `/HOT` and `H%4FT` read the same copy.
    let encoded = stack.url("/api/v1/products/%48OT");
    assert_eq!(price(http, &encoded).await.0, 1999);
    for spelling in ["HOT", "H%4FT"] {
        let (cached, status) =
            price(http, &stack.url(&format!("/api/v1/products/{spelling}"))).await;
        assert_eq!(cached, 1999);
        assert!(status.contains("hit"), "{spelling}: {status}");
    }
    // The event names `HOT`; the copy fetched as `%48OT` is that key.
    put_price(&stack, 2499, Some("\"1\"")).await;
    let took = wait_for_price(http, &encoded, 2499).await;
    assert!(took < Duration::from_secs(1), "visible after {took:?}");
    stack.shutdown().await;
}
