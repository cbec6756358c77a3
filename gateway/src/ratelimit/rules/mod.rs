//! The rules file (`config/ratelimits.toml`, owned by ops): its typed format with
//! `deny_unknown_fields`, `validate` whose errors name the rule and field, and the compiled
//! form the edge matches requests against (method and path pattern parsed once per load).

use std::path::Path;
use std::time::Duration;

use http::Method;
use serde::Deserialize;
use strum::IntoStaticStr;
use thiserror::Error;

/// Why a rules file was refused.
#[derive(Debug, Error)]
pub enum RulesError {
    #[error("cannot read rules file {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("rules file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("rules file {path}: rule[{index}] field `{field}` {reason}")]
    Invalid {
        path: String,
        index: usize,
        field: &'static str,
        reason: String,
    },
}

/// The whole file: a list of `[[rule]]` tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesFile {
    /// `None` when the file names no rule at all: an empty or comment-only file, which is
    /// what a file caught half-written (truncated, not yet filled) looks like. It is refused;
    /// running without limits is said explicitly with `rule = []`.
    #[serde(rename = "rule")]
    pub rules: Option<Vec<RuleSpec>>,
}

/// One rule as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Unique; the `rule` label of the metrics and part of the Redis key.
    pub name: String,
    /// `GET`, `POST`, ...; absent: any method.
    pub method: Option<String>,
    /// `/api/v1/stock/{sku}`: literal segments, `{name}` for one segment, a final `*` for
    /// any rest.
    pub path: String,
    /// What one budget belongs to: any of `sub`, `ip`, `sku`.
    pub key: Vec<String>,
    /// Requests per `period_secs`.
    pub rate: u64,
    #[serde(default = "one")]
    pub period_secs: u64,
    /// Requests admitted at once from an idle key.
    pub burst: u64,
    /// Count what would be refused, refuse nothing.
    #[serde(default)]
    pub shadow: bool,
    /// When the rule is checked relative to buyer authentication.
    #[serde(default)]
    pub phase: Phase,
}

/// When a rule is checked, relative to buyer authentication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Phase {
    /// Before the buyer's token is looked at: a flood is refused before any signature check.
    /// Keys by `ip` and a path `{sku}` only (no buyer is known yet, no body is read).
    BeforeAuth,
    /// After authentication (the default): may key by `sub` and the reservation body's SKU.
    #[default]
    AfterAuth,
    /// Charged only by requests whose token was refused (401): once a key is over, its
    /// requests are refused before their token is checked, from process memory, until the
    /// retry time (fail2ban-like). Keys like `before_auth`.
    AuthFailure,
}

impl Phase {
    /// As written in the rules file.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

fn one() -> u64 {
    1
}

/// One part of a rule's key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart {
    Sub,
    Ip,
    Sku,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param(String),
    Rest,
}

/// A validated rule, ready to match.
#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    method: Option<Method>,
    /// The path pattern as written (shown to ops).
    pub path: String,
    segments: Vec<Segment>,
    pub key: Vec<KeyPart>,
    /// The period divided by the rate: one request per interval on average.
    pub interval: Duration,
    pub rate: u64,
    pub period_secs: u64,
    pub burst: u64,
    pub shadow: bool,
    pub phase: Phase,
}

/// The path the reservation body's SKU is read from (the one body a rule may key on).
pub const RESERVE_PATH: &str = "/api/v1/reservations";

impl Rule {
    /// The method the rule applies to; `None` for any.
    pub fn method(&self) -> Option<&Method> {
        self.method.as_ref()
    }

    /// Whether the rule applies, and its `{sku}` path parameter if the pattern has one. A
    /// `GET` rule applies to `HEAD` too: the edge answers a `HEAD` as the `GET` (same cache
    /// fill, same store read), so it must not be a way around the `GET`'s limit.
    pub fn matches<'a>(&self, method: &Method, path: &'a str) -> Option<Option<&'a str>> {
        let method = if method == Method::HEAD {
            &Method::GET
        } else {
            method
        };
        if self.method.as_ref().is_some_and(|m| m != method) {
            return None;
        }
        let mut sku = None;
        let mut parts = path.trim_start_matches('/').split('/');
        for segment in &self.segments {
            match segment {
                Segment::Rest => return Some(sku),
                Segment::Literal(text) => (parts.next()? == text.as_str()).then_some(())?,
                Segment::Param(name) => {
                    let value = parts.next().filter(|v| !v.is_empty())?;
                    if name == "sku" {
                        sku = Some(value);
                    }
                }
            }
        }
        parts.next().is_none().then_some(sku)
    }

    /// Whether the key needs the SKU from the reservation body (no `{sku}` in the path).
    pub fn needs_body_sku(&self) -> bool {
        self.key.contains(&KeyPart::Sku) && !self.segments.contains(&Segment::Param("sku".into()))
    }
}

