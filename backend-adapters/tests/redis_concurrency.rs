//! The flash-sale races of `concurrency_cases` on one Redis (`REDIS_URL`), each on a fresh key
//! prefix (`--nocapture` shows the counts).

mod concurrency_cases;
mod redis_support;

use std::sync::Arc;

use redis_support::store_on;
use testkit::{delete_keys_under, scratch_prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_sells_exactly_the_stock() {
    let prefix = scratch_prefix("race");
    concurrency_cases::race_sells_exactly_the_stock(Arc::new(store_on(&prefix).await)).await;
    delete_keys_under(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_with_releases_confirms_and_expiries_balances() {
    let prefix = scratch_prefix("race");
    let store = Arc::new(store_on(&prefix).await);
    concurrency_cases::race_with_releases_confirms_and_expiries_balances(store).await;
    delete_keys_under(&prefix).await;
}
