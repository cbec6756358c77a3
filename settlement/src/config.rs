//! The settlement service's configuration: a typed struct read from TOML/JSON (unknown fields
//! refused), with defaults for the embedded mode and a `validate()` that names the bad field.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use backend_adapters::amqp::{AmqpSettings, AmqpTarget};
use backend_adapters::sql::SessionLimits;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// A configuration value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid settlement config: {field} {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: &str) -> ConfigError {
    ConfigError {
        field,
        reason: reason.to_owned(),
    }
}

/// How settlements reach SQL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommitMode {
    /// Gather concurrent settlements and commit them together (the default).
    Group,
    /// One transaction per settlement (the benchmark's baseline).
    PerOrder,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GroupCommitConfig {
    /// Most settlements in one transaction.
    pub max_batch: usize,
    /// Longest a settlement waits for others to join its batch, in microseconds.
    pub max_wait_us: u64,
    /// Longest the worker waits for one batch's transaction, in ms (0: no limit). Past it the
    /// batch's callers get 503 `database_busy`; it backs up the session limits
    /// ([`SettlementConfig::db_limits`]) for what they do not cover (a stalled connection, a
    /// wait for a pooled connection). Keep it below the gateway's `upstream.settle_timeout_ms`
    /// so the gateway hears "busy, retry" rather than timing out.
    pub deadline_ms: u64,
}

impl Default for GroupCommitConfig {
    fn default() -> Self {
        GroupCommitConfig {
            max_batch: 128,
            max_wait_us: 2_000,
            deadline_ms: 4_000,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// The Redis stream events are published to (only with `redis_url`); empty (the default)
    /// means `<redis_key_prefix>:events`, so two deployments with their own key prefixes on
    /// one Redis never share a stream. Read it through [`SettlementConfig::events_stream`].
    pub stream: String,
    /// Approximate cap on the stream's length.
    pub stream_maxlen: usize,
    /// How often the relay looks for unpublished rows, in ms.
    pub poll_interval_ms: u64,
    /// Most rows per relay round.
    pub batch: usize,
    /// Publish to the Redis stream (with `redis_url`). `false` only next to `amqp`: the broker
    /// is then the only sink, and the gateway's product cache, which follows the stream,
    /// refreshes by its TTL alone.
    pub publish_to_stream: bool,
    /// `[settlement.outbox.amqp]`: publish to an AMQP 1.0 broker (Azure Service Bus) too.
    pub amqp: Option<AmqpConfig>,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            stream: String::new(),
            stream_maxlen: 100_000,
            poll_interval_ms: 100,
            batch: 256,
            publish_to_stream: true,
            amqp: None,
        }
    }
}

/// The environment variable that carries the SAS key (`sas_key_file` is the other way).
pub const AMQP_SAS_KEY_ENV: &str = "STOCKGATE_AMQP_SAS_KEY";

/// The relay's AMQP 1.0 sink: every outbox event becomes one durable message on `address`,
/// marked published only once the broker accepted it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AmqpConfig {
    /// `amqps://<namespace>.servicebus.windows.net:5671`, or `amqp://host:5672` for a local
    /// broker; no credentials in it.
    pub url: String,
    /// The entity messages are sent to: the Service Bus topic name; RabbitMQ 3.x with its
    /// amqp1_0 plugin: `/queue/<q>` or `/exchange/<x>/<routing key>`.
    pub address: String,
    /// SASL PLAIN user: the SAS policy name (`SharedAccessKeyName`) on Service Bus.
    pub sas_key_name: String,
    /// A file holding the SAS key (a mounted Secret); `STOCKGATE_AMQP_SAS_KEY` wins over it.
    pub sas_key_file: Option<PathBuf>,
    /// The key from `STOCKGATE_AMQP_SAS_KEY`; never read from or written to a file.
    #[serde(skip)]
    pub sas_key: Secret,
    /// Set `group-id` (Service Bus `SessionId`) to the order id, so a session-enabled
    /// subscription hands one order's events to one receiver, in order. Events without an
    /// order (`product.updated`) get `product:<sku>`.
    pub session_per_order: bool,
    /// Connecting, SASL and attaching the link, in ms.
    pub connect_timeout_ms: u64,
    /// Longest wait for the broker to accept one relay batch, in ms.
    pub send_timeout_ms: u64,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        AmqpConfig {
            url: String::new(),
            address: String::new(),
            sas_key_name: String::new(),
            sas_key_file: None,
            sas_key: Secret::default(),
            session_per_order: false,
            connect_timeout_ms: 5_000,
            send_timeout_ms: 10_000,
        }
    }
}

