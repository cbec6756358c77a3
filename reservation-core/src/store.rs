//! The `ReservationStore` seam: every operation of the reservation hot path, each atomic.
//! Implementations: [`InMemoryStore`](crate::InMemoryStore) for the embedded default and
//! tests, and the Redis Lua store in `backend-adapters`. Both pass the same conformance suite
//! (`testsuite` feature).

use async_trait::async_trait;

use crate::error::ReservationError;
use crate::types::{
    AbortTo, BuyerId, ConfirmingHold, Hold, ProductStock, Qty, RepairStart, RepairTicket,
    Reservation, ReservationId, ReserveRequest, Sku, SoldUnits, StockSnapshot,
};

pub type StoreResult<T> = Result<T, ReservationError>;

/// How long a counter repair's journal stays open ([`ReservationStore::begin_repair`]): far
/// longer than a repair of one SKU takes, so an abandoned one stops journaling soon.
pub const REPAIR_JOURNAL_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// The atomic operations on stock counters and holds.
///
/// Every method is one atomic step with the store's own clock: it checks all of its
/// preconditions first and either applies all of its changes or none. The counters of a SKU
/// always satisfy `available + held + confirming + sold == total_stock`, each ≥ 0.
#[async_trait]
pub trait ReservationStore: Send + Sync + 'static {
    /// Creates a SKU's counters, or updates its total stock, limits and sale state.
    /// A new total moves `available` by the difference; it may not drop below the units
    /// already held, confirming or sold ([`ReservationError::StockBelowCommitted`]). It
    /// supersedes a counter repair of the SKU in progress ([`Self::begin_repair`]), whose SQL
    /// snapshot may predate the edit.
    async fn configure_product(
        &self,
        sku: &Sku,
        stock: &ProductStock,
    ) -> StoreResult<StockSnapshot>;

    /// Takes `qty` units for a buyer, or replays the reservation made earlier with the same
    /// buyer and idempotency key.
    ///
    /// Only a request that made a hold binds its key, to that hold's SKU and quantity, for as
    /// long as the hold is kept (its life plus the retention); a later request under the key
    /// with another SKU or quantity is [`ReservationError::IdempotencyMismatch`], the same
    /// request again returns the reservation it made (`replayed`). A refused request leaves
    /// no lasting state: its key stays free, and the same key may be tried again with any
    /// body.
    ///
    /// Checks, in order: known SKU, idempotency, sale on, `qty ≤ max_per_order`, per-buyer
    /// limit, stock. A replay is answered even when the sale has since been paused.
    async fn reserve(&self, request: &ReserveRequest) -> StoreResult<Reservation>;

    /// The hold as it is now. A due `Held` hold the sweeper has not reached yet reads as
    /// `Expired`.
    async fn get_hold(&self, id: &ReservationId) -> StoreResult<Hold>;

    /// Gives a `Held` hold back to stock now (→ `Released`). Releasing a hold that is already
    /// released or expired succeeds and changes nothing; a confirming or confirmed hold is
    /// [`ReservationError::InvalidState`].
    async fn release(&self, id: &ReservationId, buyer: &BuyerId) -> StoreResult<Hold>;

    /// Moves a `Held`, unexpired hold of this buyer to `Confirming`; from then on the sweeper
    /// leaves it alone. A hold already `Confirming` or `Confirmed` is returned as it is (the
    /// settlement is idempotent on the reservation id, so the caller may go on). A due hold is
    /// expired on the spot ([`ReservationError::Expired`]).
    async fn begin_confirm(&self, id: &ReservationId, buyer: &BuyerId) -> StoreResult<Hold>;

    /// Records that the settlement committed: `Confirming` → `Confirmed`, the units move from
    /// `confirming` to `sold`. Idempotent on a hold already `Confirmed`.
    async fn finish_confirm(&self, id: &ReservationId) -> StoreResult<Hold>;

    /// Undoes a begin-confirm whose settlement did not commit: back to `Held` (units to `held`;
    /// the hold keeps its original expiry) or to `Released` (units back to `available`).
    async fn abort_confirm(&self, id: &ReservationId, to: AbortTo) -> StoreResult<Hold>;

    /// Expires up to `batch` due `Held` holds of one SKU, returning their units to
    /// `available`. Each hold is expired exactly once, however many sweepers run.
    async fn expire_due(&self, sku: &Sku, batch: usize) -> StoreResult<Vec<Hold>>;

    /// The holds of one SKU that are `Confirming`, with when each confirm began (for the
    /// reconciler).
    async fn confirming_holds(&self, sku: &Sku) -> StoreResult<Vec<ConfirmingHold>>;

    /// Returns the units of a confirmed-then-cancelled order to stock (`sold` → `available`),
    /// once per reservation id however often it is called. `Ok(false)` when it had been done.
    /// A cancellation proves the order committed, so a hold still `Confirming` (its gateway
    /// has not finished it) is finished first, as [`Self::finish_confirm`] would.
    async fn return_cancelled(
        &self,
        id: &ReservationId,
        buyer: &BuyerId,
        qty: Qty,
    ) -> StoreResult<bool>;

    /// Begins a counter repair of `sku`: opens its journal ([`RepairTicket`]) and lists the
    /// holds confirming now, in one atomic step. Every hold a later `finish_confirm` or
    /// `return_cancelled` touches was then either confirming (listed) or began its confirm
    /// after this (so its order, if any, is recent); the repair asks SQL about both.
    async fn begin_repair(&self, sku: &Sku) -> StoreResult<RepairStart>;

    /// Rebuilds a SKU's counters from the authority (SQL) after the store lost data, from a
    /// snapshot `sold` read after [`Self::begin_repair`] gave `ticket`: `sold` and each
    /// buyer's bought units are set from `sold`, `held`/`confirming` are recounted from the
    /// holds the store still has — except holds of `sold.ordered`, which become `Confirmed`
    /// uncounted (SQL's `total` has them; counting them again would undersell for good) — the
    /// reservations of `sold.cancelled` are marked returned (a late
    /// [`Self::return_cancelled`] must not give their units back twice), and `available` is
    /// what remains of `total_stock`.
    ///
    /// The journal corrects for what happened between the snapshot and now, which the
    /// snapshot cannot show: a finish of an order the snapshot lacks adds its units (they
    /// are sold, and no later finish will add them), a return of a cancellation the snapshot
    /// lacks takes off those of an order it counted live. [`ReservationError::RepairSuperseded`]
    /// (nothing written) when the journal is not this ticket's.
    async fn repair_counters(
        &self,
        sku: &Sku,
        stock: &ProductStock,
        sold: &SoldUnits,
        ticket: &RepairTicket,
    ) -> StoreResult<StockSnapshot>;

    /// One buyer's holds of one SKU that are still open — `Held` and unexpired, or
    /// `Confirming` — oldest first, at most `limit`. What a storefront lists so that a buyer
    /// who lost the page can still confirm or release what counts toward their limit.
    async fn buyer_holds(&self, sku: &Sku, buyer: &BuyerId, limit: usize)
    -> StoreResult<Vec<Hold>>;

    /// The counters of one SKU.
    async fn snapshot(&self, sku: &Sku) -> StoreResult<StockSnapshot>;

    /// Every SKU the store has counters for.
    async fn skus(&self) -> StoreResult<Vec<Sku>>;

    /// Readiness: makes sure the store can serve, repairing what it can by itself, and says
    /// whether something had to be repaired. The Redis store reloads the Lua scripts a
    /// restarted or flushed Redis lost (a replica whose probe only reported the loss would be
    /// taken out of rotation and never get the call that reloads them); a store with nothing
    /// to lose is always ready.
    async fn ensure_ready(&self) -> StoreResult<bool> {
        Ok(false)
    }
}
