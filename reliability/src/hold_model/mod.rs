//! A model of a reservation's life, checked in every interleaving by the `stateright` model
//! checker: `cargo test -p reliability --test hold_model` (add `-- --nocapture` for the
//! traces and state counts).
//!
//! **What it models.** One SKU and every actor that touches its reservations, each step one
//! atomic script or transaction ([`Action::stands_for`] names it, so the model changes with the
//! code; the twins of the scripts are in `scripts.rs`): buyers who reserve, release, confirm
//! (and retry) and cancel; the gateway's confirm as its separate steps `begin_confirm` →
//! settlement call → `finish_confirm` / `abort_confirm`, dying between any two; settlement's
//! group commit; the sweeper; the reconciler's `resolve_confirming` as decide (read the hold
//! confirming, ask or claim in SQL) → act, dying between them; the relay's
//! `return_cancelled`, also dying before it marks the event published; an ops restock as its
//! SQL and Redis writes, in either order; optionally Redis losing a buyer's count, or losing
//! a hold with its counter writes (a failover), after which the buyer's confirm finds no hold
//! and the gateway asks settlement's fate route; and `reconcile --repair` as its two steps
//! (open the journal and read SQL, then write the counters) with every other step free to run
//! between them. The properties are docs/design.md §6 ([`properties`]), checked in every
//! reachable state.
//!
//! **Two rule sets** ([`Rules`]): `Before` is the code before issue 13 (the reconciler releases
//! a confirming hold whose order does not exist *yet*; settle consults only stock; the per-buyer
//! limit lives in Redis; `return_cancelled` refuses while the units are still confirming).
//! `Fixed` claims a reservation id's fate once in SQL (`reservation_fates`): settle claims
//! `ordered`, and refuses an id claimed `released` or a buyer over the limit (claiming
//! `released`); the reconciler claims `released` first and finishes instead when the id is
//! `ordered`; `return_cancelled` finishes a confirming hold before it returns the units; a
//! confirm whose hold was lost gets its order from SQL or claims the id `released` (`Before`:
//! 404 from the store alone). The repair has its own pair ([`RepairRule`]): `Unjournaled`
//! overwrites `sold` with its snapshot, blind to what ran since; `Journaled` counts it.
//!
//! **What it abstracts.** Time is one flag per hold, "its expiry has passed", that turns true
//! at any moment after the reserve; the token expires with it. The reconciler may act on any
//! confirming hold at any moment in both rule sets, so no property rests on its grace period.
//! Every order is one unit. A group commit of several requests is one transaction per request
//! (every interleaving a batch allows, and more). A settlement timeout or outage the gateway
//! gives up on is the gateway dying at that step. A refused reserve writes nothing and is left
//! out, as are idempotent replays, the retention TTLs of final holds, the outbox's other
//! topics, ops status changes, a second reconciler (the leader lease), a second repair (a
//! newer one supersedes the older, `RepairSuperseded`) and repairs of products SQL lost.
//!
//! **Bounds** ([`Bounds::small_worlds`]): four worlds of one SKU with a per-buyer limit of 1,
//! each checked in full: three reservations (two of one buyer, one of another) on 1 or 2 units;
//! one buyer's two reservations with a restock (1 → 2 units) and Redis forgetting the buyer's
//! count; two buyers' reservations with two confirm attempts each and a restock; two buyers'
//! reservations on 2 units with two confirm attempts each, Redis losing one hold and one
//! repair (no reconciler: its finish is the same script as the gateway's). Every further
//! reservation multiplies the states by about a hundred.

mod actions;
pub mod properties;
mod scripts;
pub mod state;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use stateright::{Checker, Expectation, HasDiscoveries, Model, Path, Property};

pub use actions::Action;
pub use state::State;

/// Which rules the actors follow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rules {
    /// The code before issue 13.
    Before,
    /// The fate of a reservation id claimed once in SQL, the per-buyer limit in SQL.
    Fixed,
}

/// How `reconcile --repair` rebuilds the counters (issue 15.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RepairRule {
    /// Before: one SQL snapshot, then the script overwrites `sold` with it, blind to the
    /// finishes and returns in between; `ordered` has the asked ids and live orders only.
    Unjournaled,
    /// The journal begun before the snapshot tells the script what happened in between;
    /// `ordered` has every recent order, live or cancelled.
    Journaled,
}

