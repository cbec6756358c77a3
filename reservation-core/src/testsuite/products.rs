//! Conformance cases of the per-SKU operations: configuring products, listing SKUs and
//! confirming holds, returning cancelled units, repairing counters and the snapshot.

use super::*;
use crate::error::ReservationError;
use crate::types::{Hold, HoldState, SoldUnits};

// ---------------------------------------------------------------------------------------
// products and counters

pub async fn configure_product_moves_available_by_the_difference<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 10).await;
    let sold = hold(&*store, "A", "alice", 2, "k1").await;
    confirm(&*store, &sold).await;
    hold(&*store, "A", "alice", 3, "k2").await;
    assert_eq!(counters(&*store, &sku).await, (5, 3, 0, 2));

    let s = store
        .configure_product(&sku, &stock(20, 7, 5))
        .await
        .unwrap();
    assert_eq!((s.total_stock, s.available), (20, 15));
    assert_eq!((s.per_buyer_limit, s.max_per_order), (7, 5));
    assert_eq!(s.sale_state, SaleState::OnSale);
    assert_eq!(counters(&*store, &sku).await, (15, 3, 0, 2));

    // Down to exactly the committed units leaves nothing available.
    store
        .configure_product(&sku, &stock(5, 7, 5))
        .await
        .unwrap();
    assert_eq!(counters(&*store, &sku).await, (0, 3, 0, 2));
    let err = store.reserve(&request("A", "bob", 1, "k1")).await;
    assert_eq!(err.unwrap_err(), ReservationError::SoldOut);
}

pub async fn configure_product_refuses_total_below_committed<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 10).await;
    let sold = hold(&*store, "A", "alice", 2, "k1").await;
    confirm(&*store, &sold).await;
    let confirming = hold(&*store, "A", "alice", 1, "k2").await;
    store
        .begin_confirm(&confirming.id, &confirming.buyer)
        .await
        .unwrap();
    hold(&*store, "A", "alice", 3, "k3").await;

    let err = store.configure_product(&sku, &stock(5, 1, 1)).await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::StockBelowCommitted { committed: 6 }
    );
    // Nothing changed, not even the limits.
    let s = store.snapshot(&sku).await.unwrap();
    assert_eq!(
        (s.total_stock, s.per_buyer_limit, s.max_per_order),
        (10, 100, 100)
    );
    assert_eq!(counters(&*store, &sku).await, (4, 3, 1, 2));
}

pub async fn configure_product_rejects_invalid_stock<S: ReservationStore>(store: SharedStore<S>) {
    let sku = sku("A");
    for bad in [stock(10, 0, 1), stock(10, 1, 0)] {
        let err = store.configure_product(&sku, &bad).await.unwrap_err();
        assert!(
            matches!(err, ReservationError::InvalidInput { .. }),
            "{err:?}"
        );
    }
    // A refused configuration does not create the sku.
    assert_eq!(
        store.snapshot(&sku).await.unwrap_err(),
        ReservationError::UnknownSku
    );
}

pub async fn skus_lists_configured_products<S: ReservationStore>(store: SharedStore<S>) {
    product(&*store, "B", 1).await;
    product(&*store, "A", 1).await;
    product(&*store, "A", 2).await;
    let mut skus = store.skus().await.unwrap();
    skus.sort();
    assert_eq!(skus, vec![sku("A"), sku("B")]);
}

/// The ids of `buyer`'s open holds of `sku`, as listed (oldest first).
async fn open_ids<S: ReservationStore>(
    store: &S,
    sku: &Sku,
    who: &str,
    limit: usize,
) -> Vec<String> {
    store
        .buyer_holds(sku, &buyer(who), limit)
        .await
        .expect("buyer_holds")
        .into_iter()
        .map(|h| {
            assert_eq!(h.buyer, buyer(who), "{h:?}");
            assert!(
                matches!(h.state, HoldState::Held | HoldState::Confirming),
                "{h:?}"
            );
            h.id.as_str().to_string()
        })
        .collect()
}

