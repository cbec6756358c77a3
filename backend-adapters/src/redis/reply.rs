//! Decoding the scripts' replies. Every script answers a flat array whose first element is
//! `"ok"` or a domain error code (with one detail element); this module turns it into the
//! domain's `Hold`, `StockSnapshot` or `ReservationError`.

use redis::Value;
use reservation_core::{
    BuyerId, ConfirmingHold, Hold, HoldState, Qty, ReservationError, ReservationId, SaleState, Sku,
    StockSnapshot, StoreResult,
};

/// Fields per hold in a reply: id, buyer, qty, state, created_ms, expires_at_ms.
pub(crate) const HOLD_FIELDS: usize = 6;

fn malformed(what: &str) -> ReservationError {
    // Not retryable: the same call would get the same unreadable answer.
    ReservationError::backend(false, format!("malformed script reply: {what}"))
}

/// A reply element as text (Lua strings arrive as bulk strings, Lua numbers as integers).
fn text(value: &Value) -> StoreResult<String> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes.clone()).map_err(|_| malformed("utf-8"))
        }
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(malformed(&format!("unexpected element {other:?}"))),
    }
}

/// Splits a script reply into its fields after an `"ok"`, or the domain error it names.
pub(crate) fn fields(reply: Value) -> StoreResult<Vec<String>> {
    let Value::Array(items) = reply else {
        return Err(malformed("not an array"));
    };
    let mut items = items.iter().map(text).collect::<StoreResult<Vec<_>>>()?;
    if items.is_empty() {
        return Err(malformed("empty"));
    }
    let code = items.remove(0);
    if code == "ok" {
        return Ok(items);
    }
    Err(domain_error(
        &code,
        items.first().map(String::as_str).unwrap_or(""),
    ))
}

/// The domain error for a script's error code; `detail` carries the number some errors name.
fn domain_error(code: &str, detail: &str) -> ReservationError {
    match code {
        "unknown_sku" => ReservationError::UnknownSku,
        "sale_paused" => ReservationError::SalePaused,
        "sold_out" => ReservationError::SoldOut,
        "insufficient_stock" => match detail.parse() {
            Ok(available) => ReservationError::InsufficientStock { available },
            Err(_) => malformed("insufficient_stock detail"),
        },
        "purchase_limit" => match detail.parse() {
            Ok(limit) => ReservationError::PurchaseLimit { limit },
            Err(_) => malformed("purchase_limit detail"),
        },
        "idempotency_mismatch" => ReservationError::IdempotencyMismatch,
        "not_found" => ReservationError::NotFound,
        "not_owner" => ReservationError::NotOwner,
        "expired" => ReservationError::Expired,
        "released" => ReservationError::Released,
        "invalid_state" => match HoldState::parse(detail) {
            Some(state) => ReservationError::InvalidState { state },
            None => malformed("invalid_state detail"),
        },
        "stock_below_committed" => match detail.parse() {
            Ok(committed) => ReservationError::StockBelowCommitted { committed },
            Err(_) => malformed("stock_below_committed detail"),
        },
        "repair_superseded" => ReservationError::RepairSuperseded,
        other => malformed(&format!("unknown code {other}")),
    }
}

fn number<T: std::str::FromStr>(raw: &str, what: &str) -> StoreResult<T> {
    raw.parse().map_err(|_| malformed(what))
}

/// One hold from its six reply fields.
pub(crate) fn hold(f: &[String]) -> StoreResult<Hold> {
    let [id, buyer, qty, state, created, expires] = f else {
        return Err(malformed("hold needs 6 fields"));
    };
    let id = ReservationId::parse(id).map_err(|_| malformed("reservation id"))?;
    Ok(Hold {
        sku: id.sku(),
        id,
        buyer: BuyerId::parse(buyer).map_err(|_| malformed("buyer"))?,
        qty: Qty::new(number(qty, "qty")?).map_err(|_| malformed("qty"))?,
        state: HoldState::parse(state).ok_or_else(|| malformed("hold state"))?,
        created_at_ms: number(created, "created")?,
        expires_at_ms: number(expires, "expires")?,
    })
}

/// A list of holds, six fields each.
pub(crate) fn holds(f: &[String]) -> StoreResult<Vec<Hold>> {
    if !f.len().is_multiple_of(HOLD_FIELDS) {
        return Err(malformed("hold list length"));
    }
    f.chunks(HOLD_FIELDS).map(hold).collect()
}

/// A list of confirming holds, seven fields each: a hold's six and when its confirm began.
pub(crate) fn confirming_holds(f: &[String]) -> StoreResult<Vec<ConfirmingHold>> {
    const FIELDS: usize = HOLD_FIELDS + 1;
    if !f.len().is_multiple_of(FIELDS) {
        return Err(malformed("confirming hold list length"));
    }
    f.chunks(FIELDS)
        .map(|c| {
            Ok(ConfirmingHold {
                hold: hold(&c[..HOLD_FIELDS])?,
                since_ms: number(&c[HOLD_FIELDS], "confirming_since")?,
            })
        })
        .collect()
}

/// A snapshot from total, available, held, confirming, sold, limit, max, state.
pub(crate) fn snapshot(sku: &Sku, f: &[String]) -> StoreResult<StockSnapshot> {
    let [total, available, held, confirming, sold, limit, max, state] = f else {
        return Err(malformed("snapshot needs 8 fields"));
    };
    Ok(StockSnapshot {
        sku: sku.clone(),
        total_stock: number(total, "total")?,
        available: number(available, "available")?,
        held: number(held, "held")?,
        confirming: number(confirming, "confirming")?,
        sold: number(sold, "sold")?,
        per_buyer_limit: number(limit, "limit")?,
        max_per_order: number(max, "max")?,
        sale_state: SaleState::parse(state).ok_or_else(|| malformed("sale state"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn error_codes_become_domain_errors() {
        let reply = Value::Array(vec![bulk("insufficient_stock"), bulk("4")]);
        assert_eq!(
            fields(reply),
            Err(ReservationError::InsufficientStock { available: 4 })
        );
        let reply = Value::Array(vec![bulk("invalid_state"), bulk("confirmed")]);
        assert_eq!(
            fields(reply),
            Err(ReservationError::InvalidState {
                state: HoldState::Confirmed
            })
        );
    }

    #[test]
    fn garbage_is_a_backend_error_not_a_panic() {
        assert!(matches!(
            fields(Value::Nil),
            Err(ReservationError::Backend {
                retryable: false,
                ..
            })
        ));
        assert!(matches!(
            fields(Value::Array(vec![bulk("what")])),
            Err(ReservationError::Backend { .. })
        ));
        assert!(hold(&["x".to_owned()]).is_err());
    }
}
