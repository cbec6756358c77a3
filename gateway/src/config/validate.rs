//! `Config::validate`: every rule a TOML file cannot express, each error naming its field.

use std::net::SocketAddr;

use super::{Config, ConfigError, invalid};

impl Config {
    /// Checks every rule a file cannot express; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_addr("server.listen", &self.server.listen)?;
        self.telemetry
            .validate()
            .map_err(|(field, reason)| invalid(field, reason))?;
        parse_addr("server.admin_listen", &self.server.admin_listen)?;
        self.server.tls.validate()?;
        self.server.http2.validate()?;
        parse_addr("upstream.settlement_addr", self.settlement_host_port())?;
        if self.server.threads == 0 || self.server.threads > 256 {
            return Err(invalid("server.threads", "must be between 1 and 256"));
        }
        if self.limits.max_body_bytes == 0 || self.limits.max_body_bytes > 16 * 1024 * 1024 {
            return Err(invalid(
                "limits.max_body_bytes",
                "must be between 1 and 16777216",
            ));
        }
        if !(8..=1024).contains(&self.limits.max_header_count) {
            return Err(invalid(
                "limits.max_header_count",
                "must be between 8 and 1024",
            ));
        }
        if !(1024..=1024 * 1024).contains(&self.limits.max_header_bytes) {
            return Err(invalid(
                "limits.max_header_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        positive(
            "limits.header_read_timeout_ms",
            self.limits.header_read_timeout_ms,
        )?;
        positive(
            "limits.body_read_timeout_ms",
            self.limits.body_read_timeout_ms,
        )?;
        positive("limits.idle_timeout_secs", self.limits.idle_timeout_secs)?;
        positive("limits.write_timeout_ms", self.limits.write_timeout_ms)?;
        positive(
            "limits.max_in_flight_per_client",
            u64::from(self.limits.max_in_flight_per_client),
        )?;
        positive("limits.max_in_flight", self.limits.max_in_flight as u64)?;
        self.validate_auth()?;
        self.validate_cache_and_limits()?;
        self.validate_web()?;
        if self.reservations.hold_ttl_secs == 0 || self.reservations.hold_ttl_secs > 86_400 {
            return Err(invalid(
                "reservations.hold_ttl_secs",
                "must be between 1 and 86400",
            ));
        }
        if self.reservations.signing_key_id.is_empty() {
            return Err(invalid("reservations.signing_key_id", "must not be empty"));
        }
        if self.settlement_auth.signing_key_id.is_empty() {
            return Err(invalid(
                "settlement_auth.signing_key_id",
                "must not be empty",
            ));
        }
        positive(
            "upstream.connect_timeout_ms",
            self.upstream.connect_timeout_ms,
        )?;
        positive("upstream.read_timeout_ms", self.upstream.read_timeout_ms)?;
        positive("upstream.write_timeout_ms", self.upstream.write_timeout_ms)?;
        positive(
            "upstream.settle_timeout_ms",
            self.upstream.settle_timeout_ms,
        )?;
        if !(1..=86_400).contains(&self.upstream.max_connection_age_secs) {
            return Err(invalid(
                "upstream.max_connection_age_secs",
                "must be between 1 and 86400",
            ));
        }
        positive(
            "upstream.settlement_admin_port",
            u64::from(self.upstream.settlement_admin_port),
        )?;
        positive(
            "upstream.health_check_interval_secs",
            self.upstream.health_check_interval_secs,
        )?;
        if self.upstream.max_retries > 5 {
            return Err(invalid("upstream.max_retries", "must be at most 5"));
        }
        if self
            .redis_url
            .as_deref()
            .is_some_and(|u| !u.contains("://"))
        {
            return Err(invalid("redis_url", "must be a URL with a scheme"));
        }
        if self.redis_key_prefix.is_empty() || self.redis_key_prefix.contains(['{', '}', ' ']) {
            return Err(invalid(
                "redis_key_prefix",
                "must be non-empty, without braces or spaces",
            ));
        }
        Ok(())
    }
    fn validate_cache_and_limits(&self) -> Result<(), ConfigError> {
        let cache = &self.cache;
        positive("cache.ttl_secs", cache.ttl_secs)?;
        if cache.jitter_percent > 100 {
            return Err(invalid("cache.jitter_percent", "must be at most 100"));
        }
        if cache.max_body_bytes == 0 || cache.max_body_bytes > 16 * 1024 * 1024 {
            return Err(invalid(
                "cache.max_body_bytes",
                "must be between 1 and 16777216",
            ));
        }
        positive("cache.local_max_entries", cache.local_max_entries as u64)?;
        if cache
            .replica_id
            .as_deref()
            .is_some_and(|id| id.is_empty() || id.contains(char::is_whitespace))
        {
            return Err(invalid(
                "cache.replica_id",
                "must be non-empty, without whitespace",
            ));
        }
        positive(
            "ratelimit.reload_interval_ms",
            self.ratelimit.reload_interval_ms,
        )?;
        if !(1..=1000).contains(&self.ratelimit.replicas) {
            return Err(invalid("ratelimit.replicas", "must be between 1 and 1000"));
        }
        if !(1..=128).contains(&self.ratelimit.ipv6_prefix_len) {
            return Err(invalid(
                "ratelimit.ipv6_prefix_len",
                "must be between 1 and 128",
            ));
        }
        crate::client_addr::parse_trusted(&self.client_ip.trusted_proxies)
            .map_err(|reason| invalid("client_ip.trusted_proxies", reason.to_string()))?;
        if !(1..=10_000).contains(&self.degraded.redis_timeout_ms) {
            return Err(invalid(
                "degraded.redis_timeout_ms",
                "must be between 1 and 10000",
            ));
        }
        if !(10..=60_000).contains(&self.degraded.probe_interval_ms) {
            return Err(invalid(
                "degraded.probe_interval_ms",
                "must be between 10 and 60000",
            ));
        }
        Ok(())
    }

    fn validate_web(&self) -> Result<(), ConfigError> {
        let web = &self.web;
        // A dev token is signed with the dev identity key, which the gateway trusts only when
        // no identity provider is configured: with one, the endpoint would mint dead tokens.
        if web.dev_token == Some(true) && self.auth.has_identity_provider() {
            return Err(invalid(
                "web.dev_token",
                "needs the dev identity: leave auth.jwks_file, auth.jwks_url and \
                 auth.discovery unset",
            ));
        }
        if !(60..=30 * 86_400).contains(&web.dev_token_ttl_secs) {
            return Err(invalid(
                "web.dev_token_ttl_secs",
                "must be between 60 and 2592000",
            ));
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        no_placeholder("auth.issuer", &auth.issuer)?;
        no_placeholder("auth.audience", &auth.audience)?;
        no_placeholder("auth.jwks_url", auth.jwks_url.iter())?;
        no_placeholder(
            "auth.jwks_file",
            auth.jwks_file.iter().map(|p| p.to_string_lossy()),
        )?;
        no_placeholder(
            "auth.ca_file",
            auth.ca_file.iter().map(|p| p.to_string_lossy()),
        )?;
        no_placeholder("auth.subject_claim", [&auth.subject_claim])?;
        no_placeholder("auth.roles_claim", [&auth.roles_claim])?;
        no_placeholder(
            "auth.roles_map",
            auth.roles_map.iter().flat_map(|(k, v)| [k, v]),
        )?;
        no_placeholder("auth.required_scopes", &auth.required_scopes)?;
        let sources = [
            auth.jwks_file.is_some(),
            auth.jwks_url.is_some(),
            auth.discovery,
        ];
        if sources.into_iter().filter(|set| *set).count() > 1 {
            return Err(invalid(
                if auth.discovery {
                    "auth.discovery"
                } else {
                    "auth.jwks_url"
                },
                "names a second key source: set one of auth.jwks_file, auth.jwks_url, \
                 auth.discovery",
            ));
        }
        if let Some(url) = &auth.jwks_url {
            crate::auth::fetch::check_url(url).map_err(|e| {
                invalid(
                    "auth.jwks_url",
                    format!("must be https:// (or http:// to a loopback host): {e}"),
                )
            })?;
        }
        if auth.issuer.is_empty() || auth.issuer.iter().any(String::is_empty) {
            return Err(invalid("auth.issuer", "must not be empty"));
        }
        if auth.audience.is_empty() || auth.audience.iter().any(String::is_empty) {
            return Err(invalid("auth.audience", "must not be empty"));
        }
        if auth.discovery {
            for issuer in &auth.issuer {
                crate::auth::fetch::check_url(issuer).map_err(|e| {
                    invalid(
                        "auth.issuer",
                        format!("must be https:// URLs with auth.discovery: {e}"),
                    )
                })?;
            }
        }
        // Buyer ids key holds, limits and orders: two issuers must not both mean their own
        // user by the same `sub`.
        if auth.issuer.len() > 1
            && auth.subject_claim != "oid"
            && !auth.shared_subjects_across_issuers
        {
            return Err(invalid(
                "auth.issuer",
                format!(
                    "lists several issuers, whose {:?} claims may name different buyers alike: \
                     set auth.subject_claim = \"oid\" (Entra ID) or, if they share one user \
                     directory, auth.shared_subjects_across_issuers = true",
                    auth.subject_claim
                ),
            ));
        }
        if auth.subject_claim.is_empty() {
            return Err(invalid("auth.subject_claim", "must not be empty"));
        }
        if auth.roles_claim.is_empty() {
            return Err(invalid("auth.roles_claim", "must not be empty"));
        }
        for (from, to) in &auth.roles_map {
            if from.is_empty()
                || to.is_empty()
                || !to.bytes().all(|b| b.is_ascii_graphic() && b != b',')
            {
                return Err(invalid(
                    "auth.roles_map",
                    format!(
                        "{from:?} = {to:?}: both must be non-empty, the stockgate role without spaces or commas"
                    ),
                ));
            }
        }
        if auth
            .required_scopes
            .iter()
            .any(|s| s.is_empty() || s.contains(' '))
        {
            return Err(invalid(
                "auth.required_scopes",
                "must be non-empty scope names without spaces",
            ));
        }
        if auth.algorithms.is_empty() {
            return Err(invalid(
                "auth.algorithms",
                "must name at least one algorithm",
            ));
        }
        for name in &auth.algorithms {
            crate::auth::parse_algorithm(name)
                .map_err(|reason| invalid("auth.algorithms", reason.to_string()))?;
        }
        if auth.leeway_secs > 60 {
            return Err(invalid("auth.leeway_secs", "must be at most 60"));
        }
        positive("auth.jwks_refresh_secs", auth.jwks_refresh_secs)?;
        // 0 would let every token with a made-up `kid` trigger a fetch from the provider.
        if auth.jwks_min_refresh_secs == 0 {
            return Err(invalid(
                "auth.jwks_min_refresh_secs",
                "must be at least 1: it bounds the re-fetches unknown kids can cause",
            ));
        }
        // One failed refresh must not already make the keys stale.
        if auth.max_stale_keys_secs < auth.jwks_refresh_secs.saturating_mul(2) {
            return Err(invalid(
                "auth.max_stale_keys_secs",
                "must be at least twice auth.jwks_refresh_secs",
            ));
        }
        Ok(())
    }
}

/// Refuses a value still holding an example's placeholder (`<tenant-id>`): the example config
/// would otherwise start and refuse every buyer with a puzzling `invalid_token`.
fn no_placeholder<S: AsRef<str>>(
    field: &'static str,
    values: impl IntoIterator<Item = S>,
) -> Result<(), ConfigError> {
    for value in values {
        let value = value.as_ref();
        if value.contains(['<', '>']) {
            return Err(invalid(
                field,
                format!("holds the placeholder {value:?}: replace it with your own value"),
            ));
        }
    }
    Ok(())
}

pub(super) fn parse_addr(field: &'static str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| {
        invalid(
            field,
            format!("must be host:port with an IP host, got {value:?}"),
        )
    })
}

fn positive(field: &'static str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(invalid(field, "must be greater than 0"));
    }
    Ok(())
}
