//! The gateway's configuration: typed TOML sections with `deny_unknown_fields`, defaults that
//! make up the embedded default (`stockgate all-in-one` with no file), and a `validate()` whose
//! errors name the offending field. The configuration file, its `STOCKGATE_*` environment
//! overrides and the `[settlement]` table are read by the `stockgate` crate
//! (`stockgate/src/config/mod.rs`); `config/stockgate.toml` documents every option.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// Why a configuration was refused: the field at fault and the rule it breaks.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("config field `{field}` {reason}")]
    Invalid { field: &'static str, reason: String },
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The gateway's configuration: every table of the file but `[settlement]` (and the
/// top-level `database_url`), which `stockgate::config` reads for the settlement service.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where generated dev keys and the embedded SQLite file live.
    pub data_dir: PathBuf,
    /// Redis for the reservation store; `None` runs the in-memory store (one replica only).
    pub redis_url: Option<String>,
    /// Start of every reservation-store key in Redis (several deployments may share one).
    pub redis_key_prefix: String,
    pub server: ServerConfig,
    pub limits: LimitsConfig,
    pub auth: AuthConfig,
    pub reservations: ReservationsConfig,
    /// How settlement knows a request comes from the gateway (service assertions).
    pub settlement_auth: SettlementAuthConfig,
    pub upstream: UpstreamConfig,
    pub cache: CacheConfig,
    pub ratelimit: RateLimitConfig,
    /// Who the client of a request is: the TCP peer, or behind trusted proxies the address
    /// they forwarded (`crate::client_addr`).
    pub client_ip: crate::client_addr::ClientIpConfig,
    pub degraded: DegradedConfig,
    pub web: WebConfig,
    /// Distributed tracing of both services (off without `otlp_endpoint`); the settlement
    /// service gets its copy from whoever composes the two (`stockgate::config`).
    pub telemetry: backend_adapters::telemetry::TelemetryConfig,
    /// The Redis stream of order and product events the cache invalidation follows: the
    /// settlement outbox's stream, filled in by whoever composes the two services (not a
    /// field of the file's gateway part).
    #[serde(skip)]
    pub events_stream: String,
}

/// Listeners, worker threads and shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// The public listener (`host:port`; port 0 picks a free port).
    pub listen: String,
    /// The admin listener: `/metrics`, `/admin/reload`. Keep it off the public network.
    pub admin_listen: String,
    /// Worker threads of the proxy service.
    pub threads: usize,
    /// After SIGTERM: how long listeners stay open while in-flight requests drain.
    pub grace_period_secs: u64,
    /// After the grace period: how long runtimes get to finish before they are dropped.
    pub shutdown_timeout_secs: u64,
    /// The HTTPS listener beside `listen` (off unless `server.tls.listen` is set).
    pub tls: TlsConfig,
    /// HTTP/2 limits of the HTTPS listener.
    pub http2: Http2Config,
}

/// Protection of the public listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest request body; larger declared bodies get 413 before any byte is read.
    pub max_body_bytes: usize,
    /// Most request headers (431 above).
    pub max_header_count: usize,
    /// Most bytes of all request header names and values together (431 above).
    pub max_header_bytes: usize,
    /// Total deadline for a client to send a request's headers (slowloris), per request.
    pub header_read_timeout_ms: u64,
    /// Deadline for a request's whole body, counted from the end of its headers (a body
    /// trickled a byte at a time is cut off too), and for each read of it.
    pub body_read_timeout_ms: u64,
    /// How long an idle keep-alive client connection stays open.
    pub idle_timeout_secs: u64,
    /// Deadline for each write of an answer to the client: a client that stops reading
    /// (a full TCP window or HTTP/2 flow-control window) is cut off after it.
    pub write_timeout_ms: u64,
    /// Most requests one client address has open at once, over all its connections and
    /// HTTP/2 streams (429 `too_many_in_flight` above; `crate::in_flight`).
    pub max_in_flight_per_client: u32,
    /// Most requests the gateway serves at once (503 `overloaded` above).
    pub max_in_flight: usize,
}

