//! Model-based property test: random operation sequences run through a plain model of the
//! reservation semantics and through a real store, comparing every answer and every SKU's
//! counters after every step.
//!
//! The model is written to be obviously right rather than fast: holds live in one vector in
//! creation order, and every counter is recomputed from the holds by a linear scan. Store
//! reservation ids are mapped to model holds by creation order.
//!
//! Time: a hold is reserved either with a long TTL (never due during a case) or with a 1 ms
//! TTL followed by a 3 ms sleep, so that it is due for every later operation. A due hold
//! stays `Held` in the counters (and counts against its buyer's limit) until the sweeper,
//! a release or a begin-confirm returns it; readers see it as `Expired` meanwhile.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestCaseError, TestCaseResult, TestRunner};

use super::*;
use crate::error::ReservationError;
use crate::store::StoreResult;
use crate::types::{AbortTo, Hold, HoldState, ReservationId, StockSnapshot};

const SKUS: [&str; 3] = ["A", "B", "C"];
const BUYERS: [&str; 2] = ["alice", "bob"];
/// The buyer used for operations "by someone else".
const STRANGER: &str = "mallory";
const KEYS: [&str; 6] = ["k0", "k1", "k2", "k3", "k4", "k5"];
const SHORT_TTL_MS: u64 = 1;
/// Long enough past a [`SHORT_TTL_MS`] hold's expiry that every store clock sees it due.
const DUE_AFTER: Duration = Duration::from_millis(3);
const MAX_OPS: usize = 40;

/// One step of a generated sequence. Hold indexes pick among the holds created so far, plus
/// one id the store never issued.
#[derive(Clone, Debug)]
enum Op {
    Reserve {
        sku: usize,
        buyer: usize,
        qty: u32,
        key: usize,
        short_ttl: bool,
    },
    GetHold(Index),
    Release {
        hold: Index,
        by_owner: bool,
    },
    BeginConfirm {
        hold: Index,
        by_owner: bool,
    },
    FinishConfirm(Index),
    AbortConfirm {
        hold: Index,
        to_held: bool,
    },
    ExpireDue {
        sku: usize,
        batch: usize,
    },
    /// Restock / change limits, keeping the sale state.
    Configure {
        sku: usize,
        total: u64,
        per_buyer_limit: u32,
        max_per_order: u32,
    },
    /// Pause or resume a known SKU.
    SetSale {
        sku: usize,
        paused: bool,
    },
    /// Only applied to a hold the model has confirmed; skipped otherwise.
    ReturnCancelled(Index),
}

/// SKU "C" is unknown until a `Configure` creates it.
fn sku_index() -> impl Strategy<Value = usize> {
    prop_oneof![4 => Just(0usize), 2 => Just(1usize), 1 => Just(2usize)]
}

/// The operation mix: reserves and confirms most often, because they create the states the
/// other operations act on.
fn op_strategy() -> impl Strategy<Value = Op> {
    let reserve = (
        sku_index(),
        0..BUYERS.len(),
        1..=4u32,
        0..KEYS.len(),
        prop::bool::weighted(0.5),
    )
        .prop_map(|(sku, buyer, qty, key, short_ttl)| Op::Reserve {
            sku,
            buyer,
            qty,
            key,
            short_ttl,
        });
    let release = (any::<Index>(), prop::bool::weighted(0.8))
        .prop_map(|(hold, by_owner)| Op::Release { hold, by_owner });
    let begin_confirm = (any::<Index>(), prop::bool::weighted(0.8))
        .prop_map(|(hold, by_owner)| Op::BeginConfirm { hold, by_owner });
    let abort_confirm = (any::<Index>(), any::<bool>())
        .prop_map(|(hold, to_held)| Op::AbortConfirm { hold, to_held });
    let expire_due =
        (sku_index(), 1..=3usize).prop_map(|(sku, batch)| Op::ExpireDue { sku, batch });
    let configure = (sku_index(), 0..=10u64, 1..=5u32, 1..=4u32).prop_map(
        |(sku, total, per_buyer_limit, max_per_order)| Op::Configure {
            sku,
            total,
            per_buyer_limit,
            max_per_order,
        },
    );
    let set_sale =
        (sku_index(), any::<bool>()).prop_map(|(sku, paused)| Op::SetSale { sku, paused });
    prop_oneof![
        6 => reserve,
        1 => any::<Index>().prop_map(Op::GetHold),
        2 => release,
        3 => begin_confirm,
        3 => any::<Index>().prop_map(Op::FinishConfirm),
        1 => abort_confirm,
        3 => expire_due,
        1 => configure,
        1 => set_sale,
        2 => any::<Index>().prop_map(Op::ReturnCancelled),
    ]
}

