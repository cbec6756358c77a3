//! The edge: one Pingora [`ProxyHttp`] implementation that applies the limits, authenticates
//! buyers, answers the reservation routes itself ([`reservations`], [`orders`]), the dev
//! sign-in ([`dev_token`], local use only) and the ops console's view of this gateway
//! ([`edge_stats`]), and proxies everything else to the settlement upstream
//! ([`crate::proxy`]).
//!
//! Order of checks for every request (see `filters.rs`): strip client identity headers →
//! route → header limits and declared body size → client address ([`crate::client_addr`]) →
//! rate limits that apply before authentication (`before_auth`, a client over its
//! `auth_failure` budget) → authentication and role (a refused token charged to
//! `auth_failure` rules) → the other rate limits → handler or proxy. A request refused by any check never reaches the store or the upstream.

pub mod dev_token;
pub mod edge_stats;
mod filters;
pub mod orders;
pub mod reservations;
pub mod respond;
pub mod routes;
pub mod settle;
pub mod sold_out;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pingora::proxy::Session;
use reservation_core::assertion::AssertionSigner;
use reservation_core::wire::headers;
use reservation_core::{ReservationStore, TokenSigner, TokenVerifier};

use crate::auth::{BuyerAuth, Identity, OPS_ROLE};
use crate::cache::ProductCache;
use crate::edge_redis::EdgeRedis;
use crate::metrics::Metrics;
use crate::problem::Problem;
use crate::proxy::Upstream;
use crate::ratelimit::RateLimiter;
use respond::{REQUEST_ID, Reply};
use routes::{Access, Matched, Route};
use settle::SettlementClient;
use sold_out::SoldOutMemory;

/// The limits the edge enforces per request.
#[derive(Debug, Clone)]
pub struct EdgeLimits {
    pub max_body_bytes: usize,
    pub max_header_count: usize,
    pub max_header_bytes: usize,
    pub body_read_timeout: Duration,
    pub write_timeout: Duration,
    pub idle_timeout_secs: u64,
}

/// Everything the edge's handlers share, built once at start.
pub struct EdgeState {
    pub limits: EdgeLimits,
    pub hold_ttl_ms: u64,
    pub store: Arc<dyn ReservationStore>,
    pub signer: Arc<TokenSigner>,
    /// Signs the assertion of every request to settlement ([`crate::service_auth`]).
    pub assertions: Arc<AssertionSigner>,
    pub verifier: TokenVerifier,
    pub auth: BuyerAuth,
    pub metrics: Arc<Metrics>,
    pub sold_out: SoldOutMemory,
    pub settlement: SettlementClient,
    pub upstream: Upstream,
    pub max_retries: usize,
    /// The product cache; `None` proxies catalog reads uncached (`cache.enabled = false`).
    pub cache: Option<Arc<ProductCache>>,
    pub ratelimit: Arc<RateLimiter>,
    /// Who the client of a request is (`[client_ip]`): the rate limits' `ip`.
    pub client_addrs: crate::client_addr::ClientAddrs,
    /// The requests open per client and in all (`limits.max_in_flight*`).
    pub in_flight: Arc<crate::in_flight::InFlight>,
    /// The edge's Redis (cache, limits, health), when `redis_url` is set.
    pub edge_redis: Option<EdgeRedis>,
    /// The storefront and ops console, when served (`web.storefront`, `all-in-one`).
    pub site: Option<crate::web::Site>,
    /// `POST /dev/token`, when `web.dev_token` is on.
    pub dev_tokens: Option<dev_token::DevTokens>,
    /// Readiness (draining) and the dependencies' last check.
    pub health: Arc<crate::health::Health>,
    /// Distributed tracing (off unless `telemetry.otlp_endpoint` is set).
    pub telemetry: backend_adapters::telemetry::Telemetry,
}

impl EdgeState {
    /// Whether Redis is known to be unreachable right now (never without Redis).
    pub fn redis_down(&self) -> bool {
        self.edge_redis.as_ref().is_some_and(|r| !r.health.is_up())
    }
}

