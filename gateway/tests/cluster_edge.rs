//! The gateway on a Redis Cluster: `REDIS_CLUSTER_URL`, the local 3-master cluster that
//! `scripts/redis-cluster.sh start` runs (`scripts/test.sh` starts it and sets the variable).
//! Each gateway starts the way `stockgate gateway` does (`Shared::connect`: the reservation
//! store and the edge's cache, rate limiter and health probe all on the cluster URL), under its
//! own key prefix, which is deleted on every node afterwards. Shown on the cluster: a
//! reservation through HTTP, cached product reads with both invalidation paths (a change made
//! through this gateway, and a `product.updated` event on the stream), and a rate limit.
//! A missing variable or a cluster that is down fails these tests; they never skip.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use backend_adapters::redis::stream::StreamPublisher;
use backend_adapters::redis::{ConnectOptions, RedisConnection, RedisStore, RedisStoreConfig};
use backend_adapters::sql::outbox::topic;
use gateway::app::Shared;
use gateway::cache::LIST_PATH;
use gateway::config::Config;
use redis::AsyncCommands;
use reservation_core::{ReservationStore, Sku};
use serde_json::json;
use testkit::{Edge, Upstream, header};
use testkit::{assert_redis_cluster_up, body, product, redis_cluster_nodes, redis_cluster_url};

