//! The domain errors of reservations, and the one table that maps each to an HTTP status and
//! a problem `code` (RFC 9457). The gateway and the settlement service both answer from it.

use thiserror::Error;

use crate::types::HoldState;
use crate::wire::codes;

/// Why a reservation operation did not happen. None of these changed any state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReservationError {
    #[error("{field} {reason}")]
    InvalidInput { field: &'static str, reason: String },
    #[error("unknown sku")]
    UnknownSku,
    #[error("the sale of this sku is paused")]
    SalePaused,
    #[error("sold out")]
    SoldOut,
    #[error("only {available} units are available")]
    InsufficientStock { available: u64 },
    #[error("this purchase would exceed the limit of {limit} units per buyer or per order")]
    PurchaseLimit { limit: u32 },
    #[error("this idempotency key was used for a different request")]
    IdempotencyMismatch,
    #[error("no such reservation")]
    NotFound,
    #[error("this reservation belongs to another buyer")]
    NotOwner,
    #[error("the reservation has expired")]
    Expired,
    #[error("the reservation was released")]
    Released,
    #[error("the reservation is {state}")]
    InvalidState { state: HoldState },
    #[error("the new total stock is below the units already held or sold ({committed})")]
    StockBelowCommitted { committed: u64 },
    /// Another counter repair of the SKU began after this one (or this one's journal
    /// expired): this repair wrote nothing and may be run again.
    #[error("a newer counter repair of this sku superseded this one")]
    RepairSuperseded,
    #[error("reservation backend failed: {message}")]
    Backend { retryable: bool, message: String },
}

impl ReservationError {
    pub fn backend(retryable: bool, message: impl Into<String>) -> Self {
        ReservationError::Backend {
            retryable,
            message: message.into(),
        }
    }

    /// The HTTP status and the problem `code` a client sees for this error.
    pub fn status_and_code(&self) -> (u16, &'static str) {
        match self {
            ReservationError::InvalidInput { .. } => (400, "invalid_request"),
            ReservationError::UnknownSku => (404, codes::UNKNOWN_SKU),
            ReservationError::SalePaused => (423, "sale_paused"),
            ReservationError::SoldOut => (409, "sold_out"),
            ReservationError::InsufficientStock { .. } => (409, "insufficient_stock"),
            ReservationError::PurchaseLimit { .. } => (422, codes::PURCHASE_LIMIT),
            ReservationError::IdempotencyMismatch => (422, "idempotency_mismatch"),
            ReservationError::NotFound => (404, "reservation_not_found"),
            ReservationError::NotOwner => (403, codes::NOT_OWNER),
            ReservationError::Expired | ReservationError::Released => {
                (410, codes::RESERVATION_EXPIRED)
            }
            ReservationError::InvalidState { .. } => (409, "invalid_state"),
            ReservationError::StockBelowCommitted { .. } => (409, "stock_below_committed"),
            ReservationError::RepairSuperseded => (409, "repair_superseded"),
            ReservationError::Backend {
                retryable: true, ..
            } => (503, "backend_unavailable"),
            ReservationError::Backend {
                retryable: false, ..
            } => (500, "backend_error"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_statuses() {
        assert_eq!(
            ReservationError::SoldOut.status_and_code(),
            (409, "sold_out")
        );
        assert_eq!(
            ReservationError::PurchaseLimit { limit: 2 }.status_and_code(),
            (422, "purchase_limit")
        );
        assert_eq!(ReservationError::SalePaused.status_and_code().0, 423);
        assert_eq!(ReservationError::Released.status_and_code().0, 410);
        assert_eq!(
            ReservationError::backend(true, "down").status_and_code(),
            (503, "backend_unavailable")
        );
    }
}