/// A hold as the model knows it.
#[derive(Clone, Debug)]
struct ModelHold {
    sku: usize,
    buyer: usize,
    qty: u32,
    /// The stored state; a due `Held` hold reads as `Expired`.
    state: HoldState,
    due: bool,
    /// A confirmed hold whose order was cancelled and its units returned.
    returned: bool,
}

impl ModelHold {
    fn seen_state(&self) -> HoldState {
        if self.state == HoldState::Held && self.due {
            HoldState::Expired
        } else {
            self.state
        }
    }

    /// Whether the hold's units count as committed (and against its buyer's limit).
    fn committed(&self) -> bool {
        match self.state {
            HoldState::Held | HoldState::Confirming => true,
            HoldState::Confirmed => !self.returned,
            HoldState::Released | HoldState::Expired => false,
        }
    }
}

/// What the model expects a hold-returning operation to answer: which hold, in which state.
type Expected = Result<(usize, HoldState), ReservationError>;

/// The plain model of the reservation semantics.
#[derive(Default)]
struct Model {
    products: [Option<ProductStock>; 3],
    /// Every hold ever made, in creation order.
    holds: Vec<ModelHold>,
    /// (buyer, key, hold): the hold each key made. Only a request that made a hold binds its
    /// key, to that hold's SKU and quantity.
    made: Vec<(usize, usize, usize)>,
}

impl Model {
    fn units(&self, sku: usize, state: HoldState) -> u64 {
        self.holds
            .iter()
            .filter(|h| h.sku == sku && h.state == state && h.committed())
            .map(|h| u64::from(h.qty))
            .sum()
    }

    fn snapshot(&self, sku: usize) -> Option<StockSnapshot> {
        let stock = self.products[sku].as_ref()?;
        let held = self.units(sku, HoldState::Held);
        let confirming = self.units(sku, HoldState::Confirming);
        let sold = self.units(sku, HoldState::Confirmed);
        Some(StockSnapshot {
            sku: self::sku(SKUS[sku]),
            total_stock: stock.total_stock,
            available: stock.total_stock - held - confirming - sold,
            held,
            confirming,
            sold,
            per_buyer_limit: stock.per_buyer_limit,
            max_per_order: stock.max_per_order,
            sale_state: stock.sale_state,
        })
    }

    fn committed(&self, sku: usize) -> u64 {
        self.snapshot(sku)
            .map(|s| s.held + s.confirming + s.sold)
            .unwrap_or(0)
    }

    fn buyer_units(&self, sku: usize, buyer: usize) -> u64 {
        self.holds
            .iter()
            .filter(|h| h.sku == sku && h.buyer == buyer && h.committed())
            .map(|h| u64::from(h.qty))
            .sum()
    }