/// A secret string: `Debug` shows whether it is set, never its value.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "<unset>"
        } else {
            "<redacted>"
        })
    }
}

impl AmqpConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Err(error) = AmqpTarget::parse(&self.url) {
            return Err(invalid("outbox.amqp.url", &error.to_string()));
        }
        if self.address.is_empty() || self.address.chars().any(char::is_whitespace) {
            return Err(invalid(
                "outbox.amqp.address",
                "must be set (the topic name on Service Bus) and contain no whitespace",
            ));
        }
        if self.sas_key_name.is_empty() {
            return Err(invalid(
                "outbox.amqp.sas_key_name",
                "must be set (the SAS policy name; `guest` on a local RabbitMQ)",
            ));
        }
        if self.sas_key.0.is_empty() && self.sas_key_file.is_none() {
            return Err(invalid(
                "outbox.amqp.sas_key_file",
                "or STOCKGATE_AMQP_SAS_KEY must be set: the SAS key is missing",
            ));
        }
        for (field, value) in [
            ("outbox.amqp.connect_timeout_ms", self.connect_timeout_ms),
            ("outbox.amqp.send_timeout_ms", self.send_timeout_ms),
        ] {
            if value == 0 || value > 600_000 {
                return Err(invalid(field, "must be between 1 and 600000 (ms)"));
            }
        }
        Ok(())
    }

    /// The publisher's settings, with the key from the environment or read from
    /// `sas_key_file` (surrounding whitespace trimmed: a Secret file often ends in a newline).
    pub fn settings(&self) -> Result<AmqpSettings, ConfigError> {
        self.validate()?;
        let target =
            AmqpTarget::parse(&self.url).map_err(|e| invalid("outbox.amqp.url", &e.to_string()))?;
        let key = match (&self.sas_key.0, &self.sas_key_file) {
            (key, _) if !key.is_empty() => key.clone(),
            (_, Some(path)) => std::fs::read_to_string(path)
                .map_err(|e| {
                    invalid(
                        "outbox.amqp.sas_key_file",
                        &format!("cannot be read ({}): {e}", path.display()),
                    )
                })?
                .trim()
                .to_owned(),
            (_, None) => String::new(),
        };
        if key.is_empty() {
            return Err(invalid(
                "outbox.amqp.sas_key_file",
                "holds no key (the file is empty)",
            ));
        }
        Ok(AmqpSettings {
            target,
            address: self.address.clone(),
            user: self.sas_key_name.clone(),
            key,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            send_timeout: Duration::from_millis(self.send_timeout_ms),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Run the sweeper and reconciler periodically (under a leader lease).
    pub enabled: bool,
    /// Time between sweeps, in ms.
    pub sweep_interval_ms: u64,
    /// Time between reconciler runs (report + confirming resolution; never repair), in ms.
    pub reconcile_interval_ms: u64,
    /// A hold `confirming` for longer than this is resolved from SQL, in ms.
    pub confirming_grace_ms: u64,
    /// Holds expired per `expire_due` call.
    pub sweep_batch: usize,
    /// The leader lease, in ms.
    pub leader_lease_ms: u64,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            enabled: true,
            sweep_interval_ms: 1_000,
            reconcile_interval_ms: 30_000,
            confirming_grace_ms: 60_000,
            sweep_batch: 100,
            leader_lease_ms: 10_000,
        }
    }
}

