//! The twins of the Redis scripts and SQL transactions, each one atomic step on [`State`].
//! A twin keeps its script's checks and writes for qty 1 on one SKU, and says so in its doc
//! line; when a script changes, its twin here changes with it.

use super::state::{Answer, Fate, HoldState, Order, Repair, RepairBasis, Rid, State};
use super::{RepairRule, Rules};

/// What `begin_confirm.lua` answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Begin {
    /// held → confirming, or already confirming/confirmed: the settlement call is next.
    GoOn,
    /// Expired or released: the buyer gets 410.
    Refused,
    /// `not_found`: the store has no hold (`Lost`).
    NotFound,
}

impl State {
    fn hold_mut(&mut self, rid: Rid) -> &mut super::state::Hold {
        self.slot_mut(rid)
            .hold
            .as_mut()
            .expect("a script runs on a reservation that exists")
    }

    /// A hold ends `released` or `expired`.
    fn end_hold(&mut self, rid: Rid, to: HoldState) {
        let hold = self.hold_mut(rid);
        hold.state = to;
        hold.was_final = true;
    }

    /// `buyer_gives_back` of `lua/lib/give_back.lua`: the buyer's count drops by qty, never
    /// below 0 (a buyer with nothing left is `HDEL`ed).
    fn buyer_gives_back(&mut self, buyer: u8) {
        let left = self.redis.bought[usize::from(buyer)] - 1;
        self.redis.bought[usize::from(buyer)] = left.max(0);
    }

    /// `give_back_held` then `end_hold` of `lua/lib/give_back.lua`: a held hold's units back
    /// to available and off its buyer's count, the hold ends `to`.
    fn give_back_held(&mut self, rid: Rid, to: HoldState) {
        self.redis.held -= 1;
        self.redis.available += 1;
        self.buyer_gives_back(self.slot(rid).buyer);
        self.end_hold(rid, to);
    }

    /// `reserve.lua`, its checks: per-buyer limit (`bought + qty <= limit`), then stock. A
    /// refused reserve writes nothing, so the model only takes the ones that pass.
    pub(crate) fn reserve_allowed(&self, buyer: u8, per_buyer_limit: i8) -> bool {
        self.redis.bought[usize::from(buyer)] < per_buyer_limit && self.redis.available >= 1
    }

    /// `reserve.lua`, its writes: available → held, the buyer's count, the hold hash.
    pub(crate) fn reserve(&mut self, rid: Rid) {
        let buyer = self.slot(rid).buyer;
        self.redis.available -= 1;
        self.redis.held += 1;
        self.redis.bought[usize::from(buyer)] += 1;
        self.slot_mut(rid).hold = Some(super::state::Hold {
            state: HoldState::Held,
            due: false,
            was_final: false,
        });
    }

    /// `release.lua`: a held hold → `released` (`expired` when already due), units back; a
    /// hold in any other state is refused or already final (no write).
    pub(crate) fn release(&mut self, rid: Rid) {
        let Some(hold) = self.slot(rid).hold else {
            return;
        };
        if hold.state != HoldState::Held {
            return;
        }
        let to = if hold.due {
            HoldState::Expired
        } else {
            HoldState::Released
        };
        self.give_back_held(rid, to);
    }

    /// `expire_due.lua` for one id of the expiry index: only a held hold that is due.
    pub(crate) fn expire_due(&mut self, rid: Rid) {
        let Some(hold) = self.slot(rid).hold else {
            return;
        };
        if hold.state != HoldState::Held || !hold.due {
            return;
        }
        self.give_back_held(rid, HoldState::Expired);
    }

    /// `begin_confirm.lua`: held → confirming (or already confirming/confirmed) goes on; a
    /// due held hold is expired on the spot and refused; a lost hold is `not_found`.
    pub(crate) fn begin_confirm(&mut self, rid: Rid) -> Begin {
        let Some(hold) = self.slot(rid).hold else {
            return Begin::Refused;
        };
        match hold.state {
            HoldState::Confirming | HoldState::Confirmed => Begin::GoOn,
            HoldState::Released | HoldState::Expired => Begin::Refused,
            HoldState::Lost => Begin::NotFound,
            HoldState::Held if hold.due => {
                self.give_back_held(rid, HoldState::Expired);
                Begin::Refused
            }
            HoldState::Held => {
                self.redis.held -= 1;
                self.redis.confirming += 1;
                self.hold_mut(rid).state = HoldState::Confirming;
                Begin::GoOn
            }
        }
    }