    /// Returns `Ok((hold, replayed))`; a new hold is pushed at the end of `holds`.
    fn reserve(
        &mut self,
        sku: usize,
        buyer: usize,
        qty: u32,
        key: usize,
    ) -> Result<(usize, bool), ReservationError> {
        let Some(stock) = self.products[sku].clone() else {
            return Err(ReservationError::UnknownSku);
        };
        if let Some(made) = self.made.iter().find(|m| (m.0, m.1) == (buyer, key)) {
            let hold = &self.holds[made.2];
            if (hold.sku, hold.qty) != (sku, qty) {
                return Err(ReservationError::IdempotencyMismatch);
            }
            return Ok((made.2, true));
        }
        if stock.sale_state == SaleState::Paused {
            return Err(ReservationError::SalePaused);
        }
        if qty > stock.max_per_order {
            return Err(ReservationError::PurchaseLimit {
                limit: stock.max_per_order,
            });
        }
        if self.buyer_units(sku, buyer) + u64::from(qty) > u64::from(stock.per_buyer_limit) {
            return Err(ReservationError::PurchaseLimit {
                limit: stock.per_buyer_limit,
            });
        }
        let available = stock.total_stock - self.committed(sku);
        if available == 0 {
            return Err(ReservationError::SoldOut);
        }
        if available < u64::from(qty) {
            return Err(ReservationError::InsufficientStock { available });
        }
        self.holds.push(ModelHold {
            sku,
            buyer,
            qty,
            state: HoldState::Held,
            due: false,
            returned: false,
        });
        let index = self.holds.len() - 1;
        self.made.push((buyer, key, index));
        Ok((index, false))
    }

    fn get_hold(&self, hold: Option<usize>) -> Expected {
        let i = hold.ok_or(ReservationError::NotFound)?;
        Ok((i, self.holds[i].seen_state()))
    }

    fn release(&mut self, hold: Option<usize>, by_owner: bool) -> Expected {
        let i = hold.ok_or(ReservationError::NotFound)?;
        if !by_owner {
            return Err(ReservationError::NotOwner);
        }
        let h = &mut self.holds[i];
        match h.seen_state() {
            // A due hold released late counts as expired.
            HoldState::Expired if h.state == HoldState::Held => h.state = HoldState::Expired,
            HoldState::Held => h.state = HoldState::Released,
            HoldState::Released | HoldState::Expired => {}
            state @ (HoldState::Confirming | HoldState::Confirmed) => {
                return Err(ReservationError::InvalidState { state });
            }
        }
        Ok((i, h.state))
    }

    fn begin_confirm(&mut self, hold: Option<usize>, by_owner: bool) -> Expected {
        let i = hold.ok_or(ReservationError::NotFound)?;
        if !by_owner {
            return Err(ReservationError::NotOwner);
        }
        let h = &mut self.holds[i];
        match h.seen_state() {
            HoldState::Expired => {
                // A due hold is expired on the spot (its units return).
                h.state = HoldState::Expired;
                Err(ReservationError::Expired)
            }
            HoldState::Released => Err(ReservationError::Released),
            HoldState::Held => {
                h.state = HoldState::Confirming;
                Ok((i, h.state))
            }
            HoldState::Confirming | HoldState::Confirmed => Ok((i, h.state)),
        }
    }

    fn finish_confirm(&mut self, hold: Option<usize>) -> Expected {
        let i = hold.ok_or(ReservationError::NotFound)?;
        let h = &mut self.holds[i];
        match h.state {
            HoldState::Confirming | HoldState::Confirmed => {
                h.state = HoldState::Confirmed;
                Ok((i, h.state))
            }
            // The stored state, not the seen one: a due hold is still `held` in the store.
            state => Err(ReservationError::InvalidState { state }),
        }
    }

    fn abort_confirm(&mut self, hold: Option<usize>, to_held: bool) -> Expected {
        let i = hold.ok_or(ReservationError::NotFound)?;
        let h = &mut self.holds[i];
        if h.state != HoldState::Confirming {
            return Err(ReservationError::InvalidState { state: h.state });
        }
        h.state = if to_held {
            HoldState::Held
        } else {
            HoldState::Released
        };
        Ok((i, h.seen_state()))
    }

    /// Indexes of the holds of `sku` that a sweep may expire.
    fn due_holds(&self, sku: usize) -> Vec<usize> {
        (0..self.holds.len())
            .filter(|&i| {
                let h = &self.holds[i];
                h.sku == sku && h.state == HoldState::Held && h.due
            })
            .collect()
    }

