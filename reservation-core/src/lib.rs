//! The reservation domain of stockgate, free of I/O: the types of the hot path (SKUs,
//! quantities, holds, stock counters), the [`ReservationStore`] seam with its in-memory
//! implementation, the reservation-token codec, and the error table that maps every domain
//! error to an HTTP status and problem code.
//!
//! With feature `testsuite`, [`testsuite`] holds the conformance cases and the model-based
//! property test every store implementation runs.

#![forbid(unsafe_code)]

pub mod assertion;
pub mod error;
pub mod memory;
pub mod store;
pub mod token;
pub mod types;
pub mod wire;

#[cfg(feature = "testsuite")]
pub mod testsuite;

pub use error::ReservationError;
pub use memory::InMemoryStore;
pub use store::{REPAIR_JOURNAL_TTL, ReservationStore, StoreResult};
pub use token::{ReservationClaims, TokenError, TokenSigner, TokenVerifier};
pub use types::{
    AbortTo, BuyerId, ConfirmingHold, Hold, HoldState, IdempotencyKey, ProductStock, Qty,
    RepairStart, RepairTicket, Reservation, ReservationId, ReserveRequest, SaleState, Sku,
    SoldUnits, StockSnapshot,
};
