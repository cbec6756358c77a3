//! The conformance cases. Each takes a fresh store and asserts what a caller sees: the
//! answer, and the counters afterwards.

use super::*;
use crate::error::ReservationError;
use crate::types::HoldState;

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
    assert_eq!(r.hold.id.sku(), sku);
    let s = store.snapshot(&sku).await.unwrap();
    assert_eq!((s.available, s.held, s.confirming, s.sold), (7, 3, 0, 0));
    assert!(s.is_balanced());
}

pub async fn reserve_of_unknown_sku_is_refused<S: ReservationStore>(store: SharedStore<S>) {
    let err = store.reserve(&request("NOPE", "alice", 1, "k1")).await;
    assert_eq!(err.unwrap_err(), ReservationError::UnknownSku);
}
