//! `POST /internal/settlements`: the gateway's confirm, turned into one SQL order. The token is
//! verified here again (the settlement never trusts the gateway's word on it); the answer
//! table is in `docs/internal-api.md`.

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use backend_adapters::sql::fates::{self, Fate};
use backend_adapters::sql::{SettleOutcome, SettleRequest, orders};
use backend_adapters::telemetry::Span;
use reservation_core::wire::codes;
use reservation_core::{ReservationClaims, TokenError};
use serde::Deserialize;

use super::{Caller, RequestSpan, Shared, json_response};
use crate::error::ApiError;
use crate::views::OrderView;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SettleBody {
    reservation_token: String,
}

pub(crate) async fn settle(
    State(state): Shared,
    span: Option<Extension<RequestSpan>>,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let span = span
        .map(|Extension(RequestSpan(span))| span)
        .unwrap_or_default();
    let result = settle_inner(&state, &caller, &body, &span).await;
    let outcome = match &result {
        Ok((StatusCode::CREATED, _)) => "created",
        Ok(_) => "existing",
        Err(e) if e.code == codes::OVERSELL_PREVENTED => "oversell",
        Err(e) if e.code == codes::UNKNOWN_SKU => "unknown_sku",
        Err(e) if e.code == codes::PURCHASE_LIMIT => "purchase_limit",
        Err(e) if e.code == codes::RESERVATION_RELEASED => "released",
        Err(e) if e.status.is_client_error() => "rejected",
        Err(e) if e.code == "database_busy" => "busy",
        Err(_) => "error",
    };
    state.metrics.settled(outcome);
    result.map(|(status, view)| json_response(status, &view, Some(view.version)))
}

async fn settle_inner(
    state: &super::AppState,
    caller: &Caller,
    body: &Bytes,
    span: &Span,
) -> Result<(StatusCode, OrderView), ApiError> {
    let body: SettleBody = super::json_body(body)?;
    let claims = match state.verifier.verify(&body.reservation_token) {
        Ok(claims) => claims,
        Err(TokenError::Expired) => {
            return existing_order_of_expired_token(state, caller, &body.reservation_token).await;
        }
        Err(e) => return Err(ApiError::token(&e)),
    };
    if claims.rid.sku() != claims.sku {
        return Err(ApiError::new(
            401,
            codes::INVALID_RESERVATION_TOKEN,
            "the token's sku does not match its reservation",
        ));
    }
    // The gateway asserts the authenticated buyer; a token must be presented by its owner.
    check_owner(caller, &claims)?;
    let request = SettleRequest {
        reservation_id: claims.rid,
        buyer: claims.sub,
        sku: claims.sku,
        qty: claims.qty,
    };
    match state.committer.settle(request, span).await? {
        SettleOutcome::Created(order) => Ok((StatusCode::CREATED, OrderView::from(&order))),
        SettleOutcome::Existing(order) => Ok((StatusCode::OK, OrderView::from(&order))),
        SettleOutcome::Oversell => {
            state.metrics.oversell_prevented.inc();
            tracing::warn!("settlement refused: sql would oversell (redis drifted)");
            Err(ApiError::new(
                409,
                codes::OVERSELL_PREVENTED,
                "no stock left in sql for this reservation",
            ))
        }
        SettleOutcome::UnknownSku => Err(ApiError::new(404, codes::UNKNOWN_SKU, "unknown sku")),
        SettleOutcome::PurchaseLimit { limit } => Err(ApiError::new(
            422,
            codes::PURCHASE_LIMIT,
            format!("this buyer's orders for the sku would exceed its limit of {limit}"),
        )),
        SettleOutcome::TotalOutOfRange => Err(ApiError::new(
            422,
            codes::TOTAL_OUT_OF_RANGE,
            "price times quantity is beyond what an order can hold",
        )),
        SettleOutcome::Released => Err(ApiError::new(
            410,
            codes::RESERVATION_RELEASED,
            "this reservation was released and can no longer become an order",
        )),
    }
}

/// The buyer the gateway asserts must be the token's owner. No asserted buyer is no owner:
/// the check fails closed.
fn check_owner(caller: &Caller, claims: &ReservationClaims) -> Result<(), ApiError> {
    if super::buyer(caller)? != claims.sub.as_str() {
        return Err(ApiError::new(
            403,
            codes::NOT_OWNER,
            "this reservation belongs to another buyer",
        ));
    }
    Ok(())
}

/// A token that expired may belong to a confirm whose first try committed (the answer was lost
/// and the buyer retries late): the order is returned then; without one the token is expired.
/// The signature, audience and owner are checked as for a live token.
async fn existing_order_of_expired_token(
    state: &super::AppState,
    caller: &Caller,
    token: &str,
) -> Result<(StatusCode, OrderView), ApiError> {
    let expired = || ApiError::token(&TokenError::Expired);
    let claims = state
        .verifier
        .verify_ignoring_expiry(token)
        .map_err(|e| ApiError::token(&e))?;
    check_owner(caller, &claims)?;
    match orders::by_reservation(&state.db, claims.rid.as_str()).await? {
        Some(order) if order.user_sub == claims.sub.as_str() => {
            Ok((StatusCode::OK, OrderView::from(&order)))
        }
        _ => Err(expired()),
    }
}

/// `POST /internal/settlements/fate`: the gateway found no hold for a confirm (a Redis
/// failover lost it, or it was pruned after its retention), so the store cannot say whether an
/// earlier try committed. SQL decides, once: an order for the reservation id is returned (200,
/// the body of a replayed confirm); otherwise the id is claimed `released` (first claim wins,
/// so no try of the same confirm still in flight can commit afterwards) and the answer is 410
/// `reservation_released`. The token's signature, audience and owner are checked, its age is
/// not: the question is about a reservation the gateway did sign.
pub(crate) async fn decide_fate(
    State(state): Shared,
    caller: Caller,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (status, view) = decide_fate_inner(&state, &caller, &body).await?;
    Ok(json_response(status, &view, Some(view.version)))
}

async fn decide_fate_inner(
    state: &super::AppState,
    caller: &Caller,
    body: &Bytes,
) -> Result<(StatusCode, OrderView), ApiError> {
    let body: SettleBody = super::json_body(body)?;
    let claims = state
        .verifier
        .verify_ignoring_expiry(&body.reservation_token)
        .map_err(|e| ApiError::token(&e))?;
    check_owner(caller, &claims)?;
    let rid = claims.rid.as_str();
    let fate = fates::claim_released(&state.db, rid, fates::reason::LOST_HOLD).await?;
    let order = match fate {
        Fate::Ordered => orders::by_reservation(&state.db, rid).await?,
        Fate::Released => None,
    };
    match order {
        Some(order) if order.user_sub == claims.sub.as_str() => {
            Ok((StatusCode::OK, OrderView::from(&order)))
        }
        Some(_) => Err(ApiError::new(
            403,
            codes::NOT_OWNER,
            "this reservation belongs to another buyer",
        )),
        None => Err(ApiError::new(
            410,
            codes::RESERVATION_RELEASED,
            "this reservation was released and can no longer become an order",
        )),
    }
}
