//! Shared setup of the Redis Cluster tests: the local 3-master cluster that
//! `scripts/redis-cluster.sh start` runs (`scripts/test.sh` starts it), reached through
//! `REDIS_CLUSTER_URL` (`testkit::redis_cluster_url`: scripts/test.sh sets it to
//! `redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003`). A cluster that is down or
//! not healthy, or a variable that is not set, fails the test loudly; these tests never skip.

#![allow(dead_code)] // each test crate uses its own part of this module

use backend_adapters::redis::RedisStore;
use testkit::{assert_redis_cluster_up, redis_cluster_nodes, redis_cluster_url};

use crate::redis_support::{SelfCleaningStore, self_cleaning_store_at, store_at};

/// A cluster store on `prefix`.
pub async fn cluster_store_on(prefix: &str) -> RedisStore {
    assert_redis_cluster_up();
    store_at(&redis_cluster_url(), prefix).await
}

/// A cluster store on a fresh prefix whose keys are deleted on every node when it is dropped.
pub async fn self_cleaning_cluster_store() -> SelfCleaningStore {
    assert_redis_cluster_up();
    self_cleaning_store_at(&redis_cluster_url(), redis_cluster_nodes()).await
}

/// How many keys under `prefix` each node holds (node order of `redis_cluster_nodes`).
pub fn keys_per_node(prefix: &str) -> Vec<usize> {
    use redis::Commands;
    redis_cluster_nodes()
        .iter()
        .map(|node| {
            let mut conn = redis::Client::open(node.as_str())
                .and_then(|c| c.get_connection())
                .unwrap_or_else(|e| panic!("{node}: {e}"));
            let keys: Vec<String> = conn
                .scan_match(format!("{prefix}:*"))
                .unwrap_or_else(|e| panic!("SCAN on {node}: {e}"))
                .filter_map(Result::ok)
                .collect();
            keys.len()
        })
        .collect()
}

/// Deletes every key under `prefix` on every node.
pub fn clean_up_cluster(prefix: &str) {
    testkit::unlink_keys_under(&redis_cluster_nodes(), prefix);
}
