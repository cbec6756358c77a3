//! Two questions kept apart. **Can this pod serve?** `/readyz` on the public listener: the
//! process answering it has its configuration loaded and its listener up, so it is ready
//! unless it is draining after SIGTERM. It does no I/O and names no dependency: when Redis or
//! settlement is down every replica is down with it, and taking them all out of the load
//! balancer would turn degraded mode (stale catalog, 503 with `Retry-After`, holds kept) into
//! connection refused. **How are the dependencies?** [`monitor`] checks Redis, the settlement
//! service and its database in the background, sets `stockgate_dependency_up{dependency}`,
//! and keeps the last result for `GET /admin/health` on the admin listener (ops only).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use prometheus::IntGaugeVec;
use reservation_core::wire::paths;
use serde::Serialize;

use crate::edge::EdgeState;

/// One dependency as last checked.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DependencyStatus {
    pub up: bool,
    /// What was seen, in words chosen here (never a raw error text).
    pub detail: &'static str,
}

/// This pod's serving state and its dependencies' last check.
pub struct Health {
    draining: AtomicBool,
    dependencies: Mutex<Snapshot>,
    gauge: IntGaugeVec,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Snapshot {
    /// Wall-clock ms of the last check; 0 before the first.
    pub checked_at_ms: u64,
    pub dependencies: BTreeMap<&'static str, DependencyStatus>,
}

impl Health {
    /// `gauge` is `stockgate_dependency_up{dependency}`.
    pub fn new(gauge: IntGaugeVec) -> Self {
        Health {
            draining: AtomicBool::new(false),
            dependencies: Mutex::new(Snapshot::default()),
            gauge,
        }
    }

    /// Graceful shutdown has begun: `/readyz` answers 503 so the load balancer stops sending
    /// new requests while in-flight ones finish.
    pub fn start_draining(&self) {
        if !self.draining.swap(true, Ordering::Relaxed) {
            tracing::info!("draining: /readyz answers 503 until the process exits");
        }
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The last dependency check.
    pub fn snapshot(&self) -> Snapshot {
        self.dependencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record(&self, snapshot: Snapshot) {
        for (name, status) in &snapshot.dependencies {
            if let Ok(gauge) = self.gauge.get_metric_with_label_values(&[name]) {
                gauge.set(i64::from(status.up));
            }
        }
        *self.dependencies.lock().unwrap_or_else(|e| e.into_inner()) = snapshot;
    }
}

/// Checks the dependencies every `every`, forever (spawned with the other background tasks).
/// `settlement_base` is `http://host:port` of settlement's admin listener.
pub async fn monitor(state: Arc<EdgeState>, settlement_base: String, every: Duration) {
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(1))
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "dependency monitor: no http client; not checking");
            return;
        }
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let snapshot = check(&state, &http, &settlement_base).await;
        state.health.record(snapshot);
    }
}

/// One round of checks.
async fn check(state: &EdgeState, http: &reqwest::Client, settlement_base: &str) -> Snapshot {
    let mut dependencies = BTreeMap::new();
    if let Some(redis) = &state.edge_redis {
        // The edge's probe pings Redis every `degraded.probe_interval_ms`; no call here.
        let mut status = if redis.health.is_up() {
            up("answers pings")
        } else {
            down("unreachable: degraded mode")
        };
        // Reload Lua scripts a restarted or flushed Redis lost, before a buyer needs them.
        if status.up {
            match tokio::time::timeout(Duration::from_secs(1), state.store.ensure_ready()).await {
                Ok(Ok(false)) => {}
                Ok(Ok(true)) => {
                    tracing::warn!("redis had lost the lua scripts (restart or flush); reloaded")
                }
                Ok(Err(error)) => {
                    tracing::warn!(%error, "checking the lua scripts failed");
                    status = down("lua scripts could not be checked");
                }
                Err(_) => status = down("lua script check timed out"),
            }
        }
        dependencies.insert("redis", status);
    }
    let settlement_up = state.upstream.is_healthy();
    dependencies.insert(
        "settlement",
        if settlement_up {
            up("health check passes")
        } else {
            down("health check fails")
        },
    );
    // Settlement's `/readyz` (on its admin listener) pings its database: the one SQL check
    // the gateway can make.
    let database = match http
        .get(format!("{settlement_base}{}", paths::READYZ))
        .send()
        .await
    {
        Ok(response) if response.status().is_success() => up("settlement reaches it"),
        Ok(_) => down("settlement cannot reach it"),
        Err(_) => down("unknown: settlement unreachable"),
    };
    dependencies.insert("database", database);
    Snapshot {
        checked_at_ms: crate::cache::now_ms(),
        dependencies,
    }
}

fn up(detail: &'static str) -> DependencyStatus {
    DependencyStatus { up: true, detail }
}

fn down(detail: &'static str) -> DependencyStatus {
    DependencyStatus { up: false, detail }
}

/// Turns Pingora's graceful-shutdown broadcast into [`Health::start_draining`].
pub struct DrainWatch(pub Arc<Health>);

#[async_trait]
impl BackgroundService for DrainWatch {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                // The server is gone without a broadcast: it is not serving either.
                break;
            }
        }
        self.0.start_draining();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Arc<Health> {
        let gauge = IntGaugeVec::new(prometheus::Opts::new("up", "up"), &["dependency"]).unwrap();
        Arc::new(Health::new(gauge))
    }

    #[tokio::test]
    async fn the_shutdown_broadcast_starts_draining() {
        let health = health();
        let (broadcast, watch) = tokio::sync::watch::channel(false);
        let watcher = tokio::spawn({
            let health = health.clone();
            async move { DrainWatch(health).start(watch).await }
        });
        tokio::task::yield_now().await;
        assert!(!health.is_draining());
        broadcast.send(true).unwrap();
        watcher.await.unwrap();
        assert!(health.is_draining());
    }

    #[test]
    fn a_check_sets_one_gauge_per_dependency() {
        let health = health();
        let mut dependencies = BTreeMap::new();
        dependencies.insert("settlement", down("health check fails"));
        dependencies.insert("redis", up("answers pings"));
        health.record(Snapshot {
            checked_at_ms: 1,
            dependencies,
        });
        let gauge = |name| health.gauge.with_label_values(&[name]).get();
        assert_eq!((gauge("settlement"), gauge("redis")), (0, 1));
        assert!(!health.snapshot().dependencies["settlement"].up);
    }
}
