//! Harness of the cache, rate-limit and degraded-mode tests: a catalog upstream that counts
//! product requests and can be slowed or stopped (its own runtime on its own thread, so
//! stopping it closes every connection), and a gateway started in-process with the real edge
//! Redis (cache, limiter, health probe) under a private key prefix.
#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use gateway::app::{Gateway, Shared};
use gateway::auth::{KeySet, KeySource};
use gateway::config::Config;
use gateway::server::RunningServer;
use reservation_core::{InMemoryStore, ReservationStore};
use serde_json::json;

use crate::common::{self, Idp};

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| {
        panic!("REDIS_URL must be set for these tests (scripts/test.sh sets it)")
    })
}

/// The settlement's catalog, reduced to what the cache needs.
#[derive(Default)]
pub struct Catalog {
    /// Product requests (list and single), health checks not counted.
    pub hits: AtomicUsize,
    pub delay_ms: AtomicU64,
    pub price: AtomicI64,
    /// The path and query of every product request, in order.
    pub uris: std::sync::Mutex<Vec<String>>,
    /// Product edits (`PUT /api/v1/admin/products/{sku}`) by SKU as the upstream decoded it.
    pub edits: std::sync::Mutex<Vec<String>>,
}

impl Catalog {
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Catalog {
    fn record(&self, uri: &Uri) {
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.uris.lock().unwrap().push(uri.to_string());
    }
}

async fn list(State(catalog): State<Arc<Catalog>>, uri: Uri) -> Response {
    catalog.record(&uri);
    let price = catalog.price.load(Ordering::SeqCst);
    axum::Json(json!([{"sku": "HOT", "price_cents": price}])).into_response()
}

async fn one(State(catalog): State<Arc<Catalog>>, Path(sku): Path<String>, uri: Uri) -> Response {
    catalog.record(&uri);
    let delay = catalog.delay_ms.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    if sku == "NOPE" {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"code": "unknown_sku"})),
        )
            .into_response();
    }
    let price = catalog.price.load(Ordering::SeqCst);
    axum::Json(json!({"sku": sku, "price_cents": price})).into_response()
}

/// `PUT /api/v1/admin/products/{sku}`: accepted, recorded.
async fn edit(State(catalog): State<Arc<Catalog>>, Path(sku): Path<String>) -> Response {
    catalog.edits.lock().unwrap().push(sku);
    axum::Json(json!({"version": 2})).into_response()
}

/// The upstream, running until [`Upstream::stop`] or drop.
pub struct Upstream {
    pub catalog: Arc<Catalog>,
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Upstream {
    pub fn start() -> Upstream {
        let catalog = Arc::new(Catalog {
            price: AtomicI64::new(1999),
            ..Catalog::default()
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/api/v1/products", get(list))
            .route("/api/v1/products/{sku}", get(one))
            .route("/api/v1/admin/products/{sku}", axum::routing::put(edit))
            .with_state(catalog.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime drops every connection task: the upstream is gone.
        });
        Upstream {
            catalog,
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops the upstream: the listener and every open connection close.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A gateway under test.
pub struct Edge {
    server: Option<RunningServer>,
    pub base: String,
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
pub fn config(upstream: SocketAddr, redis_url: Option<&str>) -> Config {
    let mut config = common::test_config(upstream);
    let prefix = format!("gwcache-{}", uuid::Uuid::new_v4().simple());
    config.settlement.outbox.stream = format!("{prefix}:events");
    config.redis_key_prefix = prefix;
    config.redis_url = redis_url.map(str::to_owned);
    config.server.threads = 2;
    config.limits.header_read_timeout_ms = 10_000;
    config
}

/// Starts a gateway with `config` on `store` (in memory unless given), the edge Redis at
/// `config.redis_url` when set, and every background task.
pub async fn start(config: Config, store: Option<Arc<dyn ReservationStore>>) -> Edge {
    config.validate().unwrap();
    let store = store.unwrap_or_else(|| Arc::new(InMemoryStore::new()));
    let mut shared = Shared::new(&config, store).unwrap();
    if let Some(url) = &config.redis_url {
        shared.connect_edge_redis(&config, url).await.unwrap();
    }
    start_shared(config, shared).await
}

/// Starts a gateway with `config` around `shared` (store and edge Redis already connected,
/// e.g. by `Shared::connect` as `stockgate gateway` does), with every background task.
pub async fn start_shared(config: Config, shared: Shared) -> Edge {
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

pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}
