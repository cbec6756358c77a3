//! Rate limits owned by ops (DESIGN.md §5). Rules come from a TOML file ([`rules`]); each
//! matches a method and path pattern and keys its budget by `sub`, client IP, SKU or a
//! combination. Decisions are GCRA (rate + burst) made in Redis by one Lua script shared by
//! every replica, behind an in-process memory of keys Redis refused ([`local`]), so a key that
//! is clearly over costs no Redis call. `shadow` rules count and never refuse. While Redis is
//! unreachable each replica enforces its share (`1 / ratelimit.replicas`) of every rule itself.
//!
//! The rules sit behind an `ArcSwap`: a reload (file change, `POST /admin/reload`) parses and
//! validates the whole file first and swaps only then, so a bad file leaves the last good
//! rules in force; the refusal is logged with its reason and counted in
//! `stockgate_config_reload_errors_total`.

pub mod local;
pub mod rules;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use http::Method;
use prometheus::IntCounter;

use crate::config::Config;
use crate::edge::respond::Reply;
use crate::edge_redis::EdgeRedis;
use crate::metrics::Metrics;
use crate::problem::Problem;
use local::{LocalDecision, LocalLimiter};
use rules::{KeyPart, Phase, Rule, RulesError};

/// A rule with its metric handles, resolved once per load.
struct Compiled {
    rule: Rule,
    /// `<prefix>:rl:<rule>:`, the start of every key of this rule.
    key_head: String,
    allowed: IntCounter,
    limited: IntCounter,
    shadow_limited: IntCounter,
    /// Refused from the in-process memory, without a Redis call.
    local_block: IntCounter,
    /// Decided by the per-replica share because Redis was unreachable.
    degraded: IntCounter,
}

/// What the limiter knows about one request.
pub struct Facts<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub sub: Option<&'a str>,
    pub ip: Option<IpAddr>,
    /// The SKU of a reservation body (only in the body phase).
    pub body_sku: Option<&'a str>,
}

/// A refusal, ready to become a 429.
#[derive(Debug, Clone)]
pub struct Limited {
    pub rule: String,
    pub rate: u64,
    pub period_secs: u64,
    pub burst: u64,
    pub retry_after: Duration,
    pub reset_after: Duration,
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000) as u64
}

impl Limited {
    /// 429 problem+json with `Retry-After` and the `RateLimit-*` headers.
    pub fn reply(&self, request_id: &str) -> Reply {
        let retry = ceil_secs(self.retry_after).max(1);
        let mut problem = Problem::new(
            429,
            "rate_limited",
            format!("rate limit `{}` exceeded; retry in {retry} s", self.rule),
        );
        problem.retry_after = Some(retry);
        Reply::problem(&problem, request_id)
            .header("ratelimit-limit", self.burst.to_string())
            .header("ratelimit-remaining", "0")
            .header(
                "ratelimit-reset",
                ceil_secs(self.reset_after).max(1).to_string(),
            )
            .header(
                "ratelimit-policy",
                format!("{};w={};burst={}", self.rate, self.period_secs, self.burst),
            )
    }
}

/// How the last load of the rules file went (shown on the ops console).
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadResult {
    /// When it was tried, epoch milliseconds.
    pub at_ms: u64,
    pub ok: bool,
    /// Rules in force afterwards (the last good ones when it failed).
    pub rules: usize,
    pub error: Option<String>,
}

/// The gateway's limiter; one per process.
pub struct RateLimiter {
    rules: ArcSwap<Vec<Compiled>>,
    last_load: Mutex<Option<LoadResult>>,
    file: Option<PathBuf>,
    /// Modification time and length of the file as last loaded.
    stamp: Mutex<Option<(SystemTime, u64)>>,
    redis: Option<EdgeRedis>,
    local: LocalLimiter,
    replicas: u32,
    /// IPv6 clients share a budget per network of this many bits (`ratelimit.ipv6_prefix_len`).
    ipv6_prefix_len: u8,
    key_prefix: String,
    metrics: Arc<Metrics>,
}