/// The size of one world the checker explores.
#[derive(Clone, Debug)]
pub struct Bounds {
    pub name: &'static str,
    /// One initial state per entry: the SKU's total stock (in SQL and Redis alike).
    pub initial_stock: Vec<i8>,
    /// One entry per buyer: how many reserves that buyer makes at most.
    pub reserves: Vec<u8>,
    pub per_buyer_limit: i8,
    /// Confirms one reservation may start (the first try and the buyer's retries).
    pub confirm_attempts: u8,
    /// Ops may raise the stock by one unit, once.
    pub restock: bool,
    /// Redis may lose a buyer's count (a write lost, as in a failover to a replica that
    /// missed it): the per-buyer limit then rests on SQL alone.
    pub redis_forgets_buyers: bool,
    /// The reconciler runs (off only to show what breaks without its race).
    pub reconciler: bool,
    /// Redis may lose one hold with its counter writes (a failover to a replica that missed
    /// them): its confirm finds no hold and asks SQL for the reservation's fate. That is
    /// damage only a repair mends (`State::damaged`), and so is a try sent before the loss
    /// that commits after it: no finish can count it in Redis, so only a repair that reads
    /// SQL after that commit agrees with it.
    pub redis_loses_holds: bool,
    /// An operator runs `reconcile --repair` once, at any moment.
    pub repair: Option<RepairRule>,
}

impl Bounds {
    /// The worlds the tests check: together they have two buyers, stock 1 to 2 (3 after a
    /// restock), a limit of 1 per buyer, up to two reserves per buyer and a retried confirm;
    /// each is as large as a debug build checks in seconds (every further reservation
    /// multiplies the states by about a hundred).
    pub fn small_worlds() -> Vec<Bounds> {
        vec![
            Bounds {
                name: "three reservations: two of buyer 0, one of buyer 1",
                initial_stock: vec![1, 2],
                reserves: vec![2, 1],
                per_buyer_limit: 1,
                confirm_attempts: 1,
                restock: false,
                redis_forgets_buyers: false,
                reconciler: true,
                redis_loses_holds: false,
                repair: None,
            },
            Bounds {
                name: "one buyer's two reservations, a restock, redis forgets the buyer",
                initial_stock: vec![1],
                reserves: vec![2],
                per_buyer_limit: 1,
                confirm_attempts: 1,
                restock: true,
                redis_forgets_buyers: true,
                reconciler: true,
                redis_loses_holds: false,
                repair: None,
            },
            Bounds {
                name: "two buyers' reservations, retried confirms, a restock",
                initial_stock: vec![1],
                reserves: vec![1, 1],
                per_buyer_limit: 1,
                confirm_attempts: 2,
                restock: true,
                redis_forgets_buyers: false,
                reconciler: true,
                redis_loses_holds: false,
                repair: None,
            },
            Bounds {
                name: "two buyers' reservations on 2 units, redis loses a hold, a repair",
                initial_stock: vec![2],
                reserves: vec![1, 1],
                per_buyer_limit: 1,
                confirm_attempts: 2,
                restock: false,
                redis_forgets_buyers: false,
                reconciler: false,
                redis_loses_holds: true,
                repair: Some(RepairRule::Journaled),
            },
        ]
    }

    pub fn buyers(&self) -> u8 {
        self.reserves.len() as u8
    }
}

#[derive(Clone, Debug)]
pub struct HoldModel {
    pub rules: Rules,
    pub bounds: Bounds,
}

impl Model for HoldModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let b = &self.bounds;
        b.initial_stock
            .iter()
            .map(|&stock| State::initial(stock, &b.reserves))
            .collect()
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        actions::enabled(self, state, actions);
    }

    fn next_state(&self, state: &State, action: Action) -> Option<State> {
        let next = actions::apply(self, state, action);
        (next != *state).then_some(next)
    }

    fn format_action(&self, action: &Action) -> String {
        format!("{action}  [{}]", action.stands_for(self.rules))
    }

    fn properties(&self) -> Vec<Property<Self>> {
        properties::all()
    }
}

/// How the checker walks the state space.
#[derive(Clone, Copy, Debug)]
pub enum Search<'a> {
    /// Every reachable state, depth-first; when the two buyers reserve alike, one state per
    /// class of states equal up to the buyers' names (stateright's symmetry reduction, which
    /// only its depth-first search has).
    Exhaustive,
    /// Breadth-first until every named property has a discovery (or every state was seen);
    /// the named properties' traces are shortest ones.
    UntilFound(&'a [&'static str]),
}

