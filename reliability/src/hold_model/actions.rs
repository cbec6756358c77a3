//! The transitions: every step an actor can take, when it is enabled, what it does, and the
//! script or function of stockgate it stands for ([`Action::stands_for`]).

use std::fmt;

use super::scripts::Begin;
use super::state::{Answer, Fate, HoldState, Reconciler, Repair, Rid, State, Step};
use super::{HoldModel, RepairRule, Rules};

/// One atomic step of one actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// A buyer's reserve fills its next slot.
    Reserve(Rid),
    /// The buyer gives the hold back.
    Release(Rid),
    /// Time passes the hold's expiry (abstract time: any moment after the reserve).
    ExpiryPasses(Rid),
    /// The sweeper expires a due held hold.
    Sweep(Rid),
    /// The gateway's confirm, step 1 (a retry of the buyer starts here too).
    BeginConfirm(Rid),
    /// Step 2: the settlement call leaves the gateway.
    SendSettle(Rid),
    /// Settlement commits one queued request of (id, attempt) in its own transaction.
    SettleCommit(Rid, u8),
    /// Step 3 on `Committed`.
    GatewayFinish(Rid),
    /// Step 3 on an SQL refusal.
    GatewayAbort(Rid),
    /// Step 3 on a token refusal: nothing, the hold stays confirming.
    GatewayLeavesConfirming(Rid),
    /// The gateway dies (or stops waiting) before its next step.
    GatewayDies(Rid),
    /// The buyer cancels the live order of this reservation.
    Cancel(Rid),
    /// The relay applies the `order.cancelled` event to Redis and marks it published.
    RelayDeliver(Rid),
    /// The same, but the relay dies before marking it: it is delivered again later.
    RelayDeliverUnmarked(Rid),
    /// The reconciler reads a confirming hold and asks SQL about it (`Before`) or claims its
    /// id in SQL (`Fixed`). One step: a hold that stops confirming between the Redis read and
    /// the SQL call makes the act a no-op (`Before`) or already has its fate claimed by
    /// whoever ended it (`Fixed`), so splitting it adds no behaviour.
    ReconcilerDecides(Rid),
    /// It finishes the confirm.
    ReconcilerFinish(Rid),
    /// It releases the hold.
    ReconcilerAbort(Rid),
    /// Its round fails or its process dies between two steps.
    ReconcilerDies,
    /// Ops raise total_stock by one: the SQL write.
    RestockSql,
    /// The Redis write of the same restock.
    RestockRedis,
    /// Redis loses this buyer's count in `buyers {sku}`.
    RedisForgetsBuyer(u8),
    /// Redis fails over to a replica that missed this hold (and its counter writes).
    LoseHold(Rid),
    /// The gateway's confirm found no hold: it asks SQL for the reservation's fate.
    DecideFate(Rid),
    /// `reconcile --repair`, step 1: open the journal, read SQL.
    RepairReads,
    /// Step 2: rebuild the counters.
    RepairWrites,
    /// The repair's process dies between its steps.
    RepairDies,
}

