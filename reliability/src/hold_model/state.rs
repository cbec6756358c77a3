//! The state of the model: Redis (counters, holds, the returned set), SQL (products, orders,
//! `reservation_fates`), and what is in flight between them (the gateway's confirms, the
//! settlement queue, the outbox, the reconciler's round, an ops restock). Every counter is
//! signed so a model bug that drives one below zero shows as a broken property, not a panic.

use std::fmt;

/// A reservation id: the index of its slot (slots are made up front, as many per buyer as it
/// may reserve, and filled by the buyer's reserves in order).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Rid(pub u8);

impl fmt::Debug for Rid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

impl Rid {
    pub(crate) fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// The `state` field of a hold hash in Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HoldState {
    Held,
    Confirming,
    Confirmed,
    Released,
    Expired,
    /// The store no longer has the hold (a Redis failover to a replica that missed it):
    /// every script finds no record (`not_found`).
    Lost,
}

impl HoldState {
    pub fn is_final(self) -> bool {
        matches!(self, HoldState::Released | HoldState::Expired)
    }
}

/// One hold in Redis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hold {
    pub state: HoldState,
    /// Redis `TIME` has passed the hold's `expires` (and so the token's `exp`).
    pub due: bool,
    /// The hold has been `released` or `expired` at some point (history for the property
    /// "a released or expired hold is never confirmed").
    pub was_final: bool,
}

/// The outcome of a reservation id claimed once in SQL (`reservation_fates`, `Rules::Fixed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fate {
    Ordered,
    Released,
}

/// What settlement answered the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Answer {
    /// 201 (`created`) or 200 (the order existed).
    Committed { created: bool },
    /// 409 `oversell_prevented`: SQL has no unit left.
    Oversell,
    /// SQL refused: the buyer's live orders for the SKU would pass the limit (`Rules::Fixed`).
    OverLimit,
    /// SQL refused: the id was already claimed `released` (`Rules::Fixed`).
    AlreadyReleased,
    /// 401/410: the token expired and no order exists; the gateway leaves the hold confirming.
    TokenExpired,
}

/// The gateway's confirm of one reservation, as the steps of `try_confirm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// No confirm of this reservation is running.
    Idle,
    /// `begin_confirm` answered ok; the settlement call is next.
    Begun,
    /// The store had no hold (`not_found`): asking SQL for the reservation's fate is next.
    Gone,
    /// The settlement request of this attempt is on its way or queued for a group commit.
    Waiting,
    /// Settlement answered; `finish_confirm` / `abort_confirm` / nothing is next.
    Answered(Answer),
}

/// Everything the model keeps per reservation id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Slot {
    /// The buyer (`sub`) whose reserve fills this slot.
    pub buyer: u8,
    /// `None` until the buyer's reserve made it.
    pub hold: Option<Hold>,
    /// Redis `returned {sku}` set: `return_cancelled` gave this id's units back.
    pub returned: bool,
    /// SQL `reservation_fates` row.
    pub fate: Option<Fate>,
    /// The gateway's confirm in flight, and how many confirms of this id were started.
    pub step: Step,
    pub attempts: u8,
    /// The buyer was answered 201 for this reservation.
    pub answered_created: bool,
    /// The buyer was told this reservation has no order (404, or 410 from the fate route).
    pub answered_gone: bool,
    /// The repair journal `{sku}:repair` (begin_repair.lua) has `f:<id>` (finish_confirm or
    /// return_cancelled finished it) and `r:<id>` (return_cancelled returned it).
    pub journal_finished: bool,
    pub journal_returned: bool,
}

/// One SQL order row (qty is always 1 in the model).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Order {
    pub rid: Rid,
    pub buyer: u8,
    /// `false` once cancelled.
    pub live: bool,
}

/// The Redis stock hash of the one SKU, and its buyers hash.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Redis {
    pub total: i8,
    pub available: i8,
    pub held: i8,
    pub confirming: i8,
    pub sold: i8,
    /// `buyers {sku}`: units each buyer holds or bought, for the per-buyer limit.
    pub bought: Vec<i8>,
}

