//! The Pingora hooks of the edge, in the order Pingora calls them for one request:
//! `early_request_filter` (request id, timeouts, header deadline mark) → `request_filter`
//! (identity headers stripped, route, limits, client address, rate limits before auth, auth,
//! rate limits after auth, edge handlers) → for proxied routes
//! the whole body read (capped) in `request_filter` → `upstream_peer` →
//! `upstream_request_filter` (the service assertion over method, target and body) →
//! `request_body_filter` (the body, replayed by Pingora) → `response_filter` (`x-request-id`); on failure
//! `fail_to_connect` (retry idempotent requests) and `fail_to_proxy` (problem+json); always
//! `logging` (metrics).

use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::HttpPeer;
use pingora::protocols::Digest;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::{Error, ErrorSource, ErrorType};

use super::respond::{REQUEST_ID, Reply};
use super::routes::{self, Route};
use super::{Edge, EdgeLimits, RequestCtx, has_body, request_id_of};
use crate::problem::Problem;
use crate::ratelimit::{Checkpoint, Facts};
use backend_adapters::telemetry::{KeyValue, SpanKind};
use reservation_core::assertion::Bound;
// Identity headers an older settlement trusted: settlement now reads the identity from the
// gateway's assertion only; the edge still strips them so no client's reach anywhere.
use reservation_core::wire::headers::{ASSERTION as ASSERTION_HEADER, USER_ROLES, USER_SUB};

/// The largest body proxied to settlement. It is read whole before the upstream request
/// starts (the assertion covers its hash) and Pingora sends it on from its retry buffer,
/// which holds 64 KiB; the proxied bodies are small JSON (product edits, status changes).
pub const MAX_PROXIED_BODY_BYTES: usize = 64 * 1024;

/// How much of a refused HTTP/2 request's body is read and dropped before the answer, and for
/// how long at most ([`Edge::refuse`]); a larger or slower body gets the answer and a reset.
const DISCARDED_BODY_BYTES: usize = 16 * 1024;
const DISCARD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

