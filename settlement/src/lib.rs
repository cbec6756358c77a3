//! The settlement service: the SQL side of stockgate, final authority on stock. It turns
//! confirmed reservations into orders in group-committed transactions, serves the buyer's
//! orders and the ops routes, relays the outbox to Redis and an AMQP broker (or applies it in
//! process), and runs the sweeper and reconciler under a leader lease.
//!
//! Embed it with [`start`] (the `stockgate` binary does, for `settlement` and `all-in-one`),
//! apply the schema with [`migrate`], and reconcile from the command line with
//! [`reconcile_once`].

#![forbid(unsafe_code)]

pub mod commit;
pub mod config;
pub mod error;
mod http;
pub mod leader;
pub mod maintenance;
pub mod metrics;
pub mod relay;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use backend_adapters::redis::lock::FencedLock;
use backend_adapters::redis::single_use::SingleUseIds;
use backend_adapters::redis::stream::StreamPublisher;
use backend_adapters::sql::{Db, SqlError};
use backend_adapters::telemetry::Telemetry;
use reservation_core::assertion::AssertionVerifier;
use reservation_core::{ReservationStore, TokenVerifier};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{CommitMode, SettlementConfig};
pub use error::{ApiError, StartError};
pub use maintenance::{MaintenanceError, ReconcileOptions, ReconcileReport};
pub use metrics::Metrics;
pub use relay::{AmqpSink, OutboxSink, RelayChannel, StoreEffects, StreamSink};

use crate::commit::Committer;
use crate::http::{AppState, StatusLock, UsedAssertions};
use crate::leader::Leader;

/// What the service is given rather than builds itself.
pub struct SettlementDeps {
    /// The reservation store: the Redis store in production, the in-memory store in the
    /// embedded default. Product upserts configure it; the relay returns cancelled units to
    /// it; the sweeper and reconciler work on it.
    pub store: Arc<dyn ReservationStore>,
    /// Verifies reservation tokens with the gateway's public key set.
    pub verifier: TokenVerifier,
    /// Verifies the gateway's service assertions: every request but the probes must carry
    /// one (`http::service_auth`). There is no "off": a settlement without the gateway's
    /// keys cannot be built.
    pub gateway_keys: AssertionVerifier,
    /// Where the metrics are registered (the gateway passes the one its admin port serves).
    pub registry: prometheus::Registry,
}

/// A started service.
pub struct RunningSettlement {
    /// The address the API listens on (the real port when configured with port 0).
    pub addr: SocketAddr,
    /// The admin listener's address (`/healthz`, `/readyz`, `/metrics`).
    pub admin_addr: SocketAddr,
    pub metrics: Metrics,
    /// The service's tracer (tests flush it to read what was exported).
    pub telemetry: Telemetry,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl RunningSettlement {
    /// Stops accepting requests, lets in-flight ones (and their batch) finish, stops the
    /// relay and maintenance tasks, and waits for all of it.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "settlement task ended abnormally");
            }
        }
        self.telemetry.shutdown().await;
    }
}

