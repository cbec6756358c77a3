//! The settlement's catalog reduced to what the product cache needs: an upstream that counts
//! product requests and can be slowed or stopped (its own runtime on its own thread, so
//! stopping it closes every connection).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

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
