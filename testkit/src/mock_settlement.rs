//! A small settlement service for gateway tests: `POST /internal/settlements` answers as the
//! test sets it ([`Mode`]), every other route echoes what it received, and everything is
//! recorded (hits, connections, the last request with its service assertion).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::serve::ListenerExt;
use reservation_core::assertion::{ASSERTION_HEADER, AssertionSigner, AssertionVerifier, Bound};
use serde_json::{Value, json};

use crate::idp::unverified_claims;

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
    /// Headers of the last `POST /internal/settlements`.
    pub last_settlement_headers: std::sync::Mutex<Option<HeaderMap>>,
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

    /// Header `name` of the last proxied request.
    pub fn last_header(&self, name: &str) -> Option<String> {
        header_of(&self.last_headers, name)
    }

    /// Header `name` of the last `POST /internal/settlements`.
    pub fn last_settlement_header(&self, name: &str) -> Option<String> {
        header_of(&self.last_settlement_headers, name)
    }
}

fn header_of(headers: &std::sync::Mutex<Option<HeaderMap>>, name: &str) -> Option<String> {
    let headers = headers.lock().unwrap();
    headers
        .as_ref()
        .and_then(|h| h.get(name))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl MockSettlement {}

fn problem(status: u16, code: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap();
    (
        status,
        [("content-type", "application/problem+json")],
        json!({"status": status.as_u16(), "code": code}).to_string(),
    )
        .into_response()
}

async fn settle(State(mock): State<Arc<MockSettlement>>, request: Request) -> Response {
    mock.hits.fetch_add(1, Ordering::SeqCst);
    mock.settlements.fetch_add(1, Ordering::SeqCst);
    *mock.last_settlement_headers.lock().unwrap() = Some(request.headers().clone());
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
    // The mock trusts the gateway; the real service verifies the token.
    let claims = unverified_claims(&token);
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
