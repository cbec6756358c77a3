//! Prometheus metrics of the edge, served on the admin listener's `/metrics`. Every labelled
//! series is resolved once at start into plain handles (arrays indexed by route and status,
//! maps keyed by a fixed outcome name), so the hot path never formats labels or hashes a
//! label set per request.

use std::collections::HashMap;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::edge::routes::Route;

/// Statuses with their own series; anything else is counted as `other`.
const STATUSES: &[u16] = &[
    200, 201, 204, 304, 400, 401, 403, 404, 405, 409, 410, 412, 413, 422, 423, 429, 431, 500, 502,
    503, 504,
];

/// Outcomes of `POST /api/v1/reservations`.
pub const RESERVE_OUTCOMES: &[&str] = &[
    "created",
    "replayed",
    "sold_out",
    "sold_out_cached",
    "insufficient_stock",
    "purchase_limit",
    "sale_paused",
    "unknown_sku",
    "idempotency_mismatch",
    "invalid_request",
    "store_error",
];

/// Outcomes of `POST /api/v1/orders` (the confirm).
pub const CONFIRM_OUTCOMES: &[&str] = &[
    "created",
    "replayed",
    "expired",
    "not_owner",
    "sold_out",
    "purchase_limit",
    "invalid_token",
    "unknown_sku",
    "upstream_unavailable",
    "ambiguous",
    "rejected",
    "store_error",
];

/// How catalog reads were answered by the product cache.
pub const CACHE_OUTCOMES: &[&str] = &[
    "hit",
    "miss",
    "coalesced",
    "stale",
    "stale_if_error",
    "invalid",
    "uncacheable",
    "error",
];

