//! Wiring one gateway from its configuration: the reservation store (Redis or in-memory),
//! the reservation-token signer and the metrics registry it shares with an in-process
//! settlement service ([`Shared`]), the buyer key set, the settlement client and upstream;
//! then the Pingora server around them. The `stockgate` binary's subcommands, its all-in-one
//! process and the integration tests all start the gateway through here.

use std::sync::Arc;
use std::time::Duration;

use backend_adapters::redis::{RedisStore, RedisStoreConfig};
use reservation_core::assertion::{AssertionSigner, AssertionVerifier};
use reservation_core::{InMemoryStore, ReservationStore, TokenSigner, TokenVerifier};
use thiserror::Error;

use crate::auth::devkeys::{self, KeyError};
use crate::auth::{BuyerAuth, KeySet, KeySetOptions, KeySource};
use crate::cache::{ProductCache, invalidate};
use crate::config::{Config, DevSignIn, ms};
use crate::edge::settle::SettlementClient;
use crate::edge::sold_out::SoldOutMemory;
use crate::edge::{EdgeLimits, EdgeState};
use crate::edge_redis::EdgeRedis;
use crate::metrics::Metrics;
use crate::proxy::{HealthCheckService, Upstream};
use crate::ratelimit::RateLimiter;
use crate::server::{self, RunningServer, ServerError};
use crate::service_auth::{self, UnsetKey};

