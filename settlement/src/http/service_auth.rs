//! Service authentication: settlement serves only the gateway. Every request but the three
//! probes must carry the gateway's assertion ([`reservation_core::assertion`]), verified
//! against the request's method, path with query, `If-Match` and body; the identity it names
//! is what the handlers act for ([`Caller`]). Identity headers (`x-user-sub`, `x-user-roles`)
//! mean nothing here: whoever can reach the port can send them.
//!
//! An assertion of a request that changes something is good once ([`UsedAssertions`]): a
//! captured restock or ops edit replayed within the assertion's life is refused
//! (`service_auth_replayed`). Settlements and fates (`/internal/*`) are exempt: they are
//! idempotent by reservation id (a replay answers the same order), and they are the hot path.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use backend_adapters::redis::RedisError;
use backend_adapters::redis::single_use::SingleUseIds;
use reservation_core::assertion::{
    ASSERTION_LIFETIME_SECS, AssertionError, Bound, Identity, Verified,
};
use reservation_core::wire::{headers, paths};

use thiserror::Error;

use super::Shared;
use crate::error::ApiError;

/// Refuses a request without a valid gateway assertion (401 with the verifier's code);
/// otherwise passes it on with its verified [`Identity`] in the extensions. It guards every
/// route of the public listener, its 404/405 fallbacks included; the probes and metrics are
/// on the admin listener and never pass here.
pub(crate) async fn require_gateway(State(state): Shared, req: Request, next: Next) -> Response {
    // The body is read once, here, to be checked against the assertion's hash, by the same
    // extractor the handlers use, so its limit is theirs (axum's default, 2 MiB).
    let (mut parts, body) = req.into_parts();
    let body = match Bytes::from_request(Request::new(body), &()).await {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status().as_u16();
            let code = if status == 413 {
                "payload_too_large"
            } else {
                "invalid_request"
            };
            return ApiError::new(status, code, rejection.body_text()).into_response();
        }
    };
    let assertion = parts
        .headers
        .get(headers::ASSERTION)
        .map(|v| v.to_str().unwrap_or_default());
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    let if_match = parts
        .headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok());
    let request = Bound::new(parts.method.as_str(), path, &body).with_if_match(if_match);
    let mut verified = state.gateway_keys.verify(assertion, &request);
    if let Ok(v) = &verified
        && changes_something(&parts.method, path)
    {
        match state.used_assertions.first_use(v).await {
            Ok(true) => {}
            Ok(false) => verified = Err(AssertionError::Replayed),
            Err(error) => {
                tracing::warn!(%error, "cannot check the assertion is unused");
                // The cause (a Redis error) is for the log; the caller learns only to retry.
                let detail = "cannot check that the request is not a replay; retry later";
                return ApiError::new(503, "replay_check_unavailable", detail).into_response();
            }
        }
    }
    match verified {
        Ok(verified) => {
            parts.extensions.insert(verified.identity);
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(error) => {
            state.metrics.service_auth_refused(error.code());
            tracing::info!(code = error.code(), method = %parts.method, path, "refused a caller that is not the gateway");
            refusal(&error).into_response()
        }
    }
}

/// Whether a request's assertion is single-use: a method that writes, outside `/internal/`.
fn changes_something(method: &Method, path: &str) -> bool {
    !matches!(*method, Method::GET | Method::HEAD) && !path.starts_with(paths::INTERNAL_PREFIX)
}

/// Why it cannot be told whether an assertion was used before. Its text is the 503's detail
/// (`redis: <why>`), so it names the cause itself as well as keeping it.
#[derive(Debug, Error)]
enum ReplayCheckError {
    #[error("redis: {0}")]
    Redis(#[source] RedisError),
}

/// The ids of assertions already used, until they expire.
pub(crate) enum UsedAssertions {
    /// Shared by every replica (`<prefix>:once:<id>` keys).
    Redis(SingleUseIds),
    /// One process (the embedded default).
    Local(Mutex<LocalIds>),
}

/// Id → second it stops verifying; expired ids are dropped when the map has doubled since the
/// last pruning (amortised: never a scan per request, however busy).
pub(crate) struct LocalIds {
    ids: HashMap<String, u64>,
    prune_at: usize,
}

/// How long a used id is kept: the assertion's whole life, the clock leeway on both sides (a
/// replica whose clock is behind still takes it that much longer) and a second.
const KEEP_USED: Duration =
    Duration::from_secs(ASSERTION_LIFETIME_SECS + 2 * reservation_core::token::MAX_LEEWAY_SECS + 1);

impl UsedAssertions {
    pub(crate) fn local() -> Self {
        UsedAssertions::Local(Mutex::new(LocalIds {
            ids: HashMap::new(),
            prune_at: 4096,
        }))
    }

    /// `Ok(true)` the first time `verified`'s id is presented; `Err` when that cannot be
    /// told (Redis unreachable: refused rather than served twice).
    async fn first_use(&self, verified: &Verified) -> Result<bool, ReplayCheckError> {
        match self {
            UsedAssertions::Redis(ids) => ids
                .claim(&verified.id, KEEP_USED)
                .await
                .map_err(ReplayCheckError::Redis),
            UsedAssertions::Local(local) => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                let mut local = local.lock().unwrap_or_else(|e| e.into_inner());
                if local.ids.len() >= local.prune_at {
                    local.ids.retain(|_, until| *until >= now);
                    local.prune_at = (local.ids.len() * 2).max(4096);
                }
                let until = now + KEEP_USED.as_secs();
                Ok(local.ids.insert(verified.id.clone(), until).is_none())
            }
        }
    }
}

fn refusal(error: &AssertionError) -> ApiError {
    ApiError::new(401, error.code(), error.to_string())
}

/// Who a request acts for, as the gateway's verified assertion says. A handler that takes
/// it never runs without one: absent (a route the middleware does not cover), the request is
/// refused rather than served for nobody.
pub(crate) struct Caller(pub Identity);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Identity>()
            .cloned()
            .map(Caller)
            .ok_or_else(|| refusal(&AssertionError::Missing))
    }
}
