//! `InMemoryStore`: the reservation store of the embedded default and of unit tests. It keeps
//! the same semantics as the Redis Lua store (the conformance suite checks both), with one
//! mutex standing in for Redis' single-threaded script execution.
//!
//! Like Redis, it forgets a final hold (confirmed, released, expired) and the idempotency key
//! that made it once the retention has passed, so a long-running embedded default stays
//! bounded: final holds are pruned oldest first, a few on every reserve of their SKU and all
//! that are due on every sweep (`expire_due`). Live holds need no pruning: each one holds at
//! least one unit of stock.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::error::ReservationError;
use crate::store::{REPAIR_JOURNAL_TTL, ReservationStore, StoreResult};
use crate::types::{
    AbortTo, BuyerId, ConfirmingHold, Hold, HoldState, IdempotencyKey, ProductStock, Qty,
    RepairStart, RepairTicket, Reservation, ReservationId, ReserveRequest, SaleState, Sku,
    SoldUnits, StockSnapshot,
};

/// How long a final hold and its idempotency key are kept for replays by default: the Redis
/// store's default retention.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);

/// Final holds a reserve prunes from its SKU: more than the one hold it may add, so a busy
/// SKU's kept holds stay bounded even between sweeps.
const PRUNE_PER_RESERVE: usize = 2;

/// A reservation store held in process memory. Safe to share between threads.
pub struct InMemoryStore {
    state: Mutex<State>,
    retention_ms: u64,
}

impl Default for InMemoryStore {
    fn default() -> Self {
        Self::with_retention(DEFAULT_RETENTION)
    }
}

#[derive(Default)]
struct State {
    books: HashMap<Sku, Book>,
    /// The hold each (buyer, idempotency key) made, kept as long as the hold is: later
    /// requests under the key must name that hold's SKU and quantity. Only a request that
    /// made a hold binds its key; a refused one leaves no trace.
    keys: HashMap<(BuyerId, IdempotencyKey), ReservationId>,
    /// The journal of a counter repair in progress, per SKU (`begin_repair`).
    repairs: HashMap<Sku, Journal>,
}

/// What `finish_confirm` and `return_cancelled` did to one SKU's `sold` since a repair began,
/// for `repair_counters` (the twin of the Redis `repair {sku}` hash).
struct Journal {
    ticket: RepairTicket,
    opened_ms: u64,
    /// Reservations finished (units confirming → sold) and returned (sold → available).
    finished: HashMap<ReservationId, (BuyerId, u64)>,
    returned: HashMap<ReservationId, (BuyerId, u64)>,
}

impl Journal {
    fn is_open(&self, now: u64) -> bool {
        now < self
            .opened_ms
            .saturating_add(REPAIR_JOURNAL_TTL.as_millis() as u64)
    }
}

/// Records in the SKU's repair journal, when a repair is in progress, that `finish_confirm`
/// (`finished`) or `return_cancelled` (`returned`) moved a reservation's units.
fn journal(
    repairs: &mut HashMap<Sku, Journal>,
    now: u64,
    hold: (&ReservationId, &BuyerId, u64),
    finished: bool,
    returned: bool,
) {
    let Some(j) = repairs.get_mut(&hold.0.sku()).filter(|j| j.is_open(now)) else {
        return;
    };
    let entry = (hold.1.clone(), hold.2);
    if finished {
        j.finished.insert(hold.0.clone(), entry.clone());
    }
    if returned {
        j.returned.insert(hold.0.clone(), entry);
    }
}

