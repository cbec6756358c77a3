//! The checker on hand-made states: a consistent run passes, and each broken invariant is
//! reported under its own name.

use super::*;

const RID_A: &str = "rsv_0000000000000000000000000000000a_HOT";
const RID_B: &str = "rsv_0000000000000000000000000000000b_HOT";

fn record(attempt: usize, op: Op, status: Option<u16>, rid: &str) -> Record {
    Record {
        attempt,
        op,
        buyer: format!("b{attempt}"),
        sku: "HOT".into(),
        qty: 1,
        idempotency_key: format!("k{attempt}-{op:?}"),
        status,
        code: None,
        reservation_id: Some(rid.into()),
        order_id: (op == Op::Confirm && matches!(status, Some(200..=299)))
            .then(|| format!("ord_{rid}")),
        ids_seen: if op == Op::Reserve {
            vec![rid.into()]
        } else {
            vec![]
        },
        tries: 1,
    }
}

fn order(rid: &str, buyer: &str) -> OrderRow {
    OrderRow {
        order_id: format!("ord_{rid}"),
        reservation_id: rid.into(),
        buyer: buyer.into(),
        sku: "HOT".into(),
        qty: 1,
        status: "confirmed".into(),
    }
}

/// Stock 2: attempt 0 bought one unit, attempt 1 reserved and released.
fn healthy() -> (Observed, Vec<Record>) {
    let observed = Observed {
        skus: vec![SkuState {
            sku: "HOT".into(),
            sql_total_stock: 2,
            sql_sold: 1,
            per_buyer_limit: 1,
            redis: Ok(Counters {
                total_stock: 2,
                available: 1,
                held: 0,
                confirming: 0,
                sold: 1,
            }),
        }],
        orders: vec![order(RID_A, "b0")],
        holds: [
            (RID_A.to_owned(), "confirmed".to_owned()),
            (RID_B.to_owned(), "released".to_owned()),
        ]
        .into(),
    };
    let history = vec![
        record(0, Op::Reserve, Some(201), RID_A),
        record(0, Op::Confirm, Some(201), RID_A),
        record(1, Op::Reserve, Some(201), RID_B),
        record(1, Op::Release, Some(204), RID_B),
        record(1, Op::Confirm, Some(410), RID_B),
    ];
    (observed, history)
}

fn broken(observed: &Observed, history: &[Record]) -> Vec<&'static str> {
    let report = check(observed, history, true);
    report.violations.iter().map(|v| v.invariant).collect()
}

#[test]
fn a_consistent_run_passes_and_is_tallied() {
    let (observed, history) = healthy();
    let report = check(&observed, &history, true);
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(report.tally.attempts, 2);
    assert_eq!(report.tally.reserves_acknowledged, 2);
    assert_eq!(report.tally.confirms_acknowledged, 1);
    assert_eq!(report.tally.releases_acknowledged, 1);
    assert_eq!(report.tally.sql_orders, 1);
    assert_eq!(report.tally.sql_units_sold, 1);
}

#[test]
fn sql_oversell_and_sold_disagreeing_with_orders_are_caught() {
    let (mut observed, history) = healthy();
    observed.skus[0].sql_sold = 3;
    let names = broken(&observed, &history);
    assert!(names.contains(&"sql_sold_within_stock"), "{names:?}");
    assert!(names.contains(&"sql_sold_matches_orders"), "{names:?}");
}

#[test]
fn unbalanced_or_stuck_redis_counters_are_caught_only_at_rest() {
    let (mut observed, history) = healthy();
    let counters = observed.skus[0].redis.as_mut().unwrap();
    counters.available = 0;
    counters.confirming = 2;
    let names = broken(&observed, &history);
    assert!(names.contains(&"redis_counters_balanced"), "{names:?}");
    assert!(names.contains(&"nothing_left_confirming"), "{names:?}");
    // Mid-run the counters move under the reader: not judged.
    assert!(check(&observed, &history, false).ok());
}

#[test]
fn redis_sold_below_sql_is_caught() {
    let (mut observed, history) = healthy();
    let counters = observed.skus[0].redis.as_mut().unwrap();
    counters.sold = 0;
    counters.available = 2;
    assert_eq!(broken(&observed, &history), vec!["redis_sold_matches_sql"]);
}