/// Buyer identity: JWTs from an identity provider. The keys come from one of: OpenID Connect
/// discovery of each `issuer` (`discovery = true`), a JWKS URL, a JWKS file, or (none set)
/// the dev JWKS in `data_dir`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A JWKS file with the identity provider's public keys.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL: `https://`, or `http://` on a loopback host only (tests, local use).
    pub jwks_url: Option<String>,
    /// OpenID Connect discovery: each `issuer` is a URL whose
    /// `{issuer}/.well-known/openid-configuration` names the JWKS (`jwks_uri`) to fetch.
    pub discovery: bool,
    /// An extra CA certificate (PEM) trusted next to the system roots for `https://` fetches
    /// (a private identity provider, tests).
    pub ca_file: Option<PathBuf>,
    /// How often the key set is re-read; an unknown `kid` also triggers a re-read, at most
    /// once per `jwks_min_refresh_secs`.
    pub jwks_refresh_secs: u64,
    pub jwks_min_refresh_secs: u64,
    /// Keys whose source has not been read successfully for this long stop verifying (the
    /// provider may have withdrawn them meanwhile). At least twice `jwks_refresh_secs`.
    pub max_stale_keys_secs: u64,
    /// Accepted `iss` claims: one string or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub issuer: Vec<String>,
    /// Accepted `aud` claims (a token must name one of them): one string or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub audience: Vec<String>,
    /// The claim that names the buyer (the buyer id): `sub` by default; Entra ID's stable
    /// user id is `oid`.
    pub subject_claim: String,
    /// The claim holding the caller's roles, an array of strings.
    pub roles_claim: String,
    /// Identity-provider role value → stockgate role (`"Stockgate.Ops" = "ops"`). When set,
    /// only mapped roles count; unset, role values are taken as they are.
    pub roles_map: BTreeMap<String, String>,
    /// Scopes every token must grant (`scp` or `scope`, space separated); a token without
    /// one of them is answered 403 `insufficient_scope`.
    pub required_scopes: Vec<String>,
    /// Several issuers name their users in one shared namespace, so the same subject from
    /// two of them is the same buyer. Without it several issuers need `subject_claim = "oid"`.
    pub shared_subjects_across_issuers: bool,
    /// Signature algorithms accepted; only asymmetric ones (`EdDSA`, `RS256`, `ES256`, ...).
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, at most 60 s.
    pub leeway_secs: u64,
    /// The dev identity key `stockgate token` signs with (generated on first use when absent).
    /// Local use only: production tokens come from the real identity provider.
    pub dev_signing_key: Option<PathBuf>,
}

impl AuthConfig {
    /// Whether a real identity provider is configured (else the dev identity is trusted).
    pub fn has_identity_provider(&self) -> bool {
        self.discovery || self.jwks_file.is_some() || self.jwks_url.is_some()
    }
}

/// A TOML string or array of strings, as a list.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "a string or an array of strings")]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

/// The edge's reservation handling.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReservationsConfig {
    /// How long a hold lasts before its units return to stock.
    pub hold_ttl_secs: u64,
    /// How long a sold-out SKU is answered from process memory without asking the store.
    pub sold_out_memory_ms: u64,
    /// The Ed25519 key (PKCS#8 PEM) reservation tokens are signed with; generated into
    /// `data_dir` when absent.
    pub signing_key_file: Option<PathBuf>,
    /// The `kid` of that key (change it when the key rotates).
    pub signing_key_id: String,
    /// The JWKS reservation tokens are verified with, by the gateway's confirm check and by
    /// the settlement service: the signing key and, during a rotation, the previous one, so
    /// outstanding holds still confirm. Must publish the signing key under its `kid`.
    /// Unset: the gateway knows only its signing key, `stockgate settlement` reads the set
    /// generated next to the key in `data_dir`.
    pub public_jwks_file: Option<PathBuf>,
}

/// Service authentication between gateway and settlement: the gateway signs an assertion
/// for every request it sends settlement (`reservation_core::assertion`), settlement refuses
/// every request without a valid one. Unset, `all-in-one` uses a key pair that lives only in
/// its process; separate `gateway` and `settlement` processes use the pair the gateway
/// generates into `data_dir` (`gateway-assertion-key.pem`, `gateway-assertion-jwks.json`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementAuthConfig {
    /// Gateway: the Ed25519 key (PKCS#8 PEM) assertions are signed with.
    pub signing_key_file: Option<PathBuf>,
    /// Gateway: the `kid` of that key (change it when the key rotates).
    pub signing_key_id: String,
    /// Settlement: the JWKS with the gateway's public keys (during a rotation the old and the
    /// new). A `stockgate settlement` without one (and without the generated set in
    /// `data_dir`) refuses to start.
    pub gateway_jwks_file: Option<PathBuf>,
}

impl Default for SettlementAuthConfig {
    fn default() -> Self {
        SettlementAuthConfig {
            signing_key_file: None,
            signing_key_id: "gw-1".into(),
            gateway_jwks_file: None,
        }
    }
}