/// Deletes every key under the prefix on every node when dropped (after the gateway).
struct Cleanup {
    prefix: String,
    rules_file: Option<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        // Blocking I/O in drop is fine in a test; a node that does not answer keeps its keys.
        testkit::unlink_keys_under(&redis_cluster_nodes(), &self.prefix);
        if let Some(path) = &self.rules_file {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The test configuration on the cluster under a fresh `gwcluster-…` prefix.
fn cluster_config(upstream: SocketAddr) -> (Config, Cleanup) {
    assert_redis_cluster_up();
    let mut config = testkit::edge_config(upstream, Some(&redis_cluster_url()));
    let prefix = format!("gwcluster-{}", uuid::Uuid::new_v4().simple());
    config.events_stream = format!("{prefix}:events");
    config.redis_key_prefix = prefix.clone();
    // A known consumer group name: `<prefix>-gateway-cluster-edge`.
    config.cache.replica_id = Some("cluster-edge".into());
    let cleanup = Cleanup {
        prefix,
        rules_file: None,
    };
    (config, cleanup)
}

/// Starts a gateway as `stockgate gateway` does: store and edge Redis from `redis_url`.
async fn start_on_cluster(config: Config) -> Edge {
    let shared = match Shared::connect(&config).await {
        Ok(shared) => shared,
        Err(error) => panic!(
            "the gateway did not start on {}: {error} ({error:?})",
            redis_cluster_url()
        ),
    };
    testkit::start_edge_shared(config, shared).await
}

/// A store of the test's own on the cluster, under the gateway's key prefix. A product it
/// configures is one the gateway can reserve only if the gateway's reservation store is the
/// cluster (an in-memory store would answer 404).
async fn store_of(edge: &Edge) -> RedisStore {
    let config = RedisStoreConfig {
        prefix: edge.config.redis_key_prefix.clone(),
        ..RedisStoreConfig::default()
    };
    RedisStore::connect(&redis_cluster_url(), config)
        .await
        .unwrap_or_else(|e| panic!("the cluster at {}: {e}", redis_cluster_url()))
}

/// Panics if the edge's Redis was marked down: every failed cache or limiter call does that
/// (and then falls back quietly), so this is what shows they all worked on the cluster.
fn assert_edge_redis_up(edge: &Edge) {
    let redis = edge.state.edge_redis.as_ref().expect("edge redis");
    assert!(
        redis.health.is_up(),
        "an edge Redis call failed on the cluster (see the warning in the log)"
    );
    assert_eq!(edge.state.metrics.redis_degraded.get(), 0);
}

/// Our own connection to the cluster, to look at the keys the gateway wrote.
async fn cluster_connection() -> RedisConnection {
    RedisConnection::connect(&redis_cluster_url(), &ConnectOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cluster at {}: {e}", redis_cluster_url()))
}

async fn key_slot(conn: &mut RedisConnection, key: &str) -> i64 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_through_the_gateway_moves_the_counters_on_the_cluster() {
    let upstream = Upstream::start();
    let (config, _cleanup) = cluster_config(upstream.addr);
    let edge = start_on_cluster(config).await;
    let store = store_of(&edge).await;
    let sku = Sku::parse("HOT").unwrap();
    store
        .configure_product(&sku, &product(10, 3))
        .await
        .unwrap();

    let alice = edge.idp.token("alice");
    let response = edge
        .http
        .post(edge.url("/api/v1/reservations"))
        .bearer_auth(&alice)
        .header("idempotency-key", "cluster-k1")
        .json(&json!({"sku": "HOT", "qty": 2}))
        .send()
        .await
        .unwrap();
    let (status, created) = body(response).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["qty"], 2, "{created}");

    let snapshot = store.snapshot(&sku).await.unwrap();
    assert_eq!((snapshot.available, snapshot.held), (8, 2));
    // The public stock view reads the same counters through the gateway.
    let (status, stock) = body(edge.get("/api/v1/stock/HOT").await).await;
    assert_eq!(status, 200, "{stock}");
    assert_eq!(
        (stock["available"].as_u64(), stock["held"].as_u64()),
        (Some(8), Some(2))
    );
    assert_edge_redis_up(&edge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn product_reads_are_cached_and_invalidated_on_the_cluster() {
    let upstream = Upstream::start();
    let mut conn = cluster_connection().await;
    // The list's and the product's copies must sit in different slots, so an invalidation
    // really deletes across slots (a fresh prefix is taken in the rare case they share one).
    let (config, cleanup, item_key, list_key) = loop {
        let (config, cleanup) = cluster_config(upstream.addr);
        let item_key = format!("{}:cache:{LIST_PATH}/HOT", config.redis_key_prefix);
        let list_key = format!("{}:cache:{LIST_PATH}", config.redis_key_prefix);
        if key_slot(&mut conn, &item_key).await != key_slot(&mut conn, &list_key).await {
            break (config, cleanup, item_key, list_key);
        }
    };
    let _cleanup = cleanup;
    let stream = config.events_stream.clone();
    let edge = start_on_cluster(config).await;
    let cache = edge.state.cache.clone().expect("the cache is on");
    let hits = || upstream.catalog.hits();
    let stored = |conn: &mut RedisConnection| {
        let mut conn = conn.clone();
        let (item_key, list_key) = (item_key.clone(), list_key.clone());
        async move {
            let item: bool = conn.exists(&item_key).await.unwrap();
            let list: bool = conn.exists(&list_key).await.unwrap();
            (item, list)
        }
    };
    let read = |path: &'static str| {
        let edge = &edge;
        async move {
            let response = edge.get(path).await;
            assert_eq!(response.status(), 200, "{path}");
            header(&response, "cache-status")
        }
    };

    // Miss, then hit; both copies land on the cluster.
    assert_eq!(
        read("/api/v1/products/HOT").await,
        "stockgate; fwd=miss; stored"
    );
    assert_eq!(read(LIST_PATH).await, "stockgate; fwd=miss; stored");
    assert!(read("/api/v1/products/HOT").await.contains("hit"));
    assert!(read(LIST_PATH).await.contains("hit"));
    assert_eq!(hits(), 2, "the hits did not go upstream");
    assert_eq!(stored(&mut conn).await, (true, true));

    // A product change made through this gateway: both keys deleted, one DEL each.
    cache.invalidate(&Sku::parse("HOT").unwrap()).await;
    assert_eq!(
        stored(&mut conn).await,
        (false, false),
        "deleted on the cluster"
    );
    assert_edge_redis_up(&edge);
    assert!(read("/api/v1/products/HOT").await.contains("fwd=miss"));
    assert!(read(LIST_PATH).await.contains("fwd=miss"));
    assert_eq!(hits(), 4);
    assert_eq!(stored(&mut conn).await, (true, true));

    // The outbox path: the gateway follows the events stream on the cluster with a plain
    // XREAD (no consumer group, issue 15.10); a `product.updated` event drops both copies.
    // The reader may not have found the stream's end yet when the first event is appended
    // (it would then start after it), so the event is appended again until it is seen: an
    // invalidation is idempotent.
    let publisher = StreamPublisher::connect(&redis_cluster_url(), &stream, 1_000)
        .await
        .unwrap();
    let event = json!({"sku": "HOT"}).to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last_published = Instant::now() - Duration::from_secs(1);
    let mut next_id = 1;
    while stored(&mut conn).await != (false, false) {
        assert!(
            Instant::now() < deadline,
            "no product.updated event dropped the copies within 10 s"
        );
        if last_published.elapsed() >= Duration::from_millis(500) {
            let published = publisher
                .publish(&[(next_id, topic::PRODUCT_UPDATED, event.as_str())])
                .await
                .unwrap();
            assert_eq!(published.appended, 1);
            next_id += 1;
            last_published = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(read("/api/v1/products/HOT").await.contains("fwd=miss"));
    assert_eq!(hits(), 5);
    assert!(read("/api/v1/products/HOT").await.contains("hit"));
    assert_eq!(hits(), 5);
    assert_edge_redis_up(&edge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_rule_refuses_after_its_burst_on_the_cluster() {
    let upstream = Upstream::start();
    let (mut config, mut cleanup) = cluster_config(upstream.addr);
    let rules = std::env::temp_dir().join(format!(
        "rules-cluster-{}.toml",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::write(
        &rules,
        "[[rule]]\nname = \"stock\"\nmethod = \"GET\"\npath = \"/api/v1/stock/{sku}\"\n\
         key = [\"ip\", \"sku\"]\nrate = 1\nperiod_secs = 60\nburst = 3\n",
    )
    .unwrap();
    cleanup.rules_file = Some(rules.clone());
    let _cleanup = cleanup;
    config.ratelimit.rules_file = Some(rules);
    let edge = start_on_cluster(config).await;
    let sku = Sku::parse("HOT").unwrap();
    store_of(&edge)
        .await
        .configure_product(&sku, &product(10, 3))
        .await
        .unwrap();

    for i in 0..3 {
        let response = edge.get("/api/v1/stock/HOT").await;
        assert_eq!(response.status(), 200, "request {i} is within the burst");
    }
    let limited = edge.get("/api/v1/stock/HOT").await;
    assert_eq!(header(&limited, "ratelimit-policy"), "1;w=60;burst=3");
    let (status, problem) = body(limited).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (429, Some("rate_limited"))
    );

    // Decided by the GCRA script on the cluster, not by the per-replica fallback.
    let decisions = |decision: &str| {
        edge.state
            .metrics
            .ratelimit_decisions
            .with_label_values(&["stock", decision])
            .get()
    };
    assert_eq!(decisions("allowed"), 3);
    assert_eq!(decisions("limited"), 1);
    assert_eq!(decisions("degraded"), 0);
    assert_edge_redis_up(&edge);
}