impl RateLimiter {
    /// Loads `ratelimit.rules_file` (if set): a bad file at start is an error, not a warning.
    pub fn new(
        config: &Config,
        redis: Option<EdgeRedis>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, RulesError> {
        let limiter = RateLimiter {
            rules: ArcSwap::from_pointee(Vec::new()),
            last_load: Mutex::new(None),
            file: config.ratelimit.rules_file.clone(),
            stamp: Mutex::new(None),
            redis,
            local: LocalLimiter::default(),
            replicas: u32::try_from(config.ratelimit.replicas).unwrap_or(1).max(1),
            ipv6_prefix_len: config.ratelimit.ipv6_prefix_len,
            key_prefix: format!("{}:rl", config.redis_key_prefix),
            metrics,
        };
        if let Some(path) = &limiter.file {
            let stamp = stamp_of(path);
            let rules = rules::load(path)?;
            let count = limiter.install(rules)?;
            *limiter.stamp.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
            limiter.record_load(Ok(count));
        }
        Ok(limiter)
    }

    fn install(&self, rules: Vec<Rule>) -> Result<usize, RulesError> {
        let vec = &self.metrics.ratelimit_decisions;
        let handle = |rule: &Rule, decision: &str| {
            vec.get_metric_with_label_values(&[rule.name.as_str(), decision])
                .map_err(|e| RulesError::Parse {
                    path: rule.name.clone(),
                    message: e.to_string(),
                })
        };
        let mut compiled = Vec::with_capacity(rules.len());
        for rule in rules {
            compiled.push(Compiled {
                key_head: format!("{}:{}:", self.key_prefix, rule.name),
                allowed: handle(&rule, "allowed")?,
                limited: handle(&rule, "limited")?,
                shadow_limited: handle(&rule, "shadow_limited")?,
                local_block: handle(&rule, "limited_local")?,
                degraded: handle(&rule, "degraded")?,
                rule,
            });
        }
        let count = compiled.len();
        self.rules.store(Arc::new(compiled));
        // The keys remembered as refused were refused under the old rules: a loosened rule
        // must let them through at once. The next refusal is re-learnt from Redis.
        self.local.forget_blocks();
        Ok(count)
    }

    /// Number of rules in force.
    pub fn rule_count(&self) -> usize {
        self.rules.load().len()
    }

    /// The rules in force, in file order.
    pub fn rules(&self) -> Vec<Rule> {
        self.rules.load().iter().map(|c| c.rule.clone()).collect()
    }

    /// The rules file, when one is configured.
    pub fn rules_file(&self) -> Option<&std::path::Path> {
        self.file.as_deref()
    }

    /// How the last load of the rules file went; `None` before any (no file configured).
    pub fn last_load(&self) -> Option<LoadResult> {
        self.last_load
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn record_load(&self, outcome: Result<usize, &RulesError>) {
        let at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let result = match outcome {
            Ok(rules) => LoadResult {
                at_ms,
                ok: true,
                rules,
                error: None,
            },
            Err(error) => LoadResult {
                at_ms,
                ok: false,
                rules: self.rule_count(),
                error: Some(error.to_string()),
            },
        };
        *self.last_load.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
    }

    /// Re-reads the rules file; on any error the rules in force stay, and the error is
    /// logged and counted. Returns the number of rules now in force.
    pub fn reload(&self) -> Result<usize, RulesError> {
        let Some(path) = &self.file else {
            return Ok(0);
        };
        let stamp = stamp_of(path);
        match rules::load(path).and_then(|rules| self.install(rules)) {
            Ok(count) => {
                *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
                tracing::info!(path = %path.display(), rules = count, "rate-limit rules loaded");
                self.record_load(Ok(count));
                Ok(count)
            }
            Err(error) => {
                *self.stamp.lock().unwrap_or_else(|e| e.into_inner()) = stamp;
                self.metrics.config_reload_errors.inc();
                tracing::error!(%error, "rate-limit rules refused; the last good rules stay");
                self.record_load(Err(&error));
                Err(error)
            }
        }
    }

    /// Re-reads the file whenever its modification time or length changes.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let Some(path) = self.file.clone() else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let now = stamp_of(&path);
            let last = *self.stamp.lock().unwrap_or_else(|e| e.into_inner());
            if now != last {
                let _ = self.reload();
            }
        }
    }

