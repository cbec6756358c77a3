//! The shared tier of the gateway's product cache: plain byte values under one key prefix,
//! written with an expiry, read and dropped by key. The gateway decides what an entry means
//! (freshness, ETag, stale windows); this module only moves bytes, each call bounded by the
//! connection's response timeout so a dead Redis cannot hold a request.

use std::time::Duration;

use redis::{AsyncCommands, RedisError};

use super::connection::{ConnectOptions, RedisConnection};

/// A multiplexed connection for the edge's own Redis traffic (cache, limits), to one server
/// or a Redis Cluster as `url` names it (see [`RedisConnection`]). `response_timeout` bounds
/// every reply; `connect_timeout` every (re)connect.
pub async fn edge_connection(
    url: &str,
    response_timeout: Duration,
    connect_timeout: Duration,
) -> Result<RedisConnection, RedisError> {
    let options = ConnectOptions {
        response_timeout: Some(response_timeout),
        connect_timeout: Some(connect_timeout),
        // No retry loop inside a request: the caller falls back at once and a health probe
        // notices recovery.
        retries: Some(1),
    };
    RedisConnection::connect(url, &options).await
}

/// Cached bodies in Redis; cheap to clone.
#[derive(Clone)]
pub struct RedisCache {
    conn: RedisConnection,
    prefix: String,
}

impl RedisCache {
    /// Entries live under `<prefix>:<name>`.
    pub fn new(conn: RedisConnection, prefix: &str) -> Self {
        RedisCache {
            conn,
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    pub async fn get(&self, name: &str) -> Result<Option<Vec<u8>>, RedisError> {
        let mut conn = self.conn.clone();
        conn.get(self.key(name)).await
    }

    /// Stores `value`; Redis drops it after `keep` (the whole fresh + stale lifetime).
    pub async fn put(&self, name: &str, value: &[u8], keep: Duration) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let ms = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX).max(1);
        redis::cmd("SET")
            .arg(self.key(name))
            .arg(value)
            .arg("PX")
            .arg(ms)
            .query_async(&mut conn)
            .await
    }

    /// Drops entries. On one server the `DEL`s go in one pipeline (one round trip); on a
    /// cluster the keys (the list's and a product's) usually hash to different slots, which a
    /// pipeline may not span, so each key gets its own `DEL`, routed to the node owning it.
    pub async fn delete(&self, names: &[&str]) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        if conn.is_cluster() {
            for name in names {
                let _: i64 = conn.del(self.key(name)).await?;
            }
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for name in names {
            pipe.del(self.key(name)).ignore();
        }
        pipe.query_async(&mut conn).await
    }

    /// `PING`, for the gateway's Redis health probe. On a cluster redis-rs sends it to every
    /// node and succeeds only if all answer, so one unreachable master counts as down.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
    }

    /// Creates consumer group `group` on `stream` starting at new entries (`$`), unless it
    /// exists: a replica starting fresh need not replay old invalidations.
    pub async fn ensure_group_at_end(&self, stream: &str, group: &str) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let created: Result<(), RedisError> = conn.xgroup_create_mkstream(stream, group, "$").await;
        match created {
            Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
            other => other,
        }
    }
}
