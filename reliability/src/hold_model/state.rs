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
    /// - a confirmed hold's `due` (settle finds its order before it looks at the token);
    /// - a queued settlement request's attempt once no confirm waits for that attempt (its
    ///   answer reaches no one, now or later: attempts only grow) → 0;
    /// - the attempt count of a reservation no confirm can start on again (not held or
    ///   confirming, none in flight) → 0.
    pub(crate) fn forget_what_no_step_reads(&mut self) {
        for slot in &mut self.slots {
            if let Some(hold) = slot.hold.as_mut()
                && hold.state == HoldState::Confirmed
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
            let may_begin = slot
                .hold
                .is_some_and(|h| matches!(h.state, HoldState::Held | HoldState::Confirming));
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
        s
    }

    /// One state for each class of states equal up to the buyers' names (symmetry
    /// reduction; depth-first search only, see [`super::HoldModel::check`]).
    pub fn representative(&self) -> State {
        self.clone().min(self.buyers_swapped())
    }
}