/// The gateway's metrics with their pre-resolved handles.
pub struct Metrics {
    registry: Registry,
    /// `[route][status index]`, the last status index being `other`.
    requests: Vec<Vec<IntCounter>>,
    latency: Vec<Histogram>,
    reservations: HashMap<&'static str, IntCounter>,
    confirms: HashMap<&'static str, IntCounter>,
    cache: HashMap<&'static str, IntCounter>,
    pub cache_invalidations: IntCounter,
    /// `{rule, decision}`; the rate limiter resolves its handles once per rules load.
    pub ratelimit_decisions: IntCounterVec,
    pub config_reload_errors: IntCounter,
    /// Certificate pairs of the HTTPS listener taken up while running, and changed pairs
    /// refused (the previous pair stayed).
    pub tls_cert_reloads: IntCounter,
    pub tls_cert_reload_errors: IntCounter,
    /// The served certificate's notAfter, Unix seconds (0 without a TLS listener).
    pub tls_cert_not_after: IntGauge,
    /// 1 while Redis is unreachable (degraded mode).
    pub redis_degraded: IntGauge,
    /// `{dependency}`: 1 while the dependency monitor sees it up (`crate::health`).
    pub dependency_up: IntGaugeVec,
    pub store_errors: IntCounter,
    pub upstream_connect_errors: IntCounter,
    pub upstream_timeouts: IntCounter,
    pub settlement_errors: IntCounter,
    pub auth_failures: IntCounter,
    /// Identity-provider key refreshes that failed, by `kind` (`crate::auth::jwks::JwksError`).
    pub jwks_errors: IntCounterVec,
    pub in_flight: IntGauge,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests_vec = IntCounterVec::new(
            Opts::new("stockgate_requests_total", "requests by route and status"),
            &["route", "status"],
        )?;
        let latency_vec = HistogramVec::new(
            HistogramOpts::new(
                "stockgate_request_duration_seconds",
                "request latency by route, from request header to response end",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["route"],
        )?;
        let reservations_vec = IntCounterVec::new(
            Opts::new("stockgate_reservations_total", "reservations by outcome"),
            &["outcome"],
        )?;
        let confirms_vec = IntCounterVec::new(
            Opts::new("stockgate_confirms_total", "order confirms by outcome"),
            &["outcome"],
        )?;
        let cache_vec = IntCounterVec::new(
            Opts::new(
                "stockgate_cache_requests_total",
                "catalog reads by how the product cache answered",
            ),
            &["outcome"],
        )?;
        let ratelimit_decisions = IntCounterVec::new(
            Opts::new(
                "stockgate_ratelimit_decisions_total",
                "rate-limit decisions by rule, each counted once: allowed, limited (refused by \
                 Redis or the per-replica share), limited_local (refused from memory, no Redis \
                 call), shadow_limited (counted, not refused); degraded also counts those the \
                 per-replica share made while Redis was down",
            ),
            &["rule", "decision"],
        )?;
        let jwks_errors = IntCounterVec::new(
            Opts::new(
                "stockgate_jwks_errors_total",
                "identity-provider key refreshes that failed (the last good keys stayed until \
                 stale), by kind: request, timeout, redirect, status, too_large, parse, \
                 discovery_issuer, ...",
            ),
            &["kind"],
        )?;
        let counter = |name: &str, help: &str| IntCounter::new(name, help);
        let cache_invalidations = counter(
            "stockgate_cache_invalidations_total",
            "product cache invalidations (outbox events and changes made through this gateway)",
        )?;
        let config_reload_errors = counter(
            "stockgate_config_reload_errors_total",
            "rate-limit rule reloads refused (the last good rules stayed)",
        )?;
        let tls_cert_reloads = counter(
            "stockgate_tls_cert_reloads_total",
            "renewed certificate and key pairs the HTTPS listener took up while running",
        )?;
        let tls_cert_reload_errors = counter(
            "stockgate_tls_cert_reload_errors_total",
            "changed certificate or key files refused or unreadable (the previous pair stayed)",
        )?;
        let redis_degraded = IntGauge::new(
            "stockgate_redis_degraded",
            "1 while Redis is unreachable and the gateway runs degraded",
        )?;
        let dependency_up = IntGaugeVec::new(
            Opts::new(
                "stockgate_dependency_up",
                "1 while the dependency (redis, settlement, database) answers, as the \
                 gateway's background check last saw it",
            ),
            &["dependency"],
        )?;
        let store_errors = counter("stockgate_store_errors_total", "reservation store errors")?;
        let upstream_connect_errors = counter(
            "stockgate_upstream_connect_errors_total",
            "failed connections to the settlement upstream",
        )?;
        let upstream_timeouts = counter(
            "stockgate_upstream_timeouts_total",
            "settlement calls that timed out after the request was sent",
        )?;
        let settlement_errors = counter(
            "stockgate_settlement_errors_total",
            "settlement calls answered with an unexpected status or body",
        )?;
        let auth_failures = counter(
            "stockgate_auth_failures_total",
            "requests refused by buyer authentication",
        )?;
        let in_flight = IntGauge::new("stockgate_in_flight_requests", "requests being served")?;
        let tls_cert_not_after = IntGauge::new(
            "stockgate_tls_cert_not_after_seconds",
            "when the certificate the HTTPS listener serves expires (Unix time)",
        )?;

        registry.register(Box::new(requests_vec.clone()))?;
        registry.register(Box::new(latency_vec.clone()))?;
        registry.register(Box::new(reservations_vec.clone()))?;
        registry.register(Box::new(confirms_vec.clone()))?;
        registry.register(Box::new(cache_vec.clone()))?;
        registry.register(Box::new(ratelimit_decisions.clone()))?;
        registry.register(Box::new(jwks_errors.clone()))?;
        registry.register(Box::new(redis_degraded.clone()))?;
        registry.register(Box::new(dependency_up.clone()))?;
        for c in [
            &cache_invalidations,
            &config_reload_errors,
            &tls_cert_reloads,
            &tls_cert_reload_errors,
            &store_errors,
            &upstream_connect_errors,
            &upstream_timeouts,
            &settlement_errors,
            &auth_failures,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(tls_cert_not_after.clone()))?;

        let mut requests = Vec::with_capacity(Route::ALL.len());
        let mut latency = Vec::with_capacity(Route::ALL.len());
        for route in Route::ALL {
            let mut by_status = Vec::with_capacity(STATUSES.len() + 1);
            for status in STATUSES {
                let status = status.to_string();
                by_status
                    .push(requests_vec.get_metric_with_label_values(&[route.name(), &status])?);
            }
            by_status.push(requests_vec.get_metric_with_label_values(&[route.name(), "other"])?);
            requests.push(by_status);
            latency.push(latency_vec.get_metric_with_label_values(&[route.name()])?);
        }
        let resolve = |vec: &IntCounterVec, names: &[&'static str]| {
            names
                .iter()
                .map(|n| Ok((*n, vec.get_metric_with_label_values(&[n])?)))
                .collect::<Result<HashMap<_, _>, prometheus::Error>>()
        };
        Ok(Metrics {
            reservations: resolve(&reservations_vec, RESERVE_OUTCOMES)?,
            confirms: resolve(&confirms_vec, CONFIRM_OUTCOMES)?,
            cache: resolve(&cache_vec, CACHE_OUTCOMES)?,
            cache_invalidations,
            ratelimit_decisions,
            config_reload_errors,
            tls_cert_reloads,
            tls_cert_reload_errors,
            tls_cert_not_after,
            redis_degraded,
            dependency_up,
            registry,
            requests,
            latency,
            store_errors,
            upstream_connect_errors,
            upstream_timeouts,
            settlement_errors,
            auth_failures,
            jwks_errors,
            in_flight,
        })
    }