pub async fn buyer_holds_lists_own_open_holds_only<S: ReservationStore>(store: SharedStore<S>) {
    let a = product(&*store, "A", 10).await;
    product(&*store, "B", 10).await;
    let held = hold(&*store, "A", "alice", 1, "k1").await;
    let confirming = hold(&*store, "A", "alice", 1, "k2").await;
    store
        .begin_confirm(&confirming.id, &confirming.buyer)
        .await
        .unwrap();
    let done = hold(&*store, "A", "alice", 1, "k3").await;
    confirm(&*store, &done).await;
    let released = hold(&*store, "A", "alice", 1, "k4").await;
    store.release(&released.id, &released.buyer).await.unwrap();
    hold(&*store, "A", "bob", 1, "k1").await;
    hold(&*store, "B", "alice", 1, "k5").await;

    let listed = open_ids(&*store, &a, "alice", 10).await;
    let mut expected = vec![
        held.id.as_str().to_string(),
        confirming.id.as_str().to_string(),
    ];
    expected.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "alice's open holds of A");
    assert!(open_ids(&*store, &a, "carol", 10).await.is_empty());
    assert_eq!(
        store.buyer_holds(&sku("NOPE"), &buyer("alice"), 10).await,
        Err(ReservationError::UnknownSku)
    );
}

pub async fn buyer_holds_drops_expired_finished_and_refused<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let a = sku("A");
    store.configure_product(&a, &stock(3, 2, 2)).await.unwrap();
    let short = store
        .reserve(&request_with_ttl("A", "alice", 1, "k1", SHORT_TTL_MS))
        .await
        .unwrap()
        .hold;
    assert_eq!(
        open_ids(&*store, &a, "alice", 10).await,
        vec![short.id.as_str().to_string()]
    );
    tokio::time::sleep(PAST_SHORT_TTL).await;
    // Due but not swept yet: no longer open.
    assert!(open_ids(&*store, &a, "alice", 10).await.is_empty());
    store.expire_due(&a, 10).await.unwrap();
    assert!(open_ids(&*store, &a, "alice", 10).await.is_empty());

    // Refused reserves (limit, stock) list nothing.
    let kept = hold(&*store, "A", "alice", 2, "k2").await;
    assert!(
        store
            .reserve(&request("A", "alice", 1, "k3"))
            .await
            .is_err()
    );
    assert!(store.reserve(&request("A", "bob", 2, "k3")).await.is_err());
    assert_eq!(
        open_ids(&*store, &a, "alice", 10).await,
        vec![kept.id.as_str().to_string()]
    );
    assert!(open_ids(&*store, &a, "bob", 10).await.is_empty());
    confirm(&*store, &kept).await;
    assert!(open_ids(&*store, &a, "alice", 10).await.is_empty());
}

pub async fn buyer_holds_is_bounded_oldest_first<S: ReservationStore>(store: SharedStore<S>) {
    let a = product(&*store, "A", 10).await;
    let mut made = Vec::new();
    for k in ["k1", "k2", "k3"] {
        made.push(
            hold(&*store, "A", "alice", 1, k)
                .await
                .id
                .as_str()
                .to_string(),
        );
        // Distinct creation times so that "oldest first" is one order.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    assert_eq!(open_ids(&*store, &a, "alice", 2).await, made[..2].to_vec());
    assert_eq!(open_ids(&*store, &a, "alice", 10).await, made);
}

pub async fn confirming_holds_lists_only_confirming_ones<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let a = product(&*store, "A", 10).await;
    let b = product(&*store, "B", 10).await;
    hold(&*store, "A", "alice", 1, "k1").await;
    let c1 = hold(&*store, "A", "alice", 1, "k2").await;
    let c2 = hold(&*store, "A", "bob", 2, "k2").await;
    let done = hold(&*store, "A", "bob", 1, "k3").await;
    let other = hold(&*store, "B", "bob", 1, "k4").await;
    for h in [&c1, &c2, &other] {
        store.begin_confirm(&h.id, &h.buyer).await.unwrap();
    }
    confirm(&*store, &done).await;
    let released = hold(&*store, "A", "carol", 1, "k1").await;
    store.release(&released.id, &released.buyer).await.unwrap();

    let mut listed: Vec<Hold> = store
        .confirming_holds(&a)
        .await
        .unwrap()
        .into_iter()
        .map(|c| {
            // The confirm began after the reservation was made, by the store's clock.
            assert!(c.since_ms >= c.hold.created_at_ms, "{c:?}");
            c.hold
        })
        .collect();
    listed.sort_by(|x, y| x.id.cmp(&y.id));
    let mut expected = vec![c1.id, c2.id];
    expected.sort();
    assert_eq!(
        listed.iter().map(|h| h.id.clone()).collect::<Vec<_>>(),
        expected
    );
    assert!(listed.iter().all(|h| h.state == HoldState::Confirming));
    let listed_b = store.confirming_holds(&b).await.unwrap();
    assert_eq!(listed_b.len(), 1);
    assert_eq!(listed_b[0].hold.id, other.id);
}

