//! The in-memory store's own bound: final holds and the idempotency keys they made are
//! dropped after the retention, by reserves and by the sweep, and refusals keep nothing. (Its
//! semantics are checked with the Redis store's by the conformance suite.)

use std::time::Duration;

use super::*;
use crate::testsuite::{buyer, request, request_with_ttl, sku, stock};

/// What the store keeps: (holds, bound idempotency keys, final holds waiting to be dropped).
fn kept(store: &InMemoryStore) -> (usize, usize, usize) {
    let state = store.lock();
    let holds = state.books.values().map(|b| b.holds.len()).sum();
    let finals = state.books.values().map(|b| b.finals.len()).sum();
    let key_of: usize = state.books.values().map(|b| b.key_of.len()).sum();
    assert_eq!(
        key_of, holds,
        "every kept hold knows its key, and only those"
    );
    (holds, state.keys.len(), finals)
}

async fn store_with(retention: Duration, total: u64, limit: u32) -> InMemoryStore {
    let store = InMemoryStore::with_retention(retention);
    store
        .configure_product(&sku("A"), &stock(total, limit, limit))
        .await
        .unwrap();
    store
}

#[tokio::test]
async fn refused_reserves_keep_nothing() {
    let store = store_with(DEFAULT_RETENTION, 100, 1).await;
    store
        .reserve(&request("A", "alice", 1, "k0"))
        .await
        .unwrap();
    for i in 0..1_000 {
        let err = store
            .reserve(&request("A", "alice", 1, &format!("fresh-{i}")))
            .await
            .unwrap_err();
        assert_eq!(err, ReservationError::PurchaseLimit { limit: 1 });
    }
    assert_eq!(kept(&store), (1, 1, 0));
}

#[tokio::test]
async fn final_holds_and_their_keys_go_after_the_retention() {
    let store = store_with(Duration::from_millis(50), 1_000, 1_000).await;
    let a = sku("A");
    let alice = buyer("alice");
    let mut ids = Vec::new();
    for i in 0..300 {
        let hold = store
            .reserve(&request("A", "alice", 1, &format!("k{i}")))
            .await
            .unwrap()
            .hold;
        if i % 2 == 0 {
            store.release(&hold.id, &alice).await.unwrap();
        } else {
            store.begin_confirm(&hold.id, &alice).await.unwrap();
            store.finish_confirm(&hold.id).await.unwrap();
        }
        ids.push(hold.id);
    }
    assert_eq!(kept(&store), (300, 300, 300));
    // Within the retention a final hold still replays.
    let replay = store
        .reserve(&request("A", "alice", 1, "k0"))
        .await
        .unwrap();
    assert!(replay.replayed);
    let before = store.snapshot(&a).await.unwrap();

    tokio::time::sleep(Duration::from_millis(120)).await;
    store.expire_due(&a, 10).await.unwrap();
    assert_eq!(kept(&store), (0, 0, 0));
    // Dropping records changes no counter: the confirmed units stay sold (and counted
    // against alice's limit), the released ones stay available.
    assert_eq!(store.snapshot(&a).await.unwrap(), before);
    assert_eq!(
        store.get_hold(&ids[0]).await.unwrap_err(),
        ReservationError::NotFound
    );
    // The key is free again: the same request makes a new hold.
    let fresh = store
        .reserve(&request("A", "alice", 1, "k0"))
        .await
        .unwrap();
    assert!(!fresh.replayed);
    assert_ne!(fresh.hold.id, ids[0]);
}

#[tokio::test]
async fn reserves_alone_keep_a_busy_sku_bounded() {
    // No sweeper at all (maintenance off): the reserves' own pruning keeps up, since each
    // reserve drops more final holds than it can add.
    let store = store_with(Duration::ZERO, 10, 10).await;
    let alice = buyer("alice");
    let mut most = 0;
    for i in 0..5_000 {
        let hold = store
            .reserve(&request("A", "alice", 1, &format!("k{i}")))
            .await
            .unwrap()
            .hold;
        store.release(&hold.id, &alice).await.unwrap();
        most = most.max(kept(&store).0);
    }
    assert!(most <= 3, "kept up to {most} holds");
}

#[tokio::test]
async fn due_holds_expire_in_the_sweep_and_go_a_retention_later() {
    let store = store_with(Duration::from_millis(40), 100, 100).await;
    let a = sku("A");
    for i in 0..100 {
        store
            .reserve(&request_with_ttl("A", "alice", 1, &format!("k{i}"), 10))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    assert_eq!(store.expire_due(&a, 100).await.unwrap().len(), 100);
    assert_eq!(kept(&store), (100, 100, 100));
    assert_eq!(store.snapshot(&a).await.unwrap().available, 100);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(store.expire_due(&a, 100).await.unwrap().is_empty());
    assert_eq!(kept(&store), (0, 0, 0));
}
