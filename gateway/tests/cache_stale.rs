//! The product cache's stale windows on real Redis through real HTTP: stale-if-error with the
//! upstream stopped, stale-while-revalidate refreshing in the background.

use std::sync::atomic::Ordering;
use std::time::Duration;

use testkit::body;
use testkit::{Upstream, header, redis_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_if_error_serves_the_last_good_copy_while_the_upstream_is_stopped() {
    let mut upstream = Upstream::start();
    let mut config = testkit::edge_config(upstream.addr, Some(&redis_url()));
    config.cache.ttl_secs = 1;
    config.cache.jitter_percent = 0;
    config.cache.stale_while_revalidate_secs = 0;
    config.cache.stale_if_error_secs = 60;
    let edge = testkit::start_edge(config, None).await;

    let fresh = edge.get("/api/v1/products/HOT").await;
    assert_eq!(fresh.status(), 200);
    let etag = header(&fresh, "etag");
    upstream.stop();
    tokio::time::sleep(Duration::from_millis(2_100)).await;

    let stale = edge.get("/api/v1/products/HOT").await;
    assert_eq!(stale.status(), 200);
    assert_eq!(header(&stale, "etag"), etag);
    assert_eq!(header(&stale, "warning"), "111 - \"Revalidation Failed\"");
    assert!(header(&stale, "cache-status").contains("stale-if-error"));
    assert!(header(&stale, "age").parse::<u64>().unwrap() >= 2);
    assert!(stale.text().await.unwrap().contains("\"price_cents\":1999"));
    assert_eq!(edge.state.metrics.cache_count("stale_if_error"), 1);

    // Nothing was ever stored for this one: 503 problem+json with Retry-After.
    let never = edge.get("/api/v1/products/TEE").await;
    assert_eq!(header(&never, "retry-after"), "1");
    let (status, problem) = body(never).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (503, Some("upstream_unavailable"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_in_the_background() {
    let upstream = Upstream::start();
    let mut config = testkit::edge_config(upstream.addr, Some(&redis_url()));
    config.cache.ttl_secs = 1;
    config.cache.jitter_percent = 0;
    config.cache.stale_while_revalidate_secs = 30;
    let edge = testkit::start_edge(config, None).await;

    assert_eq!(edge.get("/api/v1/products/HOT").await.status(), 200);
    upstream.catalog.price.store(2500, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    let stale = edge.get("/api/v1/products/HOT").await;
    assert_eq!(header(&stale, "warning"), "110 - \"Response is Stale\"");
    assert!(
        stale.text().await.unwrap().contains("1999"),
        "the old copy, at once"
    );
    // The background refresh lands shortly after.
    let mut refreshed = false;
    for _ in 0..50 {
        let response = edge.get("/api/v1/products/HOT").await;
        if response.text().await.unwrap().contains("2500") {
            refreshed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refreshed, "the stale copy was refreshed");
    assert_eq!(upstream.catalog.hits(), 2);
    assert!(edge.state.metrics.cache_count("stale") >= 1);
}
