//! Gateway and settlement service in one process: `stockgate all-in-one`, and with no
//! configuration the embedded default (in-memory reservation store, an SQLite file in
//! `data_dir`, demo products, http://127.0.0.1:8080). With `redis_url` / `database_url` set it
//! runs the same two services on Redis and PostgreSQL.
//!
//! Start order: store → settlement (on 127.0.0.1:0, sharing the store, the reservation key,
//! the gateway's assertion key (unless configured, a pair that never leaves the process) and
//! the metrics registry) → demo products when the catalog is empty → store counters
//! rebuilt from SQL when the store is in memory (it starts empty on every run) → gateway,
//! whose upstream is the settlement's real address.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::json;
use settlement::{RunningSettlement, SettlementDeps};
use thiserror::Error;

use reservation_core::assertion::{AssertionSigner, Identity};
use reservation_core::wire::paths;

use gateway::app::{self, Gateway, Shared};
use gateway::auth::KeySet;
use gateway::config::DevSignIn;
use gateway::edge::EdgeState;
use gateway::server::RunningServer;
use gateway::service_auth::{self, UnsetKey};

use crate::config::Config;

/// Why the all-in-one process did not start; each keeps its cause.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("gateway")]
    Gateway(#[from] gateway::app::StartError),
    #[error("settlement service")]
    Settlement(#[from] settlement::StartError),
    #[error("cannot create {}", dir.display())]
    DataDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("rebuilding stock counters from sql")]
    Rebuild(#[source] settlement::MaintenanceError),
    #[error("seeding demo products")]
    Seed(#[source] SeedError),
}

/// Why seeding the demo products failed.
#[derive(Debug, Error)]
pub enum SeedError {
    #[error("signing the request's service assertion")]
    Sign(#[from] gateway::service_auth::SignError),
    #[error(transparent)]
    Http(#[from] reqwest::Error),
}

/// A demo product: sku, name, price in cents, total stock, per-buyer limit.
type DemoProduct = (&'static str, &'static str, i64, i64, i64);

/// The catalog of the embedded default: one flash-sale item and a few ordinary ones.
pub const DEMO_PRODUCTS: &[DemoProduct] = &[
    ("HOT", "Limited sneaker drop", 19_999, 50, 2),
    ("TEE", "Logo t-shirt", 2_499, 500, 5),
    ("MUG", "Enamel mug", 1_499, 200, 4),
];

/// Both services, running.
pub struct AllInOne {
    pub gateway: RunningServer,
    /// The running gateway's state (its cache, limits and counters).
    pub edge: Arc<EdgeState>,
    pub settlement: RunningSettlement,
    pub shared: Shared,
    /// Whether `POST /dev/token` is served, as [`Config::dev_sign_in`] decided at start.
    pub dev_sign_in: DevSignIn,
}

impl AllInOne {
    pub fn public_addr(&self) -> SocketAddr {
        self.gateway.public_addr
    }

    pub fn admin_addr(&self) -> SocketAddr {
        self.gateway.admin_addr
    }

    /// Stops the gateway (graceful drain), then the settlement service.
    pub async fn shutdown(self) {
        let gateway = self.gateway;
        // Joining the Pingora thread blocks; keep it off the async workers.
        let _ = tokio::task::spawn_blocking(move || gateway.shutdown()).await;
        // The spans of the last requests, still in the exporter's queue.
        self.edge.telemetry.shutdown().await;
        self.settlement.shutdown().await;
    }
}

/// Starts settlement and gateway in this process. `keys` replaces the configured buyer key
/// set (tests); `seed` puts the demo products in an empty catalog.
pub async fn start(
    config: Config,
    keys: Option<Arc<KeySet>>,
    seed: bool,
) -> Result<AllInOne, StartError> {
    let dev_sign_in = config.dev_sign_in(true);
    let mut edge = config.gateway_config();
    // The storefront is part of the all-in-one process (DESIGN.md §1).
    edge.web.storefront = true;
    let shared = Shared::connect_with(&edge, UnsetKey::Ephemeral).await?;
    let mut settlement_config = config.settlement_config();
    // Loopback on free ports: only the gateway talks to it (its metrics are in the shared
    // registry, which the gateway's admin listener serves).
    settlement_config.listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    settlement_config.admin_listen_addr = SocketAddr::from(([127, 0, 0, 1], 0));
    if let Some(dir) = sqlite_dir(&settlement_config.database_url) {
        std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir { dir, source })?;
    }
    let running = settlement::start(
        settlement_config.clone(),
        SettlementDeps {
            store: shared.store.clone(),
            verifier: shared.verifier(),
            gateway_keys: shared.gateway_keys(&edge)?,
            registry: shared.metrics.registry().clone(),
        },
    )
    .await?;
    if seed {
        seed_demo_products(running.addr, &shared.assertions)
            .await
            .map_err(StartError::Seed)?;
    }
    if edge.redis_url.is_none() {
        // The in-memory store starts empty: rebuild its counters from SQL, the authority.
        settlement::reconcile_once(&settlement_config, shared.store.clone(), true)
            .await
            .map_err(StartError::Rebuild)?;
    }

    edge.upstream.settlement_addr = running.addr.to_string();
    edge.upstream.settlement_admin_port = running.admin_addr.port();
    let keys = match keys {
        Some(keys) => keys,
        None => app::load_keys(&edge).await?,
    };
    let gateway = Gateway::build_with(&edge, shared.clone(), keys, dev_sign_in)?;
    gateway.spawn_background(&edge);
    let state = gateway.state.clone();
    let server = match tokio::task::block_in_place(|| gateway.start_background(&edge)) {
        Ok(server) => server,
        Err(error) => {
            running.shutdown().await;
            return Err(error.into());
        }
    };
    Ok(AllInOne {
        gateway: server,
        edge: state,
        settlement: running,
        shared,
        dev_sign_in,
    })
}

/// The directory of an `sqlite://path?...` URL, to create it before SQLite opens the file.
fn sqlite_dir(url: &str) -> Option<std::path::PathBuf> {
    let path = url.strip_prefix("sqlite://")?.split('?').next()?;
    std::path::Path::new(path).parent().map(|p| p.to_path_buf())
}

/// Puts the demo products into an empty catalog through the settlement's ops API (which
/// configures the store too), as the gateway: each request carries its assertion, the list
/// for nobody, the edits for the ops identity `stockgate-seed`. A catalog that has products
/// is left alone.
pub async fn seed_demo_products(
    settlement: SocketAddr,
    assertions: &AssertionSigner,
) -> Result<usize, SeedError> {
    let http = reqwest::Client::new();
    let base = format!("http://{settlement}");
    let send = |request: reqwest::RequestBuilder, who: Identity| {
        let http = http.clone();
        async move {
            let mut request = request.build()?;
            service_auth::sign_request(assertions, &mut request, &who)?;
            Ok::<_, SeedError>(http.execute(request).await?.error_for_status()?)
        }
    };
    let listed: serde_json::Value = send(
        http.get(format!("{base}{}", paths::PRODUCTS)),
        Identity::default(),
    )
    .await?
    .json()
    .await?;
    if listed
        .as_array()
        .is_some_and(|products| !products.is_empty())
    {
        return Ok(0);
    }
    let seeder = Identity {
        sub: Some("stockgate-seed".into()),
        roles: vec![gateway::auth::OPS_ROLE.into()],
    };
    for (sku, name, price_cents, total_stock, limit) in DEMO_PRODUCTS {
        let edit = http
            .put(format!("{base}{}{sku}", paths::ADMIN_PRODUCTS_PREFIX))
            .json(&json!({
                "name": name, "price_cents": price_cents, "total_stock": total_stock,
                "per_buyer_limit": limit, "sale_state": "on_sale",
            }));
        send(edit, seeder.clone()).await?;
    }
    tracing::info!(products = DEMO_PRODUCTS.len(), "seeded demo products");
    Ok(DEMO_PRODUCTS.len())
}