/// Everything about one SKU, mirroring the keys under one `{sku}` hash tag in Redis.
struct Book {
    stock: ProductStock,
    available: u64,
    held: u64,
    confirming: u64,
    sold: u64,
    holds: HashMap<ReservationId, Hold>,
    /// `Held` holds by expiry, so the sweeper takes the earliest first.
    expiry: BTreeSet<(u64, ReservationId)>,
    /// Units each buyer holds, is confirming or bought (the per-buyer limit's count).
    per_buyer: HashMap<BuyerId, u64>,
    /// The idempotency key each hold was made under, to free the key when the hold goes.
    key_of: HashMap<ReservationId, IdempotencyKey>,
    /// Final holds by the moment their retention ends, earliest first.
    finals: BTreeSet<(u64, ReservationId)>,
    returned: HashSet<ReservationId>,
    /// When each `Confirming` hold's confirm began.
    confirming_since: HashMap<ReservationId, u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl InMemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store that keeps final holds (and their idempotency keys) for `retention`.
    pub fn with_retention(retention: Duration) -> Self {
        InMemoryStore {
            state: Mutex::new(State::default()),
            retention_ms: u64::try_from(retention.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// When a hold that becomes final at `now` is dropped.
    fn drop_at(&self, now: u64) -> u64 {
        now.saturating_add(self.retention_ms)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied change: every method
        // checks before it writes. So a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Book {
    fn new(stock: ProductStock) -> Self {
        Book {
            available: stock.total_stock,
            stock,
            held: 0,
            confirming: 0,
            sold: 0,
            holds: HashMap::new(),
            expiry: BTreeSet::new(),
            per_buyer: HashMap::new(),
            key_of: HashMap::new(),
            finals: BTreeSet::new(),
            returned: HashSet::new(),
            confirming_since: HashMap::new(),
        }
    }

    fn snapshot(&self, sku: &Sku) -> StockSnapshot {
        StockSnapshot {
            sku: sku.clone(),
            total_stock: self.stock.total_stock,
            available: self.available,
            held: self.held,
            confirming: self.confirming,
            sold: self.sold,
            per_buyer_limit: self.stock.per_buyer_limit,
            max_per_order: self.stock.max_per_order,
            sale_state: self.stock.sale_state,
        }
    }

    fn hold(&self, id: &ReservationId) -> StoreResult<&Hold> {
        self.holds.get(id).ok_or(ReservationError::NotFound)
    }

    /// Moves a `Held` hold to a final state, returning its units to `available`; it is kept
    /// until `drop_at`.
    fn give_back(&mut self, id: &ReservationId, to: HoldState, drop_at: u64) -> Hold {
        let hold = self
            .holds
            .get_mut(id)
            .expect("caller checked the hold exists");
        debug_assert_eq!(hold.state, HoldState::Held);
        hold.state = to;
        let (qty, buyer, expires) = (
            u64::from(hold.qty.get()),
            hold.buyer.clone(),
            hold.expires_at_ms,
        );
        let hold = hold.clone();
        self.expiry.remove(&(expires, id.clone()));
        self.held -= qty;
        self.available += qty;
        self.take_from_buyer(&buyer, qty);
        self.finals.insert((drop_at, id.clone()));
        hold
    }

    /// Drops up to `limit` final holds whose retention ended by `now`, and frees the
    /// idempotency keys they were made under. Counters are untouched: a final hold's units
    /// were already counted where they belong (available, or sold).
    fn prune(
        &mut self,
        now: u64,
        limit: usize,
        keys: &mut HashMap<(BuyerId, IdempotencyKey), ReservationId>,
    ) {
        for _ in 0..limit {
            match self.finals.first() {
                Some((drop_at, _)) if *drop_at <= now => {}
                _ => return,
            }
            let Some((_, id)) = self.finals.pop_first() else {
                return;
            };
            let (Some(hold), Some(key)) = (self.holds.remove(&id), self.key_of.remove(&id)) else {
                continue;
            };
            let bound = (hold.buyer, key);
            if keys.get(&bound) == Some(&id) {
                keys.remove(&bound);
            }
        }
    }

    fn take_from_buyer(&mut self, buyer: &BuyerId, qty: u64) {
        if let Some(units) = self.per_buyer.get_mut(buyer) {
            *units = units.saturating_sub(qty);
            if *units == 0 {
                self.per_buyer.remove(buyer);
            }
        }
    }
}

/// A hold as a reader sees it: a due `Held` hold reads as `Expired`.
fn as_seen(hold: &Hold, now: u64) -> Hold {
    let mut seen = hold.clone();
    if seen.state == HoldState::Held && seen.expires_at_ms <= now {
        seen.state = HoldState::Expired;
    }
    seen
}

fn book_mut<'a>(state: &'a mut State, sku: &Sku) -> StoreResult<&'a mut Book> {
    state.books.get_mut(sku).ok_or(ReservationError::UnknownSku)
}

#[async_trait]
impl ReservationStore for InMemoryStore {
    async fn configure_product(
        &self,
        sku: &Sku,
        stock: &ProductStock,
    ) -> StoreResult<StockSnapshot> {
        stock.validate()?;
        let mut state = self.lock();
        let book = state
            .books
            .entry(sku.clone())
            .or_insert_with(|| Book::new(stock.clone()));
        let committed = book.held + book.confirming + book.sold;
        if stock.total_stock < committed {
            return Err(ReservationError::StockBelowCommitted { committed });
        }
        book.available = stock.total_stock - committed;
        book.stock = stock.clone();
        let snapshot = book.snapshot(sku);
        // A repair in progress may have read SQL before this edit: it is superseded.
        state.repairs.remove(sku);
        Ok(snapshot)
    }

    async fn reserve(&self, request: &ReserveRequest) -> StoreResult<Reservation> {
        let now = now_ms();
        let mut state = self.lock();
        let State { books, keys, .. } = &mut *state;
        let book = books
            .get_mut(&request.sku)
            .ok_or(ReservationError::UnknownSku)?;
        book.prune(now, PRUNE_PER_RESERVE, keys);
        let bound = (request.buyer.clone(), request.idempotency_key.clone());
        // The key made a hold (of this SKU or another): the same request is answered with it,
        // any other is refused. (A key whose hold is gone is free; pruning drops both.)
        let made = keys
            .get(&bound)
            .and_then(|id| books.get(&id.sku())?.holds.get(id));
        if let Some(hold) = made {
            if hold.sku != request.sku || hold.qty != request.qty {
                return Err(ReservationError::IdempotencyMismatch);
            }
            return Ok(Reservation {
                hold: as_seen(hold, now),
                replayed: true,
            });
        }
        let book = book_mut(&mut state, &request.sku)?;
        if book.stock.sale_state == SaleState::Paused {
            return Err(ReservationError::SalePaused);
        }
        let qty = u64::from(request.qty.get());
        if request.qty.get() > book.stock.max_per_order {
            return Err(ReservationError::PurchaseLimit {
                limit: book.stock.max_per_order,
            });
        }
        let bought = book.per_buyer.get(&request.buyer).copied().unwrap_or(0);
        if bought + qty > u64::from(book.stock.per_buyer_limit) {
            return Err(ReservationError::PurchaseLimit {
                limit: book.stock.per_buyer_limit,
            });
        }
        if book.available == 0 {
            return Err(ReservationError::SoldOut);
        }
        if book.available < qty {
            return Err(ReservationError::InsufficientStock {
                available: book.available,
            });
        }

        let hold = Hold {
            id: ReservationId::generate(&request.sku),
            sku: request.sku.clone(),
            buyer: request.buyer.clone(),
            qty: request.qty,
            state: HoldState::Held,
            created_at_ms: now,
            // The TTL is a caller's input: saturate rather than overflow on an absurd one.
            expires_at_ms: now.saturating_add(request.hold_ttl_ms),
        };
        book.available -= qty;
        book.held += qty;
        *book.per_buyer.entry(request.buyer.clone()).or_insert(0) += qty;
        book.expiry.insert((hold.expires_at_ms, hold.id.clone()));
        book.key_of
            .insert(hold.id.clone(), request.idempotency_key.clone());
        book.holds.insert(hold.id.clone(), hold.clone());
        // Only now, with a hold made, is the key bound.
        state.keys.insert(bound, hold.id.clone());
        Ok(Reservation {
            hold,
            replayed: false,
        })
    }

    async fn get_hold(&self, id: &ReservationId) -> StoreResult<Hold> {
        let now = now_ms();
        let state = self.lock();
        let book = state
            .books
            .get(&id.sku())
            .ok_or(ReservationError::NotFound)?;
        Ok(as_seen(book.hold(id)?, now))
    }

    async fn release(&self, id: &ReservationId, buyer: &BuyerId) -> StoreResult<Hold> {
        let now = now_ms();
        let mut state = self.lock();
        let book = book_mut(&mut state, &id.sku()).map_err(|_| ReservationError::NotFound)?;
        let hold = book.hold(id)?;
        if hold.buyer != *buyer {
            return Err(ReservationError::NotOwner);
        }
        let drop_at = self.drop_at(now);
        match hold.state {
            HoldState::Held if hold.expires_at_ms <= now => {
                Ok(book.give_back(id, HoldState::Expired, drop_at))
            }
            HoldState::Held => Ok(book.give_back(id, HoldState::Released, drop_at)),
            HoldState::Released | HoldState::Expired => Ok(hold.clone()),
            state @ (HoldState::Confirming | HoldState::Confirmed) => {
                Err(ReservationError::InvalidState { state })
            }
        }
    }

    async fn begin_confirm(&self, id: &ReservationId, buyer: &BuyerId) -> StoreResult<Hold> {
        let now = now_ms();
        let mut state = self.lock();
        let book = book_mut(&mut state, &id.sku()).map_err(|_| ReservationError::NotFound)?;
        let hold = book.hold(id)?;
        if hold.buyer != *buyer {
            return Err(ReservationError::NotOwner);
        }
        match hold.state {
            HoldState::Held if hold.expires_at_ms <= now => {
                book.give_back(id, HoldState::Expired, self.drop_at(now));
                Err(ReservationError::Expired)
            }
            HoldState::Held => {
                let key = (hold.expires_at_ms, id.clone());
                let qty = u64::from(hold.qty.get());
                book.expiry.remove(&key);
                book.held -= qty;
                book.confirming += qty;
                book.confirming_since.insert(id.clone(), now);
                let hold = book.holds.get_mut(id).expect("checked above");
                hold.state = HoldState::Confirming;
                Ok(hold.clone())
            }
            HoldState::Confirming | HoldState::Confirmed => Ok(hold.clone()),
            HoldState::Expired => Err(ReservationError::Expired),
            HoldState::Released => Err(ReservationError::Released),
        }
    }

    async fn finish_confirm(&self, id: &ReservationId) -> StoreResult<Hold> {
        let now = now_ms();
        let mut state = self.lock();
        let State { books, repairs, .. } = &mut *state;
        let book = books.get_mut(&id.sku()).ok_or(ReservationError::NotFound)?;
        let hold = book.hold(id)?;
        match hold.state {
            HoldState::Confirming => {
                let qty = u64::from(hold.qty.get());
                journal(repairs, now, (id, &hold.buyer, qty), true, false);
                book.confirming -= qty;
                book.sold += qty;
                book.confirming_since.remove(id);
                book.finals.insert((self.drop_at(now), id.clone()));
                let hold = book.holds.get_mut(id).expect("checked above");
                hold.state = HoldState::Confirmed;
                Ok(hold.clone())
            }
            HoldState::Confirmed => Ok(hold.clone()),
            state => Err(ReservationError::InvalidState { state }),
        }
    }

    async fn abort_confirm(&self, id: &ReservationId, to: AbortTo) -> StoreResult<Hold> {
        let now = now_ms();
        let mut state = self.lock();
        let book = book_mut(&mut state, &id.sku()).map_err(|_| ReservationError::NotFound)?;
        let hold = book.hold(id)?;
        if hold.state != HoldState::Confirming {
            return Err(ReservationError::InvalidState { state: hold.state });
        }
        let qty = u64::from(hold.qty.get());
        let (expires, buyer) = (hold.expires_at_ms, hold.buyer.clone());
        book.confirming -= qty;
        book.confirming_since.remove(id);
        let new_state = match to {
            AbortTo::Held => {
                book.held += qty;
                book.expiry.insert((expires, id.clone()));
                HoldState::Held
            }
            AbortTo::Released => {
                book.available += qty;
                book.take_from_buyer(&buyer, qty);
                book.finals.insert((self.drop_at(now), id.clone()));
                HoldState::Released
            }
        };
        let hold = book.holds.get_mut(id).expect("checked above");
        hold.state = new_state;
        Ok(hold.clone())
    }

    async fn expire_due(&self, sku: &Sku, batch: usize) -> StoreResult<Vec<Hold>> {
        let now = now_ms();
        let drop_at = self.drop_at(now);
        let mut state = self.lock();
        let State { books, keys, .. } = &mut *state;
        let book = books.get_mut(sku).ok_or(ReservationError::UnknownSku)?;
        // The sweep is also when the SKU's final holds past their retention go, all of them:
        // each is dropped once, so this costs no more than the reserves that made them.
        book.prune(now, usize::MAX, keys);
        let due: Vec<ReservationId> = book
            .expiry
            .iter()
            .take_while(|(expires, _)| *expires <= now)
            .take(batch)
            .map(|(_, id)| id.clone())
            .collect();
        Ok(due
            .iter()
            .map(|id| book.give_back(id, HoldState::Expired, drop_at))
            .collect())
    }

    async fn confirming_holds(&self, sku: &Sku) -> StoreResult<Vec<ConfirmingHold>> {
        let state = self.lock();
        let book = state.books.get(sku).ok_or(ReservationError::UnknownSku)?;
        Ok(book
            .holds
            .values()
            .filter(|h| h.state == HoldState::Confirming)
            .map(|h| ConfirmingHold {
                hold: h.clone(),
                since_ms: book
                    .confirming_since
                    .get(&h.id)
                    .copied()
                    .unwrap_or(h.created_at_ms),
            })
            .collect())
    }

    async fn buyer_holds(
        &self,
        sku: &Sku,
        buyer: &BuyerId,
        limit: usize,
    ) -> StoreResult<Vec<Hold>> {
        let now = now_ms();
        let state = self.lock();
        let book = state.books.get(sku).ok_or(ReservationError::UnknownSku)?;
        // A scan of the SKU's holds: the in-memory store serves the embedded default and
        // tests, where a SKU has few holds; the Redis store keeps a per-buyer index instead.
        let mut open: Vec<Hold> = book
            .holds
            .values()
            .filter(|h| &h.buyer == buyer)
            .map(|h| as_seen(h, now))
            .filter(|h| matches!(h.state, HoldState::Held | HoldState::Confirming))
            .collect();
        open.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        open.truncate(limit);
        Ok(open)
    }

    async fn return_cancelled(
        &self,
        id: &ReservationId,
        buyer: &BuyerId,
        qty: Qty,
    ) -> StoreResult<bool> {
        let now = now_ms();
        let mut state = self.lock();
        let State { books, repairs, .. } = &mut *state;
        let book = books
            .get_mut(&id.sku())
            .ok_or(ReservationError::UnknownSku)?;
        if book.returned.contains(id) {
            return Ok(false);
        }
        let units = u64::from(qty.get());
        let finishing = book.holds.get(id).is_some_and(|h| {
            h.state == HoldState::Confirming && h.qty == qty && book.confirming >= units
        });
        let sold = book.sold + if finishing { units } else { 0 };
        if sold < units {
            // The counters lost data; a repair in progress rewrites them from SQL: leave the
            // return to it (journaled, marked returned).
            if repairs.get(&id.sku()).is_some_and(|j| j.is_open(now)) {
                journal(repairs, now, (id, buyer, units), false, true);
                book.returned.insert(id.clone());
                return Ok(true);
            }
            return Err(ReservationError::InvalidState {
                state: HoldState::Confirmed,
            });
        }
        if finishing {
            // Its units move confirming → sold → available: `sold` is left as it was.
            book.confirming -= units;
            book.confirming_since.remove(id);
            book.finals.insert((self.drop_at(now), id.clone()));
            if let Some(hold) = book.holds.get_mut(id) {
                hold.state = HoldState::Confirmed;
            }
        } else {
            book.sold -= units;
        }
        book.available += units;
        book.take_from_buyer(buyer, units);
        book.returned.insert(id.clone());
        journal(repairs, now, (id, buyer, units), finishing, true);
        Ok(true)
    }

    async fn begin_repair(&self, sku: &Sku) -> StoreResult<RepairStart> {
        let now = now_ms();
        let mut state = self.lock();
        let ticket = RepairTicket::generate();
        state.repairs.insert(
            sku.clone(),
            Journal {
                ticket: ticket.clone(),
                opened_ms: now,
                finished: HashMap::new(),
                returned: HashMap::new(),
            },
        );
        let mut confirming: Vec<ReservationId> = state
            .books
            .get(sku)
            .into_iter()
            .flat_map(|b| b.holds.values())
            .filter(|h| h.state == HoldState::Confirming)
            .map(|h| h.id.clone())
            .collect();
        confirming.sort();
        Ok(RepairStart { ticket, confirming })
    }

    async fn repair_counters(
        &self,
        sku: &Sku,
        stock: &ProductStock,
        sold: &SoldUnits,
        ticket: &RepairTicket,
    ) -> StoreResult<StockSnapshot> {
        stock.validate()?;
        let now = now_ms();
        let mut state = self.lock();
        let journal = match state.repairs.get(sku) {
            Some(j) if j.ticket == *ticket && j.is_open(now) => j,
            _ => return Err(ReservationError::RepairSuperseded),
        };
        let mut per_buyer: HashMap<BuyerId, u64> = sold.by_buyer.iter().cloned().collect();
        let ordered: HashSet<&ReservationId> = sold.ordered.iter().collect();
        let cancelled: HashSet<&ReservationId> = sold.cancelled.iter().collect();
        // What the journal says the snapshot missed (see repair_counters.lua for the cases).
        let mut total = i128::from(sold.total);
        let mut adjust = |buyer: &BuyerId, delta: i128| {
            total += delta;
            let units = per_buyer.entry(buyer.clone()).or_insert(0);
            *units = (i128::from(*units) + delta).max(0) as u64;
        };
        for (id, (buyer, qty)) in &journal.finished {
            if !ordered.contains(id) && !journal.returned.contains_key(id) {
                adjust(buyer, i128::from(*qty));
            }
        }
        for (id, (buyer, qty)) in &journal.returned {
            let ordered_after = journal.finished.contains_key(id) && !ordered.contains(id);
            if !cancelled.contains(id) && !ordered_after {
                adjust(buyer, -i128::from(*qty));
            }
        }
        let sold_total = total.max(0) as u64;
        let (mut held, mut confirming) = (0, 0);
        let live_holds = state
            .books
            .get(sku)
            .into_iter()
            .flat_map(|b| b.holds.values())
            // SQL's total has the units of a reservation with an order: finished below.
            .filter(|h| !ordered.contains(&h.id));
        for hold in live_holds {
            let qty = u64::from(hold.qty.get());
            match hold.state {
                HoldState::Held => held += qty,
                HoldState::Confirming => confirming += qty,
                _ => continue,
            }
            *per_buyer.entry(hold.buyer.clone()).or_insert(0) += qty;
        }
        per_buyer.retain(|_, units| *units > 0);
        let committed = held + confirming + sold_total;
        if stock.total_stock < committed {
            // Checked before the book is created: a refused repair leaves no trace.
            return Err(ReservationError::StockBelowCommitted { committed });
        }
        state.repairs.remove(sku);
        let book = state
            .books
            .entry(sku.clone())
            .or_insert_with(|| Book::new(stock.clone()));
        for id in &sold.ordered {
            if let Some(hold) = book.holds.get_mut(id)
                && matches!(hold.state, HoldState::Held | HoldState::Confirming)
            {
                book.expiry.remove(&(hold.expires_at_ms, id.clone()));
                book.confirming_since.remove(id);
                hold.state = HoldState::Confirmed;
            }
        }
        book.returned.extend(sold.cancelled.iter().cloned());
        book.stock = stock.clone();
        book.held = held;
        book.confirming = confirming;
        book.sold = sold_total;
        book.available = stock.total_stock - committed;
        book.per_buyer = per_buyer;
        Ok(book.snapshot(sku))
    }

    async fn snapshot(&self, sku: &Sku) -> StoreResult<StockSnapshot> {
        let state = self.lock();
        let book = state.books.get(sku).ok_or(ReservationError::UnknownSku)?;
        Ok(book.snapshot(sku))
    }

    async fn skus(&self) -> StoreResult<Vec<Sku>> {
        let mut skus: Vec<Sku> = self.lock().books.keys().cloned().collect();
        skus.sort();
        Ok(skus)
    }
}

#[cfg(test)]
mod tests;