    /// The registry every series is in; an in-process settlement service registers its own
    /// series here too, so the admin `/metrics` serves both.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one finished request.
    pub fn observe_request(&self, route: Route, status: u16, seconds: f64) {
        let by_status = &self.requests[route.index()];
        let index = STATUSES
            .iter()
            .position(|s| *s == status)
            .unwrap_or(STATUSES.len());
        by_status[index].inc();
        self.latency[route.index()].observe(seconds);
    }

    /// Counts a reservation outcome (one of [`RESERVE_OUTCOMES`]).
    pub fn reservation(&self, outcome: &str) {
        if let Some(c) = self.reservations.get(outcome) {
            c.inc();
        }
    }

    /// Counts a confirm outcome (one of [`CONFIRM_OUTCOMES`]).
    pub fn confirm(&self, outcome: &str) {
        if let Some(c) = self.confirms.get(outcome) {
            c.inc();
        }
    }

    /// Counts a catalog read outcome (one of [`CACHE_OUTCOMES`]).
    pub fn cache(&self, outcome: &str) {
        if let Some(c) = self.cache.get(outcome) {
            c.inc();
        }
    }

    pub fn cache_count(&self, outcome: &str) -> u64 {
        self.cache.get(outcome).map_or(0, |c| c.get())
    }

    /// A reservation counter's value (tests and the readiness report).
    pub fn reservation_count(&self, outcome: &str) -> u64 {
        self.reservations.get(outcome).map_or(0, |c| c.get())
    }

    pub fn confirm_count(&self, outcome: &str) -> u64 {
        self.confirms.get(outcome).map_or(0, |c| c.get())
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Err(error) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(%error, "metrics encoding failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_route_status_and_outcome() {
        let metrics = Metrics::new().unwrap();
        metrics.observe_request(Route::ReservationCreate, 201, 0.002);
        metrics.observe_request(Route::ReservationCreate, 599, 0.002);
        metrics.reservation("created");
        metrics.confirm("ambiguous");
        let text = String::from_utf8(metrics.render()).unwrap();
        assert!(
            text.contains(
                r#"stockgate_requests_total{route="reservations_create",status="201"} 1"#
            )
        );
        assert!(
            text.contains(
                r#"stockgate_requests_total{route="reservations_create",status="other"} 1"#
            )
        );
        assert_eq!(metrics.reservation_count("created"), 1);
        assert_eq!(metrics.confirm_count("ambiguous"), 1);
    }
}
