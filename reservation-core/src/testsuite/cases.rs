//! Conformance cases of reserving: the checks a reserve makes, the per-buyer limit and
//! idempotency. Each takes a fresh store and asserts what a caller sees: the answer, and the
//! counters afterwards. Cases about expiry use short hold TTLs and real sleeps, because the
//! Redis store's clock is Redis `TIME`.

use tokio::time::sleep;

use super::*;
use crate::error::ReservationError;
use crate::types::HoldState;
// ---------------------------------------------------------------------------------------
// reserve

pub async fn reserve_moves_units_from_available_to_held<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 10).await;
    let r = store
        .reserve(&request("A", "alice", 3, "k1"))
        .await
        .unwrap();
    assert!(!r.replayed);
    assert_eq!(r.hold.state, HoldState::Held);
    assert_eq!(r.hold.qty, qty(3));
    assert_eq!(r.hold.sku, sku);
    assert_eq!(r.hold.buyer, buyer("alice"));
    assert_eq!(r.hold.id.sku(), sku);
    assert_eq!(r.hold.expires_at_ms, r.hold.created_at_ms + LONG_TTL_MS);
    assert_eq!(counters(&*store, &sku).await, (7, 3, 0, 0));
    // The hold reads back as it was answered.
    assert_eq!(store.get_hold(&r.hold.id).await.unwrap(), r.hold);
}

pub async fn reserve_of_unknown_sku_is_refused<S: ReservationStore>(store: SharedStore<S>) {
    let err = store.reserve(&request("NOPE", "alice", 1, "k1")).await;
    assert_eq!(err.unwrap_err(), ReservationError::UnknownSku);
    assert_eq!(
        store.snapshot(&sku("NOPE")).await.unwrap_err(),
        ReservationError::UnknownSku
    );
    assert!(store.skus().await.unwrap().is_empty());
}

pub async fn reserve_while_paused_is_refused_and_changes_nothing<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = sku("A");
    let paused = ProductStock {
        sale_state: SaleState::Paused,
        ..stock(10, 100, 100)
    };
    store.configure_product(&sku, &paused).await.unwrap();
    let err = store.reserve(&request("A", "alice", 1, "k1")).await;
    assert_eq!(err.unwrap_err(), ReservationError::SalePaused);
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));

    // Resuming the sale makes the same request succeed: the refusal left no hold behind.
    store
        .configure_product(&sku, &stock(10, 100, 100))
        .await
        .unwrap();
    let r = store
        .reserve(&request("A", "alice", 1, "k1"))
        .await
        .unwrap();
    assert!(!r.replayed);
    assert_eq!(counters(&*store, &sku).await, (9, 1, 0, 0));
}

pub async fn reserve_more_than_available_is_insufficient_stock<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 5).await;
    hold(&*store, "A", "alice", 3, "k1").await;
    let err = store.reserve(&request("A", "bob", 3, "k1")).await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::InsufficientStock { available: 2 }
    );
    assert_eq!(counters(&*store, &sku).await, (2, 3, 0, 0));
    // What is left can still be taken.
    hold(&*store, "A", "bob", 2, "k2").await;
    assert_eq!(counters(&*store, &sku).await, (0, 5, 0, 0));
}

pub async fn reserve_when_nothing_is_available_is_sold_out<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 2).await;
    hold(&*store, "A", "alice", 2, "k1").await;
    let err = store.reserve(&request("A", "bob", 1, "k1")).await;
    assert_eq!(err.unwrap_err(), ReservationError::SoldOut);
    assert_eq!(counters(&*store, &sku).await, (0, 2, 0, 0));
}

pub async fn reserve_above_max_per_order_is_purchase_limit<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = sku("A");
    store
        .configure_product(&sku, &stock(10, 100, 2))
        .await
        .unwrap();
    let err = store.reserve(&request("A", "alice", 3, "k1")).await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::PurchaseLimit { limit: 2 }
    );
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
    hold(&*store, "A", "alice", 2, "k2").await;
    assert_eq!(counters(&*store, &sku).await, (8, 2, 0, 0));
}

pub async fn reserve_checks_in_the_documented_order<S: ReservationStore>(store: SharedStore<S>) {
    // Order: known sku, idempotency, sale on, max per order, per-buyer limit, stock.
    let sku = sku("A");
    let paused = ProductStock {
        sale_state: SaleState::Paused,
        ..stock(2, 3, 2)
    };
    store.configure_product(&sku, &paused).await.unwrap();
    // Paused wins over a quantity above max per order and above the stock.
    let err = store.reserve(&request("A", "alice", 5, "k1")).await;
    assert_eq!(err.unwrap_err(), ReservationError::SalePaused);

    store
        .configure_product(&sku, &stock(2, 3, 2))
        .await
        .unwrap();
    // Max per order wins over the per-buyer limit and the stock.
    let err = store.reserve(&request("A", "alice", 4, "k2")).await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::PurchaseLimit { limit: 2 }
    );
    hold(&*store, "A", "alice", 2, "k3").await;
    // The per-buyer limit wins over sold out.
    let err = store.reserve(&request("A", "alice", 2, "k4")).await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::PurchaseLimit { limit: 3 }
    );
    // Idempotency wins over the sale state: k3 was used for 2 units.
    store.configure_product(&sku, &paused).await.unwrap();
    let err = store.reserve(&request("A", "alice", 1, "k3")).await;
    assert_eq!(err.unwrap_err(), ReservationError::IdempotencyMismatch);
    assert_eq!(counters(&*store, &sku).await, (0, 2, 0, 0));
}