pub async fn return_cancelled_returns_units_once<S: ReservationStore>(store: SharedStore<S>) {
    let sku = sku("A");
    store
        .configure_product(&sku, &stock(10, 3, 3))
        .await
        .unwrap();
    let h = hold(&*store, "A", "alice", 3, "k1").await;
    confirm(&*store, &h).await;
    assert_eq!(counters(&*store, &sku).await, (7, 0, 0, 3));
    // alice bought her limit.
    let err = store.reserve(&request("A", "alice", 1, "k2")).await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::PurchaseLimit { limit: 3 }
    );

    assert!(
        store
            .return_cancelled(&h.id, &h.buyer, h.qty)
            .await
            .unwrap()
    );
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
    assert!(
        !store
            .return_cancelled(&h.id, &h.buyer, h.qty)
            .await
            .unwrap()
    );
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
    // The cancelled units no longer count against her limit.
    hold(&*store, "A", "alice", 3, "k3").await;
    assert_eq!(counters(&*store, &sku).await, (7, 3, 0, 0));
}

/// Issue 13.5: the order was committed and cancelled before the gateway finished its confirm
/// (the hold is still `confirming`): the return finishes the hold and gives the units back,
/// instead of refusing and leaving them off sale; the gateway's late finish changes nothing.
pub async fn return_cancelled_finishes_a_hold_still_confirming<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = sku("A");
    store
        .configure_product(&sku, &stock(10, 3, 3))
        .await
        .unwrap();
    let h = hold(&*store, "A", "alice", 2, "k1").await;
    store.begin_confirm(&h.id, &h.buyer).await.unwrap();
    assert_eq!(counters(&*store, &sku).await, (8, 0, 2, 0));

    assert!(
        store
            .return_cancelled(&h.id, &h.buyer, h.qty)
            .await
            .unwrap()
    );
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
    assert_eq!(
        store.get_hold(&h.id).await.unwrap().state,
        HoldState::Confirmed
    );
    assert!(store.confirming_holds(&sku).await.unwrap().is_empty());
    // The gateway's finish after the fact is a no-op, and the units stay returned.
    store.finish_confirm(&h.id).await.unwrap();
    assert_eq!(counters(&*store, &sku).await, (10, 0, 0, 0));
    // alice's cancelled units no longer count against her limit.
    hold(&*store, "A", "alice", 3, "k2").await;
}

