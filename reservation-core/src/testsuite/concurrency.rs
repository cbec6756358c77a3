//! The flash-sale race: many tasks reserve far more than the stock at once, while some
//! release, some confirm, short holds expire and two sweepers run side by side. Which task
//! wins is up to the scheduler, so the case counts outcomes and checks that every unit is
//! accounted for, rather than predicting winners.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::sleep;

use super::*;
use crate::error::ReservationError;
use crate::types::{Hold, HoldState, ReservationId};

/// Units on sale in the race.
pub const RACE_STOCK: u64 = 500;
/// Reserving tasks.
const TASKS: u32 = 64;
/// Attempts per task: 64 × 80 = 5,120 attempts for ~10,000 units of demand.
const ATTEMPTS_PER_TASK: u32 = 80;
/// Lifetime of the holds meant to expire during the race.
const RACE_SHORT_TTL_MS: u64 = 30;
/// Hold batch of each `expire_due` call the sweepers make.
const SWEEP_BATCH: usize = 8;

/// What one reserving task did, for the final accounting.
#[derive(Default)]
struct Tally {
    attempts: u64,
    reserved_units: u64,
    sold_out: u64,
    insufficient: u64,
    /// Holds this task released (they must end `Released`).
    released: Vec<Hold>,
    /// Holds this task confirmed (they must end `Confirmed`).
    confirmed: Vec<Hold>,
    /// Holds this task left in `Confirming`.
    confirming: Vec<Hold>,
    /// Long holds left alone (they must end `Held`).
    kept: Vec<Hold>,
    /// Short holds left alone (they must end `Expired`, swept exactly once).
    short: Vec<Hold>,
}

fn units(holds: &[Hold]) -> u64 {
    holds.iter().map(|h| u64::from(h.qty.get())).sum()
}

/// One buyer hammering the SKU. What it does with its n-th long hold depends on its role
/// (`task % 4`): 0 releases every other one, 1 confirms every other one, 2 begins confirming
/// every other one and stops there, 3 keeps them all. One attempt in eight asks for a
/// short-lived hold, which the task leaves to expire.
async fn reserving_task<S: ReservationStore>(store: SharedStore<S>, task: u32) -> Tally {
    let mut tally = Tally::default();
    let buyer_name = format!("b{task}");
    // Long holds this task got so far: the sale sells out within a few attempts, so roles
    // act on every other hold rather than on attempt numbers.
    let mut long_holds = 0u32;
    for i in 0..ATTEMPTS_PER_TASK {
        let units = 1 + (task + i) % 3;
        let short = i % 8 == 3;
        let ttl = if short {
            RACE_SHORT_TTL_MS
        } else {
            LONG_TTL_MS
        };
        let req = request_with_ttl("A", &buyer_name, units, &format!("t{task}-{i}"), ttl);
        tally.attempts += 1;
        let hold = match store.reserve(&req).await {
            Ok(r) => {
                assert!(!r.replayed, "a fresh key replayed: {r:?}");
                assert_eq!((r.hold.state, r.hold.qty), (HoldState::Held, req.qty));
                r.hold
            }
            Err(ReservationError::SoldOut) => {
                tally.sold_out += 1;
                continue;
            }
            Err(ReservationError::InsufficientStock { available }) => {
                // Insufficient means some, but too few, units were left.
                assert!(available > 0 && available < u64::from(units), "{available}");
                tally.insufficient += 1;
                continue;
            }
            Err(other) => panic!("unexpected reserve error: {other:?}"),
        };
        tally.reserved_units += u64::from(units);
        if short {
            tally.short.push(hold);
            continue;
        }
        long_holds += 1;
        let act = long_holds % 2 == 1;
        match task % 4 {
            0 if act => {
                let released = store.release(&hold.id, &hold.buyer).await.unwrap();
                assert_eq!(released.state, HoldState::Released);
                tally.released.push(hold);
            }
            1 if act => {
                let done = confirm(&*store, &hold).await;
                assert_eq!(done.state, HoldState::Confirmed);
                tally.confirmed.push(hold);
            }
            2 if act => {
                let c = store.begin_confirm(&hold.id, &hold.buyer).await.unwrap();
                assert_eq!(c.state, HoldState::Confirming);
                tally.confirming.push(hold);
            }
            _ => tally.kept.push(hold),
        }
    }
    tally
}

/// Sweeps until told to stop, returning every hold it expired.
async fn sweeper<S: ReservationStore>(
    store: SharedStore<S>,
    sku: Sku,
    stop: Arc<AtomicBool>,
) -> Vec<Hold> {
    let mut expired = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let batch = store.expire_due(&sku, SWEEP_BATCH).await.unwrap();
        assert!(batch.len() <= SWEEP_BATCH, "batch size exceeded");
        if batch.is_empty() {
            sleep(Duration::from_millis(1)).await;
        }
        expired.extend(batch);
    }
    expired
}

