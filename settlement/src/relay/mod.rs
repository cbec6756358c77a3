//! The outbox relay: publishes unpublished outbox rows in id order to its sinks, then marks
//! them published. At least once with stable ids: a crash between delivering and marking
//! delivers the same rows again, which the stream publisher skips (an entry `<outbox id>-0`
//! with that id is already there) and the store effects ignore (`return_cancelled` is once per
//! reservation id). Nothing is marked published that was not delivered to every sink.
//!
//! Sinks: [`StoreEffects`] applies the Redis side of an event itself (a cancellation returns
//! its units with `return_cancelled`), so stock comes back even when no one consumes the
//! stream; [`StreamSink`] appends to the Redis stream for the gateway (cache invalidation) and
//! any other consumer group. With Redis both run; in the embedded mode (no Redis) only
//! `StoreEffects` does, against the in-memory store: the events are applied in process.
//! [`AmqpSink`] (`[settlement.outbox.amqp]`) publishes to an AMQP 1.0 broker (Azure Service
//! Bus) next to the stream, or instead of it (`outbox.publish_to_stream = false`).
//!
//! The Redis side and the broker are two [`RelayChannel`]s, each a loop of its own with its
//! own mark on the row ([`Delivery`]): a broker that is down, full or refusing a message holds
//! back only the broker's channel, never the store effects (cancelled units return to stock
//! through a broker outage) or the gateway's cache invalidation.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backend_adapters::redis::stream::StreamPublisher;
use backend_adapters::sql::outbox::{self, Delivery, OutboxEvent, topic};
use backend_adapters::sql::{Db, SqlError};
use reservation_core::{BuyerId, Qty, ReservationId, ReservationStore};
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::watch;

use crate::leader::Leader;
use crate::metrics::Metrics;

mod amqp;
pub use amqp::{AmqpSink, message_for};

