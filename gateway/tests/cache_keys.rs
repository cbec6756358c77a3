//! The product cache cannot be multiplied or bypassed (issue 14.3): keys are canonical, the
//! list or one product under the SKU settlement would look up. Query strings are ignored and
//! never forwarded, every percent-encoding of a SKU is one entry, invalid SKUs are refused
//! before the cache, unknown SKUs are not stored, and an edit spelled one way drops the copy
//! fetched under another. Evidence: the upstream's request count and the paths it saw, and the
//! keys in Redis.

use redis::AsyncCommands;
use serde_json::Value;
use testkit::{Edge, Upstream, header, redis_url};

/// The edge's cache keys in Redis, without their prefix.
async fn redis_cache_keys(edge: &Edge) -> Vec<String> {
    let mut redis = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let prefix = format!("{}:cache:", edge.config.redis_key_prefix);
    let mut keys: Vec<String> = redis.keys(format!("{prefix}*")).await.unwrap();
    keys.sort();
    keys.iter()
        .map(|key| key.trim_start_matches(&prefix).to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_query_strings_make_one_upstream_read_and_none_is_forwarded() {
    let upstream = Upstream::start();
    let edge = testkit::start_edge(
        testkit::edge_config(upstream.addr, Some(&redis_url())),
        None,
    )
    .await;
    for i in 0..100 {
        let response = edge.get(&format!("/api/v1/products?{i}")).await;
        assert_eq!(response.status(), 200, "?{i}");
        let product = edge.get(&format!("/api/v1/products/HOT?v={i}&x")).await;
        assert_eq!(product.status(), 200, "HOT?v={i}");
    }
    assert_eq!(
        upstream.catalog.hits(),
        2,
        "one read of the list, one of HOT"
    );
    assert_eq!(
        *upstream.catalog.uris.lock().unwrap(),
        ["/api/v1/products", "/api/v1/products/HOT"],
        "the query strings were stripped before forwarding"
    );
    assert_eq!(edge.state.metrics.cache_count("miss"), 2);
    assert_eq!(edge.state.metrics.cache_count("hit"), 198);
    assert_eq!(
        redis_cache_keys(&edge).await,
        ["/api/v1/products", "/api/v1/products/HOT"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_encoding_of_a_sku_is_one_entry_and_case_is_another_sku() {
    let upstream = Upstream::start();
    let edge = testkit::start_edge(
        testkit::edge_config(upstream.addr, Some(&redis_url())),
        None,
    )
    .await;
    for path in ["HOT", "H%4FT", "%48OT", "%48%4F%54", "%48%4f%54", "HO%54"] {
        let response = edge.get(&format!("/api/v1/products/{path}")).await;
        assert_eq!(response.status(), 200, "{path}");
        let product: Value = response.json().await.unwrap();
        assert_eq!(product["sku"], "HOT", "{path}");
    }
    assert_eq!(upstream.catalog.hits(), 1);
    // SKUs are case-sensitive in settlement (SQL compares them exactly): `h%4fT` is `hOT`,
    // another SKU, looked up and keyed as such.
    assert_eq!(edge.get("/api/v1/products/h%4fT").await.status(), 200);
    assert_eq!(
        *upstream.catalog.uris.lock().unwrap(),
        ["/api/v1/products/HOT", "/api/v1/products/hOT"]
    );
    assert_eq!(
        redis_cache_keys(&edge).await,
        ["/api/v1/products/HOT", "/api/v1/products/hOT"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_skus_are_refused_before_the_cache_and_unknown_ones_are_not_stored() {
    let upstream = Upstream::start();
    let edge = testkit::start_edge(
        testkit::edge_config(upstream.addr, Some(&redis_url())),
        None,
    )
    .await;
    for path in [
        "/api/v1/products/",
        "/api/v1/products/HOT%20",
        "/api/v1/products/HOT%",
        "/api/v1/products/HOT%4",
        "/api/v1/products/HOT%zz",
        "/api/v1/products/%C3%A9",
        "/api/v1/products/HOT*",
        "/api/v1/products/HOT%7B%7D",
        &format!("/api/v1/products/{}", "A".repeat(65)),
    ] {
        let response = edge.get(path).await;
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(
            header(&response, "content-type"),
            "application/problem+json",
            "{path}"
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["code"], "invalid_request", "{path}");
    }
    assert_eq!(upstream.catalog.hits(), 0, "nothing reached the upstream");
    assert_eq!(edge.state.metrics.cache_count("invalid"), 9);

    // Unknown SKUs: each passed on (one upstream read per request), none stored.
    for i in 0..20 {
        let path = if i % 2 == 0 { "NOPE" } else { "N%4FPE" };
        assert_eq!(
            edge.get(&format!("/api/v1/products/{path}")).await.status(),
            404
        );
    }
    assert_eq!(upstream.catalog.hits(), 20);
    assert!(redis_cache_keys(&edge).await.is_empty());
    assert_eq!(edge.state.cache.as_ref().unwrap().local_len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_spelled_one_way_drops_the_copy_fetched_another_way() {
    let upstream = Upstream::start();
    let edge = testkit::start_edge(
        testkit::edge_config(upstream.addr, Some(&redis_url())),
        None,
    )
    .await;
    let price = |response: reqwest::Response| async move {
        let cache_status = header(&response, "cache-status");
        let product: Value = response.json().await.unwrap();
        (product["price_cents"].as_i64().unwrap(), cache_status)
    };
    assert_eq!(
        price(edge.get("/api/v1/products/%48OT").await).await.0,
        1999
    );
    let (cached, status) = price(edge.get("/api/v1/products/%48OT").await).await;
    assert_eq!(cached, 1999);
    assert!(status.contains("hit"), "{status}");

    upstream
        .catalog
        .price
        .store(2499, std::sync::atomic::Ordering::SeqCst);
    let ops = edge.idp.ops_token("olga");
    let edit = edge
        .http
        .put(edge.url("/api/v1/admin/products/H%4FT"))
        .bearer_auth(ops)
        .json(&serde_json::json!({"name": "Hot"}))
        .send()
        .await
        .unwrap();
    assert_eq!(edit.status(), 200);
    assert_eq!(*upstream.catalog.edits.lock().unwrap(), ["HOT"]);
    let (fresh, status) = price(edge.get("/api/v1/products/%48OT").await).await;
    assert_eq!(fresh, 2499, "the edit dropped the copy fetched as %48OT");
    assert!(status.contains("miss"), "{status}");
}
