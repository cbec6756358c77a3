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
        sent_ms: 0,
        done_ms: 0,
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
    let report = check(observed, history, &Rules::at_rest());
    report.violations.iter().map(|v| v.invariant).collect()
}

#[test]
fn a_consistent_run_passes_and_is_tallied() {
    let (observed, history) = healthy();
    let report = check(&observed, &history, &Rules::at_rest());
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
    assert!(check(&observed, &history, &Rules::live()).ok());
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
    let report = check(&observed, &history, &Rules::at_rest());
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

/// `healthy()` with times: reserves answered at 1,000 ms, confirms sent at `confirm_at`.
fn timed(confirm_at: u64) -> (Observed, Vec<Record>) {
    let (observed, mut history) = healthy();
    for r in &mut history {
        (r.sent_ms, r.done_ms) = match r.op {
            Op::Reserve => (900, 1_000),
            _ => (confirm_at, confirm_at + 10),
        };
    }
    (observed, history)
}

fn ttl_rules(confirms_in_ttl_succeed: bool) -> Rules {
    Rules {
        hold_ttl_ms: Some(10_000),
        confirms_in_ttl_succeed,
        ..Rules::at_rest()
    }
}

#[test]
fn confirms_are_judged_by_the_hold_ttl() {
    // Inside the TTL: attempt 0 confirmed, attempt 1 (released) refused: fine.
    let (observed, history) = timed(5_000);
    let report = check(&observed, &history, &ttl_rules(true));
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(report.tally.confirms_inside_ttl, 1);

    // A confirm of a live hold refused while no fault ran.
    let (observed, mut refused) = timed(5_000);
    refused[1].status = Some(410);
    refused[1].order_id = None;
    let names: Vec<_> = check(&observed, &refused, &ttl_rules(true))
        .violations
        .iter()
        .map(|v| v.invariant)
        .collect();
    assert!(names.contains(&"confirm_inside_ttl_succeeds"), "{names:?}");
    // With a fault a refusal inside the TTL is allowed (the order check still applies).
    let names: Vec<_> = check(&observed, &refused, &ttl_rules(false))
        .violations
        .iter()
        .map(|v| v.invariant)
        .collect();
    assert!(!names.contains(&"confirm_inside_ttl_succeeds"), "{names:?}");

    // After expiry: the 201 with its order is wrong twice over.
    let (observed, late) = timed(12_500);
    let names: Vec<_> = check(&observed, &late, &ttl_rules(false))
        .violations
        .iter()
        .map(|v| v.invariant)
        .collect();
    assert_eq!(
        names,
        vec!["expired_hold_never_ordered", "expired_hold_answered_410"]
    );

    // Within the clock margin of expiry either answer is accepted.
    let (observed, edge) = timed(10_500);
    assert!(check(&observed, &edge, &ttl_rules(true)).ok());
}

#[test]
fn a_late_confirm_must_be_a_410_without_an_order() {
    let (mut observed, mut history) = timed(12_500);
    observed.orders.clear();
    observed.skus[0].sql_sold = 0;
    let counters = observed.skus[0].redis.as_mut().unwrap();
    counters.sold = 0;
    counters.available = 2;
    observed.holds.insert(RID_A.into(), "expired".into());
    history[1].status = Some(410);
    history[1].order_id = None;
    let report = check(&observed, &history, &ttl_rules(false));
    assert!(report.ok(), "{:?}", report.violations);
    assert_eq!(report.tally.confirms_after_expiry, 2);
    history[1].status = Some(404);
    assert_eq!(
        check(&observed, &history, &ttl_rules(false))
            .violations
            .iter()
            .map(|v| v.invariant)
            .collect::<Vec<_>>(),
        vec!["expired_hold_answered_410"]
    );
}

fn ops_record(attempt: usize, op: Op, status: Option<u16>, qty: u32) -> Record {
    Record {
        order_id: (op == Op::Cancel).then(|| format!("ord_{RID_A}")),
        buyer: "ops".into(),
        qty,
        ..record(attempt, op, status, RID_A)
    }
}

/// `healthy()` after ops cancelled attempt 0's order and restocked 3 units (one more restock
/// of 5 got no answer).
fn churned(restock_applied: i64) -> (Observed, Vec<Record>, Rules) {
    let (mut observed, mut history) = healthy();
    observed.orders[0].status = "cancelled".into();
    let sku = &mut observed.skus[0];
    sku.sql_sold = 0;
    sku.sql_total_stock = 2 + restock_applied;
    let counters = sku.redis.as_mut().unwrap();
    counters.sold = 0;
    counters.total_stock = 2 + restock_applied as u64;
    counters.available = 2 + restock_applied as u64;
    history.push(ops_record(10, Op::Cancel, Some(200), 1));
    history.push(ops_record(11, Op::Restock, Some(200), 3));
    history.push(ops_record(12, Op::Restock, None, 5));
    let rules = Rules {
        initial_stock: [("HOT".to_owned(), 2)].into(),
        ..Rules::at_rest()
    };
    (observed, history, rules)
}

#[test]
fn cancels_and_restocks_by_ops_are_accounted_for() {
    for applied in [3, 8] {
        let (observed, history, rules) = churned(applied);
        let report = check(&observed, &history, &rules);
        assert!(report.ok(), "{applied}: {:?}", report.violations);
        assert_eq!(report.tally.cancels_acknowledged, 1);
        assert_eq!(report.tally.restocked_units, 3);
        assert_eq!(report.tally.attempts, 2, "ops records are not attempts");
    }
    // A restock lost, or counted twice.
    for applied in [0, 11] {
        let (mut observed, history, rules) = churned(applied);
        observed.skus[0].redis.as_mut().unwrap().available = 2 + applied as u64;
        let names: Vec<_> = check(&observed, &history, &rules)
            .violations
            .iter()
            .map(|v| v.invariant)
            .collect();
        assert_eq!(names, vec!["restocks_counted"], "{applied}");
    }
    // An acknowledged cancel that did not happen; a cancel nobody made.
    let (observed, mut history, rules) = churned(3);
    history.retain(|r| r.op != Op::Cancel);
    let names: Vec<_> = check(&observed, &history, &rules)
        .violations
        .iter()
        .map(|v| v.invariant)
        .collect();
    assert!(
        names.contains(&"cancelled_order_was_cancelled"),
        "{names:?}"
    );
    assert!(names.contains(&"acknowledged_order_matches"), "{names:?}");
    let (mut observed, history, rules) = churned(3);
    observed.orders[0].status = "confirmed".into();
    observed.skus[0].sql_sold = 1;
    let counters = observed.skus[0].redis.as_mut().unwrap();
    counters.sold = 1;
    counters.available -= 1;
    let names: Vec<_> = check(&observed, &history, &rules)
        .violations
        .iter()
        .map(|v| v.invariant)
        .collect();
    assert_eq!(names, vec!["acknowledged_cancel_is_cancelled"]);
}

#[test]
fn a_hold_redis_lost_must_be_answered_410() {
    // Attempt 1 never released; its hold is gone from Redis and its confirm was told 404.
    let (mut observed, mut history) = healthy();
    history.retain(|r| r.op != Op::Release);
    observed.holds.remove(RID_B);
    history[3].status = Some(404);
    assert_eq!(broken(&observed, &history), vec!["lost_hold_answered_410"]);
    history[3].status = Some(410);
    assert!(broken(&observed, &history).is_empty());
}

#[test]
fn a_failover_relaxes_only_what_redis_forgot_in_its_window() {
    // Attempt 1 released its hold (204) and then confirmed it with a 201: an order for a
    // released hold, whose Redis state reads `expired`, and two ids for one key.
    let (mut observed, mut history) = healthy();
    observed.orders.push(order(RID_B, "b1"));
    observed.holds.insert(RID_B.into(), "expired".into());
    observed.skus[0].sql_sold = 2;
    let counters = observed.skus[0].redis.as_mut().unwrap();
    counters.sold = 2;
    counters.available = 0;
    history[4].status = Some(201);
    history[4].order_id = Some(format!("ord_{RID_B}"));
    history[2]
        .ids_seen
        .insert(0, "rsv_0000000000000000000000000000000c_HOT".into());
    for r in &mut history {
        (r.sent_ms, r.done_ms) = if r.attempt == 1 {
            (5_000, 5_100)
        } else {
            (100, 200)
        };
    }
    let mut names = broken(&observed, &history);
    names.sort_unstable();
    assert_eq!(
        names,
        vec![
            "one_reservation_per_idempotency_key",
            "released_hold_never_confirmed",
            "released_or_expired_hold_never_confirmed",
        ]
    );
    // The window covers attempt 1: relaxed.
    let lost = Rules {
        redis_lost_writes: Some((4_000, 6_000)),
        ..Rules::at_rest()
    };
    let report = check(&observed, &history, &lost);
    assert!(report.ok(), "{:?}", report.violations);
    // A window that covers only attempt 0 relaxes nothing of attempt 1.
    let elsewhere = Rules {
        redis_lost_writes: Some((0, 1_000)),
        ..Rules::at_rest()
    };
    assert_eq!(check(&observed, &history, &elsewhere).violations.len(), 3);
    // What SQL keeps is never relaxed: an acknowledged order missing is still caught.
    observed.orders.retain(|o| o.reservation_id != RID_A);
    observed.skus[0].sql_sold = 1;
    let counters = observed.skus[0].redis.as_mut().unwrap();
    counters.sold = 1;
    counters.available = 1;
    let names: Vec<_> = check(&observed, &history, &lost)
        .violations
        .iter()
        .map(|v| v.invariant)
        .collect();
    assert_eq!(names, vec!["acknowledged_order_exists"]);
}
