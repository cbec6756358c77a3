//! The reservation routes answered at the edge: `POST /api/v1/reservations`,
//! `GET`/`DELETE /api/v1/reservations/{id}` and `GET /api/v1/stock/{sku}`. Each is one store
//! call; the store decides (atomically, with its own clock), the edge only validates input,
//! signs the reservation token and maps the answer.

use pingora::proxy::Session;
use reservation_core::{
    BuyerId, Hold, IdempotencyKey, Qty, ReservationClaims, ReservationError, ReservationId,
    ReserveRequest, Sku,
};
use serde::{Deserialize, Serialize};

use super::respond::{self, Reply, rfc3339_ms};
use super::routes::Matched;
use super::{EdgeState, RequestCtx};
use crate::problem::Problem;

/// The body as sent. Unknown fields (a client-sent `price`, `status`, ...) are refused, not
/// ignored: the server decides everything but the SKU and the quantity.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReserveBody {
    sku: String,
    qty: u32,
}

/// A reservation request body, parsed and validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReserveInput {
    pub sku: Sku,
    pub qty: Qty,
}

/// Parses `{"sku", "qty"}`; every malformed, mistyped or out-of-range body is a 400 problem
/// (public for the fuzz target in `fuzz/`).
pub fn parse_reserve_body(body: &[u8]) -> Result<ReserveInput, Problem> {
    let input: ReserveBody = respond::json_object(body)
        .map_err(|e| Problem::bad_request(format!("body must be {{\"sku\", \"qty\"}}: {e}")))?;
    Ok(ReserveInput {
        sku: Sku::parse(&input.sku)?,
        qty: Qty::new(input.qty)?,
    })
}

#[derive(Serialize)]
struct Created<'a> {
    reservation_id: &'a str,
    token: &'a str,
    sku: &'a str,
    qty: u32,
    expires_at: String,
}

#[derive(Serialize)]
struct HoldView<'a> {
    reservation_id: &'a str,
    sku: &'a str,
    qty: u32,
    state: &'static str,
    expires_at: String,
}

#[derive(Serialize)]
struct StockView<'a> {
    sku: &'a str,
    available: u64,
    /// Held and confirming units: both are taken from `available` but not yet sold.
    held: u64,
    sold: u64,
    state: &'static str,
}

/// The metrics outcome of a refused reservation, from its problem code.
fn outcome_of(error: &ReservationError) -> &'static str {
    match error.status_and_code().1 {
        "backend_unavailable" | "backend_error" => "store_error",
        code => crate::metrics::RESERVE_OUTCOMES
            .iter()
            .find(|o| **o == code)
            .copied()
            .unwrap_or("invalid_request"),
    }
}

/// The caller's identity as a store buyer id (authentication already checked it).
pub(super) fn buyer_of(ctx: &RequestCtx) -> Result<BuyerId, Problem> {
    let identity = ctx
        .identity
        .as_ref()
        .ok_or_else(|| Problem::internal("route needs an identity"))?;
    BuyerId::parse(&identity.sub).map_err(Problem::from)
}

/// The `Idempotency-Key` header, required on every POST the edge answers.
pub(super) fn idempotency_key(session: &Session) -> Result<IdempotencyKey, Problem> {
    let raw = respond::header_str(session, "idempotency-key")
        .ok_or_else(Problem::missing_idempotency_key)?;
    IdempotencyKey::parse(raw).map_err(Problem::from)
}

/// Logs and counts a store failure; other errors are answers, not failures.
pub(super) fn note_store_error(state: &EdgeState, error: &ReservationError, request_id: &str) {
    if let ReservationError::Backend { message, .. } = error {
        state.metrics.store_errors.inc();
        tracing::warn!(%request_id, %message, "reservation store failed");
    }
}

/// `POST /api/v1/reservations`: 201 with a new hold and its token, 200 on a replay.
pub async fn create(state: &EdgeState, session: &mut Session, ctx: &RequestCtx) -> Reply {
    match try_create(state, session, ctx).await {
        Ok(reply) => reply,
        Err(problem) => Reply::problem(&problem, &ctx.request_id),
    }
}