/// Reads, parses and validates a rules file.
pub fn load(path: &Path) -> Result<Vec<Rule>, RulesError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| RulesError::Read {
        path: shown.clone(),
        error,
    })?;
    parse(&text, &shown)
}

/// Parses and validates rules text; `origin` names it in errors.
pub fn parse(text: &str, origin: &str) -> Result<Vec<Rule>, RulesError> {
    let file: RulesFile = toml::from_str(text).map_err(|e| RulesError::Parse {
        path: origin.to_owned(),
        message: e.to_string(),
    })?;
    let specs = file.rules.ok_or_else(|| RulesError::Parse {
        path: origin.to_owned(),
        message: "names no [[rule]]; to run without limits write `rule = []`".to_owned(),
    })?;
    let mut rules: Vec<Rule> = Vec::with_capacity(specs.len());
    for (index, spec) in specs.iter().enumerate() {
        let invalid = |field, reason: &str| RulesError::Invalid {
            path: origin.to_owned(),
            index,
            field,
            reason: reason.to_owned(),
        };
        let rule = compile(spec).map_err(|(field, reason)| invalid(field, &reason))?;
        if rules.iter().any(|r| r.name == rule.name) {
            return Err(invalid("name", "repeats an earlier rule's name"));
        }
        rules.push(rule);
    }
    Ok(rules)
}

fn compile(spec: &RuleSpec) -> Result<Rule, (&'static str, String)> {
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 64
        && spec
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !name_ok {
        return Err((
            "name",
            "must be 1-64 characters of a-z, 0-9, - and _".into(),
        ));
    }
    let method = match spec.method.as_deref() {
        None => None,
        Some(m) => Some(
            Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                .map_err(|_| ("method", format!("is not an HTTP method: {m:?}")))?,
        ),
    };
    if method == Some(Method::HEAD) {
        // `matches` takes a HEAD for the GET it is answered as: a HEAD rule would never apply.
        return Err((
            "method",
            "HEAD is limited by the GET rules; write GET".into(),
        ));
    }
    let segments = segments(&spec.path).map_err(|reason| ("path", reason))?;
    if spec.key.is_empty() {
        return Err(("key", "must name at least one of sub, ip, sku".into()));
    }
    let mut key = Vec::with_capacity(spec.key.len());
    for part in &spec.key {
        let part = match part.as_str() {
            "sub" => KeyPart::Sub,
            "ip" => KeyPart::Ip,
            "sku" => KeyPart::Sku,
            other => return Err(("key", format!("has {other:?}; use sub, ip or sku"))),
        };
        if key.contains(&part) {
            return Err(("key", "names a part twice".into()));
        }
        key.push(part);
    }
    if !(1..=1_000_000).contains(&spec.rate) {
        return Err(("rate", "must be between 1 and 1000000".into()));
    }
    if !(1..=86_400).contains(&spec.period_secs) {
        return Err(("period_secs", "must be between 1 and 86400".into()));
    }
    if !(1..=1_000_000).contains(&spec.burst) {
        return Err(("burst", "must be between 1 and 1000000".into()));
    }
    let rule = Rule {
        name: spec.name.clone(),
        method,
        path: spec.path.clone(),
        segments,
        key,
        interval: Duration::from_secs(spec.period_secs) / spec.rate as u32,
        rate: spec.rate,
        period_secs: spec.period_secs,
        burst: spec.burst,
        shadow: spec.shadow,
        phase: spec.phase,
    };
    if rule.phase != Phase::AfterAuth {
        // Checked before any buyer is known and before the body is read.
        let phase = rule.phase.name();
        if rule.key.contains(&KeyPart::Sub) {
            return Err((
                "key",
                format!("has sub, but phase {phase} runs before the buyer is known"),
            ));
        }
        if rule.needs_body_sku() {
            return Err((
                "key",
                format!("has sku, but the path has no {{sku}} and phase {phase} reads no body"),
            ));
        }
    }
    let body_sku_ok = rule.method.as_ref() == Some(&Method::POST) && spec.path == RESERVE_PATH;
    if rule.needs_body_sku() && !body_sku_ok {
        return Err((
            "key",
            format!("has sku, but the path has no {{sku}} and is not POST {RESERVE_PATH}"),
        ));
    }
    Ok(rule)
}

fn segments(path: &str) -> Result<Vec<Segment>, String> {
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("must start with '/', got {path:?}"))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        let segment = match *part {
            "*" if i + 1 == parts.len() => Segment::Rest,
            "*" => return Err("may have '*' only as its last segment".into()),
            p if p.starts_with('{') && p.ends_with('}') && p.len() > 2 => {
                Segment::Param(p[1..p.len() - 1].to_owned())
            }
            p if p.contains(['{', '}', '*', '?']) => {
                return Err(format!("has a malformed segment {p:?}"));
            }
            p => Segment::Literal(p.to_owned()),
        };
        out.push(segment);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