/// What one check found.
pub struct Checked {
    pub rules: Rules,
    pub world: &'static str,
    pub unique_states: usize,
    pub max_depth: usize,
    pub elapsed: Duration,
    /// Property name → the path of steps that reaches its discovery (a counterexample of an
    /// "always", an example of a "sometimes").
    pub discoveries: BTreeMap<&'static str, Vec<Action>>,
}

impl HoldModel {
    pub fn check(self, search: Search<'_>) -> Checked {
        let rules = self.rules;
        let world = self.bounds.name;
        let symmetric =
            self.bounds.reserves.len() == 2 && self.bounds.reserves[0] == self.bounds.reserves[1];
        let started = Instant::now();
        let model = self.clone();
        let builder = self.checker();
        match search {
            Search::Exhaustive if symmetric => summary(
                builder
                    .symmetry_fn(State::representative)
                    .spawn_dfs()
                    .join(),
                rules,
                world,
                started,
            ),
            Search::Exhaustive => summary(builder.spawn_dfs().join(), rules, world, started),
            Search::UntilFound(names) => {
                let (visitor, first) = first_discoveries(&model, names);
                let mut checked = summary(
                    builder
                        .finish_when(HasDiscoveries::AllOf(names.iter().copied().collect()))
                        .visitor(visitor)
                        .spawn_bfs()
                        .join(),
                    rules,
                    world,
                    started,
                );
                let first = first.lock().unwrap_or_else(PoisonError::into_inner);
                checked.discoveries.extend(first.clone());
                checked
            }
        }
    }
}

type Discoveries = Arc<Mutex<BTreeMap<&'static str, Vec<Action>>>>;

/// A visitor that keeps the path to the first state that decides each named property.
/// stateright keeps the *last* such path it saw before it stopped; breadth-first, the first
/// one is a shortest counterexample (or example).
fn first_discoveries(
    model: &HoldModel,
    names: &[&'static str],
) -> (
    impl Fn(Path<State, Action>) + Send + Sync + 'static,
    Discoveries,
) {
    let watched: Vec<Property<HoldModel>> = properties::all()
        .into_iter()
        .filter(|p| names.contains(&p.name))
        .collect();
    let found: Discoveries = Arc::default();
    let record = Arc::clone(&found);
    let model = model.clone();
    let visitor = move |path: Path<State, Action>| {
        let state = path.last_state();
        let decided = watched.iter().filter(|p| {
            let holds = (p.condition)(&model, state);
            if p.expectation == Expectation::Sometimes {
                holds
            } else {
                !holds
            }
        });
        for property in decided {
            let mut found = record.lock().unwrap_or_else(PoisonError::into_inner);
            found
                .entry(property.name)
                .or_insert_with(|| path.clone().into_actions());
        }
    };
    (visitor, found)
}

fn summary(
    checker: impl Checker<HoldModel>,
    rules: Rules,
    world: &'static str,
    started: Instant,
) -> Checked {
    Checked {
        rules,
        world,
        unique_states: checker.unique_state_count(),
        max_depth: checker.max_depth(),
        elapsed: started.elapsed(),
        discoveries: checker
            .discoveries()
            .into_iter()
            .map(|(name, path)| (name, path.into_actions()))
            .collect(),
    }
}

impl Checked {
    /// The path to `property`'s discovery, one named step a line, or `None`.
    pub fn trace(&self, property: &str) -> Option<String> {
        let steps = self.discoveries.get(property)?;
        let lines: Vec<String> = steps
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{:>3}. {a}  [{}]", i + 1, a.stands_for(self.rules)))
            .collect();
        Some(lines.join("\n"))
    }

    /// The "always" properties with a counterexample.
    pub fn violated(&self) -> Vec<&'static str> {
        properties::all()
            .iter()
            .filter(|p| p.expectation == Expectation::Always)
            .map(|p| p.name)
            .filter(|name| self.discoveries.contains_key(name))
            .collect()
    }

    /// The "sometimes" properties without an example.
    pub fn unreached(&self) -> Vec<&'static str> {
        properties::all()
            .iter()
            .filter(|p| p.expectation == Expectation::Sometimes)
            .map(|p| p.name)
            .filter(|name| !self.discoveries.contains_key(name))
            .collect()
    }
}
