//! The flash sale on a real Redis or Redis Cluster, with printed counts (`--nocapture` shows
//! them). `redis_concurrency.rs` runs it on one server, `cluster_concurrency.rs` on a cluster.
//!
//! 1. `race_sells_exactly_the_stock`: 64 tasks make 5,120 attempts (mixed 1–3 units) at a
//!    stock of 500 with nothing ever returned: exactly 500 units are reserved, none more.
//! 2. `race_with_releases_confirms_and_expiries_balances`: the same race while tasks release
//!    and confirm some holds, a third of the holds expire after 30 ms and two sweepers expire
//!    them side by side: every unit is accounted for, each short hold expires exactly once.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backend_adapters::redis::RedisStore;
use reservation_core::testsuite::{buyer, qty, sku, stock};
use reservation_core::{
    Hold, HoldState, IdempotencyKey, ReservationError, ReservationStore, ReserveRequest,
};

const STOCK: u64 = 500;
const TASKS: u32 = 64;
const ATTEMPTS_PER_TASK: u32 = 80; // 5,120 attempts, > 10x the stock
const SHORT_TTL_MS: u64 = 30;
const LONG_TTL_MS: u64 = 600_000;

fn attempt(sku_name: &str, task: u32, n: u32, ttl_ms: u64) -> ReserveRequest {
    ReserveRequest {
        sku: sku(sku_name),
        // One buyer per task, so the per-buyer limit (set high) never decides.
        buyer: buyer(&format!("buyer-{task}")),
        qty: qty(1 + (task + n) % 3),
        idempotency_key: IdempotencyKey::parse(&format!("k-{n}"))
            .unwrap_or_else(|e| panic!("key: {e}")),
        hold_ttl_ms: ttl_ms,
    }
}

async fn configure(store: &RedisStore, name: &str) {
    store
        .configure_product(&sku(name), &stock(STOCK, 1_000_000, 3))
        .await
        .unwrap_or_else(|e| panic!("configure: {e}"));
}

/// Outcome counts of one task.
#[derive(Default, Debug)]
struct Tally {
    units: u64,
    holds: u64,
    sold_out: u64,
    insufficient: u64,
    released: Vec<Hold>,
    confirmed: Vec<Hold>,
    kept: Vec<Hold>,
    short: Vec<Hold>,
}

pub async fn race_sells_exactly_the_stock(store: Arc<RedisStore>) {
    configure(&store, "RACE").await;

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            for n in 0..ATTEMPTS_PER_TASK {
                match store.reserve(&attempt("RACE", task, n, LONG_TTL_MS)).await {
                    Ok(r) => {
                        assert!(!r.replayed);
                        t.units += u64::from(r.hold.qty.get());
                        t.holds += 1;
                    }
                    Err(ReservationError::SoldOut) => t.sold_out += 1,
                    Err(ReservationError::InsufficientStock { .. }) => t.insufficient += 1,
                    Err(e) => panic!("unexpected answer: {e:?}"),
                }
            }
            t
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let t = task.await.unwrap_or_else(|e| panic!("task: {e}"));
        total.units += t.units;
        total.holds += t.holds;
        total.sold_out += t.sold_out;
        total.insufficient += t.insufficient;
    }
    let s = store
        .snapshot(&sku("RACE"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "race: {} attempts by {TASKS} tasks on stock {STOCK}: {} holds for {} units, {} sold_out, {} insufficient_stock; counters {s:?}",
        TASKS * ATTEMPTS_PER_TASK,
        total.holds,
        total.units,
        total.sold_out,
        total.insufficient
    );
    assert_eq!(
        total.units, STOCK,
        "units reserved must be exactly the stock"
    );
    assert_eq!(
        total.holds + total.sold_out + total.insufficient,
        u64::from(TASKS * ATTEMPTS_PER_TASK)
    );
    assert_eq!(
        (s.available, s.held, s.confirming, s.sold),
        (0, STOCK, 0, 0)
    );
    assert!(s.is_balanced());
}

