//! The model-based property test against the in-memory store, and a check that the property
//! test catches a store that gets one rule wrong.

use std::panic::{AssertUnwindSafe, catch_unwind};

use async_trait::async_trait;
use reservation_core::testsuite::check_against_model;
use reservation_core::{
    AbortTo, BuyerId, ConfirmingHold, Hold, HoldState, InMemoryStore, ProductStock, Qty,
    Reservation, ReservationId, ReservationStore, ReserveRequest, Sku, SoldUnits, StockSnapshot,
    StoreResult,
};

#[test]
fn in_memory_store_agrees_with_the_model() {
    // In memory a case takes about a millisecond, so run many more than the Redis store does.
    check_against_model(1024, || async { InMemoryStore::new() });
}

/// An in-memory store whose `release` answers "released" without giving the units back.
struct ForgetfulRelease(InMemoryStore);

#[async_trait]
impl ReservationStore for ForgetfulRelease {
    async fn configure_product(
        &self,
        sku: &Sku,
        stock: &ProductStock,
    ) -> StoreResult<StockSnapshot> {
        self.0.configure_product(sku, stock).await
    }
    async fn reserve(&self, request: &ReserveRequest) -> StoreResult<Reservation> {
        self.0.reserve(request).await
    }
    async fn get_hold(&self, id: &ReservationId) -> StoreResult<Hold> {
        self.0.get_hold(id).await
    }
    async fn release(&self, id: &ReservationId, _buyer: &BuyerId) -> StoreResult<Hold> {
        let mut hold = self.0.get_hold(id).await?;
        hold.state = HoldState::Released;
        Ok(hold)
    }
    async fn begin_confirm(&self, id: &ReservationId, buyer: &BuyerId) -> StoreResult<Hold> {
        self.0.begin_confirm(id, buyer).await
    }
    async fn finish_confirm(&self, id: &ReservationId) -> StoreResult<Hold> {
        self.0.finish_confirm(id).await
    }
    async fn abort_confirm(&self, id: &ReservationId, to: AbortTo) -> StoreResult<Hold> {
        self.0.abort_confirm(id, to).await
    }
    async fn expire_due(&self, sku: &Sku, batch: usize) -> StoreResult<Vec<Hold>> {
        self.0.expire_due(sku, batch).await
    }
    async fn buyer_holds(
        &self,
        sku: &Sku,
        buyer: &BuyerId,
        limit: usize,
    ) -> StoreResult<Vec<Hold>> {
        self.0.buyer_holds(sku, buyer, limit).await
    }
    async fn confirming_holds(&self, sku: &Sku) -> StoreResult<Vec<ConfirmingHold>> {
        self.0.confirming_holds(sku).await
    }
    async fn return_cancelled(
        &self,
        id: &ReservationId,
        buyer: &BuyerId,
        qty: Qty,
    ) -> StoreResult<bool> {
        self.0.return_cancelled(id, buyer, qty).await
    }
    async fn begin_repair(&self, sku: &Sku) -> StoreResult<reservation_core::RepairStart> {
        self.0.begin_repair(sku).await
    }
    async fn repair_counters(
        &self,
        sku: &Sku,
        stock: &ProductStock,
        sold: &SoldUnits,
        ticket: &reservation_core::RepairTicket,
    ) -> StoreResult<StockSnapshot> {
        self.0.repair_counters(sku, stock, sold, ticket).await
    }
    async fn snapshot(&self, sku: &Sku) -> StoreResult<StockSnapshot> {
        self.0.snapshot(sku).await
    }
    async fn skus(&self) -> StoreResult<Vec<Sku>> {
        self.0.skus().await
    }
}

#[test]
fn the_model_catches_a_store_that_forgets_to_return_released_units() {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        check_against_model(256, || async { ForgetfulRelease(InMemoryStore::new()) });
    }));
    assert!(
        outcome.is_err(),
        "the property test passed a store that keeps released units"
    );
}