/// Everything the settlement service needs to start.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SettlementConfig {
    /// Where the HTTP API listens (`127.0.0.1:0` picks a free port).
    pub listen_addr: SocketAddr,
    /// The admin listener: `/healthz`, `/readyz`, `/metrics` (kubelet, Prometheus, the
    /// gateway's upstream health check), apart from the API so probes never queue behind a
    /// sale's traffic. Keep it off the public network. Env: `STOCKGATE_SETTLEMENT_ADMIN_LISTEN`.
    pub admin_listen_addr: SocketAddr,
    /// `postgres://…` or `sqlite://file?mode=rwc`.
    pub database_url: String,
    pub db_max_connections: u32,
    /// Time limits of every PostgreSQL session of the service (`[settlement.db_limits]`):
    /// a lock held elsewhere or a runaway statement fails in bounded time instead of
    /// freezing settlement. Ignored on SQLite.
    pub db_limits: SessionLimits,
    /// Redis for the fenced lock, the leader lease and the events stream; without it, events
    /// are applied in process and locks are local (single-process embedded mode).
    pub redis_url: Option<String>,
    /// Prefix of this service's own Redis keys (locks).
    pub redis_key_prefix: String,
    pub commit_mode: CommitMode,
    pub group_commit: GroupCommitConfig,
    pub outbox: OutboxConfig,
    pub maintenance: MaintenanceConfig,
    /// Lease of the per-order lock of an ops status change, in ms.
    pub status_lock_lease_ms: u64,
    /// Distributed tracing: the file's top-level `[telemetry]`, filled in by whoever
    /// composes the services (`stockgate::config`), not a field of `[settlement]`.
    #[serde(skip)]
    pub telemetry: backend_adapters::telemetry::TelemetryConfig,
}

impl SettlementConfig {
    /// The events stream: `outbox.stream`, or `<redis_key_prefix>:events` when that is empty.
    pub fn events_stream(&self) -> String {
        if self.outbox.stream.is_empty() {
            format!("{}:events", self.redis_key_prefix)
        } else {
            self.outbox.stream.clone()
        }
    }
}

impl Default for SettlementConfig {
    fn default() -> Self {
        SettlementConfig {
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 8081)),
            admin_listen_addr: SocketAddr::from(([127, 0, 0, 1], 9091)),
            database_url: "sqlite://stockgate.db?mode=rwc".into(),
            db_max_connections: 16,
            db_limits: SessionLimits::default(),
            redis_url: None,
            redis_key_prefix: "stockgate".into(),
            commit_mode: CommitMode::Group,
            group_commit: GroupCommitConfig::default(),
            outbox: OutboxConfig::default(),
            maintenance: MaintenanceConfig::default(),
            status_lock_lease_ms: 5_000,
            telemetry: Default::default(),
        }
    }
}

impl SettlementConfig {
    /// Environment overrides for URLs and secrets: `STOCKGATE_DATABASE_URL`,
    /// `STOCKGATE_REDIS_URL`, `STOCKGATE_AMQP_SAS_KEY`.
    pub fn with_env_overrides(mut self) -> Self {
        if let Ok(url) = std::env::var("STOCKGATE_DATABASE_URL") {
            self.database_url = url;
        }
        if let Ok(url) = std::env::var("STOCKGATE_REDIS_URL") {
            self.redis_url = Some(url);
        }
        if let Ok(key) = std::env::var(AMQP_SAS_KEY_ENV) {
            self.set_amqp_sas_key(key);
        }
        self
    }