/// Per-request state.
pub struct RequestCtx {
    pub request_id: String,
    pub route: Route,
    pub started: Instant,
    pub identity: Option<Identity>,
    pub client_ip: Option<IpAddr>,
    /// The SKU of a product change proxied through this gateway: its cached pages are
    /// dropped once the upstream accepted the change.
    pub invalidates: Option<reservation_core::Sku>,
    /// The whole body of a request proxied to settlement, read before the upstream request
    /// so the assertion can cover it.
    upstream_body: Option<bytes::Bytes>,
    /// Body bytes passed to the upstream so far (the cap applies to streamed bodies too).
    body_seen: usize,
    retries: usize,
    /// This request's place among those being served; dropped when the request ends.
    in_flight: Option<crate::in_flight::InFlightGuard>,
    /// The upstream connection this request uses is `upstream.max_connection_age_secs` old:
    /// the request asks to close it after the answer (`crate::conn_age`).
    upstream_too_old: bool,
    /// The request's server span (none when tracing is off): the parent of the store calls
    /// and the settlement call, and what the upstream request names as its parent.
    pub span: backend_adapters::telemetry::Span,
}

/// The Pingora proxy application.
pub struct Edge {
    pub state: Arc<EdgeState>,
}

/// A client's `x-request-id` is kept when it is short visible ASCII; otherwise a new one.
fn request_id_of(session: &Session) -> String {
    match respond::header_str(session, REQUEST_ID) {
        Some(id)
            if !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            id.to_owned()
        }
        _ => uuid::Uuid::now_v7().simple().to_string(),
    }
}

/// Runs one reservation-store call (a Redis script) in a client span `redis <operation>`,
/// a child of the request's span; just the call when tracing is off.
pub(crate) async fn store_call<T, E: std::fmt::Display>(
    state: &EdgeState,
    ctx: &RequestCtx,
    operation: &'static str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    use backend_adapters::telemetry::{KeyValue, SpanKind};
    if !state.telemetry.is_on() {
        return call.await;
    }
    let span = state.telemetry.span(
        store_span_name(operation),
        SpanKind::Client,
        &ctx.span.context(),
        vec![
            KeyValue::new("db.system.name", "redis"),
            KeyValue::new("db.operation.name", operation),
        ],
    );
    let result = call.await;
    if let Err(error) = &result {
        span.set_error(error);
    }
    span.end();
    result
}

