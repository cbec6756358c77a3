//! The buyer's order API: list and get own orders (`ETag` = version), cancel with `If-Match`
//! (412 on a stale version, 409 when not cancellable, 428 without it). Another buyer's order
//! reads as 404 so order ids cannot be probed.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use backend_adapters::sql::orders::{self, CancelOutcome};

use super::{Caller, Shared, buyer, json_response, listed_versions};
use crate::error::ApiError;
use crate::views::OrderView;

/// Most orders one list returns.
const LIST_LIMIT: i64 = 100;

fn not_found() -> ApiError {
    ApiError::new(404, "order_not_found", "no such order")
}

pub(crate) async fn list(State(state): Shared, caller: Caller) -> Result<Response, ApiError> {
    let sub = buyer(&caller)?;
    let orders = orders::list_for_buyer(&state.db, &sub, LIST_LIMIT).await?;
    let views: Vec<OrderView> = orders.iter().map(OrderView::from).collect();
    Ok(json_response(StatusCode::OK, &views, None))
}

pub(crate) async fn get(
    State(state): Shared,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let sub = buyer(&caller)?;
    match orders::get(&state.db, &id).await? {
        Some(order) if order.user_sub == sub => Ok(json_response(
            StatusCode::OK,
            &OrderView::from(&order),
            Some(order.version),
        )),
        _ => Err(not_found()),
    }
}

pub(crate) async fn cancel(
    State(state): Shared,
    caller: Caller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let sub = buyer(&caller)?;
    let if_match = headers
        .get(header::IF_MATCH)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                428,
                "precondition_required",
                "cancel needs If-Match with the order's ETag",
            )
        })?;
    let listed = listed_versions(if_match)
        .ok_or_else(|| ApiError::bad_request("If-Match is not a list of order versions"))?;
    let expected = match listed {
        Some(versions) => versions,
        // `If-Match: *` means "whatever version it is now".
        None => match orders::get(&state.db, &id).await? {
            Some(order) if order.user_sub == sub => vec![order.version],
            _ => return Err(not_found()),
        },
    };
    // Several listed tags: the order must be at one of them. The newest listed is tried; a
    // stale list still answers 412 with the current version.
    let version = expected.iter().copied().max().unwrap_or(0);
    match orders::cancel(&state.db, &id, &sub, version).await? {
        CancelOutcome::Cancelled(order) => Ok(json_response(
            StatusCode::OK,
            &OrderView::from(&order),
            Some(order.version),
        )),
        CancelOutcome::NotFound => Err(not_found()),
        CancelOutcome::StaleVersion { current } => Err(ApiError::stale_version(
            current,
            format!("the order is at version {current}"),
        )),
        CancelOutcome::NotCancellable { status } => Err(ApiError::new(
            409,
            "not_cancellable",
            format!("a {} order cannot be cancelled", status.as_str()),
        )),
    }
}
