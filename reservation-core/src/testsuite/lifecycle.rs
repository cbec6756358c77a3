//! Conformance cases of a hold's life after the reserve: release, confirm, expiry, and
//! unknown ids. Each takes a fresh store and asserts what a caller sees: the answer, and the
//! counters afterwards. Expiry uses short hold TTLs and real sleeps (Redis `TIME` is the
//! Redis store's clock).

use tokio::time::sleep;

use super::*;
use crate::error::ReservationError;
use crate::types::{AbortTo, HoldState, ReservationId};

// ---------------------------------------------------------------------------------------
// release

pub async fn release_returns_units_and_is_idempotent<S: ReservationStore>(store: SharedStore<S>) {
    let sku = product(&*store, "A", 10).await;
    let h = hold(&*store, "A", "alice", 3, "k1").await;
    let released = store.release(&h.id, &h.buyer).await.unwrap();
    assert_eq!(released.state, HoldState::Released);
    assert_eq!(released.id, h.id);
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));

    let again = store.release(&h.id, &h.buyer).await.unwrap();
    assert_eq!(again.state, HoldState::Released);
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
    assert_eq!(
        store.get_hold(&h.id).await.unwrap().state,
        HoldState::Released
    );
}

pub async fn release_by_another_buyer_is_not_owner<S: ReservationStore>(store: SharedStore<S>) {
    let sku = product(&*store, "A", 10).await;
    let h = hold(&*store, "A", "alice", 3, "k1").await;
    let err = store.release(&h.id, &buyer("mallory")).await;
    assert_eq!(err.unwrap_err(), ReservationError::NotOwner);
    assert_eq!(counters(&*store, &sku).await, (7, 3, 0, 0));
    assert_eq!(store.get_hold(&h.id).await.unwrap().state, HoldState::Held);
}

pub async fn release_of_confirming_or_confirmed_hold_is_invalid_state<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 10).await;
    let a = hold(&*store, "A", "alice", 1, "k1").await;
    store.begin_confirm(&a.id, &a.buyer).await.unwrap();
    let err = store.release(&a.id, &a.buyer).await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::InvalidState {
            state: HoldState::Confirming
        }
    );
    let b = hold(&*store, "A", "alice", 2, "k2").await;
    confirm(&*store, &b).await;
    let err = store.release(&b.id, &b.buyer).await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::InvalidState {
            state: HoldState::Confirmed
        }
    );
    assert_eq!(counters(&*store, &sku).await, (7, 0, 1, 2));
}

pub async fn release_of_a_due_hold_expires_it_once<S: ReservationStore>(store: SharedStore<S>) {
    let sku = product(&*store, "A", 10).await;
    let h = store
        .reserve(&request_with_ttl("A", "alice", 2, "k1", SHORT_TTL_MS))
        .await
        .unwrap()
        .hold;
    sleep(PAST_SHORT_TTL).await;
    let released = store.release(&h.id, &h.buyer).await.unwrap();
    assert_eq!(released.state, HoldState::Expired);
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
    // The sweeper finds nothing left to return.
    assert!(store.expire_due(&sku, 10).await.unwrap().is_empty());
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
}

// ---------------------------------------------------------------------------------------
// confirm

pub async fn begin_confirm_moves_held_to_confirming<S: ReservationStore>(store: SharedStore<S>) {
    let sku = product(&*store, "A", 10).await;
    let h = hold(&*store, "A", "alice", 3, "k1").await;
    let c = store.begin_confirm(&h.id, &h.buyer).await.unwrap();
    assert_eq!(c.state, HoldState::Confirming);
    assert_eq!((c.id.clone(), c.qty), (h.id.clone(), h.qty));
    assert_eq!(counters(&*store, &sku).await, (7, 0, 3, 0));
    assert_eq!(
        store.get_hold(&h.id).await.unwrap().state,
        HoldState::Confirming
    );
}

pub async fn begin_confirm_by_another_buyer_is_not_owner<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 10).await;
    let h = hold(&*store, "A", "alice", 3, "k1").await;
    let err = store.begin_confirm(&h.id, &buyer("mallory")).await;
    assert_eq!(err.unwrap_err(), ReservationError::NotOwner);
    assert_eq!(counters(&*store, &sku).await, (7, 3, 0, 0));
    assert_eq!(store.get_hold(&h.id).await.unwrap().state, HoldState::Held);
}

pub async fn begin_confirm_of_an_expired_hold_is_expired_and_returns_units_once<
    S: ReservationStore,
