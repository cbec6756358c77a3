//! `POST /api/v1/orders`: the confirm. The edge verifies the reservation token and that it
//! belongs to the caller (no store call for a bad or foreign token), moves the hold to
//! `confirming` in the store, asks the settlement service to commit the order, and then
//! finishes or aborts the confirm by the table in docs/internal-api.md.
//!
//! The one rule that keeps SQL and the store consistent: a hold leaves `confirming` only when
//! SQL's answer is known: committed (→ `confirmed`), or refused for want of stock or product
//! (→ `released`). Anything else — a timeout after sending, settlement unavailable, a token
//! refusal — leaves it `confirming`, because an earlier try of the same confirm may have been
//! committed: a retry re-sends (settlement is idempotent on the reservation id) and the
//! reconciler resolves it from SQL otherwise. (Moving it back to `held` once let a committed
//! order's hold expire: found by the settlement-kill and postgres-restart fault runs.)

use pingora::proxy::Session;
use reservation_core::assertion::Identity;
use reservation_core::wire::codes;
use reservation_core::{
    AbortTo, BuyerId, HoldState, ReservationClaims, ReservationError, TokenError,
};
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
    let input: ConfirmBody = respond::json_object(body).map_err(|e| {
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

    // Who settlement is told the order is for: the verified buyer, in the assertion.
    let asserted = crate::service_auth::identity_of(ctx.identity.as_ref());

    // Token checks come before any store call: a bad or foreign token never reaches it.
    let claims = match state.verifier.verify(&reservation_token) {
        Ok(claims) => claims,
        Err(TokenError::Expired) => {
            match expired_token_retry(state, &reservation_token, &buyer).await? {
                ExpiredRetry::Confirm(claims) => claims,
                ExpiredRetry::HoldGone => {
                    return lost_hold(state, ctx, &reservation_token, &asserted).await;
                }
            }
        }
        Err(error) => return Err(("invalid_token", Problem::from(error))),
    };
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
    match super::store_call(
        state,
        ctx,
        "begin_confirm",
        state.store.begin_confirm(&id, &buyer),
    )
    .await
    {
        Ok(_) => {}
        // A token the gateway signed whose hold the store does not have: a Redis failover
        // lost it (perhaps with an earlier try's commit behind it), or it was pruned.
        Err(ReservationError::NotFound) => {
            return lost_hold(state, ctx, &reservation_token, &asserted).await;
        }
        Err(error) => {
            note_store_error(state, &error, &ctx.request_id);
            let outcome = match error {
                ReservationError::Expired | ReservationError::Released => "expired",
                ReservationError::NotOwner => "not_owner",
                ReservationError::Backend { .. } => "store_error",
                _ => "rejected",
            };
            return Err((outcome, Problem::from(error)));
        }
    }
    let settled = state
        .settlement
        .settle(&reservation_token, &ctx.request_id, &asserted, &ctx.span)
        .await;
    match settled {
        Settled::Committed { created, order } => {
            // The order exists in SQL whatever happens next; a failed finish leaves the hold
            // `confirming`, which the reconciler turns into `confirmed` from SQL.
            if let Err(error) = super::store_call(
                state,
                ctx,
                "finish_confirm",
                state.store.finish_confirm(&id),
            )
            .await
            {
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
            if let Some(to) = to {
                abort(state, ctx, &id, to).await;
            }
            Err((outcome, problem))
        }
        Settled::Unavailable { reason } => {
            // Not this request, but an earlier try of this confirm may have been committed:
            // the hold stays `confirming` for the buyer's retry or the reconciler.
            state.metrics.upstream_connect_errors.inc();
            tracing::warn!(request_id = %ctx.request_id, %reason, reservation = %id, "settlement unavailable; hold left confirming");
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

/// What a confirm with an expired token goes on to do.
enum ExpiredRetry {
    /// The hold shows an earlier try reached settlement: confirm as usual.
    Confirm(ReservationClaims),
    /// The store has no hold at all: SQL decides ([`lost_hold`]).
    HoldGone,
}

/// A confirm whose token has expired: refused, unless the hold shows an earlier try of this
/// confirm got as far as settlement (`confirming`: the outcome is open; `confirmed`: the
/// order exists). Then the retry goes on, and settlement answers with the order if SQL has it.
/// A hold the store no longer has may hide a committed order too (a failover lost it): SQL
/// decides that one.
async fn expired_token_retry(
    state: &EdgeState,
    token: &str,
    buyer: &BuyerId,
) -> Result<ExpiredRetry, Refusal> {
    let expired = || ("expired", Problem::from(TokenError::Expired));
    // Signature, key and audience are still checked, and the owner, before any store call:
    // only the age is forgiven.
    let claims = state
        .verifier
        .verify_ignoring_expiry(token)
        .map_err(|error| ("invalid_token", Problem::from(error)))?;
    if claims.sub != *buyer {
        return Err(("not_owner", ReservationError::NotOwner.into()));
    }
    match state.store.get_hold(&claims.rid).await {
        Ok(hold) if matches!(hold.state, HoldState::Confirming | HoldState::Confirmed) => {
            Ok(ExpiredRetry::Confirm(claims))
        }
        Err(ReservationError::NotFound) => Ok(ExpiredRetry::HoldGone),
        _ => Err(expired()),
    }
}

/// The store has no hold for a token the gateway signed, so it cannot tell whether an earlier
/// try of this confirm committed (its answer lost in a Redis failover, say). Settlement decides
/// in SQL (`POST /internal/settlements/fate`): the order if one exists, answered like a
/// replayed confirm (200), else the reservation is claimed released there, so no try still in
/// flight can commit it, and the buyer gets 410. There is no hold to finish or abort.
async fn lost_hold(
    state: &EdgeState,
    ctx: &RequestCtx,
    token: &str,
    buyer: &Identity,
) -> Result<Reply, Refusal> {
    let decided = state
        .settlement
        .decide_fate(token, &ctx.request_id, buyer, &ctx.span)
        .await;
    match decided {
        Settled::Committed { order, .. } => {
            state.metrics.confirm("replayed");
            Ok(Reply::raw_json(200, order))
        }
        // SQL has no order and now never will: say so, whatever ended the hold (it expired,
        // was released, or the store lost it). Fate's one 410 is
        // `codes::RESERVATION_RELEASED` and its one 403 `codes::NOT_OWNER`; both are decided
        // on the status alone, as they always have been.
        Settled::Refused { status: 410, .. } => Err((
            "expired",
            Problem::new(
                410,
                codes::RESERVATION_EXPIRED,
                "the reservation expired or its hold is gone, and no order was placed for it",
            ),
        )),
        Settled::Refused { status: 403, .. } => {
            Err(("not_owner", ReservationError::NotOwner.into()))
        }
        Settled::Refused { status, code } => Err((
            "rejected",
            Problem::new(
                502,
                "settlement_rejected",
                format!("settlement refused the fate lookup ({status} {code})"),
            ),
        )),
        Settled::Unavailable { reason } | Settled::Ambiguous { reason } => {
            tracing::warn!(request_id = %ctx.request_id, %reason, "settlement unavailable for a lost hold's fate");
            Err((
                "upstream_unavailable",
                Problem::upstream_unavailable(
                    "the settlement service is unavailable; retry with the same token",
                ),
            ))
        }
    }
}

/// What a refusal from settlement means for the hold (`None`: it stays `confirming`) and the
/// buyer. SQL's final verdicts free the units at once: no stock, no product, over the
/// per-buyer limit, a total out of range, or a reservation already released (each claimed
/// `released` in SQL, so no other try can still commit it). Other refusals cannot hide an
/// order (settlement looks up an existing one before it judges the token), but an earlier try
/// may still be on its way to SQL: the reconciler decides those.
fn refusal(status: u16, code: &str) -> (Option<AbortTo>, &'static str, Problem) {
    match (status, code) {
        (410, codes::RESERVATION_RELEASED) => (
            Some(AbortTo::Released),
            "expired",
            ReservationError::Released.into(),
        ),
        (422, codes::PURCHASE_LIMIT) => (
            Some(AbortTo::Released),
            "purchase_limit",
            Problem::new(
                422,
                codes::PURCHASE_LIMIT,
                "the order would exceed this buyer's purchase limit",
            ),
        ),
        (422, codes::TOTAL_OUT_OF_RANGE) => (
            Some(AbortTo::Released),
            "rejected",
            Problem::new(
                422,
                codes::TOTAL_OUT_OF_RANGE,
                "price times quantity is beyond what an order can hold",
            ),
        ),
        // SQL has no unit left for it (settle's one 409, `codes::OVERSELL_PREVENTED`): the
        // store drifted; give the units back. This arm and the next three decide on the
        // status alone, as they always have: a code of that status the table does not name
        // would otherwise be handled differently (docs/internal-api.md).
        (409, _) => (
            Some(AbortTo::Released),
            "sold_out",
            Problem::new(409, "sold_out", "sold out: the order could not be settled"),
        ),
        // `codes::UNKNOWN_SKU`; also a 404 `not_found` (a settlement without this route).
        (404, _) => (
            Some(AbortTo::Released),
            "unknown_sku",
            ReservationError::UnknownSku.into(),
        ),
        // `codes::RESERVATION_EXPIRED`: no order exists for the expired token.
        (410, _) => (None, "expired", ReservationError::Expired.into()),
        // `codes::INVALID_RESERVATION_TOKEN`; also `unauthenticated` (no buyer asserted).
        (401, _) => (
            None,
            "invalid_token",
            Problem::new(
                401,
                codes::INVALID_RESERVATION_TOKEN,
                "settlement refused the reservation token",
            ),
        ),
        _ => (
            None,
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
    if let Err(error) = super::store_call(
        state,
        ctx,
        "abort_confirm",
        state.store.abort_confirm(id, to),
    )
    .await
    {
        note_store_error(state, &error, &ctx.request_id);
        tracing::warn!(request_id = %ctx.request_id, %error, reservation = %id, "abort_confirm failed");
    }
}
