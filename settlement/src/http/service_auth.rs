//! Service authentication: settlement serves only the gateway. Every request but the three
//! probes must carry the gateway's assertion ([`reservation_core::assertion`]), verified
//! against the request's method, path with query and body; the identity it names is what the
//! handlers act for ([`Caller`]). Identity headers (`x-user-sub`, `x-user-roles`) mean
//! nothing here: whoever can reach the port can send them.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use reservation_core::assertion::{ASSERTION_HEADER, AssertionError, Identity};

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
        .get(ASSERTION_HEADER)
        .map(|v| v.to_str().unwrap_or_default());
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |p| p.as_str());
    let verified = state
        .gateway_keys
        .verify(assertion, parts.method.as_str(), path, &body);
    match verified {
        Ok(identity) => {
            parts.extensions.insert(identity);
            next.run(Request::from_parts(parts, Body::from(body))).await
        }
        Err(error) => {
            state.metrics.service_auth_refused(error.code());
            tracing::info!(code = error.code(), method = %parts.method, path, "refused a caller that is not the gateway");
            refusal(&error).into_response()
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