/// Span names are `&'static str`: one per store operation.
fn store_span_name(operation: &'static str) -> &'static str {
    match operation {
        "reserve" => "redis reserve",
        "release" => "redis release",
        "begin_confirm" => "redis begin_confirm",
        "finish_confirm" => "redis finish_confirm",
        "abort_confirm" => "redis abort_confirm",
        _ => "redis call",
    }
}

/// Whether the request carries a body the edge has not read (then an early answer closes).
fn has_body(session: &Session) -> bool {
    let headers = &session.req_header().headers;
    headers.contains_key(http::header::TRANSFER_ENCODING)
        || respond::declared_length(session).is_some_and(|len| len > 0)
}

impl Edge {
    /// The checks every request passes before routing; `Some` is the refusal.
    fn check_limits(&self, session: &Session) -> Option<Problem> {
        if routes::is_ambiguous_path(session.req_header().uri.path()) {
            return Some(Problem::new(
                400,
                "invalid_path",
                "the path has dot segments, empty segments or encoded separators",
            ));
        }
        let limits = &self.state.limits;
        let headers = &session.req_header().headers;
        // An HTTP/2 client may send each cookie as a field of its own (RFC 9113 §8.2.3); the
        // cookies are one header however they arrive.
        let cookie_fields = headers.get_all(http::header::COOKIE).iter().count();
        if headers.len() - cookie_fields.saturating_sub(1) > limits.max_header_count {
            return Some(Problem::headers_too_large(format!(
                "more than {} request headers",
                limits.max_header_count
            )));
        }
        let bytes: usize = headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len())
            .sum();
        if bytes > limits.max_header_bytes {
            return Some(Problem::headers_too_large(format!(
                "request headers larger than {} bytes",
                limits.max_header_bytes
            )));
        }
        if respond::declared_length(session).is_some_and(|len| len > limits.max_body_bytes) {
            return Some(Problem::payload_too_large(limits.max_body_bytes));
        }
        None
    }

    /// Authenticates when the route needs it; `Err` is the 401/403 answer.
    async fn authorize(
        &self,
        session: &Session,
        access: Access,
    ) -> Result<Option<Identity>, Problem> {
        if access == Access::Anyone {
            return Ok(None);
        }
        let headers = &session.req_header().headers;
        // Two Authorization headers: which one counts would depend on who reads them.
        if headers.get_all(http::header::AUTHORIZATION).iter().count() > 1 {
            self.state.metrics.auth_failures.inc();
            return Err(Problem::from(crate::auth::AuthError::Malformed));
        }
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        let identity = self
            .state
            .auth
            .authenticate(authorization)
            .await
            .map_err(|e| {
                self.state.metrics.auth_failures.inc();
                tracing::debug!(error = %e, "buyer authentication failed");
                Problem::from(e)
            })?;
        if access == Access::Ops && !identity.has_role(OPS_ROLE) {
            self.state.metrics.auth_failures.inc();
            return Err(Problem::from(crate::auth::AuthError::Forbidden(OPS_ROLE)));
        }
        Ok(Some(identity))
    }

    async fn answer(&self, session: &mut Session, ctx: &RequestCtx, reply: Reply) {
        let reply = match ctx.span.trace_id() {
            Some(trace_id) => reply.with_trace_id(&trace_id),
            None => reply,
        };
        if let Err(error) = respond::send(session, &ctx.request_id, reply).await {
            tracing::debug!(%error, request_id = %ctx.request_id, "writing the answer failed");
        }
    }

    /// Runs an edge-handled route.
    async fn handle(&self, session: &mut Session, ctx: &RequestCtx, matched: &Matched) -> Reply {
        let state = &self.state;
        // Degraded mode: nothing that needs the store waits on a Redis known to be down.
        let needs_store = matches!(
            matched.route,
            Route::ReservationCreate
                | Route::ReservationList
                | Route::ReservationGet
                | Route::ReservationRelease
                | Route::Stock
                | Route::OrderConfirm
        );
        if needs_store && state.redis_down() {
            let problem = Problem::new(
                503,
                "backend_unavailable",
                "the reservation store is unavailable, retry later",
            );
            return Reply::problem(&problem, &ctx.request_id);
        }
        match matched.route {
            Route::Healthz => Reply::json(200, &serde_json::json!({"status": "ok"})),
            Route::Readyz => readiness(state, &ctx.request_id),
            Route::ReservationCreate => reservations::create(state, session, ctx).await,
            Route::ReservationList => reservations::list(state, session, ctx).await,
            Route::ReservationGet => reservations::get(state, ctx, matched).await,
            Route::ReservationRelease => reservations::release(state, ctx, matched).await,
            Route::Stock => reservations::stock(state, ctx, matched).await,
            Route::OrderConfirm => orders::confirm(state, session, ctx).await,
            Route::MethodNotAllowed => {
                let reply = Reply::problem(&Problem::method_not_allowed(), &ctx.request_id);
                match matched.allow {
                    Some(allow) => reply.header("allow", allow),
                    None => reply,
                }
            }
            Route::Products => match &state.cache {
                Some(cache) => {
                    // The query string plays no part: see `cache::catalog_key`.
                    let path = session.req_header().uri.path();
                    let if_none_match = respond::header_str(session, headers::IF_NONE_MATCH);
                    cache.serve(path, if_none_match, &ctx.request_id).await
                }
                None => Reply::problem(&Problem::not_found(), &ctx.request_id),
            },
            Route::Web => match &state.site {
                Some(site) => {
                    let request = session.req_header();
                    let if_none_match = respond::header_str(session, headers::IF_NONE_MATCH);
                    site.serve(
                        &request.method,
                        request.uri.path(),
                        if_none_match,
                        &ctx.request_id,
                    )
                }
                None => Reply::problem(&Problem::not_found(), &ctx.request_id),
            },
            Route::DevToken => {
                let dev = state.dev_tokens.as_ref();
                dev_token::handle(dev, &state.limits, session, &ctx.request_id).await
            }
            Route::EdgeStats => edge_stats::report(state),
            Route::NotFound | Route::Orders | Route::Admin => {
                Reply::problem(&Problem::not_found(), &ctx.request_id)
            }
        }
    }
}

/// `/readyz`: whether this pod can serve. Reaching this handler means the configuration is
/// loaded and the listener is up, so the answer is 200 unless the pod is draining. No I/O and
/// no dependency: see `crate::health` (dependencies are on the admin `/admin/health`).
fn readiness(state: &EdgeState, request_id: &str) -> Reply {
    if state.health.is_draining() {
        let problem = Problem::new(503, "draining", "this gateway is shutting down");
        return Reply::problem(&problem, request_id);
    }
    Reply::json(200, &serde_json::json!({"status": "ready"}))
}
