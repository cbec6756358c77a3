//! The settlement service's Prometheus metrics, registered in the registry the caller passes
//! (the gateway serves one registry on its admin port; a standalone settlement serves its own
//! at `GET /metrics`).

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric of the service. Cheap to clone (prometheus metrics are `Arc`s inside).
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `stockgate_settlements_total{outcome}`: created, existing, oversell, unknown_sku, purchase_limit,
    /// released, rejected, busy (503 `database_busy`: SQL gave up in bounded time), error.
    pub settlements: IntCounterVec,
    /// `stockgate_oversell_prevented_total`: orders SQL refused because Redis drifted.
    pub oversell_prevented: IntCounter,
    pub batch_size: Histogram,
    pub commit_seconds: Histogram,
    pub outbox_pending: IntGauge,
    pub outbox_lag_seconds: prometheus::Gauge,
    /// The same two for the broker's channel (`[settlement.outbox.amqp]`; 0 without one).
    pub outbox_broker_pending: IntGauge,
    pub outbox_broker_lag_seconds: prometheus::Gauge,
    pub outbox_published: IntCounter,
    /// `stockgate_reconcile_sold_drift{sku}`: Redis sold + confirming − SQL sold, less what
    /// confirms in flight and cancellations not yet relayed explain.
    pub drift_sold: IntGaugeVec,
    /// `stockgate_reconcile_unbalanced{sku}`: 1 when Redis counters do not add up to total stock.
    pub drift_unbalanced: IntGaugeVec,
    pub confirming_resolved: IntCounterVec,
    pub holds_expired: IntCounter,
    /// `stockgate_relay_store_effects_failed_total`: events whose store effect could not be
    /// applied and will not be retried (the drift report shows the units; repair fixes them).
    pub relay_effects_failed: IntCounter,
    /// `stockgate_outbox_stream_reassigned_total`: events appended with a Redis-assigned id
    /// because the stream was ahead of the outbox (restored database, shared stream).
    pub outbox_stream_reassigned: IntCounter,
    /// `stockgate_outbox_amqp_published_total`: events the AMQP broker accepted (a batch
    /// sent again after a failure counts again: the broker dedupes by message id).
    pub outbox_amqp_published: IntCounter,
    /// `stockgate_outbox_amqp_failures_total{reason}`: relay batches the AMQP sink did not
    /// deliver (connect, backoff, send, not_accepted, timeout); they are retried.
    pub outbox_amqp_failures: IntCounterVec,
    /// `stockgate_outbox_amqp_connected`: 1 while the AMQP sink has a live link to the broker.
    pub outbox_amqp_connected: IntGauge,
    /// `stockgate_settlement_leader{task}`: 1 while this replica holds the task's lease.
    pub leader: IntGaugeVec,
    /// `stockgate_product_store_restores_total{result}`: a product edit configured the store
    /// but SQL did not commit it, so the store was put back to SQL's values (`restored`) or
    /// could not be (`failed`: the reconciler reports the drift).
    pub product_store_restores: IntCounterVec,
    /// `stockgate_settlement_service_auth_refused_total{code}`: requests refused because they
    /// carried no valid gateway assertion (`service_auth_missing`, `_invalid`, `_expired`,
    /// `_mismatch`): a caller other than the gateway, or a gateway with the wrong key.
    pub service_auth_refused: IntCounterVec,
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Metrics {
            registry: registry.clone(),
            settlements: IntCounterVec::new(
                Opts::new(
                    "stockgate_settlements_total",
                    "settlement requests by outcome",
                ),
                &["outcome"],
            )?,
            oversell_prevented: IntCounter::new(
                "stockgate_oversell_prevented_total",
                "orders refused by SQL because they would oversell (Redis drifted)",
            )?,
            batch_size: Histogram::with_opts(
                HistogramOpts::new(
                    "stockgate_settlement_batch_size",
                    "settlements per group-commit transaction",
                )
                .buckets(vec![
                    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0,
                ]),
            )?,
            commit_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "stockgate_settlement_commit_seconds",
                    "latency of one settlement transaction, begin to commit",
                )
                .buckets(prometheus::exponential_buckets(0.0005, 2.0, 14)?),
            )?,
            outbox_pending: IntGauge::new(
                "stockgate_outbox_pending",
                "outbox rows not yet published",
            )?,
            outbox_lag_seconds: prometheus::Gauge::new(
                "stockgate_outbox_lag_seconds",
                "age of the oldest unpublished outbox row",
            )?,
            outbox_broker_pending: IntGauge::new(
                "stockgate_outbox_broker_pending",
                "outbox rows not yet accepted by the message broker",
            )?,
            outbox_broker_lag_seconds: prometheus::Gauge::new(
                "stockgate_outbox_broker_lag_seconds",
                "age of the oldest outbox row the message broker has not accepted",
            )?,
            outbox_published: IntCounter::new(
                "stockgate_outbox_published_total",
                "outbox events delivered by the relay",
            )?,
            drift_sold: IntGaugeVec::new(
                Opts::new(
                    "stockgate_reconcile_sold_drift",
                    "Redis sold + confirming minus SQL sold, less confirms in flight and cancellations not yet relayed, per SKU (negative: Redis lost sales; positive: units off sale)",
                ),
                &["sku"],
            )?,
            drift_unbalanced: IntGaugeVec::new(
                Opts::new(
                    "stockgate_reconcile_unbalanced",
                    "1 when Redis available + held + confirming + sold differs from total stock",
                ),
                &["sku"],
            )?,
            confirming_resolved: IntCounterVec::new(
                Opts::new(
                    "stockgate_reconcile_confirming_resolved_total",
                    "holds stuck in confirming resolved from SQL, by result",
                ),
                &["result"],
            )?,
            holds_expired: IntCounter::new(
                "stockgate_sweeper_expired_total",
                "holds the sweeper returned to stock",
            )?,
            relay_effects_failed: IntCounter::new(
                "stockgate_relay_store_effects_failed_total",
                "outbox events whose reservation-store effect failed for good (not retried)",
            )?,
            leader: IntGaugeVec::new(
                Opts::new(
                    "stockgate_settlement_leader",
                    "1 while this replica holds the lease of the task (outbox_relay, maintenance)",
                ),
                &["task"],
            )?,
            outbox_stream_reassigned: IntCounter::new(
                "stockgate_outbox_stream_reassigned_total",
                "events appended with a Redis-assigned id: the stream was ahead of the outbox",
            )?,
            outbox_amqp_published: IntCounter::new(
                "stockgate_outbox_amqp_published_total",
                "outbox events the AMQP broker accepted",
            )?,
            outbox_amqp_failures: IntCounterVec::new(
                Opts::new(
                    "stockgate_outbox_amqp_failures_total",
                    "relay batches the AMQP sink did not deliver (retried), by reason",
                ),
                &["reason"],
            )?,
            outbox_amqp_connected: IntGauge::new(
                "stockgate_outbox_amqp_connected",
                "1 while the AMQP sink has a live link to the broker",
            )?,
            product_store_restores: IntCounterVec::new(
                Opts::new(
                    "stockgate_product_store_restores_total",
                    "product edits whose SQL commit failed after the store was configured, by whether the store was put back",
                ),
                &["result"],
            )?,
            service_auth_refused: IntCounterVec::new(
                Opts::new(
                    "stockgate_settlement_service_auth_refused_total",
                    "requests refused for want of a valid gateway assertion, by code",
                ),
                &["code"],
            )?,
        };
        registry.register(Box::new(m.settlements.clone()))?;
        registry.register(Box::new(m.oversell_prevented.clone()))?;
        registry.register(Box::new(m.batch_size.clone()))?;
        registry.register(Box::new(m.commit_seconds.clone()))?;
        registry.register(Box::new(m.outbox_pending.clone()))?;
        registry.register(Box::new(m.outbox_lag_seconds.clone()))?;
        registry.register(Box::new(m.outbox_broker_pending.clone()))?;
        registry.register(Box::new(m.outbox_broker_lag_seconds.clone()))?;
        registry.register(Box::new(m.outbox_published.clone()))?;
        registry.register(Box::new(m.drift_sold.clone()))?;
        registry.register(Box::new(m.drift_unbalanced.clone()))?;
        registry.register(Box::new(m.confirming_resolved.clone()))?;
        registry.register(Box::new(m.holds_expired.clone()))?;
        registry.register(Box::new(m.relay_effects_failed.clone()))?;
        registry.register(Box::new(m.outbox_stream_reassigned.clone()))?;
        registry.register(Box::new(m.leader.clone()))?;
        registry.register(Box::new(m.outbox_amqp_published.clone()))?;
        registry.register(Box::new(m.outbox_amqp_failures.clone()))?;
        registry.register(Box::new(m.outbox_amqp_connected.clone()))?;
        registry.register(Box::new(m.product_store_restores.clone()))?;
        registry.register(Box::new(m.service_auth_refused.clone()))?;
        Ok(m)
    }

    /// The registry in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for lack of space; a metric family error is logged.
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "metrics encoding failed");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Records whether this replica leads `task` (a fixed name, never client input).
    pub fn leader(&self, task: &str, leading: bool) {
        self.leader
            .with_label_values(&[task])
            .set(i64::from(leading));
    }

    /// Counts a refused caller under its code (one of four fixed names).
    pub fn service_auth_refused(&self, code: &'static str) {
        self.service_auth_refused.with_label_values(&[code]).inc();
    }

    pub fn settled(&self, outcome: &str) {
        self.settlements.with_label_values(&[outcome]).inc();
    }
}