/// The SQL `products` row of the SKU and the orders.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sql {
    pub total: i8,
    pub sold: i8,
    /// Sorted by reservation id (no step reads the insertion order). The real table has
    /// `UNIQUE (reservation_id)`, the model does not, so "one order per reservation id" is a
    /// property the settle step must earn.
    pub orders: Vec<Order>,
}

/// The reconciler's round (`resolve_confirming`), one hold at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reconciler {
    Idle,
    /// Read this hold confirming and knows what SQL says about it: `Ordered` → finish,
    /// `Released` → abort.
    Decided(Rid, Fate),
}

/// What a counter repair read from SQL (`products::repair_basis`), one bit per reservation
/// id in the masks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepairBasis {
    pub total: i8,
    pub sold: i8,
    pub bought: Vec<i8>,
    /// `SoldUnits::ordered`.
    pub ordered: u8,
    /// `SoldUnits::cancelled`.
    pub cancelled: u8,
    /// Redis lost a hold after this read: the write cannot repair that loss.
    pub loss_since: bool,
}

impl RepairBasis {
    pub fn has(mask: u8, rid: Rid) -> bool {
        mask & (1 << rid.0) != 0
    }
}

/// `stockgate reconcile --repair` of the SKU (`settlement/src/maintenance.rs`), run once.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Repair {
    Idle,
    /// `prepare_repair` ran (begin_repair.lua, then the SQL snapshot); `apply_repair` is next.
    Read(RepairBasis),
    Done,
}

/// An ops restock of one unit, as its two writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Restock {
    pub sql_done: bool,
    pub redis_done: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct State {
    pub redis: Redis,
    pub sql: Sql,
    pub slots: Vec<Slot>,
    /// Settlement requests sent and not yet committed: (id, attempt), kept sorted (a multiset:
    /// group commit takes them in any order).
    pub settle_queue: Vec<(Rid, u8)>,
    /// Unpublished `order.cancelled` events, kept sorted.
    pub outbox: Vec<Rid>,
    pub reconciler: Reconciler,
    pub restock: Restock,
    /// Redis lost a hold (once per world) and no repair that began after has written yet.
    pub damaged: bool,
    pub lost_a_hold: bool,
    pub repair: Repair,
}

impl State {
    /// Nothing reserved, `stock` units in both stores.
    pub fn initial(stock: i8, reserves: &[u8]) -> State {
        let slots = (0..)
            .zip(reserves)
            .flat_map(|(buyer, &n)| {
                (0..n).map(move |_| Slot {
                    buyer,
                    hold: None,
                    returned: false,
                    fate: None,
                    step: Step::Idle,
                    attempts: 0,
                    answered_created: false,
                    answered_gone: false,
                    journal_finished: false,
                    journal_returned: false,
                })
            })
            .collect();
        State {
            redis: Redis {
                total: stock,
                available: stock,
                held: 0,
                confirming: 0,
                sold: 0,
                bought: vec![0; reserves.len()],
            },
            sql: Sql {
                total: stock,
                sold: 0,
                orders: Vec::new(),
            },
            slots,
            settle_queue: Vec::new(),
            outbox: Vec::new(),
            reconciler: Reconciler::Idle,
            restock: Restock::default(),
            damaged: false,
            lost_a_hold: false,
            repair: Repair::Idle,
        }
    }

