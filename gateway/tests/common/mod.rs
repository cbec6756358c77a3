//! Test harness: a gateway started in-process on 127.0.0.1:0 against an in-memory store and
//! a small axum mock of the settlement service, plus helpers to mint buyer tokens.
#![allow(dead_code)] // each test binary uses a different part of the harness

mod counting;

pub use counting::CountingStore;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::serve::ListenerExt;
use gateway::app::{Gateway, Shared};
use gateway::auth::{BuyerClaims, KeySet, KeySource};
use gateway::config::Config;
use gateway::server::RunningServer;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reservation_core::assertion::{ASSERTION_HEADER, AssertionSigner, AssertionVerifier, Bound};
use reservation_core::{
    InMemoryStore, ProductStock, ReservationStore, SaleState, Sku, TokenSigner,
};
use serde_json::{Value, json};

pub const KID: &str = "test-idp-1";
pub const ISSUER: &str = "test-issuer";
pub const AUDIENCE: &str = "stockgate-test";

/// How the mock settlement answers `POST /internal/settlements`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Commit = 0,
    Unavailable = 1,
    Oversell = 2,
    /// Answers after the gateway's settle timeout (the ambiguous case).
    Slow = 3,
}

/// The mock settlement service.
#[derive(Default)]
pub struct MockSettlement {
    mode: AtomicU8,
    /// Requests other than health checks, by anyone.
    pub hits: AtomicUsize,
    pub settlements: AtomicUsize,
    /// TCP connections accepted, health checks' included (each uses one of its own).
    pub connections: AtomicUsize,
    pub health_checks: AtomicUsize,
    /// Reservation ids already settled (a second settle answers 200).
    settled: std::sync::Mutex<Vec<String>>,
    /// Headers of the last proxied request.
    pub last_headers: std::sync::Mutex<Option<HeaderMap>>,
    /// The last request, settlements' included, as its assertion must cover it.
    last_request: std::sync::Mutex<Option<Seen>>,
}

/// What the mock saw of one request: enough to check its service assertion.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    target: String,
    if_match: Option<String>,
    body: Vec<u8>,
    assertion: Option<String>,
}