impl Action {
    /// The script or function of stockgate this step stands for.
    pub fn stands_for(self, rules: Rules) -> &'static str {
        match self {
            Action::Reserve(_) => {
                "backend-adapters/src/redis/lua/reserve.lua (POST /api/v1/reservations)"
            }
            Action::Release(_) => {
                "backend-adapters/src/redis/lua/release.lua (DELETE /api/v1/reservations/{id})"
            }
            Action::ExpiryPasses(_) => "Redis TIME passes the hold's expires (and the token's exp)",
            Action::Sweep(_) => {
                "backend-adapters/src/redis/lua/expire_due.lua (settlement/src/maintenance.rs::sweep)"
            }
            Action::BeginConfirm(_) => {
                "backend-adapters/src/redis/lua/begin_confirm.lua (gateway/src/edge/orders.rs::try_confirm)"
            }
            Action::SendSettle(_) => {
                "gateway/src/edge/orders.rs::try_confirm: POST /internal/settlements"
            }
            Action::SettleCommit(..) => match rules {
                Rules::Before => "backend-adapters/src/sql/settle.rs::settle_batch",
                Rules::Fixed => {
                    "backend-adapters/src/sql/settle.rs::settle_batch with the reservation_fates claim and the SQL per-buyer limit"
                }
            },
            Action::GatewayFinish(_) => {
                "backend-adapters/src/redis/lua/finish_confirm.lua (gateway/src/edge/orders.rs, Settled::Committed)"
            }
            Action::GatewayAbort(_) => {
                "backend-adapters/src/redis/lua/abort_confirm.lua released (gateway/src/edge/orders.rs::refusal)"
            }
            Action::GatewayLeavesConfirming(_) => {
                "gateway/src/edge/orders.rs::refusal: a token refusal leaves the hold confirming"
            }
            Action::GatewayDies(_) => {
                "the gateway dies, or Settled::Unavailable/Ambiguous, between two steps of gateway/src/edge/orders.rs::try_confirm"
            }
            Action::Cancel(_) => {
                "backend-adapters/src/sql/orders.rs::cancel (POST /api/v1/orders/{id}/cancel): sold -= qty, order.cancelled in the outbox"
            }
            Action::RelayDeliver(_) => match rules {
                Rules::Before => {
                    "settlement/src/relay.rs StoreEffects: return_cancelled.lua, then mark_published"
                }
                Rules::Fixed => {
                    "settlement/src/relay.rs StoreEffects: return_cancelled.lua (finishes a confirming hold first), then mark_published"
                }
            },
            Action::RelayDeliverUnmarked(_) => {
                "settlement/src/relay.rs: return_cancelled.lua, the relay dies before mark_published"
            }
            Action::ReconcilerDecides(_) => match rules {
                Rules::Before => {
                    "settlement/src/maintenance.rs::resolve_confirming: confirming_holds.lua, then orders::by_reservation (does an order exist?)"
                }
                Rules::Fixed => {
                    "settlement/src/maintenance.rs::resolve_confirming: confirming_holds.lua, then claim 'released' in reservation_fates (first claim wins)"
                }
            },
            Action::ReconcilerFinish(_) => {
                "backend-adapters/src/redis/lua/finish_confirm.lua (settlement/src/maintenance.rs::resolve_confirming)"
            }
            Action::ReconcilerAbort(_) => {
                "backend-adapters/src/redis/lua/abort_confirm.lua released (settlement/src/maintenance.rs::resolve_confirming)"
            }
            Action::ReconcilerDies => {
                "settlement/src/maintenance.rs::reconcile: the round fails or the process dies"
            }
            Action::RestockSql => {
                "settlement/src/http/admin.rs PUT /api/v1/admin/products/{sku}: SQL total_stock + 1"
            }
            Action::RestockRedis => {
                "settlement/src/http/admin.rs PUT /api/v1/admin/products/{sku}: configure_product.lua total + 1"
            }
            Action::RedisForgetsBuyer(_) => {
                "Redis loses the write of reserve.lua to buyers {sku} (failover to a replica that missed it)"
            }
            Action::LoseHold(_) => {
                "Redis fails over to a replica that missed reserve.lua (and begin_confirm.lua) of this hold"
            }
            Action::DecideFate(_) => match rules {
                Rules::Before => {
                    "gateway/src/edge/orders.rs: begin_confirm.lua not_found -> 404 reservation_not_found, SQL not asked"
                }
                Rules::Fixed => {
                    "gateway/src/edge/orders.rs::lost_hold -> POST /internal/settlements/fate (settlement/src/http/settle.rs::decide_fate: fates::claim_released reason lost_hold, else the order)"
                }
            },
            Action::RepairReads => {
                "settlement/src/maintenance.rs::prepare_repair: begin_repair.lua, then products::repair_basis (one SQL snapshot)"
            }
            Action::RepairWrites => {
                "settlement/src/maintenance.rs::apply_repair: repair_counters.lua"
            }
            Action::RepairDies => {
                "settlement/src/maintenance.rs::reconcile --repair: the process dies between prepare_repair and apply_repair"
            }
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (actor, what) = match self {
            Action::Reserve(r) => ("buyer", format!("reserve {r:?}")),
            Action::Release(r) => ("buyer", format!("release {r:?}")),
            Action::ExpiryPasses(r) => ("clock", format!("{r:?} is due")),
            Action::Sweep(r) => ("sweeper", format!("expire {r:?}")),
            Action::BeginConfirm(r) => ("gateway", format!("begin_confirm {r:?}")),
            Action::SendSettle(r) => ("gateway", format!("send settle {r:?}")),
            Action::SettleCommit(r, a) => ("settlement", format!("commit {r:?} (attempt {a})")),
            Action::GatewayFinish(r) => ("gateway", format!("finish_confirm {r:?}")),
            Action::GatewayAbort(r) => ("gateway", format!("abort_confirm {r:?} released")),
            Action::GatewayLeavesConfirming(r) => ("gateway", format!("leave {r:?} confirming")),
            Action::GatewayDies(r) => ("gateway", format!("dies confirming {r:?}")),
            Action::Cancel(r) => ("buyer", format!("cancel the order of {r:?}")),
            Action::RelayDeliver(r) => ("relay", format!("return_cancelled {r:?}")),
            Action::RelayDeliverUnmarked(r) => {
                ("relay", format!("return_cancelled {r:?}, not marked"))
            }
            Action::ReconcilerDecides(r) => {
                ("reconciler", format!("reads {r:?} confirming, asks sql"))
            }
            Action::ReconcilerFinish(r) => ("reconciler", format!("finish_confirm {r:?}")),
            Action::ReconcilerAbort(r) => ("reconciler", format!("abort_confirm {r:?} released")),
            Action::ReconcilerDies => ("reconciler", "dies".to_owned()),
            Action::RestockSql => ("ops", "restock +1 in sql".to_owned()),
            Action::RestockRedis => ("ops", "restock +1 in redis".to_owned()),
            Action::RedisForgetsBuyer(b) => ("redis", format!("forgets buyer {b}'s count")),
            Action::LoseHold(r) => ("redis", format!("fails over, loses {r:?}")),
            Action::DecideFate(r) => ("gateway", format!("no hold for {r:?}, asks its fate")),
            Action::RepairReads => ("repair", "begins, reads sql".to_owned()),
            Action::RepairWrites => ("repair", "writes the counters".to_owned()),
            Action::RepairDies => ("repair", "dies".to_owned()),
        };
        write!(f, "{actor}: {what}")
    }
}

