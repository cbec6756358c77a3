//! The product cache on real Redis through real HTTP: single-flight fills, the shared tier
//! between replicas, ETag / If-None-Match, pass-through of answers that are not stored.

use std::sync::atomic::Ordering;

use testkit::{Upstream, header, redis_url};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_concurrent_reads_of_a_cold_product_make_one_upstream_request() {
    let upstream = Upstream::start();
    // Slow enough that all 100 requests arrive while the one fill is under way.
    upstream.catalog.delay_ms.store(300, Ordering::SeqCst);
    let edge = testkit::start_edge(
        testkit::edge_config(upstream.addr, Some(&redis_url())),
        None,
    )
    .await;

    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (http, url) = (edge.http.clone(), edge.url("/api/v1/products/HOT"));
        tasks.push(tokio::spawn(async move {
            let response = http.get(url).send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }));
    }
    for task in tasks {
        let (status, body) = task.await.unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("\"price_cents\":1999"), "{body}");
    }
    assert_eq!(upstream.catalog.hits(), 1, "exactly one upstream request");
    let metrics = &edge.state.metrics;
    assert_eq!(metrics.cache_count("miss"), 1);
    assert_eq!(
        metrics.cache_count("coalesced") + metrics.cache_count("hit"),
        99
    );
    assert!(metrics.cache_count("coalesced") > 0);
    let text = edge.metrics().await;
    assert!(
        text.contains(r#"stockgate_cache_requests_total{outcome="miss"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_reads_the_copy_another_stored_in_redis() {
    let upstream = Upstream::start();
    let config = testkit::edge_config(upstream.addr, Some(&redis_url()));
    let first = testkit::start_edge(config.clone(), None).await;
    let mut second_config = config;
    second_config.data_dir = second_config.data_dir.with_extension("second");
    let second = testkit::start_edge(second_config, None).await;

    assert_eq!(first.get("/api/v1/products").await.status(), 200);
    let response = second.get("/api/v1/products").await;
    assert_eq!(response.status(), 200);
    assert!(
        header(&response, "cache-status").contains("hit"),
        "{response:?}"
    );
    assert_eq!(
        upstream.catalog.hits(),
        1,
        "the second replica did not go upstream"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etags_answer_304_and_uncacheable_answers_pass_through() {
    let upstream = Upstream::start();
    let edge = testkit::start_edge(
        testkit::edge_config(upstream.addr, Some(&redis_url())),
        None,
    )
    .await;

    let first = edge.get("/api/v1/products/HOT").await;
    assert_eq!(first.status(), 200);
    let etag = header(&first, "etag");
    assert!(etag.starts_with('"'), "{etag}");
    assert_eq!(
        header(&first, "cache-status"),
        "stockgate; fwd=miss; stored"
    );
    assert_eq!(header(&first, "age"), "0");

    let again = edge
        .http
        .get(edge.url("/api/v1/products/HOT"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert_eq!(header(&again, "etag"), etag);
    let other = edge
        .http
        .get(edge.url("/api/v1/products/HOT"))
        .header("if-none-match", "\"something-else\"")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 200);

    // A 404 is passed on and not stored; a query string is ignored (tests/cache_keys.rs).
    for _ in 0..2 {
        assert_eq!(edge.get("/api/v1/products/NOPE").await.status(), 404);
        assert_eq!(edge.get("/api/v1/products?page=2").await.status(), 200);
    }
    assert_eq!(upstream.catalog.hits(), 1 + 2 + 1);
    assert_eq!(edge.state.metrics.cache_count("uncacheable"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_size_limit_are_served_but_not_stored() {
    let upstream = Upstream::start();
    let mut config = testkit::edge_config(upstream.addr, Some(&redis_url()));
    config.cache.max_body_bytes = 10;
    let edge = testkit::start_edge(config, None).await;
    for _ in 0..3 {
        let response = edge.get("/api/v1/products/HOT").await;
        assert_eq!(response.status(), 200);
        assert!(response.text().await.unwrap().contains("HOT"));
    }
    assert_eq!(upstream.catalog.hits(), 3);
    assert_eq!(edge.state.metrics.cache_count("uncacheable"), 3);
}
