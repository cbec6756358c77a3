//! RFC 9457 problem details, the body of every error either service answers:
//! `application/problem+json` with `{"type","title","status","detail","code","request_id"}`.
//! `type` is [`problem_type`] of the code and `title` the status's reason phrase
//! ([`title`]), so the two services cannot drift apart on either.

use serde::Serialize;

use crate::{ReservationError, TokenError};

/// The content type of every problem body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// Seconds a client is told to wait on 429 and 503.
pub const DEFAULT_RETRY_AFTER_SECS: u64 = 1;

/// What every problem `type` starts with; the code follows.
const TYPE_BASE: &str = "https://stockgate.dev/problems/";

/// An error answer, before it is rendered for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub status: u16,
    pub code: &'static str,
    pub detail: String,
    /// `Retry-After` seconds; always set for 429 and 503 by [`Problem::new`].
    pub retry_after: Option<u64>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    /// The W3C trace id of the request, when tracing is on: what to search for in the
    /// tracing backend (Application Insights' operation id).
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<&'a str>,
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

    /// No route has this path.
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

    /// The gateway could not reach settlement (503, with `Retry-After`).
    pub fn upstream_unavailable(detail: impl Into<String>) -> Self {
        Problem::new(503, "upstream_unavailable", detail)
    }

    pub fn internal(detail: impl Into<String>) -> Self {
        Problem::new(500, "internal_error", detail)
    }

    /// The rendered body; `request_id` is left out only while it is not known yet
    /// (settlement's request-id layer renders the body again with it).
    pub fn to_json(&self, request_id: Option<&str>) -> Vec<u8> {
        self.to_json_traced(request_id, None)
    }

    /// [`Problem::to_json`] with the request's trace id (tracing on).
    pub fn to_json_traced(&self, request_id: Option<&str>, trace_id: Option<&str>) -> Vec<u8> {
        let body = Body {
            kind: problem_type(self.code),
            title: title(self.status),
            status: self.status,
            detail: &self.detail,
            code: self.code,
            request_id,
            trace_id,
        };
        // Serializing plain strings and numbers cannot fail; fall back to a fixed body anyway
        // because a panic here would take a worker down.
        serde_json::to_vec(&body).unwrap_or_else(|_| br#"{"status":500}"#.to_vec())
    }
}

/// The problem `type` of a code: a URL naming it.
pub fn problem_type(code: &str) -> String {
    format!("{TYPE_BASE}{code}")
}

/// The problem `title`: the status's canonical reason phrase (`Service Unavailable`), or
/// `Error` for a status without one.
pub fn title(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error")
}

/// The domain table's status and code; the backend's own words (addresses, script errors)
/// stay in the logs.
impl From<ReservationError> for Problem {
    fn from(error: ReservationError) -> Self {
        let (status, code) = error.status_and_code();
        let detail = match &error {
            ReservationError::Backend { .. } => "the reservation store is unavailable".into(),
            other => other.to_string(),
        };
        Problem::new(status, code, detail)
    }
}

/// The token table's status and code; a key error's own words stay in the logs.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(problem: &Problem, request_id: Option<&str>) -> serde_json::Value {
        serde_json::from_slice(&problem.to_json(request_id)).unwrap()
    }

    #[test]
    fn renders_every_field_in_order_and_retry_after_on_503() {
        let problem = Problem::from(ReservationError::backend(true, "redis down at 10.0.0.1"));
        assert_eq!(problem.retry_after, Some(DEFAULT_RETRY_AFTER_SECS));
        let text = String::from_utf8(problem.to_json(Some("req-1"))).unwrap();
        assert_eq!(
            text,
            r#"{"type":"https://stockgate.dev/problems/backend_unavailable","title":"Service Unavailable","status":503,"detail":"the reservation store is unavailable","code":"backend_unavailable","request_id":"req-1"}"#
        );
    }

    #[test]
    fn request_id_is_left_out_only_when_unknown() {
        let problem = Problem::bad_request("body: expected a JSON object");
        assert!(rendered(&problem, None).get("request_id").is_none());
        assert_eq!(rendered(&problem, Some(""))["request_id"], "");
        assert_eq!(problem.retry_after, None);
    }

    #[test]
    fn titles_are_the_canonical_reason_phrases() {
        assert_eq!(title(404), "Not Found");
        assert_eq!(title(412), "Precondition Failed");
        assert_eq!(title(429), "Too Many Requests");
        assert_eq!(title(599), "Error");
        assert_eq!(
            Problem::new(429, "rate_limited", "slow down").retry_after,
            Some(1)
        );
    }

    #[test]
    fn token_key_errors_hide_their_cause() {
        let problem = Problem::from(TokenError::InvalidKey("pem at /etc/key".into()));
        assert_eq!((problem.status, problem.code), (500, "token_key_error"));
        assert!(!problem.detail.contains("/etc/key"));
        assert_eq!(
            Problem::from(TokenError::Expired).code,
            crate::wire::codes::RESERVATION_EXPIRED
        );
    }
}
