//! `GET /api/v1/admin/edge` (ops role): what only the gateway knows, for the ops console.
//! Counters since start (the console turns two readings into per-second rates): requests,
//! 429 answers, reservations and confirms by outcome; the rate-limit rules in force with their
//! decisions and how the last load of the rules file went; and whether Redis is down. (The
//! settlement's numbers, drift and outbox lag, come from `GET /api/v1/admin/reconcile`.)
//!
//! Everything is read from this process's metrics registry and rate limiter, so the numbers
//! are the ones `/metrics` shows.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::proto::MetricFamily;
use serde::Serialize;

use crate::edge::EdgeState;
use crate::edge::respond::{Reply, rfc3339_ms};
use crate::ratelimit::rules::KeyPart;

#[derive(Serialize)]
struct EdgeStats {
    generated_at: String,
    counters: Counters,
    redis_degraded: bool,
    ratelimit: RateLimits,
}

#[derive(Serialize, Default)]
struct Counters {
    requests: u64,
    responses_429: u64,
    reservations: BTreeMap<String, u64>,
    confirms: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct RateLimits {
    file: Option<String>,
    rules: Vec<RuleView>,
    last_load: Option<LoadView>,
}

#[derive(Serialize)]
struct RuleView {
    name: String,
    method: Option<String>,
    path: String,
    key: Vec<&'static str>,
    rate: u64,
    period_secs: u64,
    burst: u64,
    shadow: bool,
    /// `before_auth`, `after_auth` or `auth_failure`.
    phase: &'static str,
    /// `allowed`, `limited`, `limited_local`, `shadow_limited`, `degraded`: counts since start.
    decisions: BTreeMap<String, u64>,
}

#[derive(Serialize)]
struct LoadView {
    at: String,
    ok: bool,
    rules: usize,
    error: Option<String>,
}

/// The label `name` of one series.
fn label<'a>(metric: &'a prometheus::proto::Metric, name: &str) -> Option<&'a str> {
    metric
        .get_label()
        .iter()
        .find(|pair| pair.name() == name)
        .map(|pair| pair.value())
}

/// Counter values of a family keyed by one label.
fn by_label(family: &MetricFamily, name: &str) -> BTreeMap<String, u64> {
    family
        .get_metric()
        .iter()
        .filter_map(|m| {
            Some((
                label(m, name)?.to_owned(),
                m.get_counter().get_value() as u64,
            ))
        })
        .collect()
}

/// The answer (the route's access check already required the ops role).
pub fn report(state: &EdgeState) -> Reply {
    let mut counters = Counters::default();
    let mut decisions: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    for family in state.metrics.registry().gather() {
        match family.name() {
            "stockgate_requests_total" => {
                for metric in family.get_metric() {
                    let count = metric.get_counter().get_value() as u64;
                    counters.requests += count;
                    if label(metric, "status") == Some("429") {
                        counters.responses_429 += count;
                    }
                }
            }
            "stockgate_reservations_total" => counters.reservations = by_label(&family, "outcome"),
            "stockgate_confirms_total" => counters.confirms = by_label(&family, "outcome"),
            "stockgate_ratelimit_decisions_total" => {
                for metric in family.get_metric() {
                    if let (Some(rule), Some(decision)) =
                        (label(metric, "rule"), label(metric, "decision"))
                    {
                        decisions
                            .entry(rule.to_owned())
                            .or_default()
                            .insert(decision.to_owned(), metric.get_counter().get_value() as u64);
                    }
                }
            }
            _ => {}
        }
    }
    let limiter = &state.ratelimit;
    let rules = limiter
        .rules()
        .into_iter()
        .map(|rule| RuleView {
            decisions: decisions.remove(&rule.name).unwrap_or_default(),
            method: rule.method().map(ToString::to_string),
            key: rule.key.iter().map(|part| key_name(*part)).collect(),
            name: rule.name,
            path: rule.path,
            rate: rule.rate,
            period_secs: rule.period_secs,
            burst: rule.burst,
            shadow: rule.shadow,
            phase: rule.phase.name(),
        })
        .collect();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let stats = EdgeStats {
        generated_at: rfc3339_ms(now_ms),
        counters,
        redis_degraded: state.redis_down(),
        ratelimit: RateLimits {
            file: limiter.rules_file().map(|p| p.display().to_string()),
            rules,
            last_load: limiter.last_load().map(|load| LoadView {
                at: rfc3339_ms(load.at_ms),
                ok: load.ok,
                rules: load.rules,
                error: load.error,
            }),
        },
    };
    Reply::json(200, &stats).header("cache-control", "no-store")
}

fn key_name(part: KeyPart) -> &'static str {
    match part {
        KeyPart::Sub => "sub",
        KeyPart::Ip => "ip",
        KeyPart::Sku => "sku",
    }
}