pub async fn repair_counters_rebuilds_from_sold_units<S: ReservationStore>(store: SharedStore<S>) {
    // The store lost its data: ops configured the sku afresh, and buyers have reserved since
    // (carol holds 2, dave is confirming 1). SQL knows 12 units exist and 4 were sold, 3 of
    // them to alice.
    let sku = sku("A");
    store
        .configure_product(&sku, &stock(10, 4, 4))
        .await
        .unwrap();
    hold(&*store, "A", "carol", 2, "k1").await;
    let dave = hold(&*store, "A", "dave", 1, "k1").await;
    store.begin_confirm(&dave.id, &dave.buyer).await.unwrap();
    assert_eq!(counters(&*store, &sku).await, (7, 2, 1, 0));
    let sold = SoldUnits {
        total: 4,
        by_buyer: vec![(buyer("alice"), 3), (buyer("bob"), 1)],
        ..SoldUnits::default()
    };
    let ticket = store.begin_repair(&sku).await.unwrap().ticket;
    let s = store
        .repair_counters(&sku, &stock(12, 4, 4), &sold, &ticket)
        .await
        .unwrap();
    // Total and sold come from SQL, held and confirming are recounted from the live holds,
    // available is the rest.
    assert_eq!(s.total_stock, 12);
    assert_eq!((s.available, s.held, s.confirming, s.sold), (5, 2, 1, 4));
    assert_eq!(counters(&*store, &sku).await, (5, 2, 1, 4));

    // Each buyer's bought and held units count against the limit again.
    let err = store.reserve(&request("A", "alice", 2, "k1")).await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::PurchaseLimit { limit: 4 }
    );
    hold(&*store, "A", "alice", 1, "k2").await;
    let err = store.reserve(&request("A", "carol", 3, "k2")).await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::PurchaseLimit { limit: 4 }
    );
    assert_eq!(counters(&*store, &sku).await, (4, 3, 1, 4));
    // The confirming hold survived the repair and can still be finished.
    store.finish_confirm(&dave.id).await.unwrap();
    assert_eq!(counters(&*store, &sku).await, (4, 3, 0, 5));

    // SQL claims more than the stock can hold: refused, nothing changes.
    let too_many = SoldUnits {
        total: 10,
        by_buyer: vec![(buyer("alice"), 10)],
        ..SoldUnits::default()
    };
    let ticket = store.begin_repair(&sku).await.unwrap().ticket;
    let err = store
        .repair_counters(&sku, &stock(12, 4, 4), &too_many, &ticket)
        .await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::StockBelowCommitted { committed: 13 }
    );
    assert_eq!(counters(&*store, &sku).await, (4, 3, 0, 5));
}

/// Issue 15.3: a repair while a committed order's hold is still `confirming` (its gateway has
/// not finished it) and a cancellation is not yet relayed. Before, the repair counted the
/// hold as confirming on top of SQL's sold (available short for good, and the gateway's late
/// finish added it to sold again), and the late cancellation was returned twice.
pub async fn repair_finishes_committed_holds_and_marks_cancellations_returned<
    S: ReservationStore,
>(
    store: SharedStore<S>,
) {
    let sku = sku("A");
    store
        .configure_product(&sku, &stock(10, 4, 4))
        .await
        .unwrap();
    let committed = hold(&*store, "A", "alice", 2, "k1").await;
    store
        .begin_confirm(&committed.id, &committed.buyer)
        .await
        .unwrap();
    let cancelled = hold(&*store, "A", "bob", 1, "k1").await;
    confirm(&*store, &cancelled).await;
    let in_flight = hold(&*store, "A", "carol", 1, "k1").await;
    store
        .begin_confirm(&in_flight.id, &in_flight.buyer)
        .await
        .unwrap();
    // SQL: alice's order committed, bob's was cancelled (its event not yet relayed), carol's
    // confirm has not committed.
    let sold = SoldUnits {
        total: 2,
        by_buyer: vec![(buyer("alice"), 2)],
        ordered: vec![committed.id.clone(), cancelled.id.clone()],
        cancelled: vec![cancelled.id.clone()],
    };
    let ticket = store.begin_repair(&sku).await.unwrap().ticket;
    let s = store
        .repair_counters(&sku, &stock(10, 4, 4), &sold, &ticket)
        .await
        .unwrap();
    assert_eq!((s.available, s.held, s.confirming, s.sold), (7, 0, 1, 2));
    assert_eq!(
        store.get_hold(&committed.id).await.unwrap().state,
        HoldState::Confirmed
    );
    // The gateway's late finish of alice's hold changes nothing; the late cancellation of
    // bob's order returns nothing; carol's confirm still finishes normally.
    store.finish_confirm(&committed.id).await.unwrap();
    assert!(
        !store
            .return_cancelled(&cancelled.id, &cancelled.buyer, cancelled.qty)
            .await
            .unwrap()
    );
    store.finish_confirm(&in_flight.id).await.unwrap();
    assert_eq!(counters(&*store, &sku).await, (7, 0, 0, 3));
}

