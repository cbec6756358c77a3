//! `InMemoryStore`: the reservation store of the embedded default and of unit tests. It keeps
//! the same semantics as the Redis Lua store (the conformance suite checks both), with one
//! mutex standing in for Redis' single-threaded script execution.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::error::ReservationError;
use crate::store::{ReservationStore, StoreResult};
use crate::types::{
    AbortTo, BuyerId, ConfirmingHold, Hold, HoldState, IdempotencyKey, ProductStock, Qty,
    Reservation, ReservationId, ReserveRequest, SaleState, Sku, SoldUnits, StockSnapshot,
};

/// A reservation store held in process memory. Safe to share between threads.
#[derive(Default)]
pub struct InMemoryStore {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    books: HashMap<Sku, Book>,
    /// The first request seen under each (buyer, idempotency key): later requests under the
    /// key must name the same SKU and quantity.
    bindings: HashMap<(BuyerId, IdempotencyKey), (Sku, Qty)>,
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
    reservations_by_key: HashMap<(BuyerId, IdempotencyKey), ReservationId>,
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
            reservations_by_key: HashMap::new(),
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

    /// Moves a `Held` hold to a final state, returning its units to `available`.
    fn give_back(&mut self, id: &ReservationId, to: HoldState) -> Hold {
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
        hold
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
        Ok(book.snapshot(sku))
    }

    async fn reserve(&self, request: &ReserveRequest) -> StoreResult<Reservation> {
        let now = now_ms();
        let mut state = self.lock();
        if !state.books.contains_key(&request.sku) {
            return Err(ReservationError::UnknownSku);
        }
        let binding_key = (request.buyer.clone(), request.idempotency_key.clone());
        match state.bindings.get(&binding_key) {
            Some(bound) if *bound != (request.sku.clone(), request.qty) => {
                return Err(ReservationError::IdempotencyMismatch);
            }
            Some(_) => {}
            None => {
                state
                    .bindings
                    .insert(binding_key.clone(), (request.sku.clone(), request.qty));
            }
        }
        let book = book_mut(&mut state, &request.sku)?;
        if let Some(id) = book.reservations_by_key.get(&binding_key) {
            let hold = as_seen(book.hold(id)?, now);
            return Ok(Reservation {
                hold,
                replayed: true,
            });
        }
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
        book.reservations_by_key
            .insert(binding_key, hold.id.clone());
        book.holds.insert(hold.id.clone(), hold.clone());
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
        match hold.state {
            HoldState::Held if hold.expires_at_ms <= now => {
                Ok(book.give_back(id, HoldState::Expired))
            }
            HoldState::Held => Ok(book.give_back(id, HoldState::Released)),
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
                book.give_back(id, HoldState::Expired);
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
        let mut state = self.lock();
        let book = book_mut(&mut state, &id.sku()).map_err(|_| ReservationError::NotFound)?;
        let hold = book.hold(id)?;
        match hold.state {
            HoldState::Confirming => {
                let qty = u64::from(hold.qty.get());
                book.confirming -= qty;
                book.sold += qty;
                book.confirming_since.remove(id);
                let hold = book.holds.get_mut(id).expect("checked above");
                hold.state = HoldState::Confirmed;
                Ok(hold.clone())
            }
            HoldState::Confirmed => Ok(hold.clone()),
            state => Err(ReservationError::InvalidState { state }),
        }
    }

    async fn abort_confirm(&self, id: &ReservationId, to: AbortTo) -> StoreResult<Hold> {
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
                HoldState::Released
            }
        };
        let hold = book.holds.get_mut(id).expect("checked above");
        hold.state = new_state;
        Ok(hold.clone())
    }

    async fn expire_due(&self, sku: &Sku, batch: usize) -> StoreResult<Vec<Hold>> {
        let now = now_ms();
        let mut state = self.lock();
        let book = book_mut(&mut state, sku)?;
        let due: Vec<ReservationId> = book
            .expiry
            .iter()
            .take_while(|(expires, _)| *expires <= now)
            .take(batch)
            .map(|(_, id)| id.clone())
            .collect();
        Ok(due
            .iter()
            .map(|id| book.give_back(id, HoldState::Expired))
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

    async fn return_cancelled(
        &self,
        id: &ReservationId,
        buyer: &BuyerId,
        qty: Qty,
    ) -> StoreResult<bool> {
        let mut state = self.lock();
        let book = book_mut(&mut state, &id.sku())?;
        if book.returned.contains(id) {
            return Ok(false);
        }
        let units = u64::from(qty.get());
        let finishing = book.holds.get(id).is_some_and(|h| {
            h.state == HoldState::Confirming && h.qty == qty && book.confirming >= units
        });
        let sold = book.sold + if finishing { units } else { 0 };
        if sold < units {
            return Err(ReservationError::InvalidState {
                state: HoldState::Confirmed,
            });
        }
        if finishing {
            // Its units move confirming → sold → available: `sold` is left as it was.
            book.confirming -= units;
            book.confirming_since.remove(id);
            if let Some(hold) = book.holds.get_mut(id) {
                hold.state = HoldState::Confirmed;
            }
        } else {
            book.sold -= units;
        }
        book.available += units;
        book.take_from_buyer(buyer, units);
        book.returned.insert(id.clone());
        Ok(true)
    }

    async fn repair_counters(
        &self,
        sku: &Sku,
        stock: &ProductStock,
        sold: &SoldUnits,
    ) -> StoreResult<StockSnapshot> {
        stock.validate()?;
        let mut state = self.lock();
        let mut per_buyer: HashMap<BuyerId, u64> = sold.by_buyer.iter().cloned().collect();
        let (mut held, mut confirming) = (0, 0);
        let ordered: HashSet<&ReservationId> = sold.ordered.iter().collect();
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
        let committed = held + confirming + sold.total;
        if stock.total_stock < committed {
            // Checked before the book is created: a refused repair leaves no trace.
            return Err(ReservationError::StockBelowCommitted { committed });
        }
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
        book.sold = sold.total;
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
