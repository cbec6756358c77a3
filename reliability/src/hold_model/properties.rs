//! The properties: docs/design.md §6 as predicates on one state ("always"), and a few
//! "sometimes" ones that show the checker reached the interleavings that matter (a model that
//! could not reach them would pass every "always" for nothing).

use stateright::Property;

use super::HoldModel;
use super::state::{Answer, Fate, HoldState, Reconciler, Repair, State, Step};

pub const REDIS_BALANCED: &str =
    "redis available + held + confirming + sold = total_stock, all >= 0";
pub const REDIS_COUNTS_HOLDS: &str =
    "redis held and confirming count the held and confirming holds";
pub const SQL_NEVER_OVERSELLS: &str = "sql sold <= total_stock";
pub const SQL_SOLD_IS_LIVE_ORDERS: &str = "sql sold = sum of non-cancelled order qty";
pub const ONE_ORDER_PER_RESERVATION: &str = "no reservation id has two orders";
pub const CREATED_HAS_ORDER: &str = "every 201 from POST /orders has its sql order";
pub const NO_ORDER_FOR_ENDED_HOLD: &str =
    "no order for a reservation whose hold is released or expired";
pub const ENDED_HOLD_STAYS_ENDED: &str = "a released or expired hold is never confirmed";
pub const SQL_PER_BUYER_LIMIT: &str =
    "live order units of one buyer for the sku never exceed the limit";
pub const AT_REST_SOLD_AGREES: &str =
    "at rest, redis sold = sql sold (once a repair made after any loss of redis data wrote)";
pub const ANSWERED_GONE_HAS_NO_ORDER: &str =
    "a buyer told a reservation has no order never has one for it";
pub const RELEASED_FATE_HAS_NO_ORDER: &str = "no order for a reservation claimed released in sql";

pub const SOMETIMES_CREATED: &str = "sometimes: a buyer is answered 201";
pub const SOMETIMES_CANCEL_WHILE_CONFIRMING: &str =
    "sometimes: an order is cancelled while its hold is confirming";
pub const SOMETIMES_RECONCILER_VS_SETTLE: &str =
    "sometimes: the reconciler releases a hold whose settle request is still queued";
pub const SOMETIMES_OVERSELL_REFUSED: &str = "sometimes: sql refuses a confirm for want of stock";
pub const SOMETIMES_OVER_LIMIT_REFUSED: &str =
    "sometimes: sql refuses a confirm over the per-buyer limit";
pub const SOMETIMES_LOST_HOLD_GONE: &str =
    "sometimes: a confirm whose hold redis lost is told there is no order";
pub const SOMETIMES_FINISH_IN_REPAIR_WINDOW: &str =
    "sometimes: a confirm finishes between a repair's sql read and its write";
pub const SOMETIMES_RETURN_IN_REPAIR_WINDOW: &str =
    "sometimes: a cancellation is returned between a repair's sql read and its write";
pub const SOMETIMES_TOKEN_EXPIRED: &str =
    "sometimes: settlement refuses an expired token, the hold stays confirming";

pub(crate) fn all() -> Vec<Property<HoldModel>> {
    vec![
        Property::always(REDIS_BALANCED, redis_balanced),
        Property::always(REDIS_COUNTS_HOLDS, redis_counts_holds),
        Property::always(SQL_NEVER_OVERSELLS, sql_never_oversells),
        Property::always(SQL_SOLD_IS_LIVE_ORDERS, sql_sold_is_live_orders),
        Property::always(ONE_ORDER_PER_RESERVATION, one_order_per_reservation),
        Property::always(CREATED_HAS_ORDER, created_has_order),
        Property::always(NO_ORDER_FOR_ENDED_HOLD, no_order_for_ended_hold),
        Property::always(ENDED_HOLD_STAYS_ENDED, ended_hold_stays_ended),
        Property::always(SQL_PER_BUYER_LIMIT, sql_per_buyer_limit),
        Property::always(AT_REST_SOLD_AGREES, at_rest_sold_agrees),
        Property::always(ANSWERED_GONE_HAS_NO_ORDER, answered_gone_has_no_order),
        Property::always(RELEASED_FATE_HAS_NO_ORDER, released_fate_has_no_order),
        Property::sometimes(SOMETIMES_CREATED, created),
        Property::sometimes(SOMETIMES_CANCEL_WHILE_CONFIRMING, cancel_while_confirming),
        Property::sometimes(SOMETIMES_RECONCILER_VS_SETTLE, reconciler_vs_settle),
        Property::sometimes(SOMETIMES_OVERSELL_REFUSED, oversell_refused),
        Property::sometimes(SOMETIMES_OVER_LIMIT_REFUSED, over_limit_refused),
        Property::sometimes(SOMETIMES_TOKEN_EXPIRED, token_expired),
        Property::sometimes(SOMETIMES_LOST_HOLD_GONE, lost_hold_gone),
        Property::sometimes(SOMETIMES_FINISH_IN_REPAIR_WINDOW, finish_in_repair_window),
        Property::sometimes(SOMETIMES_RETURN_IN_REPAIR_WINDOW, return_in_repair_window),
    ]
}

fn redis_balanced(_: &HoldModel, s: &State) -> bool {
    let r = &s.redis;
    [r.available, r.held, r.confirming, r.sold]
        .iter()
        .all(|&n| n >= 0)
        && r.bought.iter().all(|&n| n >= 0)
        && i16::from(r.available) + i16::from(r.held) + i16::from(r.confirming) + i16::from(r.sold)
            == i16::from(r.total)
}