/// Issue 15.3, a repair's window: SQL was read (alice's order live, bob's not committed yet),
/// then bob's gateway finished his confirm and the relay returned alice's cancellation, then
/// the repair writes. The journal begun with the repair makes the counters what SQL says
/// now. Without it, bob's unit was missing from sold (on sale twice) and alice's was
/// counted sold again (off sale for good: her return had already been done).
pub async fn repair_counts_what_its_snapshot_missed<S: ReservationStore>(store: SharedStore<S>) {
    let sku = sku("A");
    store
        .configure_product(&sku, &stock(10, 4, 4))
        .await
        .unwrap();
    let alice = hold(&*store, "A", "alice", 1, "k1").await;
    confirm(&*store, &alice).await;
    let bob = hold(&*store, "A", "bob", 2, "k1").await;
    store.begin_confirm(&bob.id, &bob.buyer).await.unwrap();
    let start = store.begin_repair(&sku).await.unwrap();
    assert_eq!(start.confirming, vec![bob.id.clone()]);
    let sold = SoldUnits {
        total: 1,
        by_buyer: vec![(buyer("alice"), 1)],
        ordered: vec![alice.id.clone()],
        cancelled: Vec::new(),
    };
    // The window between the SQL snapshot and the repair's write.
    store.finish_confirm(&bob.id).await.unwrap();
    assert!(
        store
            .return_cancelled(&alice.id, &alice.buyer, alice.qty)
            .await
            .unwrap()
    );
    let s = store
        .repair_counters(&sku, &stock(10, 4, 4), &sold, &start.ticket)
        .await
        .unwrap();
    assert_eq!((s.available, s.held, s.confirming, s.sold), (8, 0, 0, 2));
    // Late duplicates change nothing.
    store.finish_confirm(&bob.id).await.unwrap();
    assert!(
        !store
            .return_cancelled(&alice.id, &alice.buyer, alice.qty)
            .await
            .unwrap()
    );
    assert_eq!(counters(&*store, &sku).await, (8, 0, 0, 2));
    // bob's two units count toward his limit, alice's cancelled one no longer does.
    let err = store.reserve(&request("A", "bob", 3, "k2")).await;
    assert_eq!(
        err.unwrap_err(),
        ReservationError::PurchaseLimit { limit: 4 }
    );
    hold(&*store, "A", "alice", 4, "k2").await;
}

/// Two repairs of one SKU at once (two operators): the later one's start supersedes the
/// earlier, which is refused without writing, so only a repair whose journal covered its
/// whole window writes.
pub async fn a_superseded_repair_writes_nothing<S: ReservationStore>(store: SharedStore<S>) {
    let sku = product(&*store, "A", 10).await;
    hold(&*store, "A", "alice", 1, "k1").await;
    let first = store.begin_repair(&sku).await.unwrap();
    let second = store.begin_repair(&sku).await.unwrap();
    let sold = SoldUnits {
        total: 3,
        by_buyer: vec![(buyer("bob"), 3)],
        ..SoldUnits::default()
    };
    let err = store
        .repair_counters(&sku, &stock(10, 4, 4), &sold, &first.ticket)
        .await
        .unwrap_err();
    assert_eq!(err, ReservationError::RepairSuperseded);
    assert_eq!(counters(&*store, &sku).await, (9, 1, 0, 0));
    store
        .repair_counters(&sku, &stock(10, 4, 4), &sold, &second.ticket)
        .await
        .unwrap();
    assert_eq!(counters(&*store, &sku).await, (6, 1, 0, 3));
    // A ticket is good for one repair.
    let err = store
        .repair_counters(&sku, &stock(10, 4, 4), &sold, &second.ticket)
        .await
        .unwrap_err();
    assert_eq!(err, ReservationError::RepairSuperseded);
}

