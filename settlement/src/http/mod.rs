//! The settlement service's HTTP API (axum): the public routes, every one behind the service
//! authentication of [`service_auth`]; the admin listener's probes and metrics; the
//! request-id middleware that also puts the id into every problem body; and the helpers
//! handlers share (the identity the gateway asserted, JSON bodies, ETags).

mod admin;
mod orders;
mod products;
mod service_auth;
mod settle;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use backend_adapters::redis::lock::{FencedLock, LockLease};
use backend_adapters::sql::Db;
use backend_adapters::telemetry::{KeyValue, Span, SpanKind};
use reservation_core::assertion::AssertionVerifier;
use reservation_core::wire::{Problem, headers, paths};
use reservation_core::{ReservationStore, TokenVerifier};
use serde::de::DeserializeOwned;

use crate::commit::Committer;
use crate::error::{ApiError, problem_response};
use crate::metrics::Metrics;
pub(crate) use service_auth::{Caller, UsedAssertions};

/// What every handler reaches.
pub(crate) struct AppState {
    pub db: Db,
    pub store: Arc<dyn ReservationStore>,
    pub verifier: TokenVerifier,
    /// The gateway's assertion keys: who may call at all.
    pub gateway_keys: AssertionVerifier,
    /// Assertions of writes already served (each is served once).
    pub used_assertions: UsedAssertions,
    pub committer: Committer,
    pub metrics: Metrics,
    pub status_lock: StatusLock,
    /// Distributed tracing (off unless `telemetry.otlp_endpoint` is set).
    pub telemetry: backend_adapters::telemetry::Telemetry,
}

/// The lock an ops status change runs under.
pub(crate) enum StatusLock {
    /// The fenced Redis lock, one per order id, shared by every replica.
    Redis {
        lock: FencedLock,
        lease: std::time::Duration,
    },
    /// One process (embedded mode): a mutex, and fencing tokens from a counter seeded with
    /// the clock in microseconds so they keep growing across restarts.
    Local {
        mutex: tokio::sync::Mutex<()>,
        next_fence: AtomicU64,
    },
}

impl StatusLock {
    pub fn local() -> Self {
        let seed = backend_adapters::sql::now_ms().max(0) as u64 * 1000;
        StatusLock::Local {
            mutex: tokio::sync::Mutex::new(()),
            next_fence: AtomicU64::new(seed),
        }
    }
}

pub(crate) type Shared = State<Arc<AppState>>;

/// The public API: what the gateway proxies and settles through. Probes and metrics are not
/// here but on [`admin_router`], a listener of its own: a sale saturating this one must not
/// fail liveness (and restart pods under load), and nothing about the service's health is
/// served to whoever reaches the API port.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route(paths::SETTLEMENTS, post(settle::settle))
        .route(paths::SETTLEMENT_FATE, post(settle::decide_fate))
        .route(paths::PRODUCTS, get(products::list_products))
        .route(paths::PRODUCT, get(products::get_product))
        .route(paths::ORDERS, get(orders::list))
        .route(paths::ORDER, get(orders::get))
        .route(paths::ORDER_CANCEL, post(orders::cancel))
        .route(paths::ADMIN_PRODUCT, put(products::put_product))
        .route(paths::ADMIN_PRODUCT_RESTOCK, post(products::restock))
        .route(paths::ADMIN_ORDER_STATUS, post(admin::set_status))
        .route(paths::ADMIN_RECONCILE, get(admin::reconcile));
    finish(api, state, Listener::Public)
}

/// The admin listener (`admin_listen_addr`, kept inside the cluster): liveness, readiness
/// and Prometheus metrics, for kubelet, Prometheus and the gateway's upstream health check.
pub(crate) fn admin_router(state: Arc<AppState>) -> Router {
    let admin = Router::new()
        .route(paths::HEALTHZ, get(healthz))
        .route(paths::READYZ, get(readyz))
        .route(paths::METRICS, get(metrics));
    finish(admin, state, Listener::Admin)
}

enum Listener {
    /// The API: only the gateway, proven by its assertion.
    Public,
    /// Probes and metrics: anyone who reaches the admin port (kept inside the cluster).
    Admin,
}