>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 10).await;
    let h = store
        .reserve(&request_with_ttl("A", "alice", 3, "k1", SHORT_TTL_MS))
        .await
        .unwrap()
        .hold;
    sleep(PAST_SHORT_TTL).await;
    let err = store.begin_confirm(&h.id, &h.buyer).await;
    assert_eq!(err.unwrap_err(), ReservationError::Expired);
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));

    // Nothing returns the units a second time.
    let err = store.begin_confirm(&h.id, &h.buyer).await;
    assert_eq!(err.unwrap_err(), ReservationError::Expired);
    assert!(store.expire_due(&sku, 10).await.unwrap().is_empty());
    let released = store.release(&h.id, &h.buyer).await.unwrap();
    assert_eq!(released.state, HoldState::Expired);
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
    assert_eq!(
        store.get_hold(&h.id).await.unwrap().state,
        HoldState::Expired
    );
}

pub async fn begin_confirm_of_a_released_hold_is_released<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 10).await;
    let h = hold(&*store, "A", "alice", 3, "k1").await;
    store.release(&h.id, &h.buyer).await.unwrap();
    let err = store.begin_confirm(&h.id, &h.buyer).await;
    assert_eq!(err.unwrap_err(), ReservationError::Released);
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
}

pub async fn begin_confirm_again_returns_the_hold_unchanged<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 10).await;
    let h = hold(&*store, "A", "alice", 3, "k1").await;
    let first = store.begin_confirm(&h.id, &h.buyer).await.unwrap();
    let again = store.begin_confirm(&h.id, &h.buyer).await.unwrap();
    assert_eq!(again, first);
    assert_eq!(counters(&*store, &sku).await, (7, 0, 3, 0));

    store.finish_confirm(&h.id).await.unwrap();
    let after = store.begin_confirm(&h.id, &h.buyer).await.unwrap();
    assert_eq!(after.state, HoldState::Confirmed);
    assert_eq!(counters(&*store, &sku).await, (7, 0, 0, 3));
}

pub async fn finish_confirm_moves_units_to_sold_and_is_idempotent<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 10).await;
    let h = hold(&*store, "A", "alice", 3, "k1").await;
    store.begin_confirm(&h.id, &h.buyer).await.unwrap();
    let done = store.finish_confirm(&h.id).await.unwrap();
    assert_eq!(done.state, HoldState::Confirmed);
    assert_eq!(counters(&*store, &sku).await, (7, 0, 0, 3));
    let again = store.finish_confirm(&h.id).await.unwrap();
    assert_eq!(again, done);
    assert_eq!(counters(&*store, &sku).await, (7, 0, 0, 3));
}

pub async fn finish_and_abort_need_a_confirming_hold<S: ReservationStore>(store: SharedStore<S>) {
    let sku = product(&*store, "A", 10).await;
    let held = hold(&*store, "A", "alice", 1, "k1").await;
    let invalid_held = ReservationError::InvalidState {
        state: HoldState::Held,
    };
    assert_eq!(
        store.finish_confirm(&held.id).await.unwrap_err(),
        invalid_held
    );
    assert_eq!(
        store
            .abort_confirm(&held.id, AbortTo::Released)
            .await
            .unwrap_err(),
        invalid_held
    );
    let released = hold(&*store, "A", "alice", 1, "k2").await;
    store.release(&released.id, &released.buyer).await.unwrap();
    assert_eq!(
        store.finish_confirm(&released.id).await.unwrap_err(),
        ReservationError::InvalidState {
            state: HoldState::Released
        }
    );
    let confirmed = hold(&*store, "A", "alice", 1, "k3").await;
    confirm(&*store, &confirmed).await;
    assert_eq!(
        store
            .abort_confirm(&confirmed.id, AbortTo::Held)
            .await
            .unwrap_err(),
        ReservationError::InvalidState {
            state: HoldState::Confirmed
        }
    );
    assert_eq!(counters(&*store, &sku).await, (8, 1, 0, 1));
}

pub async fn abort_confirm_to_held_keeps_the_hold<S: ReservationStore>(store: SharedStore<S>) {
    let sku = product(&*store, "A", 10).await;
    let h = hold(&*store, "A", "alice", 3, "k1").await;
    store.begin_confirm(&h.id, &h.buyer).await.unwrap();
    let back = store.abort_confirm(&h.id, AbortTo::Held).await.unwrap();
    assert_eq!(back.state, HoldState::Held);
    assert_eq!(back.expires_at_ms, h.expires_at_ms);
    assert_eq!(counters(&*store, &sku).await, (7, 3, 0, 0));
    // The buyer may try the confirm again.
    let again = store.begin_confirm(&h.id, &h.buyer).await.unwrap();
    assert_eq!(again.state, HoldState::Confirming);
    assert_eq!(counters(&*store, &sku).await, (7, 0, 3, 0));
}

