//! The shared half of the gateway's rate limiter: one GCRA decision per call, made atomically
//! in Redis by `lua/gcra.lua` with Redis `TIME` as the clock, so every replica enforces the
//! same budget. The gateway keeps its own in-process limiter in front of this one.

use std::time::Duration;

use redis::{ErrorKind, RedisError, Script, ServerErrorKind};

use super::connection::RedisConnection;
use super::scripts::evalsha;

/// One decision of the shared limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraDecision {
    pub allowed: bool,
    /// Requests still admitted right now.
    pub remaining: u64,
    /// Wait before the next request can pass (zero when this one was allowed).
    pub retry_after: Duration,
    /// Until the key is idle again (its full burst available).
    pub reset_after: Duration,
}

/// GCRA over one Redis connection; cheap to clone.
#[derive(Clone)]
pub struct RedisRateLimiter {
    conn: RedisConnection,
    script: std::sync::Arc<Script>,
}

impl RedisRateLimiter {
    pub fn new(conn: RedisConnection) -> Self {
        RedisRateLimiter {
            conn,
            script: std::sync::Arc::new(Script::new(include_str!("lua/gcra.lua"))),
        }
    }

    /// Loads the script (at start; a flushed Redis is handled per call by `NOSCRIPT`). On a
    /// cluster redis-rs sends `SCRIPT LOAD` to every node, so the `EVALSHA` of any key finds it.
    pub async fn load(&self) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        self.script.load_async(&mut conn).await.map(|_| ())
    }

    /// One request against `key`, which admits `burst` at once and one per `interval`.
    pub async fn check(
        &self,
        key: &str,
        interval: Duration,
        burst: u64,
    ) -> Result<GcraDecision, RedisError> {
        let interval_us = u64::try_from(interval.as_micros())
            .unwrap_or(u64::MAX)
            .max(1)
            .to_string();
        let burst = burst.max(1).to_string();
        let cmd = evalsha(&self.script, &[key], &[&interval_us, &burst]);
        let mut conn = self.conn.clone();
        let reply: Vec<i64> = match cmd.query_async(&mut conn).await {
            Ok(reply) => reply,
            Err(err) if err.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                self.script.load_async(&mut conn).await?;
                cmd.query_async(&mut conn).await?
            }
            Err(err) => return Err(err),
        };
        let at = |i: usize| reply.get(i).copied().unwrap_or(0).max(0) as u64;
        Ok(GcraDecision {
            allowed: at(0) == 1,
            remaining: at(1),
            retry_after: Duration::from_micros(at(2)),
            reset_after: Duration::from_micros(at(3)),
        })
    }
}