// ---------------------------------------------------------------------------------------
// per-buyer limit

pub async fn per_buyer_limit_counts_held_confirming_and_confirmed<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = sku("A");
    store
        .configure_product(&sku, &stock(20, 4, 4))
        .await
        .unwrap();
    let confirmed = hold(&*store, "A", "alice", 1, "k1").await;
    confirm(&*store, &confirmed).await;
    let confirming = hold(&*store, "A", "alice", 1, "k2").await;
    store
        .begin_confirm(&confirming.id, &confirming.buyer)
        .await
        .unwrap();
    hold(&*store, "A", "alice", 1, "k3").await;
    assert_eq!(counters(&*store, &sku).await, (17, 1, 1, 1));

    // 3 units counted, so 2 more would pass the limit of 4.
    let err = store.reserve(&request("A", "alice", 2, "k4")).await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::PurchaseLimit { limit: 4 }
    );
    assert_eq!(counters(&*store, &sku).await, (17, 1, 1, 1));
    // The limit is per buyer: bob is not affected by alice's units.
    hold(&*store, "A", "bob", 4, "k4").await;
    // Exactly up to the limit is allowed.
    hold(&*store, "A", "alice", 1, "k5").await;
    assert_eq!(counters(&*store, &sku).await, (12, 6, 1, 1));
}

pub async fn per_buyer_limit_is_freed_by_release_and_expiry<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = sku("A");
    store
        .configure_product(&sku, &stock(20, 3, 3))
        .await
        .unwrap();
    let released = hold(&*store, "A", "alice", 2, "k1").await;
    let short = store
        .reserve(&request_with_ttl("A", "alice", 1, "k2", SHORT_TTL_MS))
        .await
        .unwrap()
        .hold;
    let err = store.reserve(&request("A", "alice", 1, "k3")).await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::PurchaseLimit { limit: 3 }
    );

    store.release(&released.id, &released.buyer).await.unwrap();
    hold(&*store, "A", "alice", 2, "k4").await;
    let err = store.reserve(&request("A", "alice", 1, "k5")).await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::PurchaseLimit { limit: 3 }
    );

    sleep(PAST_SHORT_TTL).await;
    let expired = store.expire_due(&sku, 10).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].id, short.id);
    hold(&*store, "A", "alice", 1, "k5").await;
    assert_eq!(counters(&*store, &sku).await, (17, 3, 0, 0));
}

// ---------------------------------------------------------------------------------------
// idempotency

pub async fn same_key_and_body_replays_the_same_hold<S: ReservationStore>(store: SharedStore<S>) {
    let sku = product(&*store, "A", 10).await;
    let first = store
        .reserve(&request("A", "alice", 2, "k1"))
        .await
        .unwrap();
    let again = store
        .reserve(&request("A", "alice", 2, "k1"))
        .await
        .unwrap();
    assert!(!first.replayed);
    assert!(again.replayed);
    assert_eq!(again.hold, first.hold);
    assert_eq!(counters(&*store, &sku).await, (8, 2, 0, 0));
}

pub async fn same_key_with_other_qty_is_idempotency_mismatch<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 10).await;
    hold(&*store, "A", "alice", 2, "k1").await;
    let err = store.reserve(&request("A", "alice", 3, "k1")).await;
    assert_eq!(err.unwrap_err(), ReservationError::IdempotencyMismatch);
    assert_eq!(counters(&*store, &sku).await, (8, 2, 0, 0));
}

pub async fn same_key_with_other_sku_is_idempotency_mismatch<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let a = product(&*store, "A", 10).await;
    let b = product(&*store, "B", 10).await;
    hold(&*store, "A", "alice", 2, "k1").await;
    let err = store.reserve(&request("B", "alice", 2, "k1")).await;
    assert_eq!(err.unwrap_err(), ReservationError::IdempotencyMismatch);
    assert_eq!(counters(&*store, &a).await, (8, 2, 0, 0));
    assert_eq!(counters(&*store, &b).await, (10, 0, 0, 0));
}

pub async fn idempotency_keys_are_scoped_per_buyer<S: ReservationStore>(store: SharedStore<S>) {
    let sku = product(&*store, "A", 10).await;
    let alice = hold(&*store, "A", "alice", 2, "k1").await;
    // The same key from another buyer is another request, even with another body.
    let bob = store.reserve(&request("A", "bob", 3, "k1")).await.unwrap();
    assert!(!bob.replayed);
    assert_ne!(bob.hold.id, alice.id);
    assert_eq!(bob.hold.buyer, buyer("bob"));
    assert_eq!(counters(&*store, &sku).await, (5, 5, 0, 0));
}