pub async fn race_with_releases_confirms_and_expiries_balances(store: Arc<RedisStore>) {
    configure(&store, "CHURN").await;
    let churn = sku("CHURN");
    let racing = Arc::new(AtomicBool::new(true));

    // Two sweepers side by side, as two gateway replicas would run them.
    let mut sweepers = Vec::new();
    for _ in 0..2 {
        let (store, racing, churn) = (Arc::clone(&store), Arc::clone(&racing), churn.clone());
        sweepers.push(tokio::spawn(async move {
            let mut expired = Vec::new();
            while racing.load(Ordering::Relaxed) {
                let batch = store
                    .expire_due(&churn, 8)
                    .await
                    .unwrap_or_else(|e| panic!("sweep: {e}"));
                if batch.is_empty() {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                expired.extend(batch);
            }
            expired
        }));
    }

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut t = Tally::default();
            for n in 0..ATTEMPTS_PER_TASK {
                let short = n % 3 == 0;
                let ttl = if short { SHORT_TTL_MS } else { LONG_TTL_MS };
                let hold = match store.reserve(&attempt("CHURN", task, n, ttl)).await {
                    Ok(r) => r.hold,
                    Err(ReservationError::SoldOut) => {
                        t.sold_out += 1;
                        continue;
                    }
                    Err(ReservationError::InsufficientStock { .. }) => {
                        t.insufficient += 1;
                        continue;
                    }
                    Err(e) => panic!("unexpected answer: {e:?}"),
                };
                t.units += u64::from(hold.qty.get());
                t.holds += 1;
                if short {
                    t.short.push(hold); // left to the sweepers
                } else if n % 4 == 1 {
                    let released = store
                        .release(&hold.id, &hold.buyer)
                        .await
                        .unwrap_or_else(|e| panic!("release: {e}"));
                    assert_eq!(released.state, HoldState::Released);
                    t.released.push(hold);
                } else if n % 4 == 2 {
                    store
                        .begin_confirm(&hold.id, &hold.buyer)
                        .await
                        .unwrap_or_else(|e| panic!("begin_confirm: {e}"));
                    store
                        .finish_confirm(&hold.id)
                        .await
                        .unwrap_or_else(|e| panic!("finish_confirm: {e}"));
                    t.confirmed.push(hold);
                } else {
                    t.kept.push(hold);
                }
            }
            t
        }));
    }
    let mut total = Tally::default();
    for task in tasks {
        let t = task.await.unwrap_or_else(|e| panic!("task: {e}"));
        total.units += t.units;
        total.holds += t.holds;
        total.sold_out += t.sold_out;
        total.insufficient += t.insufficient;
        total.released.extend(t.released);
        total.confirmed.extend(t.confirmed);
        total.kept.extend(t.kept);
        total.short.extend(t.short);
    }
    // Let the last short holds fall due, give the sweepers time, then stop them.
    tokio::time::sleep(Duration::from_millis(4 * SHORT_TTL_MS)).await;
    let kept: u64 = total.kept.iter().map(|h| u64::from(h.qty.get())).sum();
    for _ in 0..500 {
        let s = store
            .snapshot(&churn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if s.held == kept {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    racing.store(false, Ordering::Relaxed);
    let mut expired = Vec::new();
    let mut per_sweeper = Vec::new();
    for sweeper in sweepers {
        let batch = sweeper.await.unwrap_or_else(|e| panic!("sweeper: {e}"));
        per_sweeper.push(batch.len());
        expired.extend(batch);
    }

    let units = |holds: &[Hold]| holds.iter().map(|h| u64::from(h.qty.get())).sum::<u64>();
    let s = store
        .snapshot(&churn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "churn: {} attempts by {TASKS} tasks on stock {STOCK}: {} holds for {} units \
         ({} released, {} confirmed, {} kept, {} short), {} sold_out, {} insufficient_stock; \
         expired {} holds ({} units) by sweepers {:?}; counters available {} held {} confirming {} sold {} total {}",
        TASKS * ATTEMPTS_PER_TASK,
        total.holds,
        total.units,
        total.released.len(),
        total.confirmed.len(),
        total.kept.len(),
        total.short.len(),
        total.sold_out,
        total.insufficient,
        expired.len(),
        units(&expired),
        per_sweeper,
        s.available,
        s.held,
        s.confirming,
        s.sold,
        s.total_stock
    );

    // Each short hold expired exactly once, by one of the two sweepers.
    let expired_ids: HashSet<_> = expired.iter().map(|h| h.id.clone()).collect();
    assert_eq!(expired_ids.len(), expired.len(), "a hold was expired twice");
    let short_ids: HashSet<_> = total.short.iter().map(|h| h.id.clone()).collect();
    assert_eq!(expired_ids, short_ids);
    // Every unit is somewhere, and nowhere twice.
    assert_eq!(s.sold, units(&total.confirmed));
    assert_eq!(s.held, units(&total.kept));
    assert_eq!(s.confirming, 0);
    assert_eq!(s.available, STOCK - s.held - s.sold);
    assert!(s.is_balanced());
    assert_eq!(
        total.units,
        units(&total.released) + units(&total.confirmed) + units(&total.kept) + units(&expired)
    );
    // The race really ran out of stock at some point.
    assert!(total.sold_out + total.insufficient > 0);
}
