//! A `ReservationStore` decorator that counts every call, so a test can assert that a
//! request never reached the store at all (reads included), and can lose the answers of
//! reserves that did happen (a Redis reply timing out after the script ran).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use reservation_core::{
    AbortTo, BuyerId, ConfirmingHold, Hold, ProductStock, Qty, Reservation, ReservationId,
    ReservationStore, ReserveRequest, Sku, SoldUnits, StockSnapshot, StoreResult,
};

pub struct CountingStore {
    inner: Arc<dyn ReservationStore>,
    calls: AtomicUsize,
    /// The next this-many reserves run, then answer a retryable backend error.
    pub lose_reserve_answers: AtomicUsize,
}

impl CountingStore {
    pub fn new(inner: Arc<dyn ReservationStore>) -> Self {
        CountingStore {
            inner,
            calls: AtomicUsize::new(0),
            lose_reserve_answers: AtomicUsize::new(0),
        }
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn count(&self) -> &dyn ReservationStore {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.as_ref()
    }
}

#[async_trait]
impl ReservationStore for CountingStore {
    async fn configure_product(
        &self,
        sku: &Sku,
        stock: &ProductStock,
    ) -> StoreResult<StockSnapshot> {
        self.count().configure_product(sku, stock).await
    }
    async fn reserve(&self, request: &ReserveRequest) -> StoreResult<Reservation> {
        let reservation = self.count().reserve(request).await?;
        let lose =
            self.lose_reserve_answers
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if lose.is_ok() {
            return Err(reservation_core::ReservationError::backend(
                true,
                "timed out (answer lost on purpose)",
            ));
        }
        Ok(reservation)
    }
    async fn get_hold(&self, id: &ReservationId) -> StoreResult<Hold> {
        self.count().get_hold(id).await
    }
    async fn release(&self, id: &ReservationId, buyer: &BuyerId) -> StoreResult<Hold> {
        self.count().release(id, buyer).await
    }
    async fn begin_confirm(&self, id: &ReservationId, buyer: &BuyerId) -> StoreResult<Hold> {
        self.count().begin_confirm(id, buyer).await
    }
    async fn finish_confirm(&self, id: &ReservationId) -> StoreResult<Hold> {
        self.count().finish_confirm(id).await
    }
    async fn abort_confirm(&self, id: &ReservationId, to: AbortTo) -> StoreResult<Hold> {
        self.count().abort_confirm(id, to).await
    }
    async fn expire_due(&self, sku: &Sku, batch: usize) -> StoreResult<Vec<Hold>> {
        self.count().expire_due(sku, batch).await
    }
    async fn buyer_holds(
        &self,
        sku: &Sku,
        buyer: &BuyerId,
        limit: usize,
    ) -> StoreResult<Vec<Hold>> {
        self.count().buyer_holds(sku, buyer, limit).await
    }
    async fn confirming_holds(&self, sku: &Sku) -> StoreResult<Vec<ConfirmingHold>> {
        self.count().confirming_holds(sku).await
    }
    async fn return_cancelled(
        &self,
        id: &ReservationId,
        buyer: &BuyerId,
        qty: Qty,
    ) -> StoreResult<bool> {
        self.count().return_cancelled(id, buyer, qty).await
    }
    async fn begin_repair(&self, sku: &Sku) -> StoreResult<reservation_core::RepairStart> {
        self.count().begin_repair(sku).await
    }
    async fn repair_counters(
        &self,
        sku: &Sku,
        stock: &ProductStock,
        sold: &SoldUnits,
        ticket: &reservation_core::RepairTicket,
    ) -> StoreResult<StockSnapshot> {
        self.count().repair_counters(sku, stock, sold, ticket).await
    }
    async fn snapshot(&self, sku: &Sku) -> StoreResult<StockSnapshot> {
        self.count().snapshot(sku).await
    }
    async fn skus(&self) -> StoreResult<Vec<Sku>> {
        self.count().skus().await
    }

    /// Not counted: the dependency monitor's periodic check, not a request's call.
    async fn ensure_ready(&self) -> StoreResult<bool> {
        self.inner.ensure_ready().await
    }
}
