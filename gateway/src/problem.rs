//! RFC 9457 problem details: every error the gateway produces, at the edge or instead of a
//! failed upstream, is `application/problem+json` with
//! `{"type","title","status","detail","code","request_id"}`, rendered by the one renderer both
//! services use ([`reservation_core::wire::Problem`]). Domain errors are mapped through
//! reservation-core's one status/code table, never re-decided here.

pub use reservation_core::wire::{DEFAULT_RETRY_AFTER_SECS, Problem};

use crate::auth::AuthError;

impl From<AuthError> for Problem {
    fn from(error: AuthError) -> Self {
        let (status, code) = error.status_and_code();
        Problem::new(status, code, error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use reservation_core::{ReservationError, TokenError};

    use super::*;

    #[test]
    fn renders_every_field_and_retry_after_on_503() {
        let problem = Problem::from(ReservationError::backend(true, "redis down at 10.0.0.1"));
        assert_eq!(problem.status, 503);
        assert_eq!(problem.retry_after, Some(DEFAULT_RETRY_AFTER_SECS));
        let body: serde_json::Value =
            serde_json::from_slice(&problem.to_json(Some("req-1"))).unwrap();
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