/// Starts the service: validates the config, connects to SQL and applies the migrations,
/// connects to Redis when configured, spawns the group-commit worker, the outbox relay and
/// the maintenance task, and listens on `config.listen_addr` (the API) and
/// `config.admin_listen_addr` (probes and metrics).
pub async fn start(
    config: SettlementConfig,
    deps: SettlementDeps,
) -> Result<RunningSettlement, StartError> {
    config.validate()?;
    let db = connect(&config).await?;
    let telemetry = Telemetry::start(&config.telemetry, &config.telemetry.settlement_service_name)?;
    let metrics = Metrics::new(&deps.registry)?;

    let redis_error = |e: &dyn std::fmt::Display| StartError::Redis(e.to_string());
    let (lock, publisher, used_assertions) = match &config.redis_url {
        Some(url) => {
            let lock = FencedLock::connect(url, &config.redis_key_prefix)
                .await
                .map_err(|e| redis_error(&e))?;
            let used = SingleUseIds::connect(url, &config.redis_key_prefix)
                .await
                .map_err(|e| redis_error(&e))?;
            let publisher = match config.outbox.publish_to_stream {
                true => Some(
                    StreamPublisher::connect(
                        url,
                        &config.events_stream(),
                        config.outbox.stream_maxlen,
                    )
                    .await
                    .map_err(|e| redis_error(&e))?,
                ),
                false => None,
            };
            (Some(lock), publisher, UsedAssertions::Redis(used))
        }
        None => (None, None, UsedAssertions::local()),
    };

    // The key is read here (file or environment), once. A broker that is down does not stop
    // the start: the relay connects on its first round and the outbox keeps the events.
    let amqp_sink = match &config.outbox.amqp {
        Some(amqp) => {
            let settings = amqp.settings()?;
            tracing::info!(endpoint = %settings.target.endpoint(), address = %settings.address, "outbox relay publishes to the AMQP broker");
            Some(AmqpSink {
                publisher: backend_adapters::amqp::AmqpPublisher::new(settings),
                session_per_order: amqp.session_per_order,
                metrics: metrics.clone(),
            })
        }
        None => None,
    };

    // Bind before spawning anything, so a taken port leaves no task behind.
    let (listener, addr) = bind(config.listen_addr).await?;
    let (admin_listener, admin_addr) = bind(config.admin_listen_addr).await?;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let (committer, worker) =
        Committer::start(db.clone(), metrics.clone(), telemetry.clone(), &config);
    tasks.extend(worker);

    let mut sinks: Vec<Arc<dyn OutboxSink>> = vec![Arc::new(StoreEffects {
        store: deps.store.clone(),
        metrics: metrics.clone(),
    })];
    if let Some(publisher) = publisher {
        sinks.push(Arc::new(StreamSink {
            publisher,
            metrics: metrics.clone(),
        }));
    }
    let lease = Duration::from_millis(config.maintenance.leader_lease_ms);
    let poll = Duration::from_millis(config.outbox.poll_interval_ms);
    tasks.push(tokio::spawn(relay::run(
        db.clone(),
        RelayChannel::redis(sinks, amqp_sink.is_some()),
        Leader::new(lock.clone(), "leader:outbox-relay", lease),
        metrics.clone(),
        config.outbox.batch,
        poll,
        shutdown_rx.clone(),
    )));
    // The broker's own loop and lease: an outage there never holds back the Redis side.
    if let Some(sink) = amqp_sink {
        tasks.push(tokio::spawn(relay::run(
            db.clone(),
            RelayChannel::broker(Arc::new(sink)),
            Leader::new(lock.clone(), "leader:outbox-broker-relay", lease),
            metrics.clone(),
            config.outbox.batch,
            poll,
            shutdown_rx.clone(),
        )));
    }
    if config.maintenance.enabled {
        tasks.push(tokio::spawn(maintenance::run(
            db.clone(),
            deps.store.clone(),
            Leader::new(lock.clone(), "leader:maintenance", lease),
            metrics.clone(),
            config.maintenance.clone(),
            shutdown_rx.clone(),
        )));
    }

    let status_lock = match lock {
        Some(lock) => StatusLock::Redis {
            lock,
            lease: Duration::from_millis(config.status_lock_lease_ms),
        },
        None => StatusLock::local(),
    };
    let state = Arc::new(AppState {
        db,
        store: deps.store,
        verifier: deps.verifier,
        gateway_keys: deps.gateway_keys,
        used_assertions,
        committer,
        metrics: metrics.clone(),
        status_lock,
        telemetry: telemetry.clone(),
    });
    // The servers go first in the list: once they return, the state (and with it the
    // committer's queue) is dropped, which ends the batch worker.
    let serve = |listener, router, what: &'static str| {
        let mut stop = shutdown_rx.clone();
        let server = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = stop.changed().await;
        });
        tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "settlement {what} server failed");
            }
        })
    };
    tasks.insert(0, serve(listener, http::router(state.clone()), "api"));
    tasks.insert(1, serve(admin_listener, http::admin_router(state), "admin"));
    tracing::info!(%addr, %admin_addr, mode = ?config.commit_mode, "settlement service listening");
    Ok(RunningSettlement {
        addr,
        admin_addr,
        metrics,
        telemetry,
        shutdown,
        tasks,
    })
}

async fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr), StartError> {
    let bind_error = |source| StartError::Bind { addr, source };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(bind_error)?;
    let local = listener.local_addr().map_err(bind_error)?;
    Ok((listener, local))
}

/// Applies the pending migrations, then opens the service's pool, whose every PostgreSQL
/// session runs under `config.db_limits`. Migrations run on a connection of their own without
/// those limits: DDL may legitimately take longer than a settlement statement.
async fn connect(config: &SettlementConfig) -> Result<Db, SqlError> {
    backend_adapters::sql::migrate(&config.database_url).await?;
    Db::connect_with_limits(
        &config.database_url,
        config.db_max_connections,
        config.db_limits,
    )
    .await
}

/// Applies the pending migrations to `database_url` (`stockgate migrate`).
pub async fn migrate(database_url: &str) -> Result<(), SqlError> {
    backend_adapters::sql::migrate(database_url).await
}

/// One reconcile run against the configured database (`stockgate reconcile [--repair]`):
/// resolves holds stuck in `confirming` past the configured grace, reports drift, and with
/// `repair` rebuilds drifted counters from SQL.
pub async fn reconcile_once(
    config: &SettlementConfig,
    store: Arc<dyn ReservationStore>,
    repair: bool,
) -> Result<ReconcileReport, MaintenanceError> {
    let db = connect(&SettlementConfig {
        db_max_connections: 2,
        ..config.clone()
    })
    .await?;
    let options = ReconcileOptions {
        repair,
        confirming_grace: Some(Duration::from_millis(
            config.maintenance.confirming_grace_ms,
        )),
    };
    let report = maintenance::reconcile(&db, store.as_ref(), None, options).await;
    db.close().await;
    report
}