#[async_trait]
impl ProxyHttp for Edge {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            request_id: String::new(),
            route: Route::NotFound,
            started: Instant::now(),
            identity: None,
            client_ip: None,
            invalidates: None,
            upstream_body: None,
            body_seen: 0,
            retries: 0,
            in_flight: None,
            upstream_too_old: false,
            span: Default::default(),
        }
    }

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        crate::server::mark_headers_read();
        ctx.started = Instant::now();
        ctx.request_id = request_id_of(session);
        if self.state.telemetry.is_on() {
            let request = session.req_header();
            // The client's trace when it sent one, else a new trace starts here.
            let parent = self.state.telemetry.extract(&request.headers);
            ctx.span = self.state.telemetry.span(
                "gateway request",
                SpanKind::Server,
                &parent,
                vec![
                    KeyValue::new("http.request.method", request.method.to_string()),
                    KeyValue::new("url.path", request.uri.path().to_owned()),
                    KeyValue::new("request_id", ctx.request_id.clone()),
                ],
            );
        }
        session.set_keepalive(Some(self.state.limits.idle_timeout_secs));
        session.set_read_timeout(Some(self.state.limits.body_read_timeout));
        // Pingora's read timeout does nothing on HTTP/2; the write timeout works on both.
        session.set_write_timeout(Some(self.state.limits.write_timeout));
        Ok(())
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        // Never trust identity headers or an assertion from a client, whatever the route.
        session.req_header_mut().remove_header(USER_SUB);
        session.req_header_mut().remove_header(USER_ROLES);
        session.req_header_mut().remove_header(ASSERTION_HEADER);

        let matched = routes::classify(
            &session.req_header().method,
            session.req_header().uri.path(),
        );
        ctx.route = matched.route;
        ctx.span
            .set_attribute(KeyValue::new("http.route", matched.route.name()));
        if let Some(problem) = self.check_limits(session) {
            self.answer(
                session,
                ctx,
                Reply::problem(&problem, &ctx.request_id).closing(),
            )
            .await;
            return Ok(true);
        }
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        ctx.client_ip = (self.state.client_addrs).client_ip(peer, &session.req_header().headers);
        match self.state.in_flight.enter(ctx.client_ip) {
            Ok(place) => ctx.in_flight = Some(place),
            Err(problem) => {
                self.refuse(session, ctx, Reply::problem(&problem, &ctx.request_id))
                    .await;
                return Ok(true);
            }
        }
        // Before the token is looked at: a client over its budget of refused tokens, then
        // the `before_auth` rules, so a flood costs no signature check.
        let early = match self.state.ratelimit.failures_blocked(&facts(session, ctx)) {
            Some(limited) => Some(limited),
            None => {
                let facts = facts(session, ctx);
                (self.state.ratelimit)
                    .check(&facts, Checkpoint::BeforeAuth)
                    .await
            }
        };
        if let Some(limited) = early {
            self.refuse(session, ctx, limited.reply(&ctx.request_id))
                .await;
            return Ok(true);
        }
        match self.authorize(session, matched.route.access()).await {
            Ok(identity) => ctx.identity = identity,
            Err(problem) => {
                // A refused token is charged to the client's `auth_failure` budget; the one
                // that exhausts it is answered 429 like the ones after it.
                let over = if problem.status == 401 {
                    let facts = facts(session, ctx);
                    self.state.ratelimit.charge_failure(&facts).await
                } else {
                    None
                };
                let reply = match over {
                    Some(limited) => limited.reply(&ctx.request_id),
                    None => Reply::problem(&problem, &ctx.request_id),
                };
                self.refuse(session, ctx, reply).await;
                return Ok(true);
            }
        }
        let limited = {
            let facts = facts(session, ctx);
            (self.state.ratelimit)
                .check(&facts, Checkpoint::AfterAuth)
                .await
        };
        if let Some(limited) = limited {
            self.refuse(session, ctx, limited.reply(&ctx.request_id))
                .await;
            return Ok(true);
        }
        let cached = matched.route == Route::Products && self.state.cache.is_some();
        if matched.route.is_proxied() && !cached {
            ctx.invalidates = product_change(session);
            match self.read_proxied_body(session).await {
                Ok(body) => ctx.upstream_body = Some(body),
                Err(problem) => {
                    let reply = Reply::problem(&problem, &ctx.request_id).closing();
                    self.answer(session, ctx, reply).await;
                    return Ok(true);
                }
            }
            return Ok(false);
        }
        let reply = self.handle(session, ctx, &matched).await;
        self.answer(session, ctx, reply).await;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        self.state.upstream.peer().ok_or_else(|| {
            Error::explain(ErrorType::HTTPStatus(503), "no healthy settlement upstream")
        })
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        _reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        digest: Option<&Digest>,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        ctx.upstream_too_old = self.state.upstream.too_old(digest);
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        if ctx.upstream_too_old {
            // The connection ends after this answer; the next request reconnects through the
            // ClusterIP and may reach a settlement pod added since (crate::conn_age).
            upstream_request.insert_header(http::header::CONNECTION, "close")?;
        }
        upstream_request.remove_header(USER_SUB);
        upstream_request.remove_header(USER_ROLES);
        // The buyer's credentials stay at the edge: settlement acts on the assertion alone,
        // and a bearer token or cookie on the internal hop is one a capture there could
        // replay at the public edge for its whole life.
        upstream_request.remove_header(&http::header::AUTHORIZATION);
        upstream_request.remove_header(&http::header::PROXY_AUTHORIZATION);
        upstream_request.remove_header(&http::header::COOKIE);
        self.assert_request(upstream_request, ctx)?;
        upstream_request.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        // The client's trace headers never pass as they are: settlement's parent is this
        // gateway's span (none when tracing is off).
        upstream_request.remove_header("traceparent");
        upstream_request.remove_header("tracestate");
        for (name, value) in ctx.span.headers() {
            upstream_request.insert_header(name, value)?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        // Chunked bodies have no declared length: count what streams through.
        ctx.body_seen += body.as_ref().map_or(0, Bytes::len);
        if ctx.body_seen > self.state.limits.max_body_bytes {
            return Err(Error::explain(
                ErrorType::HTTPStatus(413),
                "request body too large",
            ));
        }
        // Pingora's read timeout is per read: a body trickled a byte at a time would hold the
        // upstream connection for as long as the client likes. The deadline is total.
        if ctx.started.elapsed() > self.state.limits.body_read_timeout {
            return Err(Error::explain(
                ErrorType::HTTPStatus(408),
                "request body not received in time",
            ));
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        upstream_response.insert_header(REQUEST_ID, ctx.request_id.as_str())?;
        // A 412 says the editor's copy was stale: dropping it lets the reload read SQL's.
        if let (Some(sku), Some(cache)) = (ctx.invalidates.take(), &self.state.cache)
            && (upstream_response.status.is_success()
                || upstream_response.status == http::StatusCode::PRECONDITION_FAILED)
        {
            cache.invalidate(&sku).await;
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        self.state.metrics.upstream_connect_errors.inc();
        // Retry only requests that are safe to repeat, however sure we are nothing was sent.
        let retry = routes::is_idempotent(&session.req_header().method)
            && ctx.retries < self.state.max_retries;
        if retry {
            ctx.retries += 1;
        }
        e.set_retry(retry);
        e
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let problem = problem_for(e);
        let code = problem.as_ref().map_or(0, |p| p.status);
        if let Some(problem) = problem
            && session.response_written().is_none()
        {
            if ctx.request_id.is_empty() {
                ctx.request_id = request_id_of(session);
            }
            let reply = Reply::problem(&problem, &ctx.request_id).closing();
            self.answer(session, ctx, reply).await;
        }
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    fn persist_connection_context(
        &self,
        _session: &Session,
        _ctx: &RequestCtx,
    ) -> Option<Box<dyn std::any::Any + Send + Sync>> {
        // Lets the header deadline tell a reused keep-alive connection from a new one.
        Some(crate::server::connection_seen())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let elapsed = ctx.started.elapsed();
        let span = std::mem::take(&mut ctx.span);
        let trace_id = span.trace_id();
        span.set_http_status(status);
        if let Some(e) = e {
            span.set_error(e);
        }
        span.end();
        self.state
            .metrics
            .observe_request(ctx.route, status, elapsed.as_secs_f64());
        // The access log, at debug level: the metrics carry the aggregate picture.
        tracing::debug!(
            request_id = %ctx.request_id,
            route = ctx.route.name(),
            status,
            micros = elapsed.as_micros() as u64,
            error = e.map(|e| e.to_string()),
            trace_id,
            "request"
        );
        ctx.in_flight = None;
    }
}

impl Edge {
    /// Reads the whole body of a request proxied to settlement, at most
    /// [`MAX_PROXIED_BODY_BYTES`] (413 above), within the body deadline (408). Pingora's retry
    /// buffer keeps the bytes, and sends them upstream after the headers.
    async fn read_proxied_body(&self, session: &mut Session) -> Result<Bytes, Problem> {
        session.as_mut().enable_retry_buffering();
        let limits = EdgeLimits {
            max_body_bytes: self.state.limits.max_body_bytes.min(MAX_PROXIED_BODY_BYTES),
            ..self.state.limits.clone()
        };
        super::respond::read_body(session, &limits).await
    }

    /// Makes the upstream request one settlement can check: the target in origin form (what
    /// the gateway routed on, so both read the same request), the body's exact length, and
    /// the assertion over method, target and body for the verified buyer (or nobody).
    fn assert_request(
        &self,
        upstream_request: &mut RequestHeader,
        ctx: &RequestCtx,
    ) -> pingora::Result<()> {
        upstream_request.remove_header(ASSERTION_HEADER);
        let target = upstream_request
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .ok_or_else(|| Error::explain(ErrorType::HTTPStatus(400), "no request path"))?;
        if upstream_request.raw_path() != target.as_bytes() {
            let uri = target
                .parse()
                .map_err(|_| Error::explain(ErrorType::HTTPStatus(400), "bad request path"))?;
            upstream_request.set_uri(uri);
        }
        let body = ctx.upstream_body.as_deref().unwrap_or_default();
        upstream_request.remove_header(&http::header::TRANSFER_ENCODING);
        upstream_request.insert_header(http::header::CONTENT_LENGTH, body.len())?;
        let identity = crate::service_auth::identity_of(ctx.identity.as_ref());
        let if_match = upstream_request
            .headers
            .get(http::header::IF_MATCH)
            .and_then(|v| v.to_str().ok());
        let request =
            Bound::new(upstream_request.method.as_str(), &target, body).with_if_match(if_match);
        let assertion = crate::service_auth::sign(&self.state.assertions, &request, &identity)
            .map_err(|e| Error::explain(ErrorType::InternalError, e.to_string()))?;
        upstream_request.insert_header(ASSERTION_HEADER, assertion)?;
        Ok(())
    }

    /// Answers a refusal. On HTTP/1.1 a body the edge has not read closes the connection after
    /// it. On HTTP/2 an answer before the client's END_STREAM ends in RST_STREAM(NO_ERROR),
    /// which RFC 9113 §8.1 allows but some clients (curl 7.88) report as a failed request: a
    /// request that holds an in-flight place has a small body read and dropped first. One
    /// refused for its in-flight count holds no place and is answered at once: draining it
    /// would let a client keep any number of refused streams open.
    async fn refuse(&self, session: &mut Session, ctx: &RequestCtx, mut reply: Reply) {
        if session.is_http2() {
            if ctx.in_flight.is_some() && !session.is_body_done() {
                super::respond::discard_body(session, DISCARDED_BODY_BYTES, DISCARD_DEADLINE).await;
            }
        } else if has_body(session) {
            reply = reply.closing();
        }
        self.answer(session, ctx, reply).await;
    }
}

/// What the rate limiter knows of a request before its body is read.
fn facts<'a>(session: &'a Session, ctx: &'a RequestCtx) -> Facts<'a> {
    let request = session.req_header();
    Facts {
        method: &request.method,
        path: request.uri.path(),
        sub: ctx.identity.as_ref().map(|i| i.sub.as_str()),
        ip: ctx.client_ip,
        body_sku: None,
    }
}

/// The SKU whose cached pages this request changes, if it is a product edit.
fn product_change(session: &Session) -> Option<reservation_core::Sku> {
    let request = session.req_header();
    routes::product_change(&request.method, request.uri.path())
}

/// The problem a failed proxy attempt answers with; `None` when the client is gone.
fn problem_for(e: &Error) -> Option<Problem> {
    use ErrorType::*;
    if let HTTPStatus(code) = e.etype() {
        return Some(match *code {
            413 => Problem::new(413, "payload_too_large", "request body too large"),
            408 => super::respond::body_timeout(),
            503 => Problem::upstream_unavailable("the settlement service is unavailable"),
            other => Problem::new(other, "upstream_error", "the request could not be proxied"),
        });
    }
    match e.esource() {
        ErrorSource::Downstream => match e.etype() {
            WriteError | ReadError | ConnectionClosed => None,
            ReadTimedout => Some(Problem::new(
                408,
                "request_timeout",
                "the request was not received in time",
            )),
            _ => Some(Problem::bad_request("malformed request")),
        },
        ErrorSource::Upstream => Some(match e.etype() {
            ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError
            | ConnectProxyFailure => {
                Problem::upstream_unavailable("the settlement service is unavailable")
            }
            ReadTimedout | WriteTimedout => Problem::new(
                504,
                "upstream_timeout",
                "the settlement service did not answer in time",
            ),
            _ => Problem::new(502, "bad_gateway", "the settlement service failed"),
        }),
        _ => Some(Problem::internal("internal error")),
    }
}
