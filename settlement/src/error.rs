//! Errors of the settlement service: the HTTP problem (RFC 9457) every handler answers with,
//! the one table of settlement-specific codes, and the start-up errors.
//!
//! | status | code | when |
//! |---|---|---|
//! | 400 | `invalid_request` | malformed body, path or header |
//! | 401 | `service_auth_missing` / `service_auth_invalid` / `service_auth_expired` / `service_auth_mismatch` | no gateway assertion / a bad one (signature, key, audience, issuer, shape) / an old one / one signed for another method, path, query or body: the caller is not the gateway |
//! | 401 | `unauthenticated` | the gateway's assertion names no buyer |
//! | 401 | `invalid_reservation_token` | token signature, key or shape refused |
//! | 403 | `forbidden` | an ops route without the `ops` role |
//! | 403 | `not_owner` | the token belongs to another buyer |
//! | 404 | `order_not_found` / `unknown_sku` / `not_found` | no such order (or not yours) / product / route |
//! | 409 | `oversell_prevented` | SQL has no stock left for this reservation |
//! | 409 | `not_cancellable` / `invalid_transition` | the order's status does not allow it |
//! | 409 | `stale_fence` | a newer lock holder already changed the order |
//! | 409 | `stock_below_sold` | a new total stock below the units SQL sold |
//! | 410 | `reservation_expired` | the token has expired |
//! | 412 | `stale_version` | `If-Match` names an old version (or `If-None-Match: *` an existing product); `ETag` is the current one |
//! | 413 | `payload_too_large` | a body over 2 MiB |
//! | 428 | `precondition_required` | cancel, or a `PUT` of an existing product, without `If-Match` |
//! | 503 | `lock_busy` | another status change holds the order's lock; retry later (`Retry-After`) |
//! | 503 | `database_busy` | SQL gave up in bounded time: a lock or statement limit ran out, the group-commit deadline passed, no pooled connection came free, a deadlock or serialization failure; nothing is known to have committed, retry (`Retry-After`) |
//! | 503 | `database_unavailable` | SQL cannot be reached; retry later (`Retry-After`) |
//!
//! Reservation-store errors use [`ReservationError::status_and_code`].

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use backend_adapters::sql::SqlError;
use reservation_core::wire::{PROBLEM_CONTENT_TYPE, Problem};
use reservation_core::{ReservationError, TokenError};
use thiserror::Error;

use crate::config::ConfigError;

/// A problem answer, rendered by the wire's [`Problem`]. The request-id middleware adds
/// `request_id` to its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub retry_after_secs: Option<u64>,
    /// The resource's current version, sent as `ETag` (a 412 tells the client what is current).
    pub etag_version: Option<i64>,
}

impl ApiError {
    pub fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Self {
        // The wire's rule decides `Retry-After` (429 and 503), as on the gateway.
        Problem::new(status, code, detail).into()
    }

    /// A 412 `stale_version`: the resource is at `current` (sent as its `ETag`).
    pub fn stale_version(current: i64, detail: impl Into<String>) -> Self {
        ApiError {
            etag_version: Some(current),
            ..Self::new(412, "stale_version", detail)
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::bad_request(detail).into()
    }

    /// The wire's rendering of a domain error, as the gateway renders it: a backend failure's
    /// own words (Redis, a script) stay in the logs, not in the client's problem.
    pub fn reservation(e: &ReservationError) -> Self {
        Problem::from(e.clone()).into()
    }

    /// The same for a token error: a key error's own words stay in the logs.
    pub fn token(e: &TokenError) -> Self {
        Problem::from(e.clone()).into()
    }

    /// The body's part of the answer: kept in the response's extensions until the
    /// request-id middleware knows the id.
    pub(crate) fn problem(&self) -> Problem {
        Problem {
            status: self.status.as_u16(),
            code: self.code,
            detail: self.detail.clone(),
            retry_after: self.retry_after_secs,
        }
    }
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        ApiError {
            status: StatusCode::from_u16(problem.status)
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: problem.code,
            detail: problem.detail,
            retry_after_secs: problem.retry_after,
            etag_version: None,
        }
    }
}

impl From<SqlError> for ApiError {
    fn from(e: SqlError) -> Self {
        if e.is_busy() {
            tracing::warn!(error = %e, sqlstate = ?e.sqlstate(), "database busy");
            ApiError::new(503, "database_busy", "the database is busy; retry")
        } else if e.is_transient() {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::new(503, "database_unavailable", "the database is unavailable")
        } else {
            tracing::error!(error = %e, "database error");
            ApiError::new(500, "internal_error", "internal error")
        }
    }
}

impl From<ReservationError> for ApiError {
    fn from(e: ReservationError) -> Self {
        ApiError::reservation(&e)
    }
}

/// Renders a problem body (with the request id once known).
pub(crate) fn problem_response(
    status: StatusCode,
    problem: &Problem,
    request_id: Option<&str>,
    trace_id: Option<&str>,
) -> Response {
    let mut response = (status, problem.to_json_traced(request_id, trace_id)).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let problem = self.problem();
        let mut response = problem_response(self.status, &problem, None, None);
        if let Some(secs) = self.retry_after_secs {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(version) = self.etag_version
            && let Ok(value) = HeaderValue::from_str(&crate::http::etag(version))
        {
            response.headers_mut().insert(header::ETAG, value);
        }
        response.extensions_mut().insert(problem);
        response
    }
}

/// Why the service could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database: {0}")]
    Database(#[from] SqlError),
    #[error("redis: {0}")]
    Redis(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error(transparent)]
    Telemetry(#[from] backend_adapters::telemetry::TelemetryError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_and_key_details_stay_in_the_logs() {
        let backend = ReservationError::backend(true, "NOSCRIPT at 10.0.0.7:6379 (user_script:12)");
        let answer = ApiError::reservation(&backend);
        assert_eq!(answer.status.as_u16(), 503);
        assert!(!answer.detail.contains("10.0.0.7"), "{}", answer.detail);
        assert!(!answer.detail.contains("user_script"), "{}", answer.detail);
        let key = TokenError::InvalidKey("pkcs8 parse error at byte 17".into());
        assert!(!ApiError::token(&key).detail.contains("byte 17"));
        // A refusal's own words are the client's: they say what to fix.
        let refusal = ReservationError::SoldOut;
        assert_eq!(ApiError::reservation(&refusal).detail, refusal.to_string());
    }
}
