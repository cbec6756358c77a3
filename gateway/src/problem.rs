//! RFC 9457 problem details: every error the gateway produces, at the edge or instead of a
//! failed upstream, is `application/problem+json` with
//! `{"type","title","status","detail","code","request_id"}`. Domain errors are mapped through
//! reservation-core's one status/code table, never re-decided here.

use reservation_core::{ReservationError, TokenError};
use serde::Serialize;

use crate::auth::AuthError;

/// Seconds a client is told to wait on 429 and 503.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 1;

/// An error answer, before it is rendered for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: u16,
    pub code: &'static str,
    pub detail: String,
    /// `Retry-After` seconds; always set for 429 and 503.
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    request_id: &'a str,
}

impl Problem {
    pub fn new(status: u16, code: &'static str, detail: impl Into<String>) -> Self {
        let retry_after = matches!(status, 429 | 503).then_some(DEFAULT_RETRY_AFTER_SECS);
        Problem {
            status,
            code,
            detail: detail.into(),
            retry_after,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Problem::new(400, "invalid_request", detail)
    }

    pub fn not_found() -> Self {
        Problem::new(404, "not_found", "no such route")
    }

    pub fn method_not_allowed() -> Self {
        Problem::new(
            405,
            "method_not_allowed",
            "method not allowed on this route",
        )
    }

    pub fn payload_too_large(limit: usize) -> Self {
        Problem::new(
            413,
            "payload_too_large",
            format!("request body is larger than {limit} bytes"),
        )
    }

    pub fn headers_too_large(detail: impl Into<String>) -> Self {
        Problem::new(431, "headers_too_large", detail)
    }

    pub fn missing_idempotency_key() -> Self {
        Problem::new(
            400,
            "idempotency_key_required",
            "this request needs an Idempotency-Key header",
        )
    }

    pub fn upstream_unavailable(detail: impl Into<String>) -> Self {
        Problem::new(503, "upstream_unavailable", detail)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Problem::new(500, "internal_error", detail)
    }

    /// The rendered body for one request.
    pub fn to_json(&self, request_id: &str) -> Vec<u8> {
        let body = Body {
            kind: format!("https://stockgate.dev/problems/{}", self.code),
            title: title(self.status),
            status: self.status,
            detail: &self.detail,
            code: self.code,
            request_id,
        };
        // Serializing plain strings and numbers cannot fail; fall back to a fixed body anyway
        // because a panic here would take the worker down.
        serde_json::to_vec(&body).unwrap_or_else(|_| br#"{"status":500}"#.to_vec())
    }
}

impl From<ReservationError> for Problem {
    fn from(error: ReservationError) -> Self {
        let (status, code) = error.status_and_code();
        let detail = match &error {
            // Backend details (addresses, script errors) stay in the logs.
            ReservationError::Backend { .. } => "the reservation store is unavailable".into(),
            other => other.to_string(),
        };
        Problem::new(status, code, detail)
    }
}

impl From<TokenError> for Problem {
    fn from(error: TokenError) -> Self {
        let (status, code) = error.status_and_code();
        let detail = match &error {
            TokenError::InvalidKey(_) => "reservation token key error".into(),
            other => other.to_string(),
        };
        Problem::new(status, code, detail)
    }
}

impl From<AuthError> for Problem {
    fn from(error: AuthError) -> Self {
        let (status, code) = error.status_and_code();
        Problem::new(status, code, error.to_string())
    }
}

/// The reason phrase of a status, used as the problem `title`.
pub fn title(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_field_and_retry_after_on_503() {
        let problem = Problem::from(ReservationError::backend(true, "redis down at 10.0.0.1"));
        assert_eq!(problem.status, 503);
        assert_eq!(problem.retry_after, Some(DEFAULT_RETRY_AFTER_SECS));
        let body: serde_json::Value = serde_json::from_slice(&problem.to_json("req-1")).unwrap();
        assert_eq!(body["code"], "backend_unavailable");
        assert_eq!(body["status"], 503);
        assert_eq!(body["title"], "Service Unavailable");
        assert_eq!(body["request_id"], "req-1");
        assert!(!body["detail"].as_str().unwrap().contains("10.0.0.1"));
        assert!(
            body["type"]
                .as_str()
                .unwrap()
                .ends_with("backend_unavailable")
        );
    }

    #[test]
    fn domain_errors_keep_the_core_table() {
        assert_eq!(Problem::from(ReservationError::SoldOut).status, 409);
        assert_eq!(Problem::from(ReservationError::NotOwner).status, 403);
        assert_eq!(
            Problem::from(TokenError::Expired).code,
            "reservation_expired"
        );
        assert_eq!(Problem::from(AuthError::Missing).status, 401);
        assert_eq!(Problem::from(ReservationError::SoldOut).retry_after, None);
    }
}