    pub fn rids(&self) -> impl Iterator<Item = Rid> + '_ {
        (0..self.slots.len()).map(|i| Rid(i as u8))
    }

    pub fn slot(&self, rid: Rid) -> &Slot {
        &self.slots[rid.index()]
    }

    pub(crate) fn slot_mut(&mut self, rid: Rid) -> &mut Slot {
        &mut self.slots[rid.index()]
    }

    pub fn hold_state(&self, rid: Rid) -> Option<HoldState> {
        self.slot(rid).hold.map(|h| h.state)
    }

    pub fn order_of(&self, rid: Rid) -> Option<&Order> {
        self.sql.orders.iter().find(|o| o.rid == rid)
    }

    /// Units of live (not cancelled) orders of `buyer` (every order is one unit).
    pub fn live_units(&self, buyer: u8) -> i8 {
        self.sql
            .orders
            .iter()
            .filter(|o| o.buyer == buyer && o.live)
            .count() as i8
    }

    /// Resets what no later step reads, so that states with the same future are one state:
    /// - a confirmed or lost hold's `due` (settle finds a confirmed hold's order before it
    ///   looks at the token; the fate route does not look at the token's age);
    /// - a queued settlement request's attempt once no confirm waits for that attempt (its
    ///   answer reaches no one, now or later: attempts only grow) → 0;
    /// - the attempt count of a reservation no confirm can start on again (not held or
    ///   confirming, none in flight) → 0.
    pub(crate) fn forget_what_no_step_reads(&mut self) {
        for slot in &mut self.slots {
            if let Some(hold) = slot.hold.as_mut()
                && matches!(hold.state, HoldState::Confirmed | HoldState::Lost)
            {
                hold.due = false;
            }
        }
        for (rid, attempt) in &mut self.settle_queue {
            let slot = &self.slots[rid.index()];
            if !(slot.step == Step::Waiting && slot.attempts == *attempt) {
                *attempt = 0;
            }
        }
        self.settle_queue.sort();
        for slot in &mut self.slots {
            let may_begin = slot.hold.is_some_and(|h| {
                matches!(
                    h.state,
                    HoldState::Held | HoldState::Confirming | HoldState::Lost
                )
            });
            if slot.step == Step::Idle && !may_begin {
                slot.attempts = 0;
            }
        }
    }

    /// The same state with the two buyers' names swapped, when there are two buyers with
    /// as many slots each (every property and step treats buyers alike); else a copy.
    fn buyers_swapped(&self) -> State {
        let per = self.slots.len() / 2;
        let symmetric = self.redis.bought.len() == 2
            && self.slots.iter().filter(|slot| slot.buyer == 0).count() == per;
        let mut s = self.clone();
        if !symmetric {
            return s;
        }
        let swap = |r: Rid| Rid(((r.index() + per) % (2 * per)) as u8);
        for (i, slot) in self.slots.iter().enumerate() {
            let to = swap(Rid(i as u8)).index();
            s.slots[to] = Slot {
                buyer: 1 - slot.buyer,
                ..slot.clone()
            };
        }
        s.redis.bought.swap(0, 1);
        for order in &mut s.sql.orders {
            order.rid = swap(order.rid);
            order.buyer = 1 - order.buyer;
        }
        s.sql.orders.sort();
        for (rid, _) in &mut s.settle_queue {
            *rid = swap(*rid);
        }
        s.settle_queue.sort();
        for rid in &mut s.outbox {
            *rid = swap(*rid);
        }
        s.outbox.sort();
        s.reconciler = match s.reconciler {
            Reconciler::Idle => Reconciler::Idle,
            Reconciler::Decided(rid, fate) => Reconciler::Decided(swap(rid), fate),
        };
        if let Repair::Read(basis) = &mut s.repair {
            let swap_mask = |mask: u8| {
                (0..2 * per as u8)
                    .filter(|&i| RepairBasis::has(mask, Rid(i)))
                    .fold(0, |m, i| m | 1 << swap(Rid(i)).0)
            };
            basis.bought.swap(0, 1);
            basis.ordered = swap_mask(basis.ordered);
            basis.cancelled = swap_mask(basis.cancelled);
        }
        s
    }

    /// One state for each class of states equal up to the buyers' names (symmetry
    /// reduction; depth-first search only, see [`super::HoldModel::check`]).
    pub fn representative(&self) -> State {
        self.clone().min(self.buyers_swapped())
    }
}
