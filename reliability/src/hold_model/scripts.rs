//! The twins of the Redis scripts and SQL transactions, each one atomic step on [`State`].
//! A twin keeps its script's checks and writes for qty 1 on one SKU, and says so in its doc
//! line; when a script changes, its twin here changes with it.

use super::Rules;
use super::state::{Answer, Fate, HoldState, Order, Rid, State};

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

    /// The block every script repeats: the buyer's count drops by qty, never below 0 (a buyer
    /// with nothing left is `HDEL`ed).
    fn buyer_gives_back(&mut self, buyer: u8) {
        let left = self.redis.bought[usize::from(buyer)] - 1;
        self.redis.bought[usize::from(buyer)] = left.max(0);
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
        self.redis.held -= 1;
        self.redis.available += 1;
        self.buyer_gives_back(self.slot(rid).buyer);
        let to = if hold.due {
            HoldState::Expired
        } else {
            HoldState::Released
        };
        self.end_hold(rid, to);
    }

    /// `expire_due.lua` for one id of the expiry index: only a held hold that is due.
    pub(crate) fn expire_due(&mut self, rid: Rid) {
        let Some(hold) = self.slot(rid).hold else {
            return;
        };
        if hold.state != HoldState::Held || !hold.due {
            return;
        }
        self.redis.held -= 1;
        self.redis.available += 1;
        self.buyer_gives_back(self.slot(rid).buyer);
        self.end_hold(rid, HoldState::Expired);
    }

    /// `begin_confirm.lua`: `true` when the confirm may go on (held → confirming, or already
    /// confirming/confirmed); a due held hold is expired on the spot and refused.
    pub(crate) fn begin_confirm(&mut self, rid: Rid) -> bool {
        let Some(hold) = self.slot(rid).hold else {
            return false;
        };
        match hold.state {
            HoldState::Confirming | HoldState::Confirmed => true,
            HoldState::Released | HoldState::Expired => false,
            HoldState::Held if hold.due => {
                self.redis.held -= 1;
                self.redis.available += 1;
                self.buyer_gives_back(self.slot(rid).buyer);
                self.end_hold(rid, HoldState::Expired);
                false
            }
            HoldState::Held => {
                self.redis.held -= 1;
                self.redis.confirming += 1;
                self.hold_mut(rid).state = HoldState::Confirming;
                true
            }
        }
    }

    /// `finish_confirm.lua`: confirming → confirmed (units confirming → sold); idempotent on
    /// confirmed; any other state is `invalid_state` (no write).
    pub(crate) fn finish_confirm(&mut self, rid: Rid) {
        if self.hold_state(rid) != Some(HoldState::Confirming) {
            return;
        }
        self.redis.confirming -= 1;
        self.redis.sold += 1;
        self.hold_mut(rid).state = HoldState::Confirmed;
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
    /// buyer's count, refused when `sold < qty`. `Rules::Fixed`: a hold still confirming is
    /// finished first (the cancel came before the gateway's `finish_confirm`).
    pub(crate) fn return_cancelled(&mut self, rid: Rid, rules: Rules) {
        if self.slot(rid).returned {
            return;
        }
        if rules == Rules::Fixed {
            self.finish_confirm(rid);
        }
        if self.redis.sold < 1 {
            // `invalid_state`: the relay logs it and marks the event published.
            return;
        }
        self.redis.sold -= 1;
        self.redis.available += 1;
        self.buyer_gives_back(self.slot(rid).buyer);
        self.slot_mut(rid).returned = true;
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
}