    fn configure(&mut self, sku: usize, stock: ProductStock) -> Result<(), ReservationError> {
        let committed = self.committed(sku);
        if stock.total_stock < committed {
            return Err(ReservationError::StockBelowCommitted { committed });
        }
        self.products[sku] = Some(stock);
        Ok(())
    }
}

fn check<T: PartialEq + Debug>(what: &str, got: &T, want: &T) -> Result<(), TestCaseError> {
    if got == want {
        Ok(())
    } else {
        Err(TestCaseError::fail(format!(
            "{what}: store answered {got:?}, model expects {want:?}"
        )))
    }
}

/// One case: the store under test, the model, and the mapping from creation order to ids.
struct Case<S> {
    store: S,
    model: Model,
    /// `ids[i]` is the store's id of model hold `i`.
    ids: Vec<ReservationId>,
    /// An id of a known SKU that the store never issued.
    stranger_id: ReservationId,
}

impl<S: ReservationStore> Case<S> {
    /// The model hold an index points at, or `None` for the never-issued id.
    fn pick(&self, index: &Index) -> Option<usize> {
        let i = index.index(self.ids.len() + 1);
        (i < self.ids.len()).then_some(i)
    }

    fn id_of(&self, hold: Option<usize>) -> &ReservationId {
        hold.map_or(&self.stranger_id, |i| &self.ids[i])
    }

    fn buyer_of(&self, hold: Option<usize>, by_owner: bool) -> BuyerId {
        match hold {
            Some(i) if by_owner => buyer(BUYERS[self.model.holds[i].buyer]),
            _ if by_owner => buyer(BUYERS[0]),
            _ => buyer(STRANGER),
        }
    }

    /// Compares a store's hold with the model's hold `i` in `state`.
    fn check_hold(&self, what: &str, got: &Hold, i: usize, state: HoldState) -> TestCaseResult {
        let h = &self.model.holds[i];
        check(&format!("{what} id"), &got.id, &self.ids[i])?;
        check(&format!("{what} sku"), &got.sku, &sku(SKUS[h.sku]))?;
        check(
            &format!("{what} buyer"),
            &got.buyer,
            &buyer(BUYERS[h.buyer]),
        )?;
        check(&format!("{what} qty"), &got.qty, &qty(h.qty))?;
        check(&format!("{what} state"), &got.state, &state)
    }

    fn check_answer(&self, what: &str, got: StoreResult<Hold>, want: Expected) -> TestCaseResult {
        match (got, want) {
            (Ok(got), Ok((i, state))) => self.check_hold(what, &got, i, state),
            (got, want) => check(what, &got.map(|h| h.state), &want.map(|(_, s)| s)),
        }
    }