/// Every step enabled in `s`, in a fixed order (stateright rebuilds paths by index).
pub(crate) fn enabled(m: &HoldModel, s: &State, out: &mut Vec<Action>) {
    let b = &m.bounds;
    // A buyer's reserve goes to its first empty slot; a refused reserve changes nothing.
    for buyer in 0..b.buyers() {
        let next = s
            .rids()
            .find(|&r| s.slot(r).buyer == buyer && s.slot(r).hold.is_none());
        if let Some(rid) = next
            && s.reserve_allowed(buyer, b.per_buyer_limit)
        {
            out.push(Action::Reserve(rid));
        }
    }
    for rid in s.rids() {
        let slot = s.slot(rid);
        let Some(hold) = slot.hold else { continue };
        if hold.state == HoldState::Held {
            out.push(Action::Release(rid));
            if hold.due {
                out.push(Action::Sweep(rid));
            }
        }
        // Expiry matters only while the hold is held (sweeper, begin_confirm) or confirming
        // (the token that settlement checks).
        if !hold.due && matches!(hold.state, HoldState::Held | HoldState::Confirming) {
            out.push(Action::ExpiryPasses(rid));
        }
        match slot.step {
            Step::Idle => {
                if slot.attempts < b.confirm_attempts
                    && matches!(
                        hold.state,
                        HoldState::Held | HoldState::Confirming | HoldState::Lost
                    )
                {
                    out.push(Action::BeginConfirm(rid));
                }
            }
            Step::Begun => out.push(Action::SendSettle(rid)),
            Step::Gone => out.push(Action::DecideFate(rid)),
            Step::Waiting => {}
            Step::Answered(answer) => out.push(match answer {
                Answer::Committed { .. } => Action::GatewayFinish(rid),
                Answer::Oversell | Answer::OverLimit | Answer::AlreadyReleased => {
                    Action::GatewayAbort(rid)
                }
                Answer::TokenExpired => Action::GatewayLeavesConfirming(rid),
            }),
        }
        if slot.step != Step::Idle {
            out.push(Action::GatewayDies(rid));
        }
        if s.order_of(rid).is_some_and(|o| o.live) {
            out.push(Action::Cancel(rid));
        }
        if b.reconciler && s.reconciler == Reconciler::Idle && hold.state == HoldState::Confirming {
            out.push(Action::ReconcilerDecides(rid));
        }
        if b.redis_loses_holds
            && !s.lost_a_hold
            && matches!(hold.state, HoldState::Held | HoldState::Confirming)
        {
            out.push(Action::LoseHold(rid));
        }
    }
    if b.repair.is_some() {
        match s.repair {
            Repair::Idle => out.push(Action::RepairReads),
            Repair::Read(_) => {
                out.push(Action::RepairWrites);
                out.push(Action::RepairDies);
            }
            Repair::Done => {}
        }
    }
    // Both lists are sorted multisets: one action per distinct entry.
    for (i, &(rid, attempt)) in s.settle_queue.iter().enumerate() {
        if i == 0 || s.settle_queue[i - 1] != (rid, attempt) {
            out.push(Action::SettleCommit(rid, attempt));
        }
    }
    for (i, &rid) in s.outbox.iter().enumerate() {
        if i == 0 || s.outbox[i - 1] != rid {
            out.push(Action::RelayDeliver(rid));
            out.push(Action::RelayDeliverUnmarked(rid));
        }
    }
    match s.reconciler {
        Reconciler::Idle => {}
        Reconciler::Decided(rid, Fate::Ordered) => out.push(Action::ReconcilerFinish(rid)),
        Reconciler::Decided(rid, Fate::Released) => out.push(Action::ReconcilerAbort(rid)),
    }
    if s.reconciler != Reconciler::Idle {
        out.push(Action::ReconcilerDies);
    }
    if b.redis_forgets_buyers {
        for buyer in 0..b.buyers() {
            if s.redis.bought[usize::from(buyer)] > 0 {
                out.push(Action::RedisForgetsBuyer(buyer));
            }
        }
    }
    if b.restock {
        if !s.restock.sql_done {
            out.push(Action::RestockSql);
        }
        if !s.restock.redis_done {
            out.push(Action::RestockRedis);
        }
    }
}