pub async fn abort_confirm_to_held_keeps_the_original_expiry<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 10).await;
    let h = store
        .reserve(&request_with_ttl("A", "alice", 2, "k1", SHORT_TTL_MS))
        .await
        .unwrap()
        .hold;
    store.begin_confirm(&h.id, &h.buyer).await.unwrap();
    sleep(PAST_SHORT_TTL).await;
    // While confirming, the hold does not expire.
    assert_eq!(
        store.get_hold(&h.id).await.unwrap().state,
        HoldState::Confirming
    );
    assert!(store.expire_due(&sku, 10).await.unwrap().is_empty());
    // Back to held, it is past its original expiry: due, and swept once.
    store.abort_confirm(&h.id, AbortTo::Held).await.unwrap();
    assert_eq!(
        store.get_hold(&h.id).await.unwrap().state,
        HoldState::Expired
    );
    let expired = store.expire_due(&sku, 10).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, h.id);
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
}

pub async fn abort_confirm_to_released_returns_units<S: ReservationStore>(store: SharedStore<S>) {
    let sku = sku("A");
    store
        .configure_product(&sku, &stock(10, 3, 3))
        .await
        .unwrap();
    let h = hold(&*store, "A", "alice", 3, "k1").await;
    store.begin_confirm(&h.id, &h.buyer).await.unwrap();
    let gone = store.abort_confirm(&h.id, AbortTo::Released).await.unwrap();
    assert_eq!(gone.state, HoldState::Released);
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
    assert_eq!(
        store.begin_confirm(&h.id, &h.buyer).await.unwrap_err(),
        ReservationError::Released
    );
    // The buyer's units are free again.
    hold(&*store, "A", "alice", 3, "k2").await;
}

// ---------------------------------------------------------------------------------------
// expiry

pub async fn expire_due_returns_units_exactly_once<S: ReservationStore>(store: SharedStore<S>) {
    let sku = product(&*store, "A", 10).await;
    let short = store
        .reserve(&request_with_ttl("A", "alice", 3, "k1", SHORT_TTL_MS))
        .await
        .unwrap()
        .hold;
    let long = hold(&*store, "A", "bob", 2, "k1").await;
    // Not due yet: nothing moves.
    assert!(store.expire_due(&sku, 10).await.unwrap().is_empty());
    assert_eq!(counters(&*store, &sku).await, (5, 5, 0, 0));

    sleep(PAST_SHORT_TTL).await;
    let expired = store.expire_due(&sku, 10).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, short.id);
    assert_eq!(expired[0].state, HoldState::Expired);
    assert_eq!(counters(&*store, &sku).await, (8, 2, 0, 0));

    assert!(store.expire_due(&sku, 10).await.unwrap().is_empty());
    assert_eq!(counters(&*store, &sku).await, (8, 2, 0, 0));
    assert_eq!(
        store.get_hold(&short.id).await.unwrap().state,
        HoldState::Expired
    );
    assert_eq!(
        store.get_hold(&long.id).await.unwrap().state,
        HoldState::Held
    );
}

pub async fn expire_due_respects_the_batch_size<S: ReservationStore>(store: SharedStore<S>) {
    let sku = product(&*store, "A", 10).await;
    for i in 0..5 {
        store
            .reserve(&request_with_ttl(
                "A",
                "alice",
                1,
                &format!("k{i}"),
                SHORT_TTL_MS,
            ))
            .await
            .unwrap();
    }
    sleep(PAST_SHORT_TTL).await;
    let first = store.expire_due(&sku, 2).await.unwrap();
    assert_eq!(first.len(), 2);
    assert_eq!(counters(&*store, &sku).await, (7, 3, 0, 0));
    let second = store.expire_due(&sku, 2).await.unwrap();
    assert_eq!(second.len(), 2);
    let third = store.expire_due(&sku, 2).await.unwrap();
    assert_eq!(third.len(), 1);
    assert!(store.expire_due(&sku, 2).await.unwrap().is_empty());
    let mut ids: Vec<_> = [first, second, third]
        .concat()
        .into_iter()
        .map(|h| h.id)
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 5, "each hold expires once");
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
}