/// What both listeners share: problem+json fallbacks and the request id; the public one
/// also the service authentication, outside the fallbacks so an unauthenticated caller
/// cannot even map which routes exist, inside the request id so its refusals carry one.
fn finish(routes: Router<Arc<AppState>>, state: Arc<AppState>, listener: Listener) -> Router {
    let routes = routes
        .fallback(|| async { ApiError::from(Problem::not_found()) })
        .method_not_allowed_fallback(|| async { ApiError::from(Problem::method_not_allowed()) });
    let routes = match listener {
        Listener::Public => routes.layer(middleware::from_fn_with_state(
            state.clone(),
            service_auth::require_gateway,
        )),
        Listener::Admin => routes,
    };
    let routes = match listener {
        // Outermost on the API: the request span covers authentication too.
        Listener::Public => {
            routes.layer(middleware::from_fn_with_state(state.clone(), trace_request))
        }
        Listener::Admin => routes,
    };
    routes
        .layer(middleware::from_fn(request_id))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): Shared) -> Response {
    match state.db.ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness: database unreachable");
            ApiError::new(503, "not_ready", "database unreachable").into_response()
        }
    }
}

async fn metrics(State(state): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

fn acceptable_request_id(value: &HeaderValue) -> Option<String> {
    let raw = value.to_str().ok()?;
    (!raw.is_empty() && raw.len() <= 128 && raw.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| raw.to_owned())
}

/// The span of one API request, in the request's extensions for the handlers below it
/// (the group commit links its batch span to it).
#[derive(Clone)]
pub(crate) struct RequestSpan(pub Span);

/// A server span per API request, a child of the caller's `traceparent` (the gateway's
/// settlement call) or the root of a new trace. A branch and nothing else when tracing is off.
async fn trace_request(State(state): Shared, mut req: Request, next: Next) -> Response {
    if !state.telemetry.is_on() {
        return next.run(req).await;
    }
    let parent = state.telemetry.extract(req.headers());
    let mut attributes = vec![
        KeyValue::new("http.request.method", req.method().to_string()),
        KeyValue::new("url.path", req.uri().path().to_owned()),
    ];
    if let Some(id) = req
        .headers()
        .get(headers::REQUEST_ID)
        .and_then(acceptable_request_id)
    {
        attributes.push(KeyValue::new("request_id", id));
    }
    let span = state
        .telemetry
        .span("settlement request", SpanKind::Server, &parent, attributes);
    req.extensions_mut().insert(RequestSpan(span.clone()));
    let mut response = next.run(req).await;
    span.set_http_status(response.status().as_u16());
    if let Some(trace_id) = span.trace_id() {
        // For the request-id layer outside, which renders problem bodies.
        response.extensions_mut().insert(TraceId(trace_id));
    }
    span.end();
    response
}

/// The trace id of a traced request, from [`trace_request`] to [`request_id`].
#[derive(Clone)]
struct TraceId(String);

/// Keeps the caller's `x-request-id` (or makes one), echoes it on every response and writes
/// it into problem bodies.
async fn request_id(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(headers::REQUEST_ID)
        .and_then(acceptable_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let mut response = next.run(req).await;
    if let Some(problem) = response.extensions_mut().remove::<Problem>() {
        let status = response.status();
        let trace_id = response.extensions_mut().remove::<TraceId>();
        let trace_id = trace_id.as_ref().map(|t| t.0.as_str());
        let mut rebuilt = problem_response(status, &problem, Some(&id), trace_id);
        for (name, value) in response.headers() {
            if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
                rebuilt.headers_mut().insert(name.clone(), value.clone());
            }
        }
        response = rebuilt;
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(headers::REQUEST_ID, value);
    }
    response
}

/// The buyer the request acts for, as the gateway's assertion names them; refused when it
/// names none (a catalog read's assertion, say): no buyer, no buyer's data.
pub(crate) fn buyer(caller: &Caller) -> Result<String, ApiError> {
    caller
        .0
        .sub
        .clone()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::new(401, "unauthenticated", "no authenticated buyer"))
}

/// The caller must carry role `ops` in the gateway's assertion. Returns who they are, for
/// the status history.
pub(crate) fn ops(caller: &Caller) -> Result<String, ApiError> {
    if !caller.0.has_role("ops") {
        return Err(ApiError::new(
            403,
            "forbidden",
            "this route needs the ops role",
        ));
    }
    Ok(buyer(caller).unwrap_or_else(|_| "ops".to_owned()))
}