fn redis_counts_holds(_: &HoldModel, s: &State) -> bool {
    let count = |state| {
        s.slots
            .iter()
            .filter(|slot| slot.hold.is_some_and(|h| h.state == state))
            .count() as i8
    };
    s.redis.held == count(HoldState::Held) && s.redis.confirming == count(HoldState::Confirming)
}

fn sql_never_oversells(_: &HoldModel, s: &State) -> bool {
    s.sql.sold <= s.sql.total
}

fn sql_sold_is_live_orders(_: &HoldModel, s: &State) -> bool {
    usize::try_from(s.sql.sold).ok() == Some(s.sql.orders.iter().filter(|o| o.live).count())
}

fn one_order_per_reservation(_: &HoldModel, s: &State) -> bool {
    s.rids()
        .all(|r| s.sql.orders.iter().filter(|o| o.rid == r).count() <= 1)
}

fn created_has_order(_: &HoldModel, s: &State) -> bool {
    s.rids()
        .all(|r| !s.slot(r).answered_created || s.order_of(r).is_some())
}

/// Whoever ended the hold (buyer, sweeper, reconciler, the gateway on a refusal), and whether
/// the order is live or cancelled.
fn no_order_for_ended_hold(_: &HoldModel, s: &State) -> bool {
    s.sql
        .orders
        .iter()
        .all(|o| !s.hold_state(o.rid).is_some_and(HoldState::is_final))
}

fn ended_hold_stays_ended(_: &HoldModel, s: &State) -> bool {
    s.slots
        .iter()
        .filter_map(|slot| slot.hold)
        .all(|h| !h.was_final || h.state.is_final())
}

fn sql_per_buyer_limit(m: &HoldModel, s: &State) -> bool {
    (0..m.bounds.buyers()).all(|b| s.live_units(b) <= m.bounds.per_buyer_limit)
}

/// Redis lost data (`damaged`) is what `reconcile --repair` is for: until a repair that
/// began after the loss wrote, the stores may disagree.
fn at_rest_sold_agrees(_: &HoldModel, s: &State) -> bool {
    !at_rest(s) || s.damaged || s.redis.sold == s.sql.sold
}

fn answered_gone_has_no_order(_: &HoldModel, s: &State) -> bool {
    s.rids()
        .all(|r| !s.slot(r).answered_gone || s.order_of(r).is_none())
}

fn released_fate_has_no_order(_: &HoldModel, s: &State) -> bool {
    s.rids()
        .all(|r| s.slot(r).fate != Some(Fate::Released) || s.order_of(r).is_none())
}

fn lost_hold_gone(_: &HoldModel, s: &State) -> bool {
    s.slots
        .iter()
        .any(|slot| slot.answered_gone && slot.hold.is_some_and(|h| h.state == HoldState::Lost))
}

fn finish_in_repair_window(_: &HoldModel, s: &State) -> bool {
    matches!(s.repair, Repair::Read(_)) && s.slots.iter().any(|slot| slot.journal_finished)
}

fn return_in_repair_window(_: &HoldModel, s: &State) -> bool {
    matches!(s.repair, Repair::Read(_)) && s.slots.iter().any(|slot| slot.journal_returned)
}

fn created(_: &HoldModel, s: &State) -> bool {
    s.slots.iter().any(|slot| slot.answered_created)
}

fn oversell_refused(_: &HoldModel, s: &State) -> bool {
    answered(s, Answer::Oversell)
}

fn over_limit_refused(_: &HoldModel, s: &State) -> bool {
    answered(s, Answer::OverLimit)
}

fn token_expired(_: &HoldModel, s: &State) -> bool {
    answered(s, Answer::TokenExpired)
}

fn cancel_while_confirming(_: &HoldModel, s: &State) -> bool {
    s.sql
        .orders
        .iter()
        .any(|o| !o.live && s.hold_state(o.rid) == Some(HoldState::Confirming))
}

/// The reconciler has decided to release a confirming hold while a settle request of it is
/// still queued: the moment the `Before` race needs.
fn reconciler_vs_settle(_: &HoldModel, s: &State) -> bool {
    match s.reconciler {
        Reconciler::Decided(rid, Fate::Released) => {
            s.hold_state(rid) == Some(HoldState::Confirming)
                && s.settle_queue.iter().any(|&(r, _)| r == rid)
        }
        _ => false,
    }
}

/// Nothing in flight can still move `sold` on either side: no hold confirming (Redis sold
/// waits for a finish), no settlement request queued (SQL sold waits for a commit), no
/// cancellation unpublished (Redis sold waits for its return), no repair between its read and
/// its write. A gateway step still due then
/// is a finish or abort on a hold that is no longer confirming: no write.
pub fn at_rest(s: &State) -> bool {
    !matches!(s.repair, Repair::Read(_))
        && s.settle_queue.is_empty()
        && s.outbox.is_empty()
        && s.slots
            .iter()
            .all(|slot| slot.hold.is_none_or(|h| h.state != HoldState::Confirming))
}

fn answered(s: &State, answer: Answer) -> bool {
    s.slots
        .iter()
        .any(|slot| slot.step == Step::Answered(answer))
}
