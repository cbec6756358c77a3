//! The reservation routes answered at the edge: `POST /api/v1/reservations`, `GET
//! /api/v1/reservations?sku=` (the caller's open holds), `GET`/`DELETE
//! /api/v1/reservations/{id}` and `GET /api/v1/stock/{sku}`. Each is one store call; the store
//! decides (atomically, with its own clock), the edge only validates input, signs the
//! reservation tokens and maps the answer.

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
    #[serde(deserialize_with = "reservation_core::wire::whole_number")]
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

/// An open hold as listed to its buyer: with a reservation token signed afresh, so a page that
/// lost the one `POST /api/v1/reservations` answered can still confirm.
#[derive(Serialize)]
struct OpenHold<'a> {
    reservation_id: &'a str,
    token: String,
    sku: &'a str,
    qty: u32,
    state: &'static str,
    expires_at: String,
}

#[derive(Serialize)]
struct HoldList<'a> {
    sku: &'a str,
    holds: Vec<OpenHold<'a>>,
    /// More open holds exist than [`MAX_LISTED_HOLDS`]; the oldest are listed.
    truncated: bool,
}

/// The most holds one listing returns. The per-buyer limit (units, and each hold has at least
/// one) keeps a buyer's open holds of a SKU fewer than this in any sale we know; the bound
/// keeps one answer small whatever a product's limit is.
pub const MAX_LISTED_HOLDS: usize = 50;

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
    let raw = respond::header_str(session, reservation_core::wire::headers::IDEMPOTENCY_KEY)
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
    let reservation = super::store_call(state, ctx, "reserve", state.store.reserve(&request))
        .await
        .map_err(|error| {
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

/// The SKU of `GET /api/v1/reservations?sku=<SKU>`: exactly one `sku` parameter, its value
/// strictly percent-decoded and valid by [`Sku::parse`]; every other query is a 400 naming what
/// is wrong, never a guess. (Empty `&` separators are skipped.) Public for the unit tests.
pub fn list_query(query: Option<&str>) -> Result<Sku, Problem> {
    let mut sku = None;
    for pair in query.unwrap_or_default().split('&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name != "sku" {
            return Err(Problem::bad_request(format!(
                "unknown query parameter {name:?}: only sku is taken"
            )));
        }
        if sku.is_some() {
            return Err(Problem::bad_request("sku is given more than once"));
        }
        let decoded = super::routes::percent_decode(value)
            .ok_or_else(|| Problem::bad_request("sku is not validly percent-encoded"))?;
        sku = Some(Sku::parse(&decoded)?);
    }
    sku.ok_or_else(|| Problem::bad_request("the query parameter sku is required"))
}

/// `GET /api/v1/reservations?sku=<SKU>`: the caller's open holds of one SKU (held and not
/// expired, or confirming), oldest first, each with a fresh token. Someone else's holds are
/// never listed: the store is asked for this buyer's only. Not cached anywhere (`no-store`):
/// the tokens confirm the holds.
pub async fn list(state: &EdgeState, session: &Session, ctx: &RequestCtx) -> Reply {
    let result = async {
        let buyer = buyer_of(ctx)?;
        let sku = list_query(session.req_header().uri.query())?;
        // One more than shown tells whether the list was cut.
        let mut open = state
            .store
            .buyer_holds(&sku, &buyer, MAX_LISTED_HOLDS + 1)
            .await
            .map_err(|error| {
                note_store_error(state, &error, &ctx.request_id);
                Problem::from(error)
            })?;
        let truncated = open.len() > MAX_LISTED_HOLDS;
        open.truncate(MAX_LISTED_HOLDS);
        let holds = open
            .iter()
            .map(|hold| {
                Ok(OpenHold {
                    reservation_id: hold.id.as_str(),
                    // Deterministic: the very token the reserve answered.
                    token: state.signer.sign(&ReservationClaims::for_hold(hold))?,
                    sku: hold.sku.as_str(),
                    qty: hold.qty.get(),
                    state: hold.state.as_str(),
                    expires_at: rfc3339_ms(hold.expires_at_ms),
                })
            })
            .collect::<Result<Vec<_>, Problem>>()?;
        let list = HoldList {
            sku: sku.as_str(),
            holds,
            truncated,
        };
        Ok(Reply::json(200, &list).header("cache-control", "no-store"))
    }
    .await;
    result.unwrap_or_else(|problem| Reply::problem(&problem, &ctx.request_id))
}

/// `DELETE /api/v1/reservations/{id}`: releases the hold now; its units return to stock.
pub async fn release(state: &EdgeState, ctx: &RequestCtx, matched: &Matched) -> Reply {
    let result = async {
        let buyer = buyer_of(ctx)?;
        let id = reservation_id(matched)?;
        super::store_call(state, ctx, "release", state.store.release(&id, &buyer))
            .await
            .map_err(|error| {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_takes_exactly_one_valid_sku() {
        let sku = |query| list_query(query).map(|sku| sku.as_str().to_owned());
        for (query, expected) in [
            (Some("sku=HOT"), "HOT"),
            (Some("sku=H%4FT"), "HOT"),
            (Some("sku=hot"), "hot"),
            (Some("&sku=A-1_b.2&"), "A-1_b.2"),
        ] {
            assert_eq!(sku(query), Ok(expected.to_owned()), "{query:?}");
        }
        for (query, detail) in [
            (None, "required"),
            (Some(""), "required"),
            (Some("sku="), "sku must be"),
            (Some("sku"), "sku must be"),
            (Some("sku=HOT&sku=TEE"), "more than once"),
            (Some("sku=HOT&x=1"), "unknown query parameter"),
            (Some("SKU=HOT"), "unknown query parameter"),
            (Some("sku=HOT%"), "percent-encoded"),
            (Some("sku=HOT%zz"), "percent-encoded"),
            (Some("sku=H+T"), "sku may contain only"),
            (Some("sku=%7BHOT%7D"), "sku may contain only"),
            (Some("sku=.."), "only dots"),
        ] {
            let problem = list_query(query).unwrap_err();
            assert_eq!((problem.status, problem.code), (400, "invalid_request"));
            assert!(
                problem.detail.contains(detail),
                "{query:?}: {}",
                problem.detail
            );
        }
    }
}
