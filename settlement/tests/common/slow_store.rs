//! A `ReservationStore` decorator whose `configure_product` can be made slow (Redis answering
//! late while an ops edit waits on it); it tells a test when such a call is under way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use reservation_core::{
    AbortTo, BuyerId, ConfirmingHold, Hold, ProductStock, Qty, Reservation, ReservationId,
    ReservationStore, ReserveRequest, Sku, SoldUnits, StockSnapshot, StoreResult,
};

pub struct SlowStore {
    inner: Arc<dyn ReservationStore>,
    /// Delay of each `configure_product`, in ms (0: none).
    configure_delay_ms: AtomicU64,
    /// `configure_product` calls waiting out their delay right now.
    configuring: AtomicUsize,
}

impl SlowStore {
    pub fn new(inner: Arc<dyn ReservationStore>) -> Self {
        SlowStore {
            inner,
            configure_delay_ms: AtomicU64::new(0),
            configuring: AtomicUsize::new(0),
        }
    }

    pub fn set_configure_delay(&self, delay: Duration) {
        self.configure_delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Waits until a `configure_product` call is in its delay (at most 5 s).
    pub async fn wait_configuring(&self) {
        for _ in 0..500 {
            if self.configuring.load(Ordering::SeqCst) > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no configure_product call started within 5 s");
    }
}

#[async_trait]
impl ReservationStore for SlowStore {
    async fn configure_product(
        &self,
        sku: &Sku,
        stock: &ProductStock,
    ) -> StoreResult<StockSnapshot> {
        let delay = self.configure_delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            self.configuring.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(delay)).await;
            self.configuring.fetch_sub(1, Ordering::SeqCst);
        }
        self.inner.configure_product(sku, stock).await
    }
    async fn reserve(&self, request: &ReserveRequest) -> StoreResult<Reservation> {
        self.inner.reserve(request).await
    }
    async fn get_hold(&self, id: &ReservationId) -> StoreResult<Hold> {
        self.inner.get_hold(id).await
    }
    async fn release(&self, id: &ReservationId, buyer: &BuyerId) -> StoreResult<Hold> {
        self.inner.release(id, buyer).await
    }
    async fn begin_confirm(&self, id: &ReservationId, buyer: &BuyerId) -> StoreResult<Hold> {
        self.inner.begin_confirm(id, buyer).await
    }
    async fn finish_confirm(&self, id: &ReservationId) -> StoreResult<Hold> {
        self.inner.finish_confirm(id).await
    }
    async fn abort_confirm(&self, id: &ReservationId, to: AbortTo) -> StoreResult<Hold> {
        self.inner.abort_confirm(id, to).await
    }
    async fn expire_due(&self, sku: &Sku, batch: usize) -> StoreResult<Vec<Hold>> {
        self.inner.expire_due(sku, batch).await
    }
    async fn buyer_holds(
        &self,
        sku: &Sku,
        buyer: &BuyerId,
        limit: usize,
    ) -> StoreResult<Vec<Hold>> {
        self.inner.buyer_holds(sku, buyer, limit).await
    }
    async fn confirming_holds(&self, sku: &Sku) -> StoreResult<Vec<ConfirmingHold>> {
        self.inner.confirming_holds(sku).await
    }
    async fn return_cancelled(
        &self,
        id: &ReservationId,
        buyer: &BuyerId,
        qty: Qty,
    ) -> StoreResult<bool> {
        self.inner.return_cancelled(id, buyer, qty).await
    }
    async fn begin_repair(&self, sku: &Sku) -> StoreResult<reservation_core::RepairStart> {
        self.inner.begin_repair(sku).await
    }
    async fn repair_counters(
        &self,
        sku: &Sku,
        stock: &ProductStock,
        sold: &SoldUnits,
        ticket: &reservation_core::RepairTicket,
    ) -> StoreResult<StockSnapshot> {
        self.inner.repair_counters(sku, stock, sold, ticket).await
    }
    async fn snapshot(&self, sku: &Sku) -> StoreResult<StockSnapshot> {
        self.inner.snapshot(sku).await
    }
    async fn skus(&self) -> StoreResult<Vec<Sku>> {
        self.inner.skus().await
    }
}