#[test]
fn an_acknowledged_order_missing_from_sql_is_caught() {
    let (mut observed, history) = healthy();
    observed.orders.clear();
    observed.skus[0].sql_sold = 0;
    let counters = observed.skus[0].redis.as_mut().unwrap();
    counters.sold = 0;
    counters.available = 2;
    assert_eq!(
        broken(&observed, &history),
        vec!["acknowledged_order_exists"]
    );
}

#[test]
fn an_acknowledged_order_with_other_contents_is_caught() {
    let (mut observed, history) = healthy();
    observed.orders[0].order_id = "ord_other".into();
    assert_eq!(
        broken(&observed, &history),
        vec!["acknowledged_order_matches"]
    );
}

#[test]
fn two_orders_for_one_reservation_are_caught() {
    let (mut observed, history) = healthy();
    let mut second = order(RID_A, "b0");
    second.order_id = "ord_second".into();
    observed.orders.push(second);
    observed.skus[0].sql_sold = 2;
    let counters = observed.skus[0].redis.as_mut().unwrap();
    counters.sold = 2;
    counters.available = 0;
    let names = broken(&observed, &history);
    assert!(names.contains(&"one_order_per_reservation"), "{names:?}");
}

#[test]
fn an_order_for_a_released_hold_is_caught_three_ways() {
    let (mut observed, history) = healthy();
    observed.orders.push(order(RID_B, "b1"));
    observed.skus[0].sql_sold = 2;
    let counters = observed.skus[0].redis.as_mut().unwrap();
    counters.sold = 2;
    counters.available = 0;
    let names = broken(&observed, &history);
    // The hold says released, the client was told released, and told 410 on its confirm.
    assert!(
        names.contains(&"released_or_expired_hold_never_confirmed"),
        "{names:?}"
    );
    assert!(
        names.contains(&"released_hold_never_confirmed"),
        "{names:?}"
    );
    assert!(names.contains(&"refused_confirm_has_no_order"), "{names:?}");
}

#[test]
fn buying_above_the_per_buyer_limit_is_caught() {
    let (mut observed, mut history) = healthy();
    // b0 makes a second purchase of the one-unit-per-buyer SKU.
    let mut reserve = record(2, Op::Reserve, Some(201), RID_B);
    reserve.buyer = "b0".into();
    let mut confirm = record(2, Op::Confirm, Some(201), RID_B);
    confirm.buyer = "b0".into();
    history.retain(|r| r.attempt == 0);
    history.extend([reserve, confirm]);
    observed.orders.push(order(RID_B, "b0"));
    observed.holds.insert(RID_B.into(), "confirmed".into());
    observed.skus[0].sql_sold = 2;
    let counters = observed.skus[0].redis.as_mut().unwrap();
    counters.sold = 2;
    counters.available = 0;
    assert_eq!(broken(&observed, &history), vec!["per_buyer_limit"]);
}

#[test]
fn one_id_for_two_attempts_or_two_ids_for_one_key_are_caught() {
    let (observed, mut history) = healthy();
    history.push(record(2, Op::Reserve, Some(200), RID_A));
    history[0].ids_seen.push(RID_B.into());
    let names = broken(&observed, &history);
    assert!(names.contains(&"no_reservation_id_twice"), "{names:?}");
    assert!(
        names.contains(&"one_reservation_per_idempotency_key"),
        "{names:?}"
    );
}

#[test]
fn unknown_outcomes_allow_either_result() {
    let (mut observed, mut history) = healthy();
    // Attempt 0's confirm got no answer, attempt 1's release got no answer and its confirm a
    // 503: the order of attempt 0 may exist, and so may one for attempt 1.
    history[1].status = None;
    history[1].order_id = None;
    history[3].status = None;
    history[4].status = Some(503);
    observed.orders.push(order(RID_B, "b1"));
    observed.holds.insert(RID_B.into(), "confirmed".into());
    observed.skus[0].sql_sold = 2;
    let counters = observed.skus[0].redis.as_mut().unwrap();
    counters.sold = 2;
    counters.available = 0;
    let report = check(&observed, &history, true);
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(report.tally.confirms_unknown, 2);
}

#[test]
fn an_order_nobody_reserved_is_caught() {
    let (mut observed, history) = healthy();
    let stray = "rsv_0000000000000000000000000000000c_HOT";
    observed.orders.push(order(stray, "b9"));
    observed.skus[0].sql_sold = 2;
    let counters = observed.skus[0].redis.as_mut().unwrap();
    counters.sold = 2;
    counters.available = 0;
    assert_eq!(broken(&observed, &history), vec!["order_has_a_reservation"]);
}
