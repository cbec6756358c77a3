//! The flash-sale races of `concurrency_cases` on one Redis (`REDIS_URL`), each on a fresh key
//! prefix (`--nocapture` shows the counts).

mod concurrency_cases;
mod redis_support;

use std::sync::Arc;

use redis_support::{clean_up, fresh_prefix, store_on};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_sells_exactly_the_stock() {
    let prefix = fresh_prefix();
    concurrency_cases::race_sells_exactly_the_stock(Arc::new(store_on(&prefix).await)).await;
    clean_up(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_with_releases_confirms_and_expiries_balances() {
    let prefix = fresh_prefix();
    let store = Arc::new(store_on(&prefix).await);
    concurrency_cases::race_with_releases_confirms_and_expiries_balances(store).await;
    clean_up(&prefix).await;
}
