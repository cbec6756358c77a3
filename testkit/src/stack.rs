//! Configurations for tests, and the real stack in one process: gateway and settlement
//! (`stockgate::all_in_one`) on Redis and a scratch PostgreSQL schema, with the test identity
//! provider's keys.

use std::net::SocketAddr;
use std::time::Duration;

use gateway::auth::{KeySet, KeySource};
use stockgate::all_in_one::AllInOne;
use stockgate::config::Config;

use crate::idp::{AUDIENCE, ISSUER, Idp};
use crate::services;

/// A gateway configuration for tests with its settlement upstream at `settlement`: ports 0,
/// a private data dir, the test identity provider's issuer and audience, short timeouts.
pub fn gateway_config(settlement: SocketAddr) -> gateway::config::Config {
    let mut config = gateway::config::Config {
        data_dir: std::env::temp_dir().join(format!(
            "stockgate-gw-test-{}",
            uuid::Uuid::new_v4().simple()
        )),
        ..gateway::config::Config::default()
    };
    config.server.listen = "127.0.0.1:0".into();
    config.server.admin_listen = "127.0.0.1:0".into();
    config.server.threads = 1;
    config.server.grace_period_secs = 0;
    config.server.shutdown_timeout_secs = 1;
    config.auth.issuer = vec![ISSUER.into()];
    config.auth.audience = vec![AUDIENCE.into()];
    // Room for the 64 KiB token case to reach the authentication check.
    config.limits.max_header_bytes = 128 * 1024;
    config.limits.header_read_timeout_ms = 700;
    // Every test client is one loopback address: the per-client cap is tested on its own
    // (gateway/tests/protection.rs), elsewhere a test's hundreds of concurrent buyers are many.
    config.limits.max_in_flight_per_client = 100_000;
    config.upstream.settlement_addr = settlement.to_string();
    // The mock settlements serve `/healthz` on their one port; the real one on its admin port.
    config.upstream.settlement_admin_port = settlement.port();
    config.upstream.settle_timeout_ms = 500;
    config.upstream.health_check_interval_secs = 1;
    config
}

/// [`gateway_config`] inside a whole `stockgate` configuration (the embedded database, no
/// Redis): what the all-in-one tests start from.
pub fn embedded_config() -> Config {
    Config {
        gateway: gateway_config("127.0.0.1:1".parse().unwrap()),
        ..Config::default()
    }
}

/// The configuration of the real stack in one process: the Redis reservation store and edge
/// Redis under `prefix`, its own outbox stream, the settlement on a fresh scratch PostgreSQL
/// schema (`sgtest_<label>_…`, its URL is returned too). Deadlines suit a box loaded by the
/// parallel suite: the harness's short slowloris deadline and the edge's 150 ms Redis health
/// deadline (degraded mode, 503s) would cut in otherwise.
pub async fn real_stack_config(label: &str, prefix: &str) -> (Config, String) {
    let database_url = services::scratch_schema(label).await;
    // The upstream address is replaced by the in-process settlement's.
    let mut config = embedded_config();
    let edge = &mut config.gateway;
    edge.server.threads = 2;
    edge.redis_url = Some(services::redis_url());
    edge.redis_key_prefix = prefix.to_owned();
    edge.upstream.settle_timeout_ms = 5_000;
    edge.limits.header_read_timeout_ms = 10_000;
    edge.degraded.redis_timeout_ms = 2_000;
    config.database_url = Some(database_url.clone());
    config.settlement.redis_key_prefix = format!("{prefix}-settlement");
    // Its own stream: the relay skips ids at or below a shared stream's last id.
    config.settlement.outbox.stream = format!("{prefix}-events");
    (config, database_url)
}

/// Starts the real stack with `config` (validated) and a test identity provider.
pub async fn start_real_stack(config: Config) -> (AllInOne, Idp) {
    config.validate().unwrap();
    let idp = Idp::new();
    let keys = KeySet::load(KeySource::Static(idp.jwks()), Duration::from_secs(10))
        .await
        .unwrap();
    let all = stockgate::all_in_one::start(config, Some(keys), false)
        .await
        .unwrap();
    (all, idp)
}