/// An ops edit of the product while a repair runs (between its SQL snapshot and its write):
/// the edit's settings stand and the repair, whose snapshot may predate the edit, is
/// refused without writing (the next reconcile repairs from the edited row). Before: the
/// repair wrote its older total, limits and sale state over the edit, reopening a paused sale.
pub async fn a_product_edit_supersedes_a_repair_in_progress<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 10).await;
    hold(&*store, "A", "alice", 1, "k1").await;
    let repair = store.begin_repair(&sku).await.unwrap();
    let paused = ProductStock {
        sale_state: SaleState::Paused,
        ..stock(30, 1, 1)
    };
    store.configure_product(&sku, &paused).await.unwrap();
    let err = store
        .repair_counters(
            &sku,
            &stock(10, 4, 4),
            &SoldUnits::default(),
            &repair.ticket,
        )
        .await
        .unwrap_err();
    assert_eq!(err, ReservationError::RepairSuperseded);
    let s = store.snapshot(&sku).await.unwrap();
    assert_eq!(
        (
            s.total_stock,
            s.per_buyer_limit,
            s.max_per_order,
            s.sale_state
        ),
        (30, 1, 1, SaleState::Paused)
    );
    assert_eq!(counters(&*store, &sku).await, (29, 1, 0, 0));
}

pub async fn snapshot_display_state_follows_stock_and_sale<S: ReservationStore>(
    store: SharedStore<S>,
) {
    let sku = product(&*store, "A", 2).await;
    let s = store.snapshot(&sku).await.unwrap();
    assert_eq!(s.display_state(), "on_sale");
    assert_eq!(s.sale_state, SaleState::OnSale);

    let h = hold(&*store, "A", "alice", 2, "k1").await;
    assert_eq!(
        store.snapshot(&sku).await.unwrap().display_state(),
        "sold_out"
    );

    let paused = ProductStock {
        sale_state: SaleState::Paused,
        ..stock(2, 100, 100)
    };
    store.configure_product(&sku, &paused).await.unwrap();
    let s = store.snapshot(&sku).await.unwrap();
    assert_eq!(s.display_state(), "paused");
    assert_eq!(s.sale_state, SaleState::Paused);

    // Paused shows paused even with units available.
    store.release(&h.id, &h.buyer).await.unwrap();
    assert_eq!(
        store.snapshot(&sku).await.unwrap().display_state(),
        "paused"
    );
    store
        .configure_product(&sku, &stock(2, 100, 100))
        .await
        .unwrap();
    assert_eq!(
        store.snapshot(&sku).await.unwrap().display_state(),
        "on_sale"
    );
}

pub async fn refused_repair_of_a_lost_sku_leaves_no_trace<S: ReservationStore>(
    store: SharedStore<S>,
) {
    // SQL says 9 units were sold but ops now claim a total of 5: the repair is refused, and a
    // store that had lost the SKU must not have grown an empty one from the attempt.
    let sku = sku("GONE");
    let sold = SoldUnits {
        total: 9,
        by_buyer: vec![(buyer("alice"), 9)],
        ..SoldUnits::default()
    };
    let ticket = store.begin_repair(&sku).await.unwrap().ticket;
    let err = store
        .repair_counters(&sku, &stock(5, 10, 10), &sold, &ticket)
        .await
        .unwrap_err();
    assert_eq!(err, ReservationError::StockBelowCommitted { committed: 9 });
    assert_eq!(
        store.snapshot(&sku).await.unwrap_err(),
        ReservationError::UnknownSku
    );
    assert!(!store.skus().await.unwrap().contains(&sku));
}
