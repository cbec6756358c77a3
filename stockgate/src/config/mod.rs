//! The configuration file of the `stockgate` program: one TOML file for the gateway and the
//! settlement service. Read in two stages, as the pieces it configures are separate crates:
//! the text is parsed into a table, the `[settlement]` table and the top-level `database_url`
//! are taken out for the settlement service, and the rest is the gateway's
//! ([`gateway::config::Config`]); each part refuses unknown fields and its errors name the
//! path of the field at fault. Then `STOCKGATE_*` environment overrides, then
//! [`Config::validate`]. `config/stockgate.toml` documents every option.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use settlement::SettlementConfig;
use thiserror::Error;

mod embedded_default;

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(transparent)]
    Gateway(#[from] gateway::config::ConfigError),
    #[error("config field `{field}` {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// The file this configuration was read from; `None`: the built-in defaults (plus
    /// environment overrides). Set by [`Config::load`].
    pub file: Option<PathBuf>,
    /// The settlement database (used by `settlement`, `all-in-one`, `migrate`, `reconcile`);
    /// `None` means an SQLite file in `data_dir`.
    pub database_url: Option<String>,
    /// Every table of the file but `[settlement]`: the edge, and the fields both services
    /// share (`data_dir`, `redis_url`, `redis_key_prefix`).
    pub gateway: gateway::config::Config,
    /// The `[settlement]` table; its `database_url` and `redis_url` come from the top-level
    /// fields ([`Config::settlement_config`]).
    pub settlement: SettlementConfig,
    /// An environment override whose value does not parse as its field's type (the
    /// variable, the value, what it must be), reported by [`Config::validate`].
    pub invalid_env: Option<(&'static str, String, &'static str)>,
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
    // The identity provider (`[auth]`): issuers and audiences comma separated, and
    // `STOCKGATE_AUTH_DISCOVERY` `true`/`1` or `false`/`0` (anything else is an error: a typo
    // must not leave the gateway on another key source).
    "STOCKGATE_AUTH_ISSUER",
    "STOCKGATE_AUTH_AUDIENCE",
    "STOCKGATE_AUTH_DISCOVERY",
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
    // CIDRs (`gateway::client_addr`); validated with the file's.
    "STOCKGATE_TRUSTED_PROXIES",
    // The HTTPS listener (`[server.tls]`): its address, certificate chain and key files.
    "STOCKGATE_TLS_LISTEN",
    "STOCKGATE_TLS_CERT_FILE",
    "STOCKGATE_TLS_KEY_FILE",
    // The SAS key of `[settlement.outbox.amqp]` (Azure Service Bus); ignored without that table.
    "STOCKGATE_AMQP_SAS_KEY",
    // The OpenTelemetry SDKs' own names, which a collector's operator knows.
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_TRACES_SAMPLER_ARG",
];

/// `a, b,` → `["a", "b"]`.
fn comma_list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

