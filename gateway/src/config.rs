//! The gateway's configuration: typed TOML sections with `deny_unknown_fields`, defaults that
//! make up the embedded default (`stockgate all-in-one` with no file), `STOCKGATE_*`
//! environment overrides for URLs, paths and secrets, and a `validate()` whose errors name the
//! offending field. `config/stockgate.toml` documents every option.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config field `{field}` {reason}")]
    Invalid { field: &'static str, reason: String },
}

pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The file this configuration was read from; `None`: the built-in defaults (plus
    /// environment overrides). Set by [`Config::load`], never by a file.
    #[serde(skip)]
    pub file: Option<PathBuf>,
    /// An environment override whose value does not parse as its field's type (the
    /// variable, the value), reported by [`Config::validate`].
    #[serde(skip)]
    pub invalid_env: Option<(&'static str, String)>,
    /// Where generated dev keys and the embedded SQLite file live.
    pub data_dir: PathBuf,
    /// Redis for the reservation store; `None` runs the in-memory store (one replica only).
    pub redis_url: Option<String>,
    /// The settlement database (used by `settlement`, `all-in-one`, `migrate`, `reconcile`);
    /// `None` means an SQLite file in `data_dir`.
    pub database_url: Option<String>,
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
    /// The settlement service (`settlement` and `all-in-one`); its `database_url` and
    /// `redis_url` come from the top-level fields above.
    pub settlement: settlement::SettlementConfig,
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
}

/// Buyer identity: JWTs from an identity provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A JWKS file with the identity provider's public keys.
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL (plain `http://`; put TLS termination in front for remote providers).
    pub jwks_url: Option<String>,
    /// How often the key set is re-read; an unknown `kid` also triggers a re-read, at most
    /// once per `jwks_min_refresh_secs`.
    pub jwks_refresh_secs: u64,
    pub jwks_min_refresh_secs: u64,
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim.
    pub audience: String,
    /// Signature algorithms accepted; only asymmetric ones (`EdDSA`, `RS256`, `ES256`, ...).
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, at most 60 s.
    pub leeway_secs: u64,
    /// The dev identity key `stockgate token` signs with (generated on first use when absent).
    /// Local use only: production tokens come from the real identity provider.
    pub dev_signing_key: Option<PathBuf>,
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
            file: None,
            invalid_env: None,
            data_dir: PathBuf::from("stockgate-data"),
            redis_url: None,
            database_url: None,
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
            settlement: settlement::SettlementConfig::default(),
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
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            jwks_min_refresh_secs: 10,
            issuer: "stockgate-dev".into(),
            audience: "stockgate".into(),
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

/// The environment variables that override file values (URLs, paths and secrets).
const ENV_OVERRIDES: &[&str] = &[
    "STOCKGATE_DATA_DIR",
    "STOCKGATE_REDIS_URL",
    "STOCKGATE_DATABASE_URL",
    "STOCKGATE_LISTEN",
    "STOCKGATE_ADMIN_LISTEN",
    "STOCKGATE_SETTLEMENT_ADDR",
    // `stockgate settlement`'s admin listener (`settlement.admin_listen_addr`), `host:port`.
    "STOCKGATE_SETTLEMENT_ADMIN_LISTEN",
    "STOCKGATE_JWKS_FILE",
    "STOCKGATE_JWKS_URL",
    "STOCKGATE_RESERVATION_KEY_FILE",
    "STOCKGATE_RESERVATION_KEY_ID",
    "STOCKGATE_RESERVATION_JWKS_FILE",
    // Service authentication (`[settlement_auth]`): the gateway's assertion key and its
    // `kid`, and the gateway key set settlement verifies with.
    "STOCKGATE_ASSERTION_KEY_FILE",
    "STOCKGATE_ASSERTION_KEY_ID",
    "STOCKGATE_GATEWAY_JWKS_FILE",
    // Dev sign-in: `1` on, any other value off (a typo fails safe), see `Config::dev_sign_in`.
    "STOCKGATE_DEV_TOKEN",
    // Client addresses: the proxies whose forwarding header is believed, comma separated
    // CIDRs (`crate::client_addr`); validated with the file's.
    "STOCKGATE_TRUSTED_PROXIES",
];

impl Config {
    /// Reads and parses a TOML file (without environment overrides or validation).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text; the error is the parser's message (it names the field and line).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Loads the file (or the defaults when `path` is `None`), applies `STOCKGATE_*`
    /// overrides from the process environment, and validates.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(path, |name| std::env::var(name).ok())
    }

    /// [`Config::load`] with the environment read through `lookup` (tests).
    pub fn load_with(
        path: Option<&Path>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => Self::from_file(path)?,
            None => Config::default(),
        };
        config.file = path.map(Path::to_owned);
        config.apply_env(lookup);
        config.validate()?;
        Ok(config)
    }

    /// Applies overrides from `lookup` (the process environment, or a map in tests).
    pub fn apply_env(&mut self, lookup: impl Fn(&str) -> Option<String>) {
        for name in ENV_OVERRIDES {
            let Some(value) = lookup(name).filter(|v| !v.is_empty()) else {
                continue;
            };
            match *name {
                "STOCKGATE_DATA_DIR" => self.data_dir = value.into(),
                "STOCKGATE_REDIS_URL" => self.redis_url = Some(value),
                "STOCKGATE_DATABASE_URL" => self.database_url = Some(value),
                "STOCKGATE_LISTEN" => self.server.listen = value,
                "STOCKGATE_ADMIN_LISTEN" => self.server.admin_listen = value,
                "STOCKGATE_SETTLEMENT_ADDR" => self.upstream.settlement_addr = value,
                "STOCKGATE_SETTLEMENT_ADMIN_LISTEN" => match value.parse() {
                    Ok(addr) => self.settlement.admin_listen_addr = addr,
                    // Reported by `validate`, which names the variable.
                    Err(_) => self.invalid_env = Some(("STOCKGATE_SETTLEMENT_ADMIN_LISTEN", value)),
                },
                "STOCKGATE_JWKS_FILE" => self.auth.jwks_file = Some(value.into()),
                "STOCKGATE_JWKS_URL" => self.auth.jwks_url = Some(value),
                "STOCKGATE_RESERVATION_KEY_FILE" => {
                    self.reservations.signing_key_file = Some(value.into())
                }
                "STOCKGATE_RESERVATION_KEY_ID" => self.reservations.signing_key_id = value,
                "STOCKGATE_RESERVATION_JWKS_FILE" => {
                    self.reservations.public_jwks_file = Some(value.into())
                }
                "STOCKGATE_ASSERTION_KEY_FILE" => {
                    self.settlement_auth.signing_key_file = Some(value.into())
                }
                "STOCKGATE_ASSERTION_KEY_ID" => self.settlement_auth.signing_key_id = value,
                "STOCKGATE_GATEWAY_JWKS_FILE" => {
                    self.settlement_auth.gateway_jwks_file = Some(value.into())
                }
                "STOCKGATE_DEV_TOKEN" => self.web.dev_token = Some(value == "1"),
                "STOCKGATE_TRUSTED_PROXIES" => {
                    self.client_ip.trusted_proxies = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                _ => {}
            }
        }
    }

    /// The settlement database: `database_url`, else an SQLite file in `data_dir`.
    pub fn database_url_or_embedded(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("stockgate.db").display()
            )
        })
    }

    /// The settlement service's configuration with the top-level URLs filled in.
    pub fn settlement_config(&self) -> settlement::SettlementConfig {
        settlement::SettlementConfig {
            database_url: self.database_url_or_embedded(),
            redis_url: self.redis_url.clone(),
            ..self.settlement.clone()
        }
    }

    /// The JWKS that verifies reservation tokens outside the gateway process.
    pub fn reservation_jwks_file(&self) -> PathBuf {
        self.reservations
            .public_jwks_file
            .clone()
            .unwrap_or_else(|| {
                self.data_dir
                    .join(crate::auth::devkeys::RESERVATION_JWKS_FILE)
            })
    }

    /// `http://host:port` of settlement's admin listener: the upstream's host and
    /// `upstream.settlement_admin_port`.
    pub fn settlement_admin_base(&self) -> String {
        let host_port = self.settlement_host_port();
        let host = host_port
            .rsplit_once(':')
            .map_or(host_port, |(host, _)| host);
        format!("http://{host}:{}", self.upstream.settlement_admin_port)
    }

    /// The gateway key set settlement verifies assertions with outside the gateway process.
    pub fn gateway_jwks_file(&self) -> PathBuf {
        self.settlement_auth
            .gateway_jwks_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::service_auth::ASSERTION_JWKS_FILE))
    }

    /// The settlement upstream as `host:port`, without any `http://` prefix.
    pub fn settlement_host_port(&self) -> &str {
        let addr = self.upstream.settlement_addr.as_str();
        addr.strip_prefix("http://")
            .unwrap_or(addr)
            .trim_end_matches('/')
    }

    /// Where the identity provider's keys come from, defaulting to the dev JWKS in `data_dir`.
    pub fn jwks_file_or_dev(&self) -> PathBuf {
        self.auth
            .jwks_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join(crate::auth::devkeys::DEV_JWKS_FILE))
    }
}

/// Milliseconds as a `Duration` (config fields carry their unit in their name).
pub fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

mod embedded_default;
mod validate;

pub use embedded_default::DevSignIn;

#[cfg(test)]
mod tests;