    /// Checks every rule checked at `checkpoint` that matches; the first refusing rule that
    /// is not a shadow rule wins.
    pub async fn check(&self, facts: &Facts<'_>, checkpoint: Checkpoint) -> Option<Limited> {
        let rules = self.rules.load();
        for compiled in rules.iter() {
            if checkpoint_of(&compiled.rule) != Some(checkpoint) {
                continue;
            }
            let Some(key) = self.key_for(compiled, facts) else {
                continue;
            };
            let (decision, source) = self.decide(compiled, &key).await;
            if let Some(limited) = self.count(compiled, &decision, source) {
                return Some(limited);
            }
        }
        None
    }

    /// Before authentication: whether this client is over an `auth_failure` budget, from
    /// process memory only (a request that costs a Redis call to refuse would cost about
    /// what its signature check does). Shadow rules never refuse and are counted when a
    /// failure is charged.
    pub fn failures_blocked(&self, facts: &Facts<'_>) -> Option<Limited> {
        let rules = self.rules.load();
        for compiled in rules.iter() {
            if compiled.rule.phase != Phase::AuthFailure || compiled.rule.shadow {
                continue;
            }
            let Some(key) = self.key_for(compiled, facts) else {
                continue;
            };
            if let Some(wait) = self.local.blocked_for(&key) {
                let decision = LocalDecision::refused(wait);
                return self.count(compiled, &decision, Source::Memory);
            }
        }
        None
    }

    /// A request whose token was refused: charges every matching `auth_failure` rule. A key
    /// over budget is remembered until its retry time (so [`Self::failures_blocked`] refuses
    /// the next ones without a signature check), and this request is refused with a 429.
    pub async fn charge_failure(&self, facts: &Facts<'_>) -> Option<Limited> {
        let rules = self.rules.load();
        let mut refusal = None;
        for compiled in rules.iter() {
            if compiled.rule.phase != Phase::AuthFailure {
                continue;
            }
            let Some(key) = self.key_for(compiled, facts) else {
                continue;
            };
            let (decision, source) = self.decide(compiled, &key).await;
            if !decision.allowed {
                // Redis refusals are remembered by `decide`; the local share's are not.
                self.local.block(&key, decision.retry_after);
            }
            let limited = self.count(compiled, &decision, source);
            refusal = refusal.or(limited);
        }
        refusal
    }

    /// Counts one decision under exactly one `decision` label; `Some` when it refuses.
    fn count(
        &self,
        compiled: &Compiled,
        decision: &LocalDecision,
        source: Source,
    ) -> Option<Limited> {
        let rule = &compiled.rule;
        if decision.allowed {
            compiled.allowed.inc();
            return None;
        }
        if rule.shadow {
            compiled.shadow_limited.inc();
            return None;
        }
        match source {
            Source::Memory => compiled.local_block.inc(),
            Source::Decided => compiled.limited.inc(),
        }
        Some(Limited {
            rule: rule.name.clone(),
            rate: rule.rate,
            period_secs: rule.period_secs,
            burst: rule.burst,
            retry_after: decision.retry_after,
            reset_after: decision.reset_after,
        })
    }

    /// The key of one request under one rule, when the rule applies to it.
    fn key_for(&self, compiled: &Compiled, facts: &Facts<'_>) -> Option<String> {
        let path_sku = compiled.rule.matches(facts.method, facts.path)?;
        // A rule keyed by something the request lacks (no buyer on an anonymous route)
        // does not apply to it.
        key_of(compiled, facts, path_sku, self.ipv6_prefix_len)
    }

