//! Shared setup of the Redis Cluster tests: the local 3-master cluster that
//! `scripts/redis-cluster.sh start` runs (`scripts/test.sh` starts it), reached through
//! `REDIS_CLUSTER_URL` (default `redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003`).
//! A cluster that is down or not healthy fails the test loudly; these tests never skip.

#![allow(dead_code)] // each test crate uses its own part of this module

use backend_adapters::redis::RedisStore;
use backend_adapters::redis::connection::RedisTarget;

use crate::redis_support::{SelfCleaningStore, self_cleaning_store_at, store_at};

pub const DEFAULT_CLUSTER_URL: &str =
    "redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";

pub fn cluster_url() -> String {
    std::env::var("REDIS_CLUSTER_URL").unwrap_or_else(|_| DEFAULT_CLUSTER_URL.to_owned())
}

/// The plain URL of every seed node of the cluster (every master, for the local cluster).
pub fn cluster_nodes() -> Vec<String> {
    let url = cluster_url();
    match RedisTarget::parse(&url) {
        Ok(target) if target.cluster => target.nodes,
        Ok(_) => panic!("REDIS_CLUSTER_URL={url} does not name a cluster (redis+cluster://…)"),
        Err(e) => panic!("REDIS_CLUSTER_URL={url} is not a redis url: {e}"),
    }
}

/// Panics unless every node answers `CLUSTER INFO` with `cluster_state:ok`, naming the
/// command that starts the cluster.
pub fn assert_cluster_up() {
    for node in cluster_nodes() {
        let info: Result<String, _> = redis::Client::open(node.as_str())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query(&mut c));
        match info {
            Ok(info) if info.contains("cluster_state:ok") => {}
            Ok(info) => panic!("Redis Cluster node {node} is not healthy:\n{info}"),
            Err(e) => panic!(
                "Redis Cluster node {node} is unreachable: {e}. Start the local cluster with \
                 `scripts/redis-cluster.sh start` (scripts/test.sh does) or set REDIS_CLUSTER_URL."
            ),
        }
    }
}

/// A cluster store on `prefix`.
pub async fn cluster_store_on(prefix: &str) -> RedisStore {
    assert_cluster_up();
    store_at(&cluster_url(), prefix).await
}

/// A cluster store on a fresh prefix whose keys are deleted on every node when it is dropped.
pub async fn self_cleaning_cluster_store() -> SelfCleaningStore {
    assert_cluster_up();
    self_cleaning_store_at(&cluster_url(), cluster_nodes()).await
}

/// How many keys under `prefix` each node holds (node order of [`cluster_nodes`]).
pub fn keys_per_node(prefix: &str) -> Vec<usize> {
    use redis::Commands;
    cluster_nodes()
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
    crate::redis_support::unlink_all_under(&cluster_nodes(), prefix);
}