pub async fn replay_is_answered_after_the_sale_is_paused<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 10).await;
    let first = hold(&*store, "A", "alice", 2, "k1").await;
    let paused = ProductStock {
        sale_state: SaleState::Paused,
        ..stock(10, 100, 100)
    };
    store.configure_product(&sku, &paused).await.unwrap();
    let again = store
        .reserve(&request("A", "alice", 2, "k1"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.hold, first);
    // A new key is refused.
    let err = store.reserve(&request("A", "alice", 2, "k2")).await;
    assert_eq!(err.unwrap_err(), ReservationError::SalePaused);
    assert_eq!(counters(&*store, &sku).await, (8, 2, 0, 0));
}

pub async fn replay_after_release_returns_the_released_hold<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 10).await;
    let first = hold(&*store, "A", "alice", 2, "k1").await;
    store.release(&first.id, &first.buyer).await.unwrap();
    // The key made a reservation: it is answered, not made again.
    let again = store
        .reserve(&request("A", "alice", 2, "k1"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.hold.id, first.id);
    assert_eq!(again.hold.state, HoldState::Released);
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
}

pub async fn a_refused_request_leaves_its_key_free<S: ReservationStore>(store: SharedStore<S>) {
    // One key through every kind of refusal: none of them binds it (DESIGN.md §6, a refused
    // request leaves no lasting state), so each next try may name any SKU and quantity.
    let one = product(&*store, "ONE", 1).await;
    hold(&*store, "ONE", "bob", 1, "b1").await;
    let few = sku("FEW");
    store
        .configure_product(&few, &stock(10, 3, 2))
        .await
        .unwrap();
    hold(&*store, "FEW", "alice", 2, "a1").await;
    let paused = ProductStock {
        sale_state: SaleState::Paused,
        ..stock(5, 100, 100)
    };
    store
        .configure_product(&sku("PAUSED"), &paused)
        .await
        .unwrap();
    let big = product(&*store, "BIG", 5).await;

    let refusals = [
        (request("ONE", "alice", 1, "k"), ReservationError::SoldOut),
        (
            request("FEW", "alice", 3, "k"),
            ReservationError::PurchaseLimit { limit: 2 },
        ),
        (
            request("FEW", "alice", 2, "k"),
            ReservationError::PurchaseLimit { limit: 3 },
        ),
        (
            request("PAUSED", "alice", 1, "k"),
            ReservationError::SalePaused,
        ),
        (
            request("NOPE", "alice", 1, "k"),
            ReservationError::UnknownSku,
        ),
        (
            request("BIG", "alice", 6, "k"),
            ReservationError::InsufficientStock { available: 5 },
        ),
    ];
    for (req, expected) in refusals {
        assert_eq!(store.reserve(&req).await.unwrap_err(), expected, "{req:?}");
    }
    assert_eq!(counters(&*store, &one).await, (0, 1, 0, 0));
    assert_eq!(counters(&*store, &few).await, (8, 2, 0, 0));
    assert_eq!(counters(&*store, &big).await, (5, 0, 0, 0));

    // The key is free: it makes a hold of a body none of the refused tries named.
    let made = store
        .reserve(&request("BIG", "alice", 1, "k"))
        .await
        .unwrap();
    assert!(!made.replayed);
    // Now it is bound to that hold: the same body replays it, any other is a mismatch.
    let again = store
        .reserve(&request("BIG", "alice", 1, "k"))
        .await
        .unwrap();
    assert!(again.replayed);
    assert_eq!(again.hold.id, made.hold.id);
    let err = store.reserve(&request("ONE", "alice", 1, "k")).await;
    assert_eq!(err.unwrap_err(), ReservationError::IdempotencyMismatch);
    assert_eq!(counters(&*store, &big).await, (4, 1, 0, 0));
}

pub async fn a_refused_request_is_decided_afresh_when_retried<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 1).await;
    hold(&*store, "A", "bob", 1, "k1").await;
    let err = store.reserve(&request("A", "alice", 1, "k1")).await;
    assert_eq!(err.unwrap_err(), ReservationError::SoldOut);
    // After a restock the same request is tried again and succeeds.
    store
        .configure_product(&sku, &stock(2, 100, 100))
        .await
        .unwrap();
    let r = store
        .reserve(&request("A", "alice", 1, "k1"))
        .await
        .unwrap();
    assert!(!r.replayed);
    assert_eq!(counters(&*store, &sku).await, (0, 2, 0, 0));
}

pub async fn concurrent_requests_with_one_key_make_one_hold<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 100).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.reserve(&request("A", "alice", 2, "k1")).await
        }));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap().unwrap());
    }
    let made: Vec<_> = answers.iter().filter(|r| !r.replayed).collect();
    assert_eq!(made.len(), 1, "exactly one request makes the hold");
    assert!(answers.iter().all(|r| r.hold.id == made[0].hold.id));
    assert_eq!(counters(&*store, &sku).await, (98, 2, 0, 0));
}