    /// `finish_confirm.lua`: confirming → confirmed (units confirming → sold), journaled while
    /// a repair runs; idempotent on confirmed; any other state is `invalid_state` or
    /// `not_found` (no write).
    pub(crate) fn finish_confirm(&mut self, rid: Rid) {
        if self.hold_state(rid) != Some(HoldState::Confirming) {
            return;
        }
        self.redis.confirming -= 1;
        self.redis.sold += 1;
        self.hold_mut(rid).state = HoldState::Confirmed;
        if matches!(self.repair, Repair::Read(_)) {
            self.slot_mut(rid).journal_finished = true;
        }
    }

    /// `abort_confirm.lua` with `released`: confirming → released, units back to available;
    /// any other state is `invalid_state` (no write).
    pub(crate) fn abort_confirm_released(&mut self, rid: Rid) {
        if self.hold_state(rid) != Some(HoldState::Confirming) {
            return;
        }
        self.redis.confirming -= 1;
        self.redis.available += 1;
        self.buyer_gives_back(self.slot(rid).buyer);
        self.end_hold(rid, HoldState::Released);
    }

    /// `return_cancelled.lua`: once per id (the returned set), sold → available and the
    /// buyer's count, journaled while a repair runs, refused when `sold < qty` (left to the
    /// repair, journaled, when one runs). `Rules::Fixed`: a hold still confirming is
    /// finished first (the cancel came before the gateway's `finish_confirm`).
    pub(crate) fn return_cancelled(&mut self, rid: Rid, rules: Rules) {
        if self.slot(rid).returned {
            return;
        }
        if rules == Rules::Fixed {
            self.finish_confirm(rid);
        }
        if self.redis.sold < 1 {
            if matches!(self.repair, Repair::Read(_)) {
                // A repair is rewriting the counters: the return is left to it.
                let slot = self.slot_mut(rid);
                slot.journal_returned = true;
                slot.returned = true;
            }
            // Else `invalid_state`: the relay logs it and marks the event published.
            return;
        }
        self.redis.sold -= 1;
        self.redis.available += 1;
        self.buyer_gives_back(self.slot(rid).buyer);
        self.slot_mut(rid).returned = true;
        if matches!(self.repair, Repair::Read(_)) {
            self.slot_mut(rid).journal_returned = true;
        }
    }

    /// `configure_product.lua` with total + 1: refused below the committed units, else
    /// `available = total - held - confirming - sold`.
    pub(crate) fn configure_product_plus_one(&mut self) {
        let total = self.redis.total + 1;
        let committed = self.redis.held + self.redis.confirming + self.redis.sold;
        if total < committed {
            return;
        }
        self.redis.total = total;
        self.redis.available = total - committed;
        // configure_product.lua drops the journal of a repair in progress: its write will be
        // refused (`repair_superseded`), and the next reconcile repairs again.
        if matches!(self.repair, Repair::Read(_)) {
            self.repair = Repair::Idle;
        }
    }