async fn try_create(
    state: &EdgeState,
    session: &mut Session,
    ctx: &RequestCtx,
) -> Result<Reply, Problem> {
    let buyer = buyer_of(ctx)?;
    let key = idempotency_key(session)?;
    let body = respond::read_body(session, &state.limits).await?;
    let ReserveInput { sku, qty } = parse_reserve_body(&body).inspect_err(|_| {
        state.metrics.reservation("invalid_request");
    })?;
    // Rules keyed by the SKU of the body can only be checked now that it is read.
    let facts = crate::ratelimit::Facts {
        method: &http::Method::POST,
        path: crate::ratelimit::rules::RESERVE_PATH,
        sub: Some(buyer.as_str()),
        ip: ctx.client_ip,
        body_sku: Some(sku.as_str()),
    };
    if let Some(limited) = state
        .ratelimit
        .check(&facts, crate::ratelimit::Checkpoint::ReservationBody)
        .await
    {
        return Ok(limited.reply(&ctx.request_id));
    }
    if state.sold_out.answers_for(&sku, &buyer, &key) {
        state.metrics.reservation("sold_out_cached");
        return Err(ReservationError::SoldOut.into());
    }
    let request = ReserveRequest {
        sku: sku.clone(),
        buyer,
        qty,
        idempotency_key: key,
        hold_ttl_ms: state.hold_ttl_ms,
    };
    let reservation = state.store.reserve(&request).await.map_err(|error| {
        state.metrics.reservation(outcome_of(&error));
        note_store_error(state, &error, &ctx.request_id);
        if error == ReservationError::SoldOut {
            state.sold_out.remember(&sku);
        }
        if matches!(error, ReservationError::Backend { .. }) {
            // The script may have run after the reply deadline (a paused Redis): a retry
            // under this key must reach the store to get its hold back, never the memory.
            state
                .sold_out
                .note_reservation(&request.buyer, &request.idempotency_key);
        }
        Problem::from(error)
    })?;
    state
        .sold_out
        .note_reservation(&request.buyer, &request.idempotency_key);
    let hold = &reservation.hold;
    // EdDSA signatures are deterministic: a replay hands out the very same token.
    let token = state.signer.sign(&ReservationClaims::for_hold(hold))?;
    let (status, outcome) = if reservation.replayed {
        (200, "replayed")
    } else {
        (201, "created")
    };
    state.metrics.reservation(outcome);
    Ok(Reply::json(
        status,
        &Created {
            reservation_id: hold.id.as_str(),
            token: &token,
            sku: hold.sku.as_str(),
            qty: hold.qty.get(),
            expires_at: rfc3339_ms(hold.expires_at_ms),
        },
    ))
}

fn reservation_id(matched: &Matched) -> Result<ReservationId, Problem> {
    // A malformed id names no reservation: the same answer as an unknown one.
    ReservationId::parse(matched.param.as_deref().unwrap_or_default())
        .map_err(|_| ReservationError::NotFound.into())
}

fn view(hold: &Hold) -> HoldView<'_> {
    HoldView {
        reservation_id: hold.id.as_str(),
        sku: hold.sku.as_str(),
        qty: hold.qty.get(),
        state: hold.state.as_str(),
        expires_at: rfc3339_ms(hold.expires_at_ms),
    }
}

/// `GET /api/v1/reservations/{id}`: the hold, to its buyer only.
pub async fn get(state: &EdgeState, ctx: &RequestCtx, matched: &Matched) -> Reply {
    let result = async {
        let buyer = buyer_of(ctx)?;
        let id = reservation_id(matched)?;
        let hold = state.store.get_hold(&id).await.map_err(|error| {
            note_store_error(state, &error, &ctx.request_id);
            Problem::from(error)
        })?;
        if hold.buyer != buyer {
            return Err(Problem::from(ReservationError::NotOwner));
        }
        Ok(Reply::json(200, &view(&hold)))
    }
    .await;
    result.unwrap_or_else(|problem| Reply::problem(&problem, &ctx.request_id))
}

/// `DELETE /api/v1/reservations/{id}`: releases the hold now; its units return to stock.
pub async fn release(state: &EdgeState, ctx: &RequestCtx, matched: &Matched) -> Reply {
    let result = async {
        let buyer = buyer_of(ctx)?;
        let id = reservation_id(matched)?;
        state.store.release(&id, &buyer).await.map_err(|error| {
            note_store_error(state, &error, &ctx.request_id);
            Problem::from(error)
        })?;
        state.sold_out.forget(&id.sku());
        Ok(Reply::empty(204))
    }
    .await;
    result.unwrap_or_else(|problem| Reply::problem(&problem, &ctx.request_id))
}

/// `GET /api/v1/stock/{sku}`: the counters, straight from the store.
pub async fn stock(state: &EdgeState, ctx: &RequestCtx, matched: &Matched) -> Reply {
    let result = async {
        let sku = Sku::parse(matched.param.as_deref().unwrap_or_default())
            .map_err(|_| Problem::from(ReservationError::UnknownSku))?;
        let snapshot = state.store.snapshot(&sku).await.map_err(|error| {
            note_store_error(state, &error, &ctx.request_id);
            Problem::from(error)
        })?;
        if snapshot.display_state() == "sold_out" {
            state.sold_out.remember(&sku);
        } else {
            state.sold_out.forget(&sku);
        }
        Ok(Reply::json(
            200,
            &StockView {
                sku: sku.as_str(),
                available: snapshot.available,
                held: snapshot.held + snapshot.confirming,
                sold: snapshot.sold,
                state: snapshot.display_state(),
            },
        ))
    }
    .await;
    result.unwrap_or_else(|problem| Reply::problem(&problem, &ctx.request_id))
}