/// The settlement service behind the gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// `host:port` of the settlement service (`http://` prefix accepted).
    pub settlement_addr: String,
    pub connect_timeout_ms: u64,
    /// Per-read deadline on the upstream connection.
    pub read_timeout_ms: u64,
    pub write_timeout_ms: u64,
    /// Deadline of the whole `POST /internal/settlements` call made by the order confirm.
    pub settle_timeout_ms: u64,
    /// How long an idle pooled upstream connection is kept.
    pub pool_idle_timeout_secs: u64,
    /// How long any one upstream connection is used: older ones are replaced, so the requests
    /// of a gateway spread over settlement pods added since (`crate::conn_age`).
    pub max_connection_age_secs: u64,
    /// The port of settlement's admin listener (`settlement.admin_listen_addr`) on the host
    /// of `settlement_addr`: its `/healthz` is the upstream health check and its `/readyz`
    /// the database dependency of `/admin/health`. The API port serves neither.
    pub settlement_admin_port: u16,
    /// How often the upstream's `/healthz` is probed.
    pub health_check_interval_secs: u64,
    /// Retries of idempotent requests (GET, HEAD, PUT, DELETE, OPTIONS) whose connection failed.
    pub max_retries: usize,
}

/// The product cache of `GET /api/v1/products*` (DESIGN.md §5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Off: catalog reads are proxied uncached.
    pub enabled: bool,
    /// How long a stored copy is fresh.
    pub ttl_secs: u64,
    /// Each copy's freshness is `ttl_secs` plus up to this percentage more, drawn at random,
    /// so copies stored together do not expire together.
    pub jitter_percent: u64,
    /// After freshness: a stale copy is served at once while one request refreshes it.
    pub stale_while_revalidate_secs: u64,
    /// After freshness: a stale copy is served when the upstream fails or is down.
    pub stale_if_error_secs: u64,
    /// Larger bodies are passed on but not stored.
    pub max_body_bytes: usize,
    /// Most copies kept in process memory (the copy served while Redis is down).
    pub local_max_entries: usize,
    /// This replica's name in the cache-invalidation logs (the stream is followed without a
    /// consumer group, `crate::cache::invalidate`). Unset: `$HOSTNAME`, else a random id.
    pub replica_id: Option<String>,
}

/// Rate-limit rules (DESIGN.md §5); the rules themselves live in their own file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// The rules file (see config/ratelimits.toml). Unset: no limits.
    pub rules_file: Option<PathBuf>,
    /// How often the rules file's modification time is checked (it is re-read on change).
    pub reload_interval_ms: u64,
    /// Gateway replicas sharing the limits: while Redis is unreachable each replica enforces
    /// `rate / replicas` and `burst / replicas` (at least 1) on its own.
    pub replicas: u64,
    /// Rules keyed by `ip` count an IPv6 client by its first `ipv6_prefix_len` bits (one
    /// subscriber usually holds a whole /64 and can pick any address in it); an IPv4 client
    /// by its address.
    pub ipv6_prefix_len: u8,
}

/// Behaviour while Redis is unreachable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DegradedConfig {
    /// Longest wait for a cache or rate-limit reply from Redis before falling back.
    pub redis_timeout_ms: u64,
    /// How often Redis is pinged; a failed ping switches to degraded mode (reservations 503,
    /// per-replica limits, cache from memory), a good one switches back.
    pub probe_interval_ms: u64,
}

/// The browser storefront, the ops console and the dev sign-in (see `gateway/src/web`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// Serve the storefront at `/` and the ops console at `/ops` from the assets built into
    /// the binary. `all-in-one` always serves them.
    pub storefront: bool,
    /// `POST /dev/token`: anyone may mint a buyer or ops token signed with the dev identity
    /// key. Local use only. `true` switches it on anywhere (with a warning at start), `false`
    /// keeps it off even in the embedded default; unset, [`Config::dev_sign_in`] decides
    /// (on only in the fully embedded default). Also `STOCKGATE_DEV_TOKEN`.
    pub dev_token: Option<bool>,
    /// How long a token from `POST /dev/token` stays valid.
    pub dev_token_ttl_secs: u64,
}

impl Default for WebConfig {
    fn default() -> Self {
        WebConfig {
            storefront: false,
            dev_token: None,
            dev_token_ttl_secs: 8 * 3600,
        }
    }
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: true,
            ttl_secs: 5,
            jitter_percent: 20,
            stale_while_revalidate_secs: 10,
            stale_if_error_secs: 300,
            max_body_bytes: 256 * 1024,
            local_max_entries: 10_000,
            replica_id: None,
        }
    }
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            rules_file: None,
            reload_interval_ms: 1_000,
            replicas: 1,
            ipv6_prefix_len: 64,
        }
    }
}

