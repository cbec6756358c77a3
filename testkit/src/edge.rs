//! The gateway alone, started in-process on 127.0.0.1:0: in front of a [`MockSettlement`]
//! on an in-memory store ([`start_gateway`]), or in front of a catalog upstream with the real
//! edge Redis under a private key prefix ([`start_edge`]; the cache, rate-limit and
//! degraded-mode tests).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gateway::app::{Gateway, Shared};
use gateway::auth::{KeySet, KeySource};
use gateway::config::Config;
use gateway::server::RunningServer;
use reservation_core::{InMemoryStore, ProductStock, ReservationStore, SaleState, Sku};
use serde_json::json;

use crate::counting::CountingStore;
use crate::idp::Idp;
use crate::mock_settlement::{MockSettlement, start_mock};
use crate::stack::gateway_config;

/// A gateway under test with everything it talks to.
pub struct TestGateway {
    pub server: Option<RunningServer>,
    pub base: String,
    pub admin: String,
    pub store: Arc<InMemoryStore>,
    /// The store as the gateway sees it: counts every call the gateway makes.
    pub counting: Arc<CountingStore>,
    pub mock: Arc<MockSettlement>,
    pub idp: Idp,
    pub http: reqwest::Client,
    pub state: Arc<gateway::edge::EdgeState>,
    data_dir: PathBuf,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// On sale, `limit` per buyer and per order.
pub fn product(total: u64, limit: u32) -> ProductStock {
    ProductStock {
        total_stock: total,
        per_buyer_limit: limit,
        max_per_order: limit,
        sale_state: SaleState::OnSale,
    }
}

/// Starts a gateway with products `HOT` (5 units, 3 per buyer) and `TINY` (1 unit) in memory,
/// in front of a [`MockSettlement`].
pub async fn start_gateway() -> TestGateway {
    start_gateway_with(|_| {}).await
}

/// [`start_gateway`] with its configuration adjusted first.
pub async fn start_gateway_with(adjust: impl FnOnce(&mut Config)) -> TestGateway {
    let (mock, addr) = start_mock().await;
    let mut config = gateway_config(addr);
    adjust(&mut config);
    config.validate().unwrap();
    let idp = Idp::new();
    let keys = KeySet::load(KeySource::Static(idp.jwks()), Duration::from_secs(10))
        .await
        .unwrap();
    start_keyed(mock, config, idp, keys).await
}

/// [`start_gateway_with`] trusting the keys its adjusted configuration names (not the test
/// [`Idp`]'s), loaded as `stockgate gateway` loads them (`gateway::app::load_keys`), with
/// their periodic refresh running. `Err`: the gateway would not start.
pub async fn start_gateway_with_keys(
    adjust: impl FnOnce(&mut Config),
) -> Result<TestGateway, gateway::app::StartError> {
    let (mock, addr) = start_mock().await;
    let mut config = gateway_config(addr);
    adjust(&mut config);
    config.validate().unwrap();
    let keys = gateway::app::load_keys(&config).await?;
    let every = Duration::from_secs(config.auth.jwks_refresh_secs);
    tokio::spawn(keys.clone().refresh_periodically(every));
    Ok(start_keyed(mock, config, Idp::new(), keys).await)
}

async fn start_keyed(
    mock: Arc<MockSettlement>,
    config: Config,
    idp: Idp,
    keys: Arc<KeySet>,
) -> TestGateway {
    let store = Arc::new(InMemoryStore::new());
    store
        .configure_product(&Sku::parse("HOT").unwrap(), &product(5, 3))
        .await
        .unwrap();
    store
        .configure_product(&Sku::parse("TINY").unwrap(), &product(1, 1))
        .await
        .unwrap();
    let counting = Arc::new(CountingStore::new(store.clone()));
    let shared = Shared::new(&config, counting.clone()).unwrap();
    let gateway = Gateway::build(&config, shared, keys).unwrap();
    let state = gateway.state.clone();
    let server = tokio::task::block_in_place(|| gateway.start_background(&config)).unwrap();
    TestGateway {
        base: format!("http://{}", server.public_addr),
        admin: format!("http://{}", server.admin_addr),
        server: Some(server),
        store,
        counting,
        mock,
        idp,
        http: reqwest::Client::new(),
        state,
        data_dir: config.data_dir.clone(),
    }
}

impl TestGateway {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Who the last request the mock settlement received was asserted for, checked as real
    /// settlement checks it (signature, method, path with query, body).
    pub fn last_asserted(&self) -> Result<reservation_core::assertion::Identity, &'static str> {
        self.mock.last_asserted(&self.state.assertions)
    }

