//! The edge's own Redis traffic (product cache, rate limits, cache invalidations) and whether
//! Redis is reachable. A probe pings Redis every `degraded.probe_interval_ms`; any failed call
//! or ping marks Redis down at once, and while it is down nothing waits on it: reservations
//! and confirms answer 503, limits use the per-replica share, the cache serves from memory.
//! The first good ping ends degraded mode (recovery needs no operator).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backend_adapters::redis::RedisError;
use backend_adapters::redis::cache::{RedisCache, edge_connection};
use backend_adapters::redis::ratelimit::RedisRateLimiter;
use prometheus::IntGauge;
use thiserror::Error;

use crate::config::{Config, ms};

/// Whether Redis answers, as last observed.
pub struct RedisHealth {
    up: AtomicBool,
    /// `stockgate_redis_degraded`: 1 while Redis is considered down.
    degraded: IntGauge,
}

impl RedisHealth {
    pub fn new(degraded: IntGauge) -> Self {
        degraded.set(0);
        RedisHealth {
            up: AtomicBool::new(true),
            degraded,
        }
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// A call failed or timed out: stop sending requests' work to Redis until a ping answers.
    pub fn mark_down(&self, what: &str, error: &dyn std::fmt::Display) {
        if self.up.swap(false, Ordering::Relaxed) {
            self.degraded.set(1);
            tracing::warn!(%error, what, "redis unreachable: degraded mode");
        }
    }

    pub fn mark_up(&self) {
        if !self.up.swap(true, Ordering::Relaxed) {
            self.degraded.set(0);
            tracing::info!("redis answers again: degraded mode ends");
        }
    }
}

/// Why the edge's Redis could not be set up.
#[derive(Debug, Error)]
pub enum EdgeRedisError {
    #[error("connecting")]
    Connect(#[source] RedisError),
    #[error("loading the rate-limit script")]
    LoadScript(#[source] RedisError),
}

/// The connections and state of the edge's Redis use; cheap to clone.
#[derive(Clone)]
pub struct EdgeRedis {
    pub url: String,
    pub cache: RedisCache,
    pub limiter: RedisRateLimiter,
    pub health: Arc<RedisHealth>,
    pub timeout: Duration,
    probe_every: Duration,
}

impl EdgeRedis {
    /// Connects (one multiplexed connection for cache and limits) and loads the GCRA script.
    /// `url` names one server or a Redis Cluster, plain or TLS, like the store's
    /// (`backend_adapters::redis::connection`): the edge runs on the same deployment.
    pub async fn connect(
        config: &Config,
        url: &str,
        degraded: IntGauge,
    ) -> Result<Self, EdgeRedisError> {
        let timeout = ms(config.degraded.redis_timeout_ms);
        let conn = edge_connection(url, timeout, ms(1_000))
            .await
            .map_err(EdgeRedisError::Connect)?;
        let limiter = RedisRateLimiter::new(conn.clone());
        limiter.load().await.map_err(EdgeRedisError::LoadScript)?;
        Ok(EdgeRedis {
            url: url.to_owned(),
            cache: RedisCache::new(conn, &format!("{}:cache", config.redis_key_prefix)),
            limiter,
            health: Arc::new(RedisHealth::new(degraded)),
            timeout,
            probe_every: ms(config.degraded.probe_interval_ms),
        })
    }

    /// Pings forever, flipping the health flag both ways.
    pub async fn probe(self) {
        let mut tick = tokio::time::interval(self.probe_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match tokio::time::timeout(self.timeout, self.cache.ping()).await {
                Ok(Ok(())) => self.health.mark_up(),
                Ok(Err(error)) => self.health.mark_down("ping", &error),
                Err(_) => self.health.mark_down("ping", &"timed out"),
            }
        }
    }
}
