//! `POST /api/v1/orders`: the confirm. The edge verifies the reservation token and that it
//! belongs to the caller (no store call for a bad or foreign token), moves the hold to
//! `confirming` in the store, asks the settlement service to commit the order, and then
//! finishes or aborts the confirm by the table in docs/internal-api.md.
//!
//! The one rule that keeps SQL and the store consistent: a hold leaves `confirming` only when
//! the outcome of the settlement is known. When it is not (a timeout after sending), the hold
//! stays `confirming`; a retry re-sends (settlement is idempotent on the reservation id) and
//! the reconciler resolves it from SQL otherwise.

use pingora::proxy::Session;
use reservation_core::{AbortTo, ReservationError};
use serde::Deserialize;

use super::reservations::{buyer_of, idempotency_key, note_store_error};
use super::respond::{self, Reply};
use super::settle::Settled;
use super::{EdgeState, RequestCtx};
use crate::problem::Problem;

/// The body as sent; unknown fields are refused (the order's price, quantity and status come
/// from the server and the signed token, never from the client).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfirmBody {
    reservation_token: String,
}

/// Parses `{"reservation_token"}` into the token text; a bad body is a 400 problem (public for
/// the fuzz target in `fuzz/`).
pub fn parse_confirm_body(body: &[u8]) -> Result<String, Problem> {
    let input: ConfirmBody = serde_json::from_slice(body).map_err(|e| {
        Problem::bad_request(format!("body must be {{\"reservation_token\"}}: {e}"))
    })?;
    Ok(input.reservation_token)
}

/// Answers the confirm; every path counts one outcome.
pub async fn confirm(state: &EdgeState, session: &mut Session, ctx: &RequestCtx) -> Reply {
    match try_confirm(state, session, ctx).await {
        Ok(reply) => reply,
        Err((outcome, problem)) => {
            state.metrics.confirm(outcome);
            Reply::problem(&problem, &ctx.request_id)
        }
    }
}

type Refusal = (&'static str, Problem);

fn rejected(problem: impl Into<Problem>) -> Refusal {
    ("rejected", problem.into())
}

async fn try_confirm(
    state: &EdgeState,
    session: &mut Session,
    ctx: &RequestCtx,
) -> Result<Reply, Refusal> {
    let buyer = buyer_of(ctx).map_err(rejected)?;
    idempotency_key(session).map_err(rejected)?;
    let body = respond::read_body(session, &state.limits)
        .await
        .map_err(rejected)?;
    let reservation_token = parse_confirm_body(&body).map_err(rejected)?;

    // Token checks come before any store call: a bad or foreign token never reaches it.
    let claims = state.verifier.verify(&reservation_token).map_err(|error| {
        let outcome = if error.status_and_code().0 == 410 {
            "expired"
        } else {
            "invalid_token"
        };
        (outcome, Problem::from(error))
    })?;
    if claims.sub != buyer {
        return Err(("not_owner", ReservationError::NotOwner.into()));
    }
    // Fail fast while the upstream is known to be down: the hold stays untouched.
    if !state.upstream.is_healthy() {
        return Err((
            "upstream_unavailable",
            Problem::upstream_unavailable(
                "the settlement service is unavailable; the hold is kept",
            ),
        ));
    }

    let id = claims.rid;
    state
        .store
        .begin_confirm(&id, &buyer)
        .await
        .map_err(|error| {
            note_store_error(state, &error, &ctx.request_id);
            let outcome = match error {
                ReservationError::Expired | ReservationError::Released => "expired",
                ReservationError::NotOwner => "not_owner",
                ReservationError::Backend { .. } => "store_error",
                _ => "rejected",
            };
            (outcome, Problem::from(error))
        })?;

    let roles = ctx
        .identity
        .as_ref()
        .map(|i| i.roles_header())
        .unwrap_or_default();
    let settled = state
        .settlement
        .settle(&reservation_token, &ctx.request_id, buyer.as_str(), &roles)
        .await;
    match settled {
        Settled::Committed { created, order } => {
            // The order exists in SQL whatever happens next; a failed finish leaves the hold
            // `confirming`, which the reconciler turns into `confirmed` from SQL.
            if let Err(error) = state.store.finish_confirm(&id).await {
                state.metrics.store_errors.inc();
                tracing::warn!(request_id = %ctx.request_id, %error, reservation = %id, "finish_confirm failed after commit");
            }
            state
                .metrics
                .confirm(if created { "created" } else { "replayed" });
            Ok(Reply::raw_json(if created { 201 } else { 200 }, order))
        }
        Settled::Refused { status, code } => {
            let (to, outcome, problem) = refusal(status, &code);
            abort(state, ctx, &id, to).await;
            Err((outcome, problem))
        }
        Settled::Unavailable { reason } => {
            state.metrics.upstream_connect_errors.inc();
            tracing::warn!(request_id = %ctx.request_id, %reason, "settlement unavailable");
            abort(state, ctx, &id, AbortTo::Held).await;
            Err((
                "upstream_unavailable",
                Problem::upstream_unavailable(
                    "the settlement service is unavailable; the hold is kept",
                ),
            ))
        }
        Settled::Ambiguous { reason } => {
            state.metrics.upstream_timeouts.inc();
            tracing::warn!(request_id = %ctx.request_id, %reason, reservation = %id, "settlement outcome unknown; hold left confirming");
            Err((
                "ambiguous",
                Problem::upstream_unavailable(
                    "the order may or may not have been placed; retry with the same token",
                ),
            ))
        }
    }
}

/// What a refusal from settlement means for the hold and the buyer.
fn refusal(status: u16, code: &str) -> (AbortTo, &'static str, Problem) {
    match (status, code) {
        // SQL has no unit left for it: the store drifted; give the units back.
        (409, _) => (
            AbortTo::Released,
            "sold_out",
            Problem::new(409, "sold_out", "sold out: the order could not be settled"),
        ),
        (404, _) => (
            AbortTo::Released,
            "unknown_sku",
            ReservationError::UnknownSku.into(),
        ),
        (410, _) => (AbortTo::Held, "expired", ReservationError::Expired.into()),
        (401, _) => (
            AbortTo::Held,
            "invalid_token",
            Problem::new(
                401,
                "invalid_reservation_token",
                "settlement refused the reservation token",
            ),
        ),
        _ => (
            AbortTo::Held,
            "rejected",
            Problem::new(
                502,
                "settlement_rejected",
                format!("settlement refused the order ({status} {code})"),
            ),
        ),
    }
}

async fn abort(
    state: &EdgeState,
    ctx: &RequestCtx,
    id: &reservation_core::ReservationId,
    to: AbortTo,
) {
    if let Err(error) = state.store.abort_confirm(id, to).await {
        note_store_error(state, &error, &ctx.request_id);
        tracing::warn!(request_id = %ctx.request_id, %error, reservation = %id, "abort_confirm failed");
    }
}
