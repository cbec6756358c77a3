//! The ops routes on orders and drift: status changes under the fenced lock, and the drift
//! report (with the outbox relay's lag: the ops console's "settlement lag"). Product edits are
//! in `products.rs`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use backend_adapters::sql::OrderStatus;
use backend_adapters::sql::orders::{self, StatusOutcome};
use serde::{Deserialize, Serialize};

use super::{Caller, Shared, json_body, json_response, lock_order, ops};
use crate::error::ApiError;
use crate::maintenance::{self, MaintenanceError, ReconcileOptions, ReconcileReport};
use crate::views::OrderView;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    status: OrderStatus,
}

/// Moves an order along the ops workflow under the order's fenced lock. The SQL write is
/// conditioned on the token, so even a holder that paused past its lease cannot overwrite a
/// newer holder's change.
pub(crate) async fn set_status(
    State(state): Shared,
    caller: Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let actor = ops(&caller)?;
    let StatusBody { status } = json_body(&body)?;
    if status == OrderStatus::Confirmed {
        return Err(ApiError::bad_request(
            "status must be shipped, delivered or cancelled",
        ));
    }
    let current = orders::get(&state.db, &id)
        .await?
        .ok_or_else(|| ApiError::new(404, "order_not_found", "no such order"))?;
    let held = lock_order(&state.status_lock, &id, current.fence).await?;
    let outcome = orders::set_status_fenced(&state.db, &id, status, held.fence, &actor).await;
    held.release(&state.status_lock).await;
    match outcome? {
        StatusOutcome::Changed(order) => Ok(json_response(
            StatusCode::OK,
            &OrderView::from(&order),
            Some(order.version),
        )),
        StatusOutcome::NotFound => Err(ApiError::new(404, "order_not_found", "no such order")),
        StatusOutcome::StaleFence { current } => Err(ApiError::new(
            409,
            "stale_fence",
            format!("a newer status change (fence {current}) already happened"),
        )),
        StatusOutcome::InvalidTransition { from } => Err(ApiError::new(
            409,
            "invalid_transition",
            format!(
                "a {} order cannot become {}",
                from.as_str(),
                status.as_str()
            ),
        )),
    }
}

/// `GET /api/v1/admin/reconcile`: the drift report and how far the outbox relay is behind.
#[derive(Serialize)]
struct ReconcileView {
    #[serde(flatten)]
    report: ReconcileReport,
    outbox: OutboxLag,
}

#[derive(Serialize)]
struct OutboxLag {
    /// Outbox events not yet published to the stream.
    pending: i64,
    /// Age of the oldest of them (0 when none).
    lag_seconds: f64,
}

/// The drift report (no repair: repairing is `stockgate reconcile --repair`).
pub(crate) async fn reconcile(State(state): Shared, caller: Caller) -> Result<Response, ApiError> {
    ops(&caller)?;
    let options = ReconcileOptions {
        repair: false,
        confirming_grace: None,
    };
    let report = maintenance::reconcile(
        &state.db,
        state.store.as_ref(),
        Some(&state.metrics),
        options,
    )
    .await
    .map_err(|e| match e {
        MaintenanceError::Database(e) => ApiError::from(e),
        MaintenanceError::Store(e) => ApiError::from(e),
    })?;
    let (pending, lag_ms) = backend_adapters::sql::outbox::lag(
        &state.db,
        backend_adapters::sql::outbox::Delivery::Redis,
    )
    .await?;
    let view = ReconcileView {
        report,
        outbox: OutboxLag {
            pending,
            lag_seconds: lag_ms as f64 / 1000.0,
        },
    };
    Ok(json_response(StatusCode::OK, &view, None))
}
