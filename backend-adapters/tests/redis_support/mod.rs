//! Shared setup of the Redis integration tests: a store on a fresh key prefix against the
//! Redis at `testkit::redis_url` (`REDIS_URL`, default `redis://127.0.0.1:6379`), keys read and
//! cleaned up with testkit's helpers. An unreachable Redis fails the test loudly; these tests
//! never skip.

#![allow(dead_code)] // each test crate uses its own part of this module

use async_trait::async_trait;
use backend_adapters::redis::{RedisStore, RedisStoreConfig};
use reservation_core::{
    AbortTo, BuyerId, ConfirmingHold, Hold, ProductStock, Qty, Reservation, ReservationId,
    ReservationStore, ReserveRequest, Sku, SoldUnits, StockSnapshot, StoreResult,
};

/// A store on its own prefix. Panics, naming the URL, when Redis is unreachable.
pub async fn fresh_store() -> RedisStore {
    store_on(&testkit::scratch_prefix("store")).await
}

pub async fn store_on(prefix: &str) -> RedisStore {
    store_at(&testkit::redis_url(), prefix).await
}

/// A store on `prefix` at `url` (one server or a cluster). Panics, naming the URL, when it is
/// unreachable.
pub async fn store_at(url: &str, prefix: &str) -> RedisStore {
    let url = url.to_owned();
    let config = RedisStoreConfig {
        prefix: prefix.to_owned(),
        ..RedisStoreConfig::default()
    };
    match RedisStore::connect(&url, config).await {
        Ok(store) => store,
        Err(e) => panic!(
            "Redis at {url} is unreachable: {e}. These tests need a real Redis (set REDIS_URL)."
        ),
    }
}

/// A store on a fresh prefix that deletes its keys when dropped, for the shared conformance
/// cases and the model test, which hand the store over and give no teardown hook.
pub struct SelfCleaningStore(RedisStore, Vec<String>);

pub async fn self_cleaning_store() -> SelfCleaningStore {
    SelfCleaningStore(fresh_store().await, vec![testkit::redis_url()])
}

/// The same against `url` (a server or a cluster) whose keys live on the plain `nodes` URLs.
pub async fn self_cleaning_store_at(url: &str, nodes: Vec<String>) -> SelfCleaningStore {
    SelfCleaningStore(
        store_at(url, &testkit::scratch_prefix("store")).await,
        nodes,
    )
}

impl Drop for SelfCleaningStore {
    fn drop(&mut self) {
        // Blocking I/O in drop is fine in a test.
        testkit::unlink_keys_under(&self.1, self.0.prefix());
    }
}

#[async_trait]
impl ReservationStore for SelfCleaningStore {
    async fn configure_product(&self, sku: &Sku, s: &ProductStock) -> StoreResult<StockSnapshot> {
        self.0.configure_product(sku, s).await
    }
    async fn reserve(&self, request: &ReserveRequest) -> StoreResult<Reservation> {
        self.0.reserve(request).await
    }
    async fn get_hold(&self, id: &ReservationId) -> StoreResult<Hold> {
        self.0.get_hold(id).await
    }
    async fn release(&self, id: &ReservationId, buyer: &BuyerId) -> StoreResult<Hold> {
        self.0.release(id, buyer).await
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
    async fn return_cancelled(&self, id: &ReservationId, b: &BuyerId, q: Qty) -> StoreResult<bool> {
        self.0.return_cancelled(id, b, q).await
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