    async fn apply(&mut self, op: &Op) -> TestCaseResult {
        match op {
            Op::Reserve {
                sku: s,
                buyer: b,
                qty: q,
                key: k,
                short_ttl,
            } => {
                let ttl = if *short_ttl {
                    SHORT_TTL_MS
                } else {
                    LONG_TTL_MS
                };
                let req = request_with_ttl(SKUS[*s], BUYERS[*b], *q, KEYS[*k], ttl);
                let want = self.model.reserve(*s, *b, *q, *k);
                let got = self.store.reserve(&req).await;
                match (got, want) {
                    (Ok(got), Ok((i, replayed))) => {
                        check("reserve replayed", &got.replayed, &replayed)?;
                        if !replayed {
                            self.ids.push(got.hold.id.clone());
                        }
                        let state = if replayed {
                            self.model.holds[i].seen_state()
                        } else {
                            HoldState::Held
                        };
                        self.check_hold("reserve", &got.hold, i, state)?;
                        if !replayed && *short_ttl {
                            tokio::time::sleep(DUE_AFTER).await;
                            self.model.holds[i].due = true;
                        }
                        Ok(())
                    }
                    (got, want) => check(
                        "reserve",
                        &got.map(|r| r.replayed),
                        &want.map(|(_, replayed)| replayed),
                    ),
                }
            }
            Op::GetHold(index) => {
                let hold = self.pick(index);
                let got = self.store.get_hold(self.id_of(hold)).await;
                self.check_answer("get_hold", got, self.model.get_hold(hold))
            }
            Op::Release { hold, by_owner } => {
                let hold = self.pick(hold);
                let who = self.buyer_of(hold, *by_owner);
                let got = self.store.release(self.id_of(hold), &who).await;
                let want = self.model.release(hold, *by_owner);
                self.check_answer("release", got, want)
            }
            Op::BeginConfirm { hold, by_owner } => {
                let hold = self.pick(hold);
                let who = self.buyer_of(hold, *by_owner);
                let got = self.store.begin_confirm(self.id_of(hold), &who).await;
                let want = self.model.begin_confirm(hold, *by_owner);
                self.check_answer("begin_confirm", got, want)
            }
            Op::FinishConfirm(hold) => {
                let hold = self.pick(hold);
                let got = self.store.finish_confirm(self.id_of(hold)).await;
                let want = self.model.finish_confirm(hold);
                self.check_answer("finish_confirm", got, want)
            }
            Op::AbortConfirm { hold, to_held } => {
                let hold = self.pick(hold);
                let to = if *to_held {
                    AbortTo::Held
                } else {
                    AbortTo::Released
                };
                let got = self.store.abort_confirm(self.id_of(hold), to).await;
                let want = self.model.abort_confirm(hold, *to_held);
                self.check_answer("abort_confirm", got, want)
            }
            Op::ExpireDue { sku: s, batch } => self.expire_due(*s, *batch).await,
            Op::Configure {
                sku: s,
                total,
                per_buyer_limit,
                max_per_order,
            } => {
                let sale_state = self.model.products[*s]
                    .as_ref()
                    .map_or(SaleState::OnSale, |p| p.sale_state);
                let stock = ProductStock {
                    total_stock: *total,
                    per_buyer_limit: *per_buyer_limit,
                    max_per_order: *max_per_order,
                    sale_state,
                };
                self.configure(*s, stock).await
            }
            Op::SetSale { sku: s, paused } => {
                let Some(current) = self.model.products[*s].clone() else {
                    return Ok(());
                };
                let sale_state = if *paused {
                    SaleState::Paused
                } else {
                    SaleState::OnSale
                };
                self.configure(
                    *s,
                    ProductStock {
                        sale_state,
                        ..current
                    },
                )
                .await
            }
            Op::ReturnCancelled(hold) => {
                let Some(i) = self.pick(hold) else {
                    return Ok(());
                };
                let h = self.model.holds[i].clone();
                if h.state != HoldState::Confirmed {
                    return Ok(());
                }
                let got = self
                    .store
                    .return_cancelled(&self.ids[i], &buyer(BUYERS[h.buyer]), qty(h.qty))
                    .await;
                // The first return of a reservation id moves units, later ones do nothing.
                let want = Ok(!h.returned);
                self.model.holds[i].returned = true;
                check("return_cancelled", &got, &want)
            }
        }
    }

    async fn configure(&mut self, s: usize, stock: ProductStock) -> TestCaseResult {
        let got = self.store.configure_product(&sku(SKUS[s]), &stock).await;
        let want = self
            .model
            .configure(s, stock)
            .map(|()| self.model.snapshot(s));
        check("configure_product", &got.map(Some), &want)
    }