    /// The SAS key of `[settlement.outbox.amqp]` (from the environment); ignored without
    /// that table.
    pub fn set_amqp_sas_key(&mut self, key: String) {
        if let Some(amqp) = self.outbox.amqp.as_mut() {
            amqp.sas_key = Secret(key);
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://")
            || self.database_url.starts_with("sqlite:"))
        {
            return Err(invalid(
                "database_url",
                "must start with postgres:// or sqlite:",
            ));
        }
        if self.admin_listen_addr == self.listen_addr && self.listen_addr.port() != 0 {
            return Err(invalid(
                "admin_listen_addr",
                "must differ from listen_addr: probes and metrics have a listener of their own",
            ));
        }
        if self.db_max_connections == 0 {
            return Err(invalid("db_max_connections", "must be at least 1"));
        }
        // Every form `RedisConnection` accepts (one server or a cluster, plain or TLS); the
        // parse error names the reason without the password.
        if let Some(url) = &self.redis_url
            && let Err(error) = backend_adapters::redis::connection::RedisTarget::parse(url)
        {
            return Err(invalid("redis_url", &error.to_string()));
        }
        if self.redis_key_prefix.is_empty() || self.redis_key_prefix.contains(['{', '}']) {
            return Err(invalid(
                "redis_key_prefix",
                "must be non-empty and contain no braces",
            ));
        }
        let group = &self.group_commit;
        if group.max_batch == 0 || group.max_batch > 1_000 {
            return Err(invalid(
                "group_commit.max_batch",
                "must be between 1 and 1000",
            ));
        }
        if group.max_wait_us > 100_000 {
            return Err(invalid(
                "group_commit.max_wait_us",
                "must be at most 100000 (100 ms)",
            ));
        }
        if group.deadline_ms > 600_000 {
            return Err(invalid(
                "group_commit.deadline_ms",
                "must be at most 600000 (10 min); 0 turns it off",
            ));
        }
        let limits = &self.db_limits;
        for (field, value) in [
            (
                "db_limits.statement_timeout_ms",
                limits.statement_timeout_ms,
            ),
            ("db_limits.lock_timeout_ms", limits.lock_timeout_ms),
            (
                "db_limits.idle_in_transaction_session_timeout_ms",
                limits.idle_in_transaction_session_timeout_ms,
            ),
        ] {
            // PostgreSQL takes these as a 32-bit count of ms.
            if value > i32::MAX as u64 {
                return Err(invalid(
                    field,
                    "must be at most 2147483647 (ms); 0 turns it off",
                ));
            }
        }
        if self
            .outbox
            .stream
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid("outbox.stream", "must not contain whitespace"));
        }
        if self.outbox.batch == 0 || self.outbox.batch > 10_000 {
            return Err(invalid("outbox.batch", "must be between 1 and 10000"));
        }
        if self.outbox.poll_interval_ms == 0 {
            return Err(invalid("outbox.poll_interval_ms", "must be at least 1"));
        }
        match &self.outbox.amqp {
            Some(amqp) => amqp.validate()?,
            None if !self.outbox.publish_to_stream => {
                return Err(invalid(
                    "outbox.publish_to_stream",
                    "= false needs [settlement.outbox.amqp]: events would be published nowhere",
                ));
            }
            None => {}
        }
        let m = &self.maintenance;
        if m.sweep_interval_ms == 0 || m.reconcile_interval_ms == 0 {
            return Err(invalid(
                "maintenance.sweep_interval_ms",
                "and reconcile_interval_ms must be at least 1",
            ));
        }
        if m.sweep_batch == 0 {
            return Err(invalid("maintenance.sweep_batch", "must be at least 1"));
        }
        if m.leader_lease_ms < 100 {
            return Err(invalid(
                "maintenance.leader_lease_ms",
                "must be at least 100",
            ));
        }
        if self.status_lock_lease_ms < 10 {
            return Err(invalid("status_lock_lease_ms", "must be at least 10"));
        }
        Ok(())
    }

    pub(crate) fn max_wait(&self) -> Duration {
        Duration::from_micros(self.group_commit.max_wait_us)
    }

    /// The group-commit deadline of one batch; `None` when turned off.
    pub(crate) fn batch_deadline(&self) -> Option<Duration> {
        (self.group_commit.deadline_ms > 0)
            .then(|| Duration::from_millis(self.group_commit.deadline_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejects(mutate: impl FnOnce(&mut SettlementConfig), field: &str) {
        let mut config = SettlementConfig::default();
        mutate(&mut config);
        let err = config.validate().unwrap_err();
        assert_eq!(err.field, field);
        assert!(err.to_string().contains(field), "{err}");
    }

    #[test]
    fn cluster_and_tls_redis_urls_are_accepted() {
        for url in [
            "redis+cluster://h1:7001,h2:7002",
            "rediss+cluster://:key@h1:10000",
            "redis://h1:7001?cluster=true",
            "rediss://h1:6380?ca_file=/etc/redis/ca.pem",
        ] {
            let config = SettlementConfig {
                redis_url: Some(url.into()),
                ..SettlementConfig::default()
            };
            assert_eq!(config.validate(), Ok(()), "{url}");
        }
    }

    #[test]
    fn default_is_valid() {
        assert_eq!(SettlementConfig::default().validate(), Ok(()));
    }

    #[test]
    fn each_rule_names_its_field() {
        rejects(|c| c.database_url = "mysql://x".into(), "database_url");
        rejects(|c| c.admin_listen_addr = c.listen_addr, "admin_listen_addr");
        rejects(|c| c.db_max_connections = 0, "db_max_connections");
        rejects(|c| c.redis_url = Some("http://x".into()), "redis_url");
        rejects(
            |c| c.redis_url = Some("redis://h1:1,h2:2".into()),
            "redis_url",
        );
        rejects(|c| c.redis_key_prefix = "{x}".into(), "redis_key_prefix");
        rejects(|c| c.group_commit.max_batch = 0, "group_commit.max_batch");
        rejects(
            |c| c.group_commit.max_wait_us = 1_000_000,
            "group_commit.max_wait_us",
        );
        rejects(
            |c| c.group_commit.deadline_ms = 600_001,
            "group_commit.deadline_ms",
        );
        rejects(
            |c| c.db_limits.lock_timeout_ms = u64::MAX,
            "db_limits.lock_timeout_ms",
        );
        rejects(|c| c.outbox.stream = "two words".into(), "outbox.stream");
        rejects(|c| c.outbox.batch = 0, "outbox.batch");
        rejects(|c| c.outbox.poll_interval_ms = 0, "outbox.poll_interval_ms");
        rejects(|c| c.maintenance.sweep_batch = 0, "maintenance.sweep_batch");
        rejects(
            |c| c.maintenance.leader_lease_ms = 1,
            "maintenance.leader_lease_ms",
        );
        rejects(|c| c.status_lock_lease_ms = 1, "status_lock_lease_ms");
    }

    fn amqp() -> AmqpConfig {
        AmqpConfig {
            url: "amqps://ns.servicebus.windows.net".into(),
            address: "orders".into(),
            sas_key_name: "stockgate-send".into(),
            sas_key: Secret("k3y".into()),
            ..AmqpConfig::default()
        }
    }

    #[test]
    fn each_amqp_rule_names_its_field() {
        let with = |mutate: fn(&mut AmqpConfig)| {
            move |c: &mut SettlementConfig| {
                let mut a = amqp();
                mutate(&mut a);
                c.outbox.amqp = Some(a);
            }
        };
        rejects(with(|a| a.url = "http://ns".into()), "outbox.amqp.url");
        rejects(with(|a| a.url = String::new()), "outbox.amqp.url");
        rejects(
            with(|a| a.url = "amqps://name:key@ns".into()),
            "outbox.amqp.url",
        );
        rejects(with(|a| a.address = String::new()), "outbox.amqp.address");
        rejects(
            with(|a| a.sas_key_name = String::new()),
            "outbox.amqp.sas_key_name",
        );
        rejects(
            with(|a| a.sas_key = Secret::default()),
            "outbox.amqp.sas_key_file",
        );
        rejects(
            with(|a| a.send_timeout_ms = 0),
            "outbox.amqp.send_timeout_ms",
        );
        rejects(
            with(|a| a.connect_timeout_ms = 700_000),
            "outbox.amqp.connect_timeout_ms",
        );
        rejects(
            |c| c.outbox.publish_to_stream = false,
            "outbox.publish_to_stream",
        );
        let ok = SettlementConfig {
            outbox: OutboxConfig {
                publish_to_stream: false,
                amqp: Some(amqp()),
                ..OutboxConfig::default()
            },
            ..SettlementConfig::default()
        };
        assert_eq!(ok.validate(), Ok(()));
    }

    #[test]
    fn a_missing_key_says_where_to_put_it() {
        let config = AmqpConfig {
            sas_key: Secret::default(),
            ..amqp()
        };
        let error = config.settings().unwrap_err().to_string();
        assert!(error.contains("outbox.amqp.sas_key_file"), "{error}");
        assert!(error.contains("STOCKGATE_AMQP_SAS_KEY"), "{error}");
        let unreadable = AmqpConfig {
            sas_key: Secret::default(),
            sas_key_file: Some("/nonexistent/sas-key".into()),
            ..amqp()
        };
        let error = unreadable.settings().unwrap_err().to_string();
        assert!(
            error.contains("outbox.amqp.sas_key_file cannot be read (/nonexistent/sas-key)"),
            "{error}"
        );
    }

    #[test]
    fn the_key_comes_from_the_file_trimmed_and_never_shows() {
        let path = std::env::temp_dir().join(format!("sas-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&path, "file-k3y\n").unwrap();
        let config = AmqpConfig {
            sas_key: Secret::default(),
            sas_key_file: Some(path.clone()),
            ..amqp()
        };
        let settings = config.settings().unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(settings.key, "file-k3y");
        assert_eq!(settings.user, "stockgate-send");
        assert_eq!(settings.target.port, 5671);
        // The environment's key wins over the file.
        assert_eq!(amqp().settings().unwrap().key, "k3y");
        let shown = format!("{:?} {settings:?}", amqp());
        assert!(!shown.contains("k3y"), "{shown}");
    }

    #[test]
    fn the_amqp_table_parses_and_the_key_is_not_a_field() {
        let ok: SettlementConfig = serde_json::from_str(
            r#"{"outbox":{"amqp":{"url":"amqp://127.0.0.1:5672","address":"/queue/q","sas_key_name":"guest","session_per_order":true}}}"#,
        )
        .unwrap();
        let amqp = ok.outbox.amqp.unwrap();
        assert!(amqp.session_per_order);
        assert_eq!(amqp.send_timeout_ms, 10_000);
        let err =
            serde_json::from_str::<SettlementConfig>(r#"{"outbox":{"amqp":{"sas_key":"x"}}}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<SettlementConfig>(r#"{"listen":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let err = serde_json::from_str::<SettlementConfig>(r#"{"group_commit":{"batch":3}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        let ok: SettlementConfig =
            serde_json::from_str(r#"{"commit_mode":"per_order","group_commit":{"max_batch":8}}"#)
                .unwrap();
        assert_eq!(ok.commit_mode, CommitMode::PerOrder);
        assert_eq!(ok.group_commit.max_batch, 8);
        let err = serde_json::from_str::<SettlementConfig>(r#"{"db_limits":{"lock_timeout":3}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
        // One limit turned off; the others keep their defaults.
        let ok: SettlementConfig =
            serde_json::from_str(r#"{"db_limits":{"lock_timeout_ms":0}}"#).unwrap();
        assert_eq!(ok.db_limits.lock_timeout_ms, 0);
        assert_eq!(ok.db_limits.statement_timeout_ms, 5_000);
    }
}