/// Reads the counters while the race runs: they must add up at every instant.
async fn sampler<S: ReservationStore>(
    store: SharedStore<S>,
    sku: Sku,
    stop: Arc<AtomicBool>,
) -> u64 {
    let mut samples = 0;
    while !stop.load(Ordering::Relaxed) {
        let s = store.snapshot(&sku).await.unwrap();
        assert!(s.is_balanced(), "counters do not add up mid-race: {s:?}");
        for counter in [s.available, s.held, s.confirming, s.sold] {
            // A counter that went below zero would wrap or fail to parse.
            assert!(
                counter <= RACE_STOCK,
                "counter out of range mid-race: {s:?}"
            );
        }
        samples += 1;
        sleep(Duration::from_millis(1)).await;
    }
    samples
}

pub async fn concurrent_reservations_never_oversell<S: ReservationStore>(store: SharedStore<S>) {
    let sku = sku("A");
    // A per-buyer limit well above what one task can take, so only stock decides.
    store
        .configure_product(&sku, &stock(RACE_STOCK, 100_000, 3))
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let sweepers: Vec<_> = (0..2)
        .map(|_| tokio::spawn(sweeper(store.clone(), sku.clone(), stop.clone())))
        .collect();
    let sampling = tokio::spawn(sampler(store.clone(), sku.clone(), stop.clone()));
    let tasks: Vec<_> = (0..TASKS)
        .map(|t| tokio::spawn(reserving_task(store.clone(), t)))
        .collect();
    let mut tallies = Vec::new();
    for task in tasks {
        tallies.push(task.await.unwrap());
    }

    // Let the last short holds fall due, then stop the sweepers and sweep what is left.
    sleep(Duration::from_millis(3 * RACE_SHORT_TTL_MS)).await;
    stop.store(true, Ordering::Relaxed);
    let mut expired = Vec::new();
    for s in sweepers {
        expired.extend(s.await.unwrap());
    }
    let samples = sampling.await.unwrap();
    loop {
        let batch = store.expire_due(&sku, 64).await.unwrap();
        if batch.is_empty() {
            break;
        }
        expired.extend(batch);
    }

    // Every attempt got an answer, and demand outran the stock.
    let attempts: u64 = tallies.iter().map(|t| t.attempts).sum();
    let reserved: u64 = tallies.iter().map(|t| t.reserved_units).sum();
    let sold_out: u64 = tallies.iter().map(|t| t.sold_out).sum();
    let insufficient: u64 = tallies.iter().map(|t| t.insufficient).sum();
    let successes: usize = tallies
        .iter()
        .map(|t| {
            t.released.len() + t.confirmed.len() + t.confirming.len() + t.kept.len() + t.short.len()
        })
        .sum();
    assert_eq!(attempts, u64::from(TASKS * ATTEMPTS_PER_TASK));
    assert_eq!(successes as u64 + sold_out + insufficient, attempts);
    assert!(sold_out > 0, "the race never sold out");
    assert!(samples > 0, "the sampler never ran");

    // Each short hold expired exactly once, and nothing else expired.
    let expired_ids: Vec<&ReservationId> = expired.iter().map(|h| &h.id).collect();
    let unique: HashSet<&ReservationId> = expired_ids.iter().copied().collect();
    assert_eq!(unique.len(), expired_ids.len(), "a hold expired twice");
    let short: Vec<Hold> = tallies.iter().flat_map(|t| t.short.clone()).collect();
    let short_ids: HashSet<&ReservationId> = short.iter().map(|h| &h.id).collect();
    assert_eq!(
        unique, short_ids,
        "expired holds are exactly the short ones"
    );
    assert!(expired.iter().all(|h| h.state == HoldState::Expired));

    // Every successful reserve ends in the state its task left it in.
    let collect = |pick: fn(&Tally) -> &Vec<Hold>| -> Vec<Hold> {
        tallies.iter().flat_map(|t| pick(t).clone()).collect()
    };
    let released = collect(|t| &t.released);
    let confirmed = collect(|t| &t.confirmed);
    let confirming = collect(|t| &t.confirming);
    let kept = collect(|t| &t.kept);
    for (holds, state) in [
        (&released, HoldState::Released),
        (&confirmed, HoldState::Confirmed),
        (&confirming, HoldState::Confirming),
        (&kept, HoldState::Held),
        (&short, HoldState::Expired),
    ] {
        for h in holds {
            assert_eq!(store.get_hold(&h.id).await.unwrap().state, state, "{h:?}");
        }
    }
    assert_eq!(
        store.confirming_holds(&sku).await.unwrap().len(),
        confirming.len()
    );

    // Units: what was reserved, minus what came back, is what is held, confirming or sold.
    let (available, held, in_confirm, sold) = counters(&*store, &sku).await;
    let returned = units(&released) + units(&expired);
    assert_eq!(reserved - returned, held + in_confirm + sold);
    assert_eq!(
        (held, in_confirm, sold),
        (units(&kept), units(&confirming), units(&confirmed))
    );
    assert_eq!(available, RACE_STOCK - (held + in_confirm + sold));

    // Exactly the available units can still be taken, one by one, and then it is sold out.
    let mut drained = 0;
    loop {
        let key = format!("drain-{drained}");
        match store.reserve(&request("A", "drain", 1, &key)).await {
            Ok(_) => drained += 1,
            Err(ReservationError::SoldOut) => break,
            Err(other) => panic!("unexpected drain error: {other:?}"),
        }
    }
    assert_eq!(drained, available);
    assert_eq!(counters(&*store, &sku).await.0, 0);

    // The exact counts of this run, for the record (`cargo test -- --nocapture`).
    println!(
        "race: {attempts} attempts, {successes} holds ({reserved} units), {sold_out} sold out, \
         {insufficient} insufficient; returned {} released + {} expired units; end: \
         held {held}, confirming {in_confirm}, sold {sold}, available {available} \
         (drained one by one); {samples} mid-race snapshots balanced",
        units(&released),
        units(&expired),
    );
}