/// Parses a JSON object body into `T`, as a 400 problem when it does not fit. Serde would also
/// fill a struct from a JSON array of its fields (`["shipped"]` for `{"status"}`); every body
/// of this API is an object, so anything not starting with `{` is refused first.
pub(crate) fn json_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request("body: expected a JSON object"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

/// A JSON response with a status and an optional strong `ETag` of `version`.
pub(crate) fn json_response<T: serde::Serialize>(
    status: StatusCode,
    body: &T,
    version: Option<i64>,
) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (status, Body::from(bytes)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(version) = version
        && let Ok(value) = HeaderValue::from_str(&etag(version))
    {
        headers.insert(header::ETAG, value);
    }
    response
}

pub(crate) fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

/// The versions an `If-Match` / `If-None-Match` lists; `Some(None)` for `*`. Each entry is an
/// entity tag as RFC 9110 §8.8.3 writes one, `"3"` or weak `W/"3"`, whose text is a version
/// (at most 18 digits: an i64); anything else (`3` unquoted, `"+3"`, `"abc"`) is `None`,
/// answered 400, as openapi.yaml's `IfMatchVersions` pattern says.
pub(crate) fn listed_versions(value: &str) -> Option<Option<Vec<i64>>> {
    if value.trim() == "*" {
        return Some(None);
    }
    value
        .split(',')
        .map(|tag| {
            let tag = tag.trim();
            let tag = tag.strip_prefix("W/").unwrap_or(tag);
            let digits = tag.strip_prefix('"')?.strip_suffix('"')?;
            let is_version =
                (1..=18).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit());
            is_version.then(|| digits.parse::<i64>().ok()).flatten()
        })
        .collect::<Option<Vec<_>>>()
        .map(Some)
}

/// A held status lock of one order: the fencing token to write with, and what releases it.
pub(crate) struct OrderLock<'a> {
    pub fence: i64,
    lease: Option<LockLease>,
    _local: Option<tokio::sync::MutexGuard<'a, ()>>,
}

/// Takes the status lock of one order. `floor` is the order's current fence: a new token
/// always exceeds it, even after Redis lost the fence counter.
pub(crate) async fn lock_order<'a>(
    lock: &'a StatusLock,
    order_id: &str,
    floor: i64,
) -> Result<OrderLock<'a>, ApiError> {
    let floor = u64::try_from(floor).unwrap_or(0);
    match lock {
        StatusLock::Redis { lock, lease } => {
            let held = lock
                .acquire_above(&format!("order:{order_id}"), *lease, *lease, floor)
                .await
                .map_err(|e| {
                    tracing::warn!(error = %e, "status lock unavailable");
                    ApiError::new(503, "lock_busy", "the order lock is unavailable")
                })?
                .ok_or_else(|| {
                    ApiError::new(503, "lock_busy", "another status change holds this order")
                })?;
            Ok(OrderLock {
                fence: i64::try_from(held.fence).unwrap_or(i64::MAX),
                lease: Some(held),
                _local: None,
            })
        }
        StatusLock::Local { mutex, next_fence } => {
            let guard = mutex.lock().await;
            next_fence.fetch_max(floor, Ordering::SeqCst);
            let fence = next_fence.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(OrderLock {
                fence: i64::try_from(fence).unwrap_or(i64::MAX),
                lease: None,
                _local: Some(guard),
            })
        }
    }
}

impl OrderLock<'_> {
    /// Gives the lock back (owner only). A failed release is logged: the lease expires by
    /// itself and the fence already protects the data.
    pub async fn release(self, lock: &StatusLock) {
        if let (Some(lease), StatusLock::Redis { lock, .. }) = (&self.lease, lock)
            && let Err(e) = lock.release(lease).await
        {
            tracing::warn!(error = %e, "status lock release failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_accepts_quoted_weak_and_star() {
        assert_eq!(listed_versions("\"3\""), Some(Some(vec![3])));
        assert_eq!(listed_versions("W/\"3\", \"4\""), Some(Some(vec![3, 4])));
        assert_eq!(listed_versions("*"), Some(None));
        assert_eq!(listed_versions("\"abc\""), None);
        // Entity tags only: an unquoted number, a sign, an empty tag or a half-quoted one is
        // no version (before, `3` and `"+3"` passed as version 3).
        for refused in ["3", "\"+3\"", "\"-3\"", "\"\"", "\"3", "W/3", "\"3\", 4"] {
            assert_eq!(listed_versions(refused), None, "{refused}");
        }
    }

    #[test]
    fn ops_role_and_buyer_come_from_the_asserted_identity() {
        use reservation_core::assertion::Identity;
        let caller = |sub: Option<&str>, roles: &[&str]| {
            Caller(Identity {
                sub: sub.map(str::to_owned),
                roles: roles.iter().map(|r| r.to_string()).collect(),
            })
        };
        assert_eq!(
            ops(&caller(Some("olga"), &["buyer"])).unwrap_err().status,
            StatusCode::FORBIDDEN
        );
        assert_eq!(
            ops(&caller(Some("olga"), &["buyer", "ops"]))
                .ok()
                .as_deref(),
            Some("olga")
        );
        assert_eq!(
            buyer(&caller(Some("José"), &[])).ok().as_deref(),
            Some("José")
        );
        for nobody in [caller(None, &[]), caller(Some(""), &["ops"])] {
            assert_eq!(buyer(&nobody).unwrap_err().status, StatusCode::UNAUTHORIZED);
        }
    }
}