/// The state after `action` (which [`enabled`] offered).
pub(crate) fn apply(m: &HoldModel, s: &State, action: Action) -> State {
    let rules = m.rules;
    let mut s = s.clone();
    match action {
        Action::Reserve(rid) => s.reserve(rid),
        Action::Release(rid) => s.release(rid),
        Action::ExpiryPasses(rid) => {
            if let Some(hold) = s.slot_mut(rid).hold.as_mut() {
                hold.due = true;
            }
        }
        Action::Sweep(rid) => s.expire_due(rid),
        Action::BeginConfirm(rid) => {
            let begun = s.begin_confirm(rid);
            let slot = s.slot_mut(rid);
            slot.attempts += 1;
            slot.step = match begun {
                Begin::GoOn => Step::Begun,
                Begin::Refused => Step::Idle,
                Begin::NotFound => Step::Gone,
            };
        }
        Action::SendSettle(rid) => {
            let attempt = s.slot(rid).attempts;
            s.slot_mut(rid).step = Step::Waiting;
            s.settle_queue.push((rid, attempt));
            s.settle_queue.sort();
        }
        Action::SettleCommit(rid, attempt) => {
            let at = s
                .settle_queue
                .iter()
                .position(|&q| q == (rid, attempt))
                .expect("a queued request");
            s.settle_queue.remove(at);
            let answer = s.settle(rid, rules, m.bounds.per_buyer_limit);
            // The answer reaches the gateway only if the attempt that sent it still waits.
            let slot = s.slot_mut(rid);
            if slot.step == Step::Waiting && slot.attempts == attempt {
                slot.step = Step::Answered(answer);
            }
        }
        Action::GatewayFinish(rid) => {
            s.finish_confirm(rid);
            // 201 or 200 whatever finish_confirm said: the order exists in SQL.
            let slot = s.slot_mut(rid);
            if slot.step == (Step::Answered(Answer::Committed { created: true })) {
                slot.answered_created = true;
            }
            slot.step = Step::Idle;
        }
        Action::GatewayAbort(rid) => {
            s.abort_confirm_released(rid);
            s.slot_mut(rid).step = Step::Idle;
        }
        Action::GatewayLeavesConfirming(rid) | Action::GatewayDies(rid) => {
            s.slot_mut(rid).step = Step::Idle;
        }
        Action::Cancel(rid) => s.cancel(rid),
        Action::RelayDeliver(rid) => {
            s.return_cancelled(rid, rules);
            let at = s.outbox.iter().position(|&r| r == rid).expect("an event");
            s.outbox.remove(at);
        }
        Action::RelayDeliverUnmarked(rid) => s.return_cancelled(rid, rules),
        Action::ReconcilerDecides(rid) => {
            let fate = s.reconciler_verdict(rid, rules);
            s.reconciler = Reconciler::Decided(rid, fate);
        }
        Action::ReconcilerFinish(rid) => {
            s.finish_confirm(rid);
            s.reconciler = Reconciler::Idle;
        }
        Action::ReconcilerAbort(rid) => {
            s.abort_confirm_released(rid);
            s.reconciler = Reconciler::Idle;
        }
        Action::ReconcilerDies => s.reconciler = Reconciler::Idle,
        Action::RestockSql => {
            s.sql.total += 1;
            s.restock.sql_done = true;
        }
        Action::RestockRedis => {
            s.configure_product_plus_one();
            s.restock.redis_done = true;
        }
        Action::RedisForgetsBuyer(buyer) => s.redis.bought[usize::from(buyer)] = 0,
        Action::LoseHold(rid) => s.lose_hold(rid),
        Action::DecideFate(rid) => {
            let gone = s.decide_fate(rid, rules);
            let slot = s.slot_mut(rid);
            slot.answered_gone |= gone;
            slot.step = Step::Idle;
        }
        Action::RepairReads => s.repair_reads(
            m.bounds.repair.unwrap_or(RepairRule::Journaled),
            m.bounds.buyers(),
        ),
        Action::RepairWrites => s.repair_writes(m.bounds.repair.unwrap_or(RepairRule::Journaled)),
        Action::RepairDies => {
            for slot in &mut s.slots {
                slot.journal_finished = false;
                slot.journal_returned = false;
            }
            s.repair = Repair::Done;
        }
    }
    s.forget_what_no_step_reads();
    s
}