/// Rounds of [`refused_and_successful_requests_under_one_key_keep_one_binding`].
const KEY_RACE_ROUNDS: usize = 200;

pub async fn refused_and_successful_requests_under_one_key_keep_one_binding<S: ReservationStore>(
    store: SharedStore<S>,
) {
    // Two copies of one request race the release of the last unit: the copy whose check runs
    // before the release is refused (and cleans up after itself), the other makes the hold or
    // replays it. Whichever order their steps take, a key that made a hold stays bound to it
    // (another body under the key is refused, the same body replays it), and a key that was
    // only refused stays free. Each copy is sent once, so no later try can mend a lost binding.
    let a = product(&*store, "A", 1).await;
    product(&*store, "B", 1_000).await;
    let alice = buyer("alice");
    let (mut made_rounds, mut refused_copies) = (0, 0);
    for round in 0..KEY_RACE_ROUNDS {
        let blocker = hold(&*store, "A", "bob", 1, &format!("bob-{round}")).await;
        let key = format!("retry-{round}");
        let doomed_key = format!("doomed-{round}");
        let send = |req: ReserveRequest| {
            let store = store.clone();
            tokio::spawn(async move { store.reserve(&req).await })
        };
        let first = send(request("A", "alice", 1, &key));
        let release = {
            let store = store.clone();
            tokio::spawn(async move { store.release(&blocker.id, &blocker.buyer).await })
        };
        let second = send(request("A", "alice", 1, &key));
        // Never granted: A never has 2 units.
        let doomed = send(request("A", "alice", 2, &doomed_key));
        release.await.unwrap().unwrap();
        let mut holds = Vec::new();
        for copy in [first, second] {
            match copy.await.unwrap() {
                Ok(r) => holds.push(r),
                Err(ReservationError::SoldOut) => refused_copies += 1,
                Err(other) => panic!("round {round}: unexpected answer {other:?}"),
            }
        }
        match doomed.await.unwrap() {
            Err(ReservationError::SoldOut | ReservationError::InsufficientStock { .. }) => {}
            other => panic!("round {round}: the doomed request was not refused: {other:?}"),
        }

        if let Some(made) = holds.first() {
            made_rounds += 1;
            let id = made.hold.id.clone();
            assert!(holds.iter().all(|r| r.hold.id == id), "round {round}");
            assert_eq!(
                holds.iter().filter(|r| !r.replayed).count(),
                1,
                "round {round}"
            );
            let err = store.reserve(&request("B", "alice", 1, &key)).await;
            assert_eq!(
                err.unwrap_err(),
                ReservationError::IdempotencyMismatch,
                "round {round}: the hold's key came loose"
            );
            let again = store
                .reserve(&request("A", "alice", 1, &key))
                .await
                .unwrap();
            assert!(again.replayed && again.hold.id == id, "round {round}");
            store.release(&id, &alice).await.unwrap();
        } else {
            // Both copies were refused: the key is as free as if never used.
            let free = store
                .reserve(&request("B", "alice", 1, &key))
                .await
                .unwrap_or_else(|e| panic!("round {round}: a refused key stayed bound: {e}"));
            store.release(&free.hold.id, &alice).await.unwrap();
        }
        let free = store
            .reserve(&request("B", "alice", 3, &doomed_key))
            .await
            .unwrap_or_else(|e| panic!("round {round}: the doomed key stayed bound: {e}"));
        assert!(!free.replayed);
        store.release(&free.hold.id, &alice).await.unwrap();
    }
    assert_eq!(counters(&*store, &a).await, (1, 0, 0, 0));
    println!(
        "key race: {KEY_RACE_ROUNDS} rounds, {made_rounds} with a hold, {refused_copies} \
         copies refused"
    );
}