    pub async fn snapshot(&self, sku: &str) -> reservation_core::StockSnapshot {
        self.store
            .snapshot(&Sku::parse(sku).unwrap())
            .await
            .unwrap()
    }

    /// `POST /api/v1/reservations` as `token` with `key`.
    pub async fn reserve(&self, token: &str, key: &str, sku: &str, qty: u32) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/reservations"))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&json!({"sku": sku, "qty": qty}))
            .send()
            .await
            .unwrap()
    }

    /// `POST /api/v1/orders` with a reservation token.
    pub async fn confirm(&self, token: &str, reservation_token: &str) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/orders"))
            .bearer_auth(token)
            .header(
                "idempotency-key",
                format!(
                    "confirm-{}",
                    &reservation_token[reservation_token.len() - 12..]
                ),
            )
            .json(&json!({"reservation_token": reservation_token}))
            .send()
            .await
            .unwrap()
    }

    /// Whether `/metrics` shows `line` within a second (request counters move in Pingora's
    /// logging phase, just after the answer went out).
    pub async fn metrics_show(&self, line: &str) -> bool {
        for _ in 0..50 {
            if self.metrics().await.contains(line) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// A gateway under test.
pub struct Edge {
    server: Option<RunningServer>,
    pub base: String,
    /// The HTTPS listener, when the configuration has `[server.tls]`.
    pub tls_addr: Option<SocketAddr>,
    pub admin: String,
    pub http: reqwest::Client,
    pub idp: Idp,
    pub state: Arc<gateway::edge::EdgeState>,
    pub config: Config,
}

impl Drop for Edge {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
        let _ = std::fs::remove_dir_all(&self.config.data_dir);
    }
}

/// The test configuration with the edge on `redis_url` under a fresh key prefix and stream.
pub fn edge_config(upstream: SocketAddr, redis_url: Option<&str>) -> Config {
    let mut config = gateway_config(upstream);
    let prefix = format!("gwcache-{}", uuid::Uuid::new_v4().simple());
    config.events_stream = format!("{prefix}:events");
    config.redis_key_prefix = prefix;
    config.redis_url = redis_url.map(str::to_owned);
    config.server.threads = 2;
    config.limits.header_read_timeout_ms = 10_000;
    config
}

/// Starts a gateway with `config` on `store` (in memory unless given), the edge Redis at
/// `config.redis_url` when set, and every background task.
pub async fn start_edge(config: Config, store: Option<Arc<dyn ReservationStore>>) -> Edge {
    config.validate().unwrap();
    let store = store.unwrap_or_else(|| Arc::new(InMemoryStore::new()));
    let mut shared = Shared::new(&config, store).unwrap();
    if let Some(url) = &config.redis_url {
        shared.connect_edge_redis(&config, url).await.unwrap();
    }
    start_edge_shared(config, shared).await
}

/// Starts a gateway with `config` around `shared` (store and edge Redis already connected,
/// e.g. by `Shared::connect` as `stockgate gateway` does), with every background task.
pub async fn start_edge_shared(config: Config, shared: Shared) -> Edge {
    config.validate().unwrap();
    let idp = Idp::new();
    let keys = KeySet::load(KeySource::Static(idp.jwks()), Duration::from_secs(10))
        .await
        .unwrap();
    let gateway = Gateway::build(&config, shared, keys).unwrap();
    gateway.spawn_background(&config);
    let state = gateway.state.clone();
    let server = tokio::task::block_in_place(|| gateway.start_background(&config)).unwrap();
    Edge {
        base: format!("http://{}", server.public_addr),
        tls_addr: server.tls_addr,
        admin: format!("http://{}", server.admin_addr),
        server: Some(server),
        http: reqwest::Client::new(),
        idp,
        state,
        config,
    }
}

impl Edge {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http.get(self.url(path)).send().await.unwrap()
    }

    pub async fn metrics(&self) -> String {
        let url = format!("{}/metrics", self.admin);
        self.http
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of one series line of `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}