    /// `settle_batch` for one request, one transaction. Every rule set: an existing order is
    /// returned (`Existing`), else `sold + qty <= total_stock` or `Oversell`. `Rules::Fixed`
    /// adds, inside the same transaction: an id claimed `released` is refused; the buyer's live
    /// units + qty must stay within the per-buyer limit; a new order claims `ordered`, a
    /// refusal claims `released`. An expired token with no order is refused before the
    /// transaction (`settlement/src/http/settle.rs`), writing nothing.
    pub(crate) fn settle(&mut self, rid: Rid, rules: Rules, per_buyer_limit: i8) -> Answer {
        if self.order_of(rid).is_some() {
            return Answer::Committed { created: false };
        }
        if self.slot(rid).hold.is_some_and(|h| h.due) {
            return Answer::TokenExpired;
        }
        let buyer = self.slot(rid).buyer;
        let refusal = match rules {
            Rules::Before => (self.sql.sold + 1 > self.sql.total).then_some(Answer::Oversell),
            Rules::Fixed => {
                if self.slot(rid).fate == Some(Fate::Released) {
                    return Answer::AlreadyReleased;
                }
                if self.live_units(buyer) + 1 > per_buyer_limit {
                    Some(Answer::OverLimit)
                } else if self.sql.sold + 1 > self.sql.total {
                    Some(Answer::Oversell)
                } else {
                    None
                }
            }
        };
        if let Some(refusal) = refusal {
            if rules == Rules::Fixed {
                self.slot_mut(rid).fate = Some(Fate::Released);
            }
            return refusal;
        }
        self.sql.orders.push(Order {
            rid,
            buyer,
            live: true,
        });
        self.sql.orders.sort();
        self.sql.sold += 1;
        if self.hold_state(rid) == Some(HoldState::Lost) {
            // A try sent before Redis lost the hold commits now: no finish can ever count it
            // in Redis (the hold is gone). Damage of the loss that only a repair reading SQL
            // after this commit mends.
            self.damaged = true;
            if let Repair::Read(basis) = &mut self.repair {
                basis.loss_since = true;
            }
        }
        if rules == Rules::Fixed {
            self.slot_mut(rid).fate = Some(Fate::Ordered);
        }
        Answer::Committed { created: true }
    }

    /// `orders::cancel` of a live order: status → cancelled, `sold -= qty` and an
    /// `order.cancelled` outbox row, one transaction.
    pub(crate) fn cancel(&mut self, rid: Rid) {
        let Some(order) = self.sql.orders.iter_mut().find(|o| o.rid == rid && o.live) else {
            return;
        };
        order.live = false;
        self.sql.sold -= 1;
        self.outbox.push(rid);
        self.outbox.sort();
    }

    /// What the reconciler learns from SQL about a confirming hold. `Rules::Before`: does an
    /// order exist (`orders::by_reservation`)? `Rules::Fixed`: claim `released` (insert, first
    /// claim wins) and read back whichever fate the id has.
    pub(crate) fn reconciler_verdict(&mut self, rid: Rid, rules: Rules) -> Fate {
        match rules {
            Rules::Before => {
                if self.order_of(rid).is_some() {
                    Fate::Ordered
                } else {
                    Fate::Released
                }
            }
            Rules::Fixed => *self.slot_mut(rid).fate.get_or_insert(Fate::Released),
        }
    }

    /// A Redis failover to a replica that missed the hold: the hold record is gone, and the
    /// counters are as if its reserve (and its begin_confirm) never ran.
    pub(crate) fn lose_hold(&mut self, rid: Rid) {
        match self.hold_state(rid) {
            Some(HoldState::Held) => self.redis.held -= 1,
            Some(HoldState::Confirming) => self.redis.confirming -= 1,
            _ => return,
        }
        self.redis.available += 1;
        self.buyer_gives_back(self.slot(rid).buyer);
        self.hold_mut(rid).state = HoldState::Lost;
        self.damaged = true;
        self.lost_a_hold = true;
        if let Repair::Read(basis) = &mut self.repair {
            basis.loss_since = true;
        }
    }

    /// The gateway's answer to a confirm whose hold the store does not have. `Rules::Fixed`:
    /// `POST /internal/settlements/fate` (`decide_fate`) claims the id `released` (reason
    /// `lost_hold`; first claim wins) unless it is `ordered`: the order is answered 200, else
    /// 410. `Rules::Before`: 404 from the store alone, nothing asked of SQL. `true` when the
    /// buyer is told there is no order.
    pub(crate) fn decide_fate(&mut self, rid: Rid, rules: Rules) -> bool {
        match rules {
            Rules::Before => true,
            Rules::Fixed => {
                *self.slot_mut(rid).fate.get_or_insert(Fate::Released) == Fate::Released
            }
        }
    }