impl MockSettlement {
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Connections opened for anything but the gateway's health checks (which connect afresh
    /// for each probe).
    pub fn request_connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst) - self.health_checks.load(Ordering::SeqCst)
    }

    fn mode(&self) -> Mode {
        match self.mode.load(Ordering::SeqCst) {
            1 => Mode::Unavailable,
            2 => Mode::Oversell,
            3 => Mode::Slow,
            _ => Mode::Commit,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Verifies the last request's service assertion with `gateway`'s key (the one
    /// `TestGateway::last_asserted` passes): the identity it names, or the refusal code real
    /// settlement would answer.
    pub fn last_asserted(
        &self,
        gateway: &AssertionSigner,
    ) -> Result<reservation_core::assertion::Identity, &'static str> {
        let seen = self
            .last_request
            .lock()
            .unwrap()
            .clone()
            .expect("a request reached the mock");
        let verifier = AssertionVerifier::new(&gateway.jwks()).unwrap();
        let request = Bound::new(&seen.method, &seen.target, &seen.body)
            .with_if_match(seen.if_match.as_deref());
        verifier
            .verify(seen.assertion.as_deref(), &request)
            .map(|v| v.identity)
            .map_err(|e| e.code())
    }

    fn record(&self, parts: &axum::http::request::Parts, body: &[u8]) {
        *self.last_request.lock().unwrap() = Some(Seen {
            method: parts.method.to_string(),
            target: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
            if_match: parts
                .headers
                .get("if-match")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: body.to_vec(),
            assertion: parts
                .headers
                .get(ASSERTION_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        });
    }

    pub fn last_header(&self, name: &str) -> Option<String> {
        let headers = self.last_headers.lock().unwrap();
        headers
            .as_ref()
            .and_then(|h| h.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }
}

fn problem(status: u16, code: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    (
        status,
        [("content-type", "application/problem+json")],
        json!({"status": status.as_u16(), "code": code}).to_string(),
    )
        .into_response()
}

/// Reads the token's claims without verifying (the mock trusts the gateway; the real service
/// verifies).
fn claims_of(token: &str) -> Value {
    use base64_decode::decode;
    let payload = token.split('.').nth(1).unwrap_or_default();
    serde_json::from_slice(&decode(payload)).unwrap_or(Value::Null)
}

mod base64_decode {
    /// URL-safe base64 without padding, enough for JWT payloads in tests.
    pub fn decode(input: &str) -> Vec<u8> {
        let value = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            _ => 63,
        };
        let mut out = Vec::new();
        let (mut acc, mut bits) = (0u32, 0);
        for c in input.bytes() {
            acc = (acc << 6) | u32::from(value(c));
            bits += 6;
            if bits >= 8 {
                bits -= 8;
                out.push((acc >> bits) as u8);
            }
        }
        out
    }
}

async fn settle(State(mock): State<Arc<MockSettlement>>, request: Request) -> Response {
    mock.hits.fetch_add(1, Ordering::SeqCst);
    mock.settlements.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    mock.record(&parts, &body);
    let body = String::from_utf8_lossy(&body).into_owned();
    let token = serde_json::from_str::<Value>(&body)
        .ok()
        .and_then(|v| v["reservation_token"].as_str().map(str::to_owned));
    let Some(token) = token else {
        return problem(400, "invalid_request");
    };
    match mock.mode() {
        Mode::Unavailable => return problem(503, "unavailable"),
        Mode::Oversell => return problem(409, "oversell_prevented"),
        Mode::Slow => tokio::time::sleep(Duration::from_secs(2)).await,
        Mode::Commit => {}
    }
    let claims = claims_of(&token);
    let rid = claims["rid"].as_str().unwrap_or_default().to_owned();
    let first = {
        let mut settled = mock.settled.lock().unwrap();
        let first = !settled.contains(&rid);
        if first {
            settled.push(rid.clone());
        }
        first
    };
    let qty = claims["qty"].as_u64().unwrap_or(0);
    let order = json!({
        "order_id": format!("ord_{rid}"), "reservation_id": rid, "user_sub": claims["sub"],
        "sku": claims["sku"], "qty": qty, "unit_price": 1999, "total": 1999 * qty,
        "status": "confirmed", "version": 1,
    });
    let status = if first {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        status,
        [("content-type", "application/json")],
        order.to_string(),
    )
        .into_response()
}

/// Any proxied route: echoes what it received.
async fn echo(State(mock): State<Arc<MockSettlement>>, request: Request) -> Response {
    mock.hits.fetch_add(1, Ordering::SeqCst);
    *mock.last_headers.lock().unwrap() = Some(request.headers().clone());
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    mock.record(&parts, &body);
    let body = json!({"method": parts.method.as_str(), "path": parts.uri.path()});
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Starts the mock on 127.0.0.1:0.
pub async fn start_mock() -> (Arc<MockSettlement>, SocketAddr) {
    let mock = Arc::new(MockSettlement::default());
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/internal/settlements", axum::routing::post(settle))
        .fallback(any(echo))
        .with_state(mock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counted = mock.clone();
    let listener = listener.tap_io(move |_| {
        counted.connections.fetch_add(1, Ordering::SeqCst);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (mock, addr)
}

async fn healthz(State(mock): State<Arc<MockSettlement>>) -> &'static str {
    mock.health_checks.fetch_add(1, Ordering::SeqCst);
    "ok"
}

/// The test identity provider: one Ed25519 key published as a static JWKS.
pub struct Idp {
    pub signer: TokenSigner,
    key: EncodingKey,
}

impl Idp {
    pub fn new() -> Self {
        let signer = TokenSigner::generate(KID);
        let key = EncodingKey::from_ed_pem(signer.to_pkcs8_pem().as_bytes()).unwrap();
        Idp { signer, key }
    }

    pub fn jwks(&self) -> JwkSet {
        JwkSet {
            keys: vec![self.signer.public_jwk()],
        }
    }

    pub fn claims(&self, sub: &str, roles: &[&str]) -> BuyerClaims {
        let now = now_secs();
        BuyerClaims {
            sub: sub.into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            exp: now + 600,
            nbf: now - 1,
            iat: now,
        }
    }

    pub fn sign(&self, claims: &BuyerClaims) -> String {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(KID.into());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    pub fn token(&self, sub: &str) -> String {
        self.sign(&self.claims(sub, &[]))
    }

    pub fn ops_token(&self, sub: &str) -> String {
        self.sign(&self.claims(sub, &["ops"]))
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

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

/// The test configuration: ports 0, a private data dir, short timeouts.
pub fn test_config(settlement: SocketAddr) -> Config {
    let mut config = Config {
        data_dir: std::env::temp_dir().join(format!(
            "stockgate-gw-test-{}",
            uuid::Uuid::new_v4().simple()
        )),
        ..Config::default()
    };
    config.server.listen = "127.0.0.1:0".into();
    config.server.admin_listen = "127.0.0.1:0".into();
    config.server.threads = 1;
    config.server.grace_period_secs = 0;
    config.server.shutdown_timeout_secs = 1;
    config.auth.issuer = ISSUER.into();
    config.auth.audience = AUDIENCE.into();
    // Room for the 64 KiB token case to reach the authentication check.
    config.limits.max_header_bytes = 128 * 1024;
    config.limits.header_read_timeout_ms = 700;
    config.upstream.settlement_addr = settlement.to_string();
    // The mock settlements serve `/healthz` on their one port; the real one on its admin port.
    config.upstream.settlement_admin_port = settlement.port();
    config.upstream.settle_timeout_ms = 500;
    config.upstream.health_check_interval_secs = 1;
    config
}

pub fn required_env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} must be set for this test (scripts/test.sh sets it)"))
}

/// The configuration of the real stack in one process (`embedded::start`): the Redis
/// reservation store and edge Redis under `prefix`, its own outbox stream, the settlement on a
/// fresh scratch PostgreSQL schema (`sgtest_<label>_…`, its URL is returned too). Deadlines
/// suit a box loaded by the parallel suite: the harness's short slowloris deadline and the
/// edge's 150 ms Redis health deadline (degraded mode, 503s) would cut in otherwise.
pub async fn real_stack_config(label: &str, prefix: &str) -> (Config, String) {
    let database_url =
        backend_adapters::sql::scratch_schema_url(&required_env("DATABASE_URL"), label)
            .await
            .expect("a scratch schema on PostgreSQL at DATABASE_URL");
    // The upstream address is replaced by the in-process settlement's.
    let mut config = test_config("127.0.0.1:1".parse().unwrap());
    config.server.threads = 2;
    config.redis_url = Some(required_env("REDIS_URL"));
    config.redis_key_prefix = prefix.to_owned();
    config.database_url = Some(database_url.clone());
    config.settlement.redis_key_prefix = format!("{prefix}-settlement");
    // Its own stream: the relay skips ids at or below a shared stream's last id.
    config.settlement.outbox.stream = format!("{prefix}-events");
    config.upstream.settle_timeout_ms = 5_000;
    config.limits.header_read_timeout_ms = 10_000;
    config.degraded.redis_timeout_ms = 2_000;
    (config, database_url)
}

/// Starts the real stack with `config` (validated) and a test identity provider.
pub async fn start_real_stack(config: Config) -> (gateway::embedded::AllInOne, Idp) {
    config.validate().unwrap();
    let idp = Idp::new();
    let keys = KeySet::load(KeySource::Static(idp.jwks()), Duration::from_secs(10))
        .await
        .unwrap();
    let all = gateway::embedded::start(config, Some(keys), false)
        .await
        .unwrap();
    (all, idp)
}

pub fn product(total: u64, limit: u32) -> ProductStock {
    ProductStock {
        total_stock: total,
        per_buyer_limit: limit,
        max_per_order: limit,
        sale_state: SaleState::OnSale,
    }
}

/// Starts a gateway with products `HOT` (5 units, 3 per buyer) and `TINY` (1 unit).
pub async fn start() -> TestGateway {
    start_with(|_| {}).await
}

pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> TestGateway {
    let (mock, addr) = start_mock().await;
    let mut config = test_config(addr);
    adjust(&mut config);
    config.validate().unwrap();
    let store = Arc::new(InMemoryStore::new());
    store
        .configure_product(&Sku::parse("HOT").unwrap(), &product(5, 3))
        .await
        .unwrap();
    store
        .configure_product(&Sku::parse("TINY").unwrap(), &product(1, 1))
        .await
        .unwrap();
    let idp = Idp::new();
    let keys = KeySet::load(KeySource::Static(idp.jwks()), Duration::from_secs(10))
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

/// Reads a JSON body, asserting the problem+json shape when the status is an error.
/// `PUT /api/v1/admin/products/{sku}` with an ops token, creating a product: status and body.
pub async fn put_product(
    http: &reqwest::Client,
    base: &str,
    ops_token: &str,
    sku: &str,
    product: &Value,
) -> (u16, Value) {
    put_product_if_match(http, base, ops_token, sku, product, None).await
}

/// `PUT /api/v1/admin/products/{sku}` with an ops token and `If-Match` (which changing an
/// existing product needs): status and body.
pub async fn put_product_if_match(
    http: &reqwest::Client,
    base: &str,
    ops_token: &str,
    sku: &str,
    product: &Value,
    if_match: Option<&str>,
) -> (u16, Value) {
    let mut request = http
        .put(format!("{base}/api/v1/admin/products/{sku}"))
        .bearer_auth(ops_token)
        .json(product);
    if let Some(tag) = if_match {
        request = request.header("if-match", tag);
    }
    body(request.send().await.unwrap()).await
}

/// `POST /api/v1/reservations` as the storefront sends it: status and body.
pub async fn post_reservation(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
    sku: &str,
    qty: u32,
) -> (u16, Value) {
    let response = http
        .post(format!("{base}/api/v1/reservations"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({"sku": sku, "qty": qty}))
        .send()
        .await
        .unwrap();
    body(response).await
}

/// `POST /api/v1/orders` (the confirm) as the storefront sends it: status and body.
pub async fn post_order(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    key: &str,
    reservation_token: &str,
) -> (u16, Value) {
    let response = http
        .post(format!("{base}/api/v1/orders"))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({"reservation_token": reservation_token}))
        .send()
        .await
        .unwrap();
    body(response).await
}

pub async fn body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    assert!(
        response.headers().contains_key("x-request-id"),
        "every response has x-request-id"
    );
    let text = response.text().await.unwrap();
    let value: Value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap()
    };
    if status >= 400 {
        for field in ["type", "title", "status", "detail", "code", "request_id"] {
            assert!(
                value.get(field).is_some(),
                "problem field {field} missing in {text}"
            );
        }
    }
    (status, value)
}