    async fn decide(&self, compiled: &Compiled, key: &str) -> (LocalDecision, Source) {
        let rule = &compiled.rule;
        if let Some(wait) = self.local.blocked_for(key) {
            return (LocalDecision::refused(wait), Source::Memory);
        }
        if let Some(redis) = &self.redis {
            if redis.health.is_up() {
                match redis.limiter.check(key, rule.interval, rule.burst).await {
                    Ok(d) => {
                        if !d.allowed {
                            self.local.block(key, d.retry_after);
                        }
                        let decision = LocalDecision {
                            allowed: d.allowed,
                            remaining: d.remaining,
                            retry_after: d.retry_after,
                            reset_after: d.reset_after,
                        };
                        return (decision, Source::Decided);
                    }
                    Err(error) => redis.health.mark_down("rate limit", &error),
                }
            }
            compiled.degraded.inc();
            // This replica's share: every replica alone admits rate/replicas, burst/replicas.
            let burst = rule.burst.div_ceil(u64::from(self.replicas));
            let decision = self.local.check(key, rule.interval * self.replicas, burst);
            return (decision, Source::Decided);
        }
        // No Redis at all (embedded, one process): the whole rule is enforced here.
        let decision = self.local.check(key, rule.interval, rule.burst);
        (decision, Source::Decided)
    }
}

/// Where in a request's handling a rule is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checkpoint {
    /// Before the token is checked (`phase = "before_auth"`).
    BeforeAuth,
    /// After authentication, before the handler (`after_auth` rules not keyed by the body).
    AfterAuth,
    /// Once the reservation body is parsed (`after_auth` rules keyed by its SKU).
    ReservationBody,
}

/// Where `rule` is checked; `None` for `auth_failure` rules (charged on a refused token).
fn checkpoint_of(rule: &Rule) -> Option<Checkpoint> {
    match rule.phase {
        Phase::BeforeAuth => Some(Checkpoint::BeforeAuth),
        Phase::AfterAuth if rule.needs_body_sku() => Some(Checkpoint::ReservationBody),
        Phase::AfterAuth => Some(Checkpoint::AfterAuth),
        Phase::AuthFailure => None,
    }
}

/// How a decision was reached, for its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Refused from the memory of keys already known to be over: no Redis call.
    Memory,
    /// Decided by the GCRA (Redis, or this replica's share).
    Decided,
}

/// The key of one request under one rule; `None` when the request lacks a part of it.
fn key_of(
    compiled: &Compiled,
    facts: &Facts<'_>,
    path_sku: Option<&str>,
    ipv6_prefix_len: u8,
) -> Option<String> {
    use std::fmt::Write;
    let mut key = compiled.key_head.clone();
    for (i, part) in compiled.rule.key.iter().enumerate() {
        if i > 0 {
            key.push('|');
        }
        // Writing to a String cannot fail.
        let _ = match part {
            KeyPart::Sub => write!(key, "sub={}", facts.sub?),
            KeyPart::Ip => write!(key, "ip={}", ip_key(facts.ip?, ipv6_prefix_len)),
            KeyPart::Sku => write!(key, "sku={}", path_sku.or(facts.body_sku)?),
        };
    }
    Some(key)
}

/// The key of a client ([`crate::client_addr::client_network`]): `192.0.2.1`, `2001:db8::/64`.
fn ip_key(ip: IpAddr, ipv6_prefix_len: u8) -> String {
    match crate::client_addr::client_network(ip, ipv6_prefix_len) {
        IpAddr::V4(v4) => v4.to_string(),
        v6 => format!("{v6}/{ipv6_prefix_len}"),
    }
}

fn stamp_of(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ipv6_clients_share_a_budget_per_network_ipv4_per_address() {
        let a = ip_key(ip("2001:db8:1:2:aaaa::1"), 64);
        assert_eq!(a, "2001:db8:1:2::/64");
        assert_eq!(ip_key(ip("2001:db8:1:2:ffff:1:2:3"), 64), a);
        assert_ne!(ip_key(ip("2001:db8:1:3::1"), 64), a);
        assert_eq!(ip_key(ip("2001:db8:1:2::1"), 128), "2001:db8:1:2::1/128");
        assert_eq!(ip_key(ip("2001:db8:1:2::1"), 48), "2001:db8:1::/48");
        assert_eq!(ip_key(ip("203.0.113.7"), 64), "203.0.113.7");
        assert_ne!(ip_key(ip("203.0.113.8"), 64), ip_key(ip("203.0.113.7"), 64));
        assert_eq!(ip_key(ip("::ffff:203.0.113.7"), 64), "203.0.113.7");
    }
}
