//! Shared setup of the Redis integration tests: a store on a fresh key prefix against the
//! Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`). An unreachable Redis fails the
//! test loudly; these tests never skip.

#![allow(dead_code)] // each test crate uses its own part of this module

use async_trait::async_trait;
use backend_adapters::redis::{RedisStore, RedisStoreConfig};
use redis::aio::MultiplexedConnection;
use reservation_core::{
    AbortTo, BuyerId, ConfirmingHold, Hold, ProductStock, Qty, Reservation, ReservationId,
    ReservationStore, ReserveRequest, Sku, SoldUnits, StockSnapshot, StoreResult,
};

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test uses.
pub fn fresh_prefix() -> String {
    format!("sgtest:{}", uuid::Uuid::new_v4().simple())
}

/// A store on its own prefix. Panics, naming the URL, when Redis is unreachable.
pub async fn fresh_store() -> RedisStore {
    store_on(&fresh_prefix()).await
}

pub async fn store_on(prefix: &str) -> RedisStore {
    store_at(&redis_url(), prefix).await
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

/// A plain connection for looking at keys behind the store's back.
pub async fn raw_connection() -> MultiplexedConnection {
    let url = redis_url();
    let connect = async {
        redis::Client::open(url.as_str())?
            .get_multiplexed_async_connection()
            .await
    };
    match connect.await {
        Ok(conn) => conn,
        Err(e) => panic!("Redis at {url} is unreachable: {e}"),
    }
}

/// Every key under `prefix`.
pub async fn keys_under(prefix: &str) -> Vec<String> {
    let mut conn = raw_connection().await;
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("SCAN failed: {e}"));
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys
}

/// Deletes every key under `prefix` (end of a test).
pub async fn clean_up(prefix: &str) {
    let keys = keys_under(prefix).await;
    let mut conn = raw_connection().await;
    for chunk in keys.chunks(500) {
        redis::cmd("DEL")
            .arg(chunk)
            .query_async::<()>(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("DEL failed: {e}"));
    }
}

/// A store on a fresh prefix that deletes its keys when dropped, for the shared conformance
/// cases and the model test, which hand the store over and give no teardown hook.
pub struct SelfCleaningStore(RedisStore, Vec<String>);

pub async fn self_cleaning_store() -> SelfCleaningStore {
    SelfCleaningStore(fresh_store().await, vec![redis_url()])
}

/// The same against `url` (a server or a cluster) whose keys live on the plain `nodes` URLs.
pub async fn self_cleaning_store_at(url: &str, nodes: Vec<String>) -> SelfCleaningStore {
    SelfCleaningStore(store_at(url, &fresh_prefix()).await, nodes)
}

/// Deletes every key under `prefix` on each node (blocking), one key per UNLINK so that keys
/// of different cluster slots never meet in one command. A failure only leaves keys behind.
pub fn unlink_all_under(nodes: &[String], prefix: &str) {
    use redis::Commands;
    let pattern = format!("{prefix}:*");
    for node in nodes {
        let Ok(mut conn) = redis::Client::open(node.as_str()).and_then(|c| c.get_connection())
        else {
            continue;
        };
        let keys: Vec<String> = match conn.scan_match(&pattern) {
            Ok(iter) => iter.filter_map(Result::ok).collect(),
            Err(_) => continue,
        };
        let mut pipe = redis::pipe();
        for key in &keys {
            pipe.unlink(key).ignore();
        }
        let _ = pipe.exec(&mut conn);
    }
}

impl Drop for SelfCleaningStore {
    fn drop(&mut self) {
        // Blocking I/O in drop is fine in a test.
        unlink_all_under(&self.1, self.0.prefix());
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