impl Default for DegradedConfig {
    fn default() -> Self {
        DegradedConfig {
            redis_timeout_ms: 150,
            probe_interval_ms: 100,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("stockgate-data"),
            redis_url: None,
            redis_key_prefix: "stockgate".into(),
            server: ServerConfig::default(),
            limits: LimitsConfig::default(),
            auth: AuthConfig::default(),
            reservations: ReservationsConfig::default(),
            settlement_auth: SettlementAuthConfig::default(),
            upstream: UpstreamConfig::default(),
            cache: CacheConfig::default(),
            ratelimit: RateLimitConfig::default(),
            client_ip: Default::default(),
            degraded: DegradedConfig::default(),
            web: WebConfig::default(),
            telemetry: Default::default(),
            events_stream: reservation_core::wire::DEFAULT_EVENTS_STREAM.into(),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            admin_listen: "127.0.0.1:9090".into(),
            threads: 2,
            grace_period_secs: 10,
            shutdown_timeout_secs: 5,
            tls: TlsConfig::default(),
            http2: Http2Config::default(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_body_bytes: 64 * 1024,
            max_header_count: 64,
            max_header_bytes: 32 * 1024,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            idle_timeout_secs: 60,
            write_timeout_ms: 10_000,
            max_in_flight_per_client: 128,
            max_in_flight: 10_000,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwks_file: None,
            jwks_url: None,
            discovery: false,
            ca_file: None,
            jwks_refresh_secs: 300,
            jwks_min_refresh_secs: 10,
            max_stale_keys_secs: 24 * 3600,
            issuer: vec!["stockgate-dev".into()],
            audience: vec!["stockgate".into()],
            subject_claim: "sub".into(),
            roles_claim: "roles".into(),
            roles_map: BTreeMap::new(),
            required_scopes: Vec::new(),
            shared_subjects_across_issuers: false,
            algorithms: vec!["EdDSA".into(), "RS256".into(), "ES256".into()],
            leeway_secs: 5,
            dev_signing_key: None,
        }
    }
}

impl Default for ReservationsConfig {
    fn default() -> Self {
        ReservationsConfig {
            hold_ttl_secs: 600,
            sold_out_memory_ms: 1_000,
            signing_key_file: None,
            signing_key_id: "rsv-1".into(),
            public_jwks_file: None,
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            settlement_addr: "127.0.0.1:8081".into(),
            connect_timeout_ms: 1_000,
            read_timeout_ms: 5_000,
            write_timeout_ms: 5_000,
            settle_timeout_ms: 5_000,
            pool_idle_timeout_secs: 60,
            max_connection_age_secs: 30,
            settlement_admin_port: 9091,
            health_check_interval_secs: 2,
            max_retries: 2,
        }
    }
}

impl Config {
    /// `http://host:port` of settlement's admin listener: the upstream's host and
    /// `upstream.settlement_admin_port`.
    pub fn settlement_admin_base(&self) -> String {
        let host_port = self.settlement_host_port();
        let host = host_port
            .rsplit_once(':')
            .map_or(host_port, |(host, _)| host);
        format!("http://{host}:{}", self.upstream.settlement_admin_port)
    }

    /// The settlement upstream as `host:port`, without any `http://` prefix.
    pub fn settlement_host_port(&self) -> &str {
        let addr = self.upstream.settlement_addr.as_str();
        addr.strip_prefix("http://")
            .unwrap_or(addr)
            .trim_end_matches('/')
    }
}

/// Milliseconds as a `Duration` (config fields carry their unit in their name).
pub fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

mod tls;
mod validate;

pub use tls::{Http2Config, TlsConfig, TlsListener};

/// Whether `POST /dev/token` is served, and why. Decided by the process that composes the
/// gateway: only `stockgate all-in-one` with nothing configured can be the embedded default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DevSignIn {
    /// Not served: the route answers 404.
    Off,
    /// Served because the process is the fully embedded default (local use).
    EmbeddedDefault,
    /// Served because `web.dev_token = true` or `STOCKGATE_DEV_TOKEN=1` says so, wherever the
    /// process runs.
    Explicit,
}

impl Config {
    /// The dev sign-in of a gateway that is not the embedded default: only an explicit
    /// `web.dev_token = true` switches it on.
    pub fn explicit_dev_sign_in(&self) -> DevSignIn {
        match self.web.dev_token {
            Some(true) => DevSignIn::Explicit,
            _ => DevSignIn::Off,
        }
    }
}