impl Config {
    /// Reads and parses a TOML file (without environment overrides or validation).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text. The error is the parser's message (with its line) for text that is
    /// not TOML, else the path of the field at fault and what is wrong with it.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        // No field holds a date or time, and read from a table (not from the text) serde
        // would take one for a string.
        refuse_datetimes("", &table)?;
        let database_url = match table.remove("database_url") {
            None => None,
            Some(toml::Value::String(url)) => Some(url),
            Some(other) => {
                return Err(format!(
                    "database_url: invalid type: {}, expected a string",
                    other.type_str()
                ));
            }
        };
        let settlement = match table.remove("settlement") {
            None => SettlementConfig::default(),
            Some(value) => part("settlement.", value)?,
        };
        let gateway = part("", toml::Value::Table(table))?;
        Ok(Config {
            database_url,
            gateway,
            settlement,
            ..Config::default()
        })
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
        let edge = &mut self.gateway;
        for name in ENV_OVERRIDES {
            let Some(value) = lookup(name).filter(|v| !v.is_empty()) else {
                continue;
            };
            match *name {
                "STOCKGATE_DATA_DIR" => edge.data_dir = value.into(),
                "STOCKGATE_REDIS_URL" => edge.redis_url = Some(value),
                "STOCKGATE_DATABASE_URL" => self.database_url = Some(value),
                "STOCKGATE_LISTEN" => edge.server.listen = value,
                "STOCKGATE_ADMIN_LISTEN" => edge.server.admin_listen = value,
                "STOCKGATE_SETTLEMENT_ADDR" => edge.upstream.settlement_addr = value,
                "STOCKGATE_SETTLEMENT_ADMIN_LISTEN" => match value.parse() {
                    Ok(addr) => self.settlement.admin_listen_addr = addr,
                    // Reported by `validate`, which names the variable.
                    Err(_) => {
                        self.invalid_env = Some((
                            "STOCKGATE_SETTLEMENT_ADMIN_LISTEN",
                            value,
                            "a host:port address",
                        ))
                    }
                },
                "STOCKGATE_JWKS_FILE" => edge.auth.jwks_file = Some(value.into()),
                "STOCKGATE_JWKS_URL" => edge.auth.jwks_url = Some(value),
                "STOCKGATE_RESERVATION_KEY_FILE" => {
                    edge.reservations.signing_key_file = Some(value.into())
                }
                "STOCKGATE_RESERVATION_KEY_ID" => edge.reservations.signing_key_id = value,
                "STOCKGATE_RESERVATION_JWKS_FILE" => {
                    edge.reservations.public_jwks_file = Some(value.into())
                }
                "STOCKGATE_ASSERTION_KEY_FILE" => {
                    edge.settlement_auth.signing_key_file = Some(value.into())
                }
                "STOCKGATE_ASSERTION_KEY_ID" => edge.settlement_auth.signing_key_id = value,
                "STOCKGATE_GATEWAY_JWKS_FILE" => {
                    edge.settlement_auth.gateway_jwks_file = Some(value.into())
                }
                "STOCKGATE_DEV_TOKEN" => edge.web.dev_token = Some(value == "1"),
                "STOCKGATE_AUTH_ISSUER" => edge.auth.issuer = comma_list(&value),
                "STOCKGATE_AUTH_AUDIENCE" => edge.auth.audience = comma_list(&value),
                "STOCKGATE_AUTH_DISCOVERY" => match value.as_str() {
                    "1" | "true" => edge.auth.discovery = true,
                    "0" | "false" => edge.auth.discovery = false,
                    _ => {
                        self.invalid_env =
                            Some(("STOCKGATE_AUTH_DISCOVERY", value, "true, 1, false or 0"))
                    }
                },
                "STOCKGATE_TRUSTED_PROXIES" => edge.client_ip.trusted_proxies = comma_list(&value),
                "STOCKGATE_TLS_LISTEN" => edge.server.tls.listen = Some(value),
                "STOCKGATE_TLS_CERT_FILE" => edge.server.tls.cert_file = Some(value.into()),
                "STOCKGATE_TLS_KEY_FILE" => edge.server.tls.key_file = Some(value.into()),
                "STOCKGATE_AMQP_SAS_KEY" => self.settlement.set_amqp_sas_key(value),
                "OTEL_EXPORTER_OTLP_ENDPOINT" => edge.telemetry.otlp_endpoint = Some(value),
                "OTEL_TRACES_SAMPLER_ARG" => match value.parse() {
                    Ok(ratio) => edge.telemetry.sampling_ratio = ratio,
                    Err(_) => {
                        self.invalid_env =
                            Some(("OTEL_TRACES_SAMPLER_ARG", value, "a number from 0.0 to 1.0"))
                    }
                },
                _ => {}
            }
        }
    }

    /// Checks every rule a file cannot express; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some((variable, value, expected)) = &self.invalid_env {
            return Err(invalid(variable, format!("= {value:?} is not {expected}")));
        }
        self.gateway.validate()?;
        if self
            .database_url
            .as_deref()
            .is_some_and(|u| !u.contains("://"))
        {
            return Err(invalid("database_url", "must be a URL with a scheme"));
        }
        // One place for each URL: the settlement table must not carry its own.
        let defaults = SettlementConfig::default();
        if self.settlement.database_url != defaults.database_url {
            return Err(invalid(
                "settlement.database_url",
                "is not used; set the top-level database_url",
            ));
        }
        if self.settlement.redis_url.is_some() {
            return Err(invalid(
                "settlement.redis_url",
                "is not used; set the top-level redis_url",
            ));
        }
        self.settlement_config()
            .validate()
            .map_err(|e| invalid("settlement", e.to_string()))?;
        Ok(())
    }

    /// The settlement database: `database_url`, else an SQLite file in `data_dir`.
    pub fn database_url_or_embedded(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                self.gateway.data_dir.join("stockgate.db").display()
            )
        })
    }

    /// The settlement service's configuration with the top-level URLs filled in.
    pub fn settlement_config(&self) -> SettlementConfig {
        SettlementConfig {
            database_url: self.database_url_or_embedded(),
            redis_url: self.gateway.redis_url.clone(),
            telemetry: self.gateway.telemetry.clone(),
            ..self.settlement.clone()
        }
    }

    /// The gateway's configuration with what it learns from the settlement table filled in
    /// (the events stream its cache invalidation follows).
    pub fn gateway_config(&self) -> gateway::config::Config {
        gateway::config::Config {
            events_stream: self.settlement.events_stream(),
            ..self.gateway.clone()
        }
    }
}

/// Deserializes one part of the file; the error names the field's path below `prefix`
/// (`settlement.` or nothing).
fn part<T: DeserializeOwned>(prefix: &str, value: toml::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        // The TOML deserializer may add its own "in `key`" line; the path says it already.
        let inner = error.into_inner().to_string();
        let message = inner.split("\nin `").next().unwrap_or(&inner).trim_end();
        let table = prefix.trim_end_matches('.');
        match (path.as_str(), table) {
            (".", "") => message.to_owned(),
            (".", table) => format!("{table}: {message}"),
            (path, "") => format!("{path}: {message}"),
            (path, table) if path.starts_with('[') => format!("{table}{path}: {message}"),
            (path, table) => format!("{table}.{path}: {message}"),
        }
    })
}

/// Refuses a TOML date or time anywhere in `table`, naming its path.
fn refuse_datetimes(prefix: &str, table: &toml::Table) -> Result<(), String> {
    fn walk(path: &str, value: &toml::Value) -> Result<(), String> {
        match value {
            toml::Value::Datetime(_) => Err(format!(
                "{path}: invalid type: date or time, expected a string or number"
            )),
            toml::Value::Table(table) => refuse_datetimes(path, table),
            toml::Value::Array(items) => items
                .iter()
                .enumerate()
                .try_for_each(|(i, item)| walk(&format!("{path}[{i}]"), item)),
            _ => Ok(()),
        }
    }
    table.iter().try_for_each(|(key, value)| {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        walk(&path, value)
    })
}

#[cfg(test)]
mod tests;
