//! The real services tests run against, with one policy: each URL comes from its environment
//! variable (`scripts/test.sh` sets them all), else the local default of a development
//! machine; a service that does not answer fails the test with the URL and the variable to
//! set. No test skips because a service is missing.
//!
//! Tests share the services, never data: each takes a scratch key prefix or schema of its own.

use backend_adapters::redis::connection::RedisTarget;
use redis::aio::MultiplexedConnection;

/// `REDIS_URL`, else the local Redis.
pub fn redis_url() -> String {
    url_from("REDIS_URL", "redis://127.0.0.1:6379")
}

/// `DATABASE_URL`, else the local PostgreSQL's `test` database.
pub fn database_url() -> String {
    url_from(
        "DATABASE_URL",
        "postgres://postgres:postgres@127.0.0.1:5432/test",
    )
}

/// `REDIS_CLUSTER_URL`: a Redis Cluster has no local default (`scripts/redis-cluster.sh
/// start` runs one on ports 7001–7003, and `scripts/test.sh` sets the variable).
pub fn redis_cluster_url() -> String {
    std::env::var("REDIS_CLUSTER_URL").unwrap_or_else(|_| {
        panic!(
            "REDIS_CLUSTER_URL must be set for this test: run `scripts/redis-cluster.sh start` \
             and set REDIS_CLUSTER_URL=redis+cluster://127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003 \
             (scripts/test.sh does both)"
        )
    })
}

/// The plain URL of every seed node [`redis_cluster_url`] names (every master, for the local
/// cluster).
pub fn redis_cluster_nodes() -> Vec<String> {
    let url = redis_cluster_url();
    match RedisTarget::parse(&url) {
        Ok(target) if target.cluster => target.nodes,
        Ok(_) => panic!("REDIS_CLUSTER_URL={url} does not name a cluster (redis+cluster://…)"),
        Err(e) => panic!("REDIS_CLUSTER_URL={url} is not a redis url: {e}"),
    }
}

/// Panics unless every node of [`redis_cluster_nodes`] answers `CLUSTER INFO` with
/// `cluster_state:ok`, naming the command that starts the local cluster.
pub fn assert_redis_cluster_up() {
    for node in redis_cluster_nodes() {
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

/// The value of `variable`, which the test cannot run without.
pub fn required_env(variable: &str) -> String {
    std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} must be set for this test (scripts/test.sh sets it)")
    })
}

fn url_from(variable: &str, local_default: &str) -> String {
    std::env::var(variable)
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| local_default.to_owned())
}

/// A Redis key prefix no other test uses: `sgtest-<label>-<random>`.
pub fn scratch_prefix(label: &str) -> String {
    format!("sgtest-{label}-{}", uuid::Uuid::new_v4().simple())
}

/// A URL whose connections all use a fresh, empty PostgreSQL schema (`sgtest_<label>_…`),
/// migrated by whoever connects first.
pub async fn scratch_schema(label: &str) -> String {
    let url = database_url();
    backend_adapters::sql::scratch_schema_url(&url, label)
        .await
        .unwrap_or_else(|e| {
            panic!("a scratch schema on PostgreSQL at {url} (set DATABASE_URL): {e}")
        })
}

/// A plain connection to the Redis at [`redis_url`], for looking at keys behind a store's back.
pub async fn redis_connection() -> MultiplexedConnection {
    let url = redis_url();
    let connect = async {
        redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await
    };
    connect
        .await
        .unwrap_or_else(|e| panic!("Redis at {url} is unreachable (set REDIS_URL): {e}"))
}

/// Every key under `prefix` on the Redis at [`redis_url`], sorted.
pub async fn keys_under(prefix: &str) -> Vec<String> {
    scan_under(&mut redis_connection().await, prefix).await
}

/// Every key under `prefix` that `conn` sees, sorted.
pub async fn scan_under(conn: &mut MultiplexedConnection, prefix: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap_or_else(|e| panic!("SCAN failed: {e}"));
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys
}

/// Deletes every key under `prefix` (a test's clean-up, or "Redis lost its data" for one
/// test without a FLUSHALL that would wipe the keys of the tests beside it). Returns how many.
pub async fn delete_keys_under(prefix: &str) -> usize {
    let keys = keys_under(prefix).await;
    let mut conn = redis_connection().await;
    let mut deleted = 0;
    for chunk in keys.chunks(500) {
        deleted += redis::cmd("DEL")
            .arg(chunk)
            .query_async::<usize>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("DEL failed: {e}"));
    }
    deleted
}

/// Deletes every key under `prefix` on each of `nodes` (plain Redis URLs: one server, or every
/// master of a cluster), blocking — for `Drop`, which cannot wait. One key per UNLINK, so that
/// keys of different cluster slots never meet in one command. A node that does not answer
/// keeps its keys: clean-up never fails a test.
pub fn unlink_keys_under(nodes: &[String], prefix: &str) {
    use redis::Commands;
    let pattern = format!("{prefix}:*");
    for node in nodes {
        let Ok(mut conn) = redis::Client::open(node.as_str()).and_then(|c| c.get_connection())
        else {
            continue;
        };
        let keys: Vec<String> = match conn.scan_match(&pattern) {
            Ok(iter) => iter.filter_map(Result::ok).collect(),
            Err(_) => continue,
        };
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.unlink(key).ignore();
        }
        let _ = pipe.exec(&mut conn);
    }
}