    /// Which due holds a sweep takes first is the store's choice (earliest expiry, ties
    /// broken by id), so the model checks the answer is a valid choice and then applies it.
    async fn expire_due(&mut self, s: usize, batch: usize) -> TestCaseResult {
        let got = self.store.expire_due(&sku(SKUS[s]), batch).await;
        let expired = match (got, self.model.products[s].is_some()) {
            (Ok(expired), true) => expired,
            (got, known) => {
                let want = if known {
                    Ok(0)
                } else {
                    Err(ReservationError::UnknownSku)
                };
                return check("expire_due", &got.map(|e| e.len()), &want);
            }
        };
        let due = self.model.due_holds(s);
        check("expire_due count", &expired.len(), &due.len().min(batch))?;
        for hold in &expired {
            let Some(i) = self.ids.iter().position(|id| *id == hold.id) else {
                return Err(TestCaseError::fail(format!(
                    "expire_due returned an unknown hold {hold:?}"
                )));
            };
            if !due.contains(&i) || self.model.holds[i].state != HoldState::Held {
                return Err(TestCaseError::fail(format!(
                    "expire_due expired hold #{i}, which is not due and held: {:?}",
                    self.model.holds[i]
                )));
            }
            self.model.holds[i].state = HoldState::Expired;
            self.check_hold("expire_due", hold, i, HoldState::Expired)?;
        }
        Ok(())
    }

    /// Every SKU's counters, and the list of SKUs, agree with the model.
    /// It also checks which holds each SKU lists as confirming (the reconciler's input).
    async fn check_every_sku(&self) -> TestCaseResult {
        for (s, name) in SKUS.iter().enumerate() {
            let got = self.store.snapshot(&sku(name)).await;
            let want = self.model.snapshot(s).ok_or(ReservationError::UnknownSku);
            check(&format!("snapshot of {name}"), &got, &want)?;

            let mut got = self
                .store
                .confirming_holds(&sku(name))
                .await
                .map(|holds| holds.into_iter().map(|c| c.hold.id).collect::<Vec<_>>());
            if let Ok(ids) = &mut got {
                ids.sort();
            }
            let want = match self.model.products[s] {
                None => Err(ReservationError::UnknownSku),
                Some(_) => {
                    let mut ids: Vec<ReservationId> = (0..self.model.holds.len())
                        .filter(|&i| {
                            let h = &self.model.holds[i];
                            h.sku == s && h.state == HoldState::Confirming
                        })
                        .map(|i| self.ids[i].clone())
                        .collect();
                    ids.sort();
                    Ok(ids)
                }
            };
            check(&format!("confirming holds of {name}"), &got, &want)?;
        }
        let mut got = self.store.skus().await;
        if let Ok(skus) = &mut got {
            skus.sort();
        }
        let want: Vec<Sku> = (0..SKUS.len())
            .filter(|&s| self.model.products[s].is_some())
            .map(|s| sku(SKUS[s]))
            .collect();
        check("skus", &got, &Ok(want))
    }
}

/// Runs one generated sequence against a fresh store.
async fn run_case<S: ReservationStore>(store: S, ops: &[Op]) -> TestCaseResult {
    let mut case = Case {
        store,
        model: Model::default(),
        ids: Vec::new(),
        stranger_id: ReservationId::generate(&sku(SKUS[0])),
    };
    // A and B exist from the start: A roomy enough for several holds at once, B small so
    // that sell-outs and limits are frequent. C exists only once the sequence configures it.
    case.configure(0, stock(12, 6, 3)).await?;
    case.configure(1, stock(3, 2, 2)).await?;
    for (step, op) in ops.iter().enumerate() {
        let result = match case.apply(op).await {
            Ok(()) => case.check_every_sku().await,
            Err(e) => Err(e),
        };
        result.map_err(|e| TestCaseError::fail(format!("step {step} ({op:?}): {e}")))?;
    }
    Ok(())
}

/// Runs `cases` random operation sequences (each against a fresh store from `make`) through
/// the store and the model, panicking with the smallest disagreeing sequence found.
///
/// Builds its own tokio runtime, so call it from a plain `#[test]`.
pub fn check_against_model<S, F, Fut>(cases: u32, make: F)
where
    S: ReservationStore,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a tokio runtime");
    let config = Config {
        cases,
        // Called from other crates' tests, where proptest cannot name a source file.
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = prop::collection::vec(op_strategy(), 1..=MAX_OPS);
    let result = runner.run(&strategy, |ops| {
        runtime.block_on(async { run_case(make().await, &ops).await })
    });
    if let Err(failure) = result {
        panic!("the store disagrees with the model: {failure}");
    }
}