    /// `maintenance::prepare_repair`: `begin_repair.lua` (opens the journal, lists the
    /// confirming holds: `asked`), then `products::repair_basis` in one SQL snapshot. Every
    /// order of the model is recent, so `ordered` has every order (`RepairRule::Journaled`,
    /// live or cancelled), or, as before, those asked about and the live ones.
    pub(crate) fn repair_reads(&mut self, rule: RepairRule, buyers: u8) {
        let bit = |rid: Rid| 1u8 << rid.0;
        let mut basis = RepairBasis {
            total: self.sql.total,
            sold: self.sql.sold,
            bought: (0..buyers).map(|b| self.live_units(b)).collect(),
            ordered: 0,
            cancelled: 0,
            loss_since: false,
        };
        for order in &self.sql.orders {
            let asked = self.hold_state(order.rid) == Some(HoldState::Confirming);
            let in_ordered = match rule {
                RepairRule::Journaled => true,
                RepairRule::Unjournaled => asked || order.live,
            };
            if in_ordered {
                basis.ordered |= bit(order.rid);
            }
            if !order.live {
                basis.cancelled |= bit(order.rid);
            }
        }
        for slot in &mut self.slots {
            slot.journal_finished = false;
            slot.journal_returned = false;
        }
        self.repair = Repair::Read(basis);
    }

    /// `maintenance::apply_repair`: `repair_counters.lua`. Sold and the buyers' counts from
    /// the snapshot, corrected by the journal (`RepairRule::Journaled`; the old script had
    /// none); held and confirming recounted from the holds, a hold with an order in the
    /// snapshot finished uncounted; cancelled ids marked returned; refused (no write) when the
    /// total cannot hold them. Repairs the damage of a loss before it began, except the one
    /// case its header names: a lost hold whose order committed after the snapshot and was
    /// returned in the window (that return took a unit Redis never counted; the next repair
    /// sees it).
    pub(crate) fn repair_writes(&mut self, rule: RepairRule) {
        let Repair::Read(basis) = std::mem::replace(&mut self.repair, Repair::Done) else {
            return;
        };
        let mut sold = basis.sold;
        let mut bought = basis.bought.clone();
        let mut unrepaired = basis.loss_since;
        for rid in self.rids().collect::<Vec<_>>() {
            let slot = self.slot(rid).clone();
            let ordered = RepairBasis::has(basis.ordered, rid);
            let cancelled = RepairBasis::has(basis.cancelled, rid);
            if rule == RepairRule::Journaled {
                let b = usize::from(slot.buyer);
                if slot.journal_finished && !ordered && !slot.journal_returned {
                    sold += 1;
                    bought[b] += 1;
                }
                let ordered_after = slot.journal_finished && !ordered;
                if slot.journal_returned && !cancelled && !ordered_after {
                    sold -= 1;
                    bought[b] -= 1;
                    // The one case the journal cannot tell apart (the order came after the
                    // snapshot, but no finish says so: its hold was lost).
                    unrepaired |= !ordered && slot.hold.is_some_and(|h| h.state == HoldState::Lost);
                }
            }
        }
        let (mut held, mut confirming) = (0, 0);
        let mut finish = Vec::new();
        for rid in self.rids() {
            let Some(hold) = self.slot(rid).hold else {
                continue;
            };
            if !matches!(hold.state, HoldState::Held | HoldState::Confirming) {
                continue;
            }
            if RepairBasis::has(basis.ordered, rid) {
                finish.push(rid);
                continue;
            }
            match hold.state {
                HoldState::Held => held += 1,
                _ => confirming += 1,
            }
            bought[usize::from(self.slot(rid).buyer)] += 1;
        }
        let sold = sold.max(0);
        for slot in &mut self.slots {
            slot.journal_finished = false;
            slot.journal_returned = false;
        }
        if basis.total < held + confirming + sold {
            return;
        }
        for rid in finish {
            self.hold_mut(rid).state = HoldState::Confirmed;
        }
        for rid in self.rids().collect::<Vec<_>>() {
            if RepairBasis::has(basis.cancelled, rid) {
                self.slot_mut(rid).returned = true;
            }
        }
        self.redis.total = basis.total;
        self.redis.held = held;
        self.redis.confirming = confirming;
        self.redis.sold = sold;
        self.redis.available = basis.total - held - confirming - sold;
        self.redis.bought = bought.into_iter().map(|n| n.max(0)).collect();
        self.damaged = unrepaired;
    }
}