pub async fn expire_due_never_touches_confirming_holds<S: ReservationStore>(store: SharedStore<S>) {
    let sku = product(&*store, "A", 10).await;
    let h = store
        .reserve(&request_with_ttl("A", "alice", 3, "k1", SHORT_TTL_MS))
        .await
        .unwrap()
        .hold;
    store.begin_confirm(&h.id, &h.buyer).await.unwrap();
    sleep(PAST_SHORT_TTL).await;
    assert!(store.expire_due(&sku, 10).await.unwrap().is_empty());
    assert_eq!(counters(&*store, &sku).await, (7, 0, 3, 0));
    // The settlement may still finish it.
    let done = store.finish_confirm(&h.id).await.unwrap();
    assert_eq!(done.state, HoldState::Confirmed);
    assert_eq!(counters(&*store, &sku).await, (7, 0, 0, 3));
}

pub async fn concurrent_sweepers_expire_each_hold_once<S: ReservationStore>(store: SharedStore<S>) {
    let sku = product(&*store, "A", 100).await;
    for i in 0..40 {
        store
            .reserve(&request_with_ttl(
                "A",
                &format!("b{}", i % 4),
                1 + i % 3,
                &format!("k{i}"),
                SHORT_TTL_MS,
            ))
            .await
            .unwrap();
    }
    let reserved = counters(&*store, &sku).await.1;
    sleep(PAST_SHORT_TTL).await;
    let mut sweepers = Vec::new();
    for _ in 0..4 {
        let (store, sku) = (store.clone(), sku.clone());
        sweepers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store.expire_due(&sku, 3).await.unwrap();
                assert!(batch.len() <= 3);
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch);
            }
        }));
    }
    let mut expired = Vec::new();
    for sweeper in sweepers {
        expired.extend(sweeper.await.unwrap());
    }
    let units: u64 = expired.iter().map(|h| u64::from(h.qty.get())).sum();
    let mut ids: Vec<_> = expired.into_iter().map(|h| h.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 40, "every hold expired exactly once");
    assert_eq!(units, reserved);
    assert_eq!(counters(&*store, &sku).await, (100, 0, 0, 0));
}

pub async fn get_hold_reads_a_due_hold_as_expired<S: ReservationStore>(store: SharedStore<S>) {
    let sku = product(&*store, "A", 10).await;
    let h = store
        .reserve(&request_with_ttl("A", "alice", 3, "k1", SHORT_TTL_MS))
        .await
        .unwrap()
        .hold;
    assert_eq!(store.get_hold(&h.id).await.unwrap().state, HoldState::Held);
    sleep(PAST_SHORT_TTL).await;
    let seen = store.get_hold(&h.id).await.unwrap();
    assert_eq!(seen.state, HoldState::Expired);
    assert_eq!(seen.expires_at_ms, h.expires_at_ms);
    // Reading does not move units: that is the sweeper's job.
    assert_eq!(counters(&*store, &sku).await, (7, 3, 0, 0));
    // A replay of the request reads the same way.
    let again = store
        .reserve(&request_with_ttl("A", "alice", 3, "k1", SHORT_TTL_MS))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.hold.state, HoldState::Expired);
    assert_eq!(store.expire_due(&sku, 10).await.unwrap().len(), 1);
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
}

// ---------------------------------------------------------------------------------------
// unknown ids and skus

pub async fn unknown_reservation_id_is_not_found<S: ReservationStore>(store: SharedStore<S>) {
    let known = product(&*store, "A", 10).await;
    hold(&*store, "A", "alice", 1, "k1").await;
    // One id of a known sku, one of a sku the store never saw.
    let ids = [
        ReservationId::generate(&known),
        ReservationId::generate(&sku("NOPE")),
    ];
    let alice = buyer("alice");
    for id in &ids {
        let nf = ReservationError::NotFound;
        assert_eq!(store.get_hold(id).await.unwrap_err(), nf);
        assert_eq!(store.release(id, &alice).await.unwrap_err(), nf);
        assert_eq!(store.begin_confirm(id, &alice).await.unwrap_err(), nf);
        assert_eq!(store.finish_confirm(id).await.unwrap_err(), nf);
        assert_eq!(
            store.abort_confirm(id, AbortTo::Held).await.unwrap_err(),
            nf
        );
    }
    assert_eq!(counters(&*store, &known).await, (9, 1, 0, 0));
}

pub async fn sku_operations_on_an_unknown_sku_are_unknown_sku<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let nope = sku("NOPE");
    let unknown = ReservationError::UnknownSku;
    assert_eq!(store.snapshot(&nope).await.unwrap_err(), unknown);
    assert_eq!(store.expire_due(&nope, 10).await.unwrap_err(), unknown);
    assert_eq!(store.confirming_holds(&nope).await.unwrap_err(), unknown);
}