#[derive(Debug, Error)]
pub enum RelayError {
    #[error("database: {0}")]
    Database(#[from] SqlError),
    #[error("sink {sink}: {message}")]
    Sink { sink: &'static str, message: String },
}

/// Where published events go. `deliver` must be idempotent per event id.
#[async_trait]
pub trait OutboxSink: Send + Sync {
    async fn deliver(&self, events: &[OutboxEvent]) -> Result<(), RelayError>;
}

/// Appends events to the Redis stream. Every event is appended (or was already there after
/// a relay crash); one whose id the stream had passed is appended with a Redis-assigned id,
/// counted in `stockgate_outbox_stream_reassigned_total` and logged, never dropped.
pub struct StreamSink {
    pub publisher: StreamPublisher,
    pub metrics: Metrics,
}

#[async_trait]
impl OutboxSink for StreamSink {
    async fn deliver(&self, events: &[OutboxEvent]) -> Result<(), RelayError> {
        let items: Vec<(i64, &str, &str)> = events
            .iter()
            .map(|e| (e.id, e.topic.as_str(), e.payload.as_str()))
            .collect();
        let published = self
            .publisher
            .publish(&items)
            .await
            .map_err(|e| RelayError::Sink {
                sink: "stream",
                message: e.to_string(),
            })?;
        if published.reassigned > 0 {
            self.metrics
                .outbox_stream_reassigned
                .inc_by(published.reassigned as u64);
            tracing::warn!(
                events = published.reassigned,
                "the events stream is ahead of this outbox (a restored database, or another \
                 deployment on the same stream): events appended with Redis-assigned ids"
            );
        }
        Ok(())
    }
}

/// Applies events to the reservation store: `order.cancelled` → `return_cancelled`.
pub struct StoreEffects {
    pub store: Arc<dyn ReservationStore>,
    pub metrics: Metrics,
}

#[derive(Deserialize)]
struct CancelledOrder {
    reservation_id: String,
    user_sub: String,
    qty: u32,
}

#[async_trait]
impl OutboxSink for StoreEffects {
    async fn deliver(&self, events: &[OutboxEvent]) -> Result<(), RelayError> {
        for event in events.iter().filter(|e| e.topic == topic::ORDER_CANCELLED) {
            let parsed = serde_json::from_str::<CancelledOrder>(&event.payload)
                .ok()
                .and_then(|c| {
                    Some((
                        ReservationId::parse(&c.reservation_id).ok()?,
                        BuyerId::parse(&c.user_sub).ok()?,
                        Qty::new(c.qty).ok()?,
                    ))
                });
            let Some((rid, buyer, qty)) = parsed else {
                // A payload this code wrote cannot be malformed; skipping beats blocking the
                // relay forever behind one event.
                tracing::error!(event_id = event.id, "malformed order.cancelled event");
                continue;
            };
            match self.store.return_cancelled(&rid, &buyer, qty).await {
                Ok(_) => {}
                // Only a store outage is worth retrying. Anything else (the store lost the
                // SKU or the hold after a wipe or a failover) will not heal by retrying and
                // must not block every later event: it is counted and logged as an error, the
                // reconciler reports the drift and its repair rebuilds the counters from SQL,
                // which already counts the cancellation. (A hold still `confirming` is not
                // such a case: `return_cancelled` finishes it first.)
                Err(e) if e.status_and_code().0 != 503 => {
                    self.metrics.relay_effects_failed.inc();
                    tracing::error!(event_id = event.id, reservation_id = %rid, error = %e, "cancellation not applied to the store; run `stockgate reconcile --repair`");
                }
                Err(e) => {
                    return Err(RelayError::Sink {
                        sink: "store",
                        message: e.to_string(),
                    });
                }
            }
        }
        Ok(())
    }
}

/// One loop of the relay: the rows without its [`Delivery`] mark go to its sinks.
pub struct RelayChannel {
    pub delivery: Delivery,
    /// The marks set once every sink delivered: its own, and on the Redis channel the
    /// broker's too while no broker is configured (so configuring one later does not replay
    /// the history to it).
    pub marks: Vec<Delivery>,
    pub sinks: Vec<Arc<dyn OutboxSink>>,
}

impl RelayChannel {
    /// The store effects and the stream; `broker_configured` says whether the broker has a
    /// channel of its own.
    pub fn redis(sinks: Vec<Arc<dyn OutboxSink>>, broker_configured: bool) -> Self {
        let marks = if broker_configured {
            vec![Delivery::Redis]
        } else {
            vec![Delivery::Redis, Delivery::Broker]
        };
        RelayChannel {
            delivery: Delivery::Redis,
            marks,
            sinks,
        }
    }

    pub fn broker(sink: Arc<dyn OutboxSink>) -> Self {
        RelayChannel {
            delivery: Delivery::Broker,
            marks: vec![Delivery::Broker],
            sinks: vec![sink],
        }
    }

    fn name(&self) -> &'static str {
        match self.delivery {
            Delivery::Redis => "outbox_relay",
            Delivery::Broker => "outbox_broker_relay",
        }
    }
}

/// One round: delivers up to `batch` events the channel has not delivered to every one of
/// its sinks, in id order, then marks them. Returns how many were delivered.
pub async fn relay_once(
    db: &Db,
    channel: &RelayChannel,
    batch: usize,
) -> Result<usize, RelayError> {
    let events = outbox::unpublished(db, channel.delivery, batch as i64).await?;
    if events.is_empty() {
        return Ok(0);
    }
    for sink in &channel.sinks {
        sink.deliver(&events).await?;
    }
    let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
    outbox::mark_published(db, &channel.marks, &ids).await?;
    Ok(events.len())
}

/// After a failed round the relay waits `poll × 2^failures`, up to this, before the next: a
/// sink that is down (the broker) is not asked ten times a second, and the sinks that did
/// deliver (store effects, the stream; all idempotent) are not re-run as often.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// A channel's task: every poll interval, while leader, drains the channel. Every replica
/// reports the channel's lag, leader or not: it is a fact of SQL, and a replica that cannot
/// lead (Redis down, so no lease) is exactly when the lag grows and must be seen.
pub(crate) async fn run(
    db: Db,
    channel: RelayChannel,
    leader: Leader,
    metrics: Metrics,
    batch: usize,
    poll: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures: u32 = 0;
    let mut retry_at = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let leading = leader.is_leader().await;
        metrics.leader(channel.name(), leading);
        if leading && tokio::time::Instant::now() >= retry_at {
            match drain(&db, &channel, &leader, &metrics, batch).await {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(
                            channel = channel.name(),
                            failed_rounds = failures,
                            "outbox relay delivers again"
                        );
                    }
                    failures = 0;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    // The first failure and then about one in ten: an outage is seen in the
                    // logs without a line per round.
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::warn!(channel = channel.name(), error = %e, failed_rounds = failures, "outbox relay round failed");
                    }
                    let delay = poll
                        .saturating_mul(1 << failures.min(16))
                        .min(MAX_RETRY_DELAY.max(poll));
                    retry_at = tokio::time::Instant::now() + delay;
                }
            }
        }
        match outbox::lag(&db, channel.delivery).await {
            Ok((pending, age_ms)) => {
                let (pending_gauge, lag_gauge) = match channel.delivery {
                    Delivery::Redis => (&metrics.outbox_pending, &metrics.outbox_lag_seconds),
                    Delivery::Broker => (
                        &metrics.outbox_broker_pending,
                        &metrics.outbox_broker_lag_seconds,
                    ),
                };
                pending_gauge.set(pending);
                lag_gauge.set(age_ms as f64 / 1000.0);
            }
            Err(e) => tracing::warn!(error = %e, "outbox lag unknown"),
        }
    }
}

/// Relays rounds until the channel is drained, a round fails or the lease is lost: the lease
/// is renewed before every round, so a long backlog (after an outage) is never relayed by two
/// replicas at once past the lease.
async fn drain(
    db: &Db,
    channel: &RelayChannel,
    leader: &Leader,
    metrics: &Metrics,
    batch: usize,
) -> Result<(), RelayError> {
    loop {
        let n = relay_once(db, channel, batch).await?;
        if channel.delivery == Delivery::Redis {
            metrics.outbox_published.inc_by(n as u64);
        }
        if n < batch || !leader.is_leader().await {
            return Ok(());
        }
    }
}