/// Why a gateway could not start; each names the part that failed and keeps its cause.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Jwks(#[from] crate::auth::jwks::JwksError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("reservation store")]
    Store(#[from] reservation_core::ReservationError),
    #[error("metrics registry")]
    Metrics(#[source] prometheus::Error),
    #[error("edge redis at {url}")]
    EdgeRedis {
        url: String,
        #[source]
        source: crate::edge_redis::EdgeRedisError,
    },
    /// A name of `auth.algorithms` (config validation refuses it first).
    #[error(transparent)]
    Algorithm(#[from] crate::auth::AlgorithmError),
    #[error(transparent)]
    Upstream(#[from] crate::proxy::UpstreamError),
    #[error("settlement client")]
    SettlementClient(#[source] reqwest::Error),
    #[error("product cache client")]
    CacheClient(#[source] reqwest::Error),
    #[error(transparent)]
    Telemetry(#[from] backend_adapters::telemetry::TelemetryError),
    #[error(transparent)]
    RateLimitRules(#[from] crate::ratelimit::rules::RulesError),
    /// An entry of `client_ip.trusted_proxies` (config validation refuses it first).
    #[error(transparent)]
    TrustedProxies(#[from] crate::client_addr::CidrError),
}

/// What the gateway shares with an in-process settlement service.
#[derive(Clone)]
pub struct Shared {
    pub store: Arc<dyn ReservationStore>,
    pub signer: Arc<TokenSigner>,
    /// Signs the assertion of every request to settlement ([`crate::service_auth`]).
    pub assertions: Arc<AssertionSigner>,
    /// Verifies reservation tokens: the signer's key and, during a rotation, the previous
    /// ones (`reservations.public_jwks_file`).
    verifier: TokenVerifier,
    pub metrics: Arc<Metrics>,
    /// The edge's own Redis use (cache, limits, degraded-mode probe), with `redis_url`.
    pub edge_redis: Option<EdgeRedis>,
}

impl Shared {
    /// The signer from the configured key (or the generated one), its verifier, the
    /// assertion key of a gateway on its own, and fresh metrics.
    pub fn new(config: &Config, store: Arc<dyn ReservationStore>) -> Result<Self, StartError> {
        Self::new_with(config, store, UnsetKey::DataDir)
    }

    /// [`Shared::new`] with the assertion key taken as `unset` says when none is configured.
    pub fn new_with(
        config: &Config,
        store: Arc<dyn ReservationStore>,
        unset: UnsetKey,
    ) -> Result<Self, StartError> {
        let signer = devkeys::reservation_signer(config)?;
        let verifier = devkeys::reservation_verifier(config, &signer)?;
        Ok(Shared {
            store,
            signer: Arc::new(signer),
            assertions: Arc::new(service_auth::signer(config, unset)?),
            verifier,
            metrics: Arc::new(Metrics::new().map_err(StartError::Metrics)?),
            edge_redis: None,
        })
    }

    /// Connects the store the configuration asks for: Redis with `redis_url`, else memory
    /// (for a gateway on its own: `stockgate gateway`).
    pub async fn connect(config: &Config) -> Result<Self, StartError> {
        Self::connect_with(config, UnsetKey::DataDir).await
    }

    /// [`Shared::connect`] with the assertion key taken as `unset` says when none is
    /// configured (`all-in-one` passes [`UnsetKey::Ephemeral`]).
    pub async fn connect_with(config: &Config, unset: UnsetKey) -> Result<Self, StartError> {
        match &config.redis_url {
            Some(url) => {
                let redis = connect_redis(config, url).await?;
                let mut shared = Shared::new_with(config, Arc::new(redis), unset)?;
                shared.connect_edge_redis(config, url).await?;
                Ok(shared)
            }
            None => Shared::new_with(config, Arc::new(InMemoryStore::new()), unset),
        }
    }

    /// What a settlement in this process verifies the gateway's assertions with.
    pub fn gateway_keys(&self, config: &Config) -> Result<AssertionVerifier, StartError> {
        Ok(service_auth::in_process_verifier(config, &self.assertions)?)
    }

    /// Connects the edge's cache and rate-limit Redis (separate from the store's connection,
    /// with the short `degraded.redis_timeout_ms`).
    pub async fn connect_edge_redis(
        &mut self,
        config: &Config,
        url: &str,
    ) -> Result<(), StartError> {
        let gauge = self.metrics.redis_degraded.clone();
        let redis = EdgeRedis::connect(config, url, gauge)
            .await
            .map_err(|source| StartError::EdgeRedis {
                url: url.to_owned(),
                source,
            })?;
        self.edge_redis = Some(redis);
        Ok(())
    }

    /// Verifies the tokens this gateway's signer issues, and those of the previous keys the
    /// configuration still publishes.
    pub fn verifier(&self) -> TokenVerifier {
        self.verifier.clone()
    }
}

/// The Redis reservation store under the configured key prefix (scripts loaded).
pub async fn connect_redis(config: &Config, url: &str) -> Result<RedisStore, StartError> {
    let store_config = RedisStoreConfig {
        prefix: config.redis_key_prefix.clone(),
        ..RedisStoreConfig::default()
    };
    Ok(RedisStore::connect(url, store_config).await?)
}

/// Where buyer keys come from: each issuer's discovery document (`auth.discovery`), the
/// configured JWKS URL or file, else the dev JWKS in `data_dir` (generated on first use,
/// together with the dev identity key `stockgate token` uses).
pub fn key_sources(config: &Config) -> Result<Vec<KeySource>, StartError> {
    let auth = &config.auth;
    if auth.discovery {
        return Ok(auth
            .issuer
            .iter()
            .cloned()
            .map(KeySource::Discovery)
            .collect());
    }
    if let Some(url) = &auth.jwks_url {
        return Ok(vec![KeySource::Url(url.clone())]);
    }
    if auth.jwks_file.is_none() {
        devkeys::ensure_dev_identity(config)?;
    }
    Ok(vec![KeySource::File(devkeys::buyer_jwks_file(config))])
}

/// Loads the buyer key set from its configured sources.
pub async fn load_keys(config: &Config) -> Result<Arc<KeySet>, StartError> {
    let auth = &config.auth;
    let algorithms = auth
        .algorithms
        .iter()
        .map(|name| crate::auth::parse_algorithm(name))
        .collect::<Result<Vec<_>, _>>()?;
    let options = KeySetOptions {
        min_refresh: Duration::from_secs(auth.jwks_min_refresh_secs),
        max_stale: Duration::from_secs(auth.max_stale_keys_secs),
        algorithms,
        ca_file: auth.ca_file.clone(),
    };
    Ok(KeySet::load_all(key_sources(config)?, options).await?)
}

/// The parts of a gateway that live outside Pingora.
pub struct Gateway {
    pub state: Arc<EdgeState>,
    pub keys: Arc<KeySet>,
    health: HealthCheckService,
}

impl Gateway {
    /// Builds the edge state around a loaded key set, for a gateway on its own (`stockgate
    /// gateway`, tests): the dev sign-in only where switched on explicitly.
    pub fn build(config: &Config, shared: Shared, keys: Arc<KeySet>) -> Result<Self, StartError> {
        Self::build_with(config, shared, keys, config.explicit_dev_sign_in())
    }

    /// [`Gateway::build`] with the dev sign-in decided by the caller (the all-in-one process
    /// passes its embedded-default decision).
    pub fn build_with(
        config: &Config,
        shared: Shared,
        keys: Arc<KeySet>,
        dev_sign_in: DevSignIn,
    ) -> Result<Self, StartError> {
        let auth = BuyerAuth::new(&config.auth, keys.clone())?;
        keys.count_errors_in(shared.metrics.jwks_errors.clone());
        let verifier = shared.verifier();
        let telemetry = backend_adapters::telemetry::Telemetry::start(
            &config.telemetry,
            &config.telemetry.gateway_service_name,
        )?;
        let upstream_addr = config.settlement_host_port();
        let (upstream, health) = Upstream::new(upstream_addr, &config.upstream)?;
        let settlement = SettlementClient::new(
            upstream_addr,
            shared.assertions.clone(),
            ms(config.upstream.connect_timeout_ms),
            ms(config.upstream.settle_timeout_ms),
            Duration::from_secs(config.upstream.pool_idle_timeout_secs),
            Duration::from_secs(config.upstream.max_connection_age_secs),
        )
        .map_err(StartError::SettlementClient)?
        .with_telemetry(telemetry.clone());
        let cache = if config.cache.enabled {
            let cache = ProductCache::new(
                &config.cache,
                shared.edge_redis.clone(),
                upstream.clone(),
                shared.assertions.clone(),
                upstream_addr,
                ms(config.upstream.read_timeout_ms),
                shared.metrics.clone(),
            )
            .map_err(StartError::CacheClient)?;
            Some(Arc::new(cache))
        } else {
            None
        };
        let ratelimit =
            RateLimiter::new(config, shared.edge_redis.clone(), shared.metrics.clone())?;
        let client_addrs = crate::client_addr::ClientAddrs::new(&config.client_ip)?;
        let limits = &config.limits;
        let pod_health = Arc::new(crate::health::Health::new(
            shared.metrics.dependency_up.clone(),
        ));
        let in_flight = crate::in_flight::InFlight::new(
            limits.max_in_flight_per_client,
            limits.max_in_flight,
            config.ratelimit.ipv6_prefix_len,
            shared.metrics.in_flight.clone(),
        );
        let state = EdgeState {
            telemetry,
            limits: EdgeLimits {
                max_body_bytes: limits.max_body_bytes,
                max_header_count: limits.max_header_count,
                max_header_bytes: limits.max_header_bytes,
                body_read_timeout: ms(limits.body_read_timeout_ms),
                write_timeout: ms(limits.write_timeout_ms),
                idle_timeout_secs: limits.idle_timeout_secs,
            },
            hold_ttl_ms: config.reservations.hold_ttl_secs * 1000,
            store: shared.store,
            signer: shared.signer,
            assertions: shared.assertions,
            verifier,
            auth,
            metrics: shared.metrics,
            sold_out: SoldOutMemory::new(ms(config.reservations.sold_out_memory_ms)),
            settlement,
            upstream,
            max_retries: config.upstream.max_retries,
            cache,
            ratelimit: Arc::new(ratelimit),
            client_addrs,
            in_flight,
            edge_redis: shared.edge_redis,
            site: config.web.storefront.then(crate::web::Site::new),
            dev_tokens: crate::edge::dev_token::DevTokens::new(config, dev_sign_in),
            health: pod_health,
        };
        Ok(Gateway {
            state: Arc::new(state),
            keys,
            health,
        })
    }

    /// Spawns the periodic JWKS re-read on the current Tokio runtime.
    pub fn spawn_key_refresh(&self, config: &Config) {
        let every = Duration::from_secs(config.auth.jwks_refresh_secs);
        tokio::spawn(self.keys.clone().refresh_periodically(every));
    }

    /// Spawns every background task on the current Tokio runtime: the JWKS re-read, the
    /// rules-file watch, the dependency monitor, and with Redis the health probe and the cache
    /// invalidation consumer.
    pub fn spawn_background(&self, config: &Config) {
        self.spawn_key_refresh(config);
        let state = &self.state;
        tokio::spawn(crate::health::monitor(
            state.clone(),
            config.settlement_admin_base(),
            Duration::from_secs(config.upstream.health_check_interval_secs),
        ));
        let every = ms(config.ratelimit.reload_interval_ms);
        tokio::spawn(state.ratelimit.clone().watch(every));
        if let Some(redis) = &state.edge_redis {
            tokio::spawn(redis.clone().probe());
            if let Some(cache) = &state.cache {
                let reader = invalidate::reader_name(
                    &config.redis_key_prefix,
                    config.cache.replica_id.as_deref(),
                );
                let stream = config.events_stream.clone();
                tokio::spawn(invalidate::run(
                    cache.clone(),
                    redis.clone(),
                    stream,
                    reader,
                ));
            }
        }
    }

    /// Prepares the Pingora server (listeners bound when it runs).
    pub fn into_server(self, config: &Config) -> Result<server::Prepared, StartError> {
        Ok(server::prepare(config, self.state, self.health)?)
    }

    /// Starts the server on its own thread (tests, `all-in-one`). Blocks until it listens.
    pub fn start_background(self, config: &Config) -> Result<RunningServer, StartError> {
        Ok(server::start_background(self.into_server(config)?)?)
    }
}
