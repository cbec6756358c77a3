//! The reconciler and the sweeper, as library functions (`stockgate reconcile [--repair]`,
//! `GET /api/v1/admin/reconcile`) and as one periodic task under a leader lease.
//!
//! Reconciler, per SKU SQL knows: resolve holds whose confirm began more than a grace period ago
//! (the gateway that began it is presumed dead) by claiming their reservation id `released` in
//! SQL (`sql::fates`): the claim wins → `abort_confirm(Released)`; an order was committed
//! first → `finish_confirm`. A settle batch in flight either commits first or finds the claim
//! and refuses, so the reconciler never releases a hold whose order exists. Then compare the store's counters with SQL:
//! `available + held + confirming + sold == total_stock`, and Redis `sold + confirming` against
//! SQL `sold`: the difference is explained by confirms in flight (confirming holds without an
//! order) and cancellations the relay has not returned yet; what is left is drift — below zero
//! Redis lost sales, above zero units sit off sale. A SKU that is unbalanced or drifted is
//! not ok; `repair` rebuilds its counters from one SQL snapshot with `repair_counters`,
//! finishing holds whose order committed (never counting them twice), marking cancelled
//! orders returned (never returning them twice), and counting what confirms and returns did
//! while it ran from the store's journal ([`Repair`]).

use std::sync::Arc;
use std::time::Duration;

use backend_adapters::sql::fates::{self, Fate};
use backend_adapters::sql::{Db, Product, SqlError, now_ms, outbox, products};
use reservation_core::wire::rfc3339_ms;
use reservation_core::{
    AbortTo, ProductStock, RepairTicket, ReservationError, ReservationStore, Sku, SoldUnits,
    StockSnapshot,
};
use serde::Serialize;
use thiserror::Error;
use tokio::sync::watch;

use crate::config::MaintenanceConfig;
use crate::leader::Leader;
use crate::metrics::Metrics;

#[derive(Debug, Error)]
pub enum MaintenanceError {
    #[error("database: {0}")]
    Database(#[from] SqlError),
    #[error("reservation store: {0}")]
    Store(#[from] ReservationError),
}

/// What one reconcile run does besides reporting.
#[derive(Clone, Copy, Debug)]
pub struct ReconcileOptions {
    /// Rebuild the counters of every drifted SKU from SQL.
    pub repair: bool,
    /// Resolve holds `confirming` for longer than this (`None`: leave them).
    pub confirming_grace: Option<Duration>,
}

impl Default for ReconcileOptions {
    fn default() -> Self {
        ReconcileOptions {
            repair: false,
            confirming_grace: Some(Duration::from_secs(60)),
        }
    }
}

/// One SKU of the drift report.
#[derive(Clone, Debug, Serialize)]
pub struct SkuReport {
    pub sku: String,
    pub sql_total_stock: i64,
    pub sql_sold: i64,
    /// The store's counters after resolution (and after repair, when repaired); `None` when
    /// the store has no counters for the SKU.
    pub store: Option<StockSnapshot>,
    /// Redis `sold + confirming − SQL sold` before repair.
    pub sold_drift: i64,
    /// Units of `confirming` holds whose order has not committed (confirms in flight).
    pub confirming_in_flight: i64,
    /// Units of cancelled orders the relay has not returned to the store yet.
    pub pending_returns: i64,
    /// `sold_drift − confirming_in_flight − pending_returns`: what neither explains. Zero
    /// when the store and SQL agree; below zero the store lost sales, above it units sit off
    /// sale (e.g. a cancellation that could not be applied). Under traffic the reads are not
    /// one snapshot, so a single report may show a passing difference.
    pub unexplained_drift: i64,
    pub balanced: bool,
    /// The store sells under SQL's per-buyer limit, max per order and sale state.
    pub settings_match: bool,
    /// Balanced, settings matching, and no unexplained drift.
    pub ok: bool,
    pub confirming_confirmed: u32,
    pub confirming_released: u32,
    pub repaired: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReconcileReport {
    pub generated_at: String,
    pub ok: bool,
    pub skus: Vec<SkuReport>,
}

/// Reconciles every SKU in SQL against the store. Updates the drift metrics when given.
pub async fn reconcile(
    db: &Db,
    store: &dyn ReservationStore,
    metrics: Option<&Metrics>,
    options: ReconcileOptions,
) -> Result<ReconcileReport, MaintenanceError> {
    let pending_returns = outbox::pending_cancellations(db).await?;
    let mut skus = Vec::new();
    for product in products::list(db).await? {
        let sku = product.sku()?;
        let mut report = SkuReport {
            sku: product.sku.clone(),
            sql_total_stock: product.total_stock,
            sql_sold: product.sold,
            store: None,
            sold_drift: -product.sold,
            confirming_in_flight: 0,
            pending_returns: pending_returns.get(&product.sku).copied().unwrap_or(0),
            unexplained_drift: 0,
            balanced: false,
            settings_match: false,
            ok: false,
            confirming_confirmed: 0,
            confirming_released: 0,
            repaired: false,
        };
        if let (Some(grace), Some(_)) = (options.confirming_grace, snapshot(store, &sku).await?) {
            resolve_confirming(db, store, &sku, grace, &mut report, metrics).await?;
        }
        let snap = snapshot(store, &sku).await?;
        if let Some(s) = &snap {
            report.sold_drift = (s.sold + s.confirming) as i64 - product.sold;
            report.confirming_in_flight = in_flight_units(db, store, &sku).await?;
            report.balanced = s.is_balanced() && s.total_stock as i64 == product.total_stock;
            report.settings_match = settings_match(s, &product);
        }
        report.unexplained_drift =
            report.sold_drift - report.confirming_in_flight - report.pending_returns;
        report.ok = report.balanced && report.settings_match && report.unexplained_drift == 0;
        report.store = snap;
        if options.repair && !report.ok {
            let repair = prepare_repair(db, store, &product).await?;
            match apply_repair(store, &repair).await {
                Ok(repaired) => {
                    report.store = Some(repaired);
                    report.repaired = true;
                    tracing::warn!(sku = %sku, drift = report.sold_drift, "counters rebuilt from sql");
                }
                // An ops edit or another repair of the SKU came between the two steps: the
                // counters are theirs now; the SKU stays not ok in this report, and the next
                // reconcile looks again.
                Err(MaintenanceError::Store(ReservationError::RepairSuperseded)) => {
                    tracing::warn!(sku = %sku, "repair superseded by an edit or another repair");
                }
                Err(error) => return Err(error),
            }
        }
        if let Some(m) = metrics {
            m.drift_sold
                .with_label_values(&[&report.sku])
                .set(report.unexplained_drift);
            m.drift_unbalanced
                .with_label_values(&[&report.sku])
                .set(i64::from(!report.balanced));
        }
        skus.push(report);
    }
    Ok(ReconcileReport {
        generated_at: rfc3339_ms(now_ms()),
        ok: skus.iter().all(|s| s.ok),
        skus,
    })
}

/// A counter repair of one SKU between its two steps: the store's journal opened, and what
/// SQL said after that. Public so that a test can run traffic in the window between the steps.
///
/// Why two steps and a journal: SQL is read in one snapshot, then the store's counters are
/// written in one script, and between the two a gateway may finish a confirm whose order
/// committed after the snapshot (its units move to `sold` in the store, which the script
/// then overwrites with a `sold` that lacks them: one short, the unit on sale twice) or the
/// relay may return a cancellation the snapshot did not see (one over: the unit off sale for
/// good, its return already marked done). Neither a lock (every confirm would wait on a
/// repair's Redis call) nor re-reading SQL until it stops changing (never, during a sale)
/// closes that window; the journal does, in every interleaving: `begin_repair` opens it
/// before SQL is read, `finish_confirm` and `return_cancelled` record in it what they moved,
/// and `repair_counters` counts exactly what the snapshot missed (repair_counters.lua lists
/// the cases).
#[derive(Debug)]
pub struct Repair {
    sku: Sku,
    stock: ProductStock,
    basis: SoldUnits,
    ticket: RepairTicket,
}

/// The first step of a repair: open the store's journal (listing the holds confirming now),
/// then read one SQL snapshot of the product's settings, what is sold, and which of those
/// holds, and of recent orders, have an order. The settings come from the snapshot, not from
/// `product` (read earlier, maybe before an ops edit); an edit committed after the snapshot
/// supersedes the repair in the store.
pub async fn prepare_repair(
    db: &Db,
    store: &dyn ReservationStore,
    product: &Product,
) -> Result<Repair, MaintenanceError> {
    let sku = product.sku()?;
    // An ops edit configures the store before SQL commits: holding its edit lock means no
    // edit is between the two, so the snapshot has every edit the store has (a later one
    // drops the journal: the repair is refused).
    let no_edit_in_flight = products::begin_edit(db, &sku).await?;
    let read = open_and_read(db, store, product, &sku).await;
    no_edit_in_flight.rollback().await;
    read
}

/// `prepare_repair` under the edit lock: the journal, then the snapshot.
async fn open_and_read(
    db: &Db,
    store: &dyn ReservationStore,
    product: &Product,
    sku: &Sku,
) -> Result<Repair, MaintenanceError> {
    let start = store.begin_repair(sku).await?;
    let recent_since = now_ms() - REPAIR_RECENT_ORDERS_MS;
    let (now, basis) =
        products::repair_basis(db, &product.sku, &start.confirming, recent_since).await?;
    Ok(Repair {
        sku: sku.clone(),
        stock: now.as_ref().unwrap_or(product).stock(),
        basis,
        ticket: start.ticket,
    })
}

/// The second step: rebuild the counters from the snapshot and the journal.
pub async fn apply_repair(
    store: &dyn ReservationStore,
    repair: &Repair,
) -> Result<StockSnapshot, MaintenanceError> {
    Ok(store
        .repair_counters(&repair.sku, &repair.stock, &repair.basis, &repair.ticket)
        .await?)
}

/// Orders created this recently are asked about by a repair even when their hold was not
/// listed as confirming: longer than any hold lives (a hold TTL is minutes), so a hold still
/// held or confirming in the store always has its order, if any, in this window.
const REPAIR_RECENT_ORDERS_MS: i64 = 60 * 60 * 1000;

/// Units of the SKU's `confirming` holds whose order has not committed: confirms in flight,
/// which Redis counts and SQL does not yet.
async fn in_flight_units(
    db: &Db,
    store: &dyn ReservationStore,
    sku: &reservation_core::Sku,
) -> Result<i64, MaintenanceError> {
    let confirming = store.confirming_holds(sku).await?;
    let ids: Vec<&str> = confirming.iter().map(|c| c.hold.id.as_str()).collect();
    let ordered = fates::ordered_among(db, &ids).await?;
    Ok(confirming
        .iter()
        .filter(|c| !ordered.contains(c.hold.id.as_str()))
        .map(|c| i64::from(c.hold.qty.get()))
        .sum())
}

/// Whether the store sells the SKU under SQL's settings (limits and sale state; the total is
/// part of `balanced`).
fn settings_match(store: &StockSnapshot, sql: &Product) -> bool {
    let sql = sql.stock();
    (store.per_buyer_limit, store.max_per_order, store.sale_state)
        == (sql.per_buyer_limit, sql.max_per_order, sql.sale_state)
}

async fn snapshot(
    store: &dyn ReservationStore,
    sku: &reservation_core::Sku,
) -> Result<Option<StockSnapshot>, MaintenanceError> {
    match store.snapshot(sku).await {
        Ok(s) => Ok(Some(s)),
        Err(ReservationError::UnknownSku) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Settles holds stuck in `confirming` (the gateway died between its confirm and its
/// finish/abort): the grace counts from when the confirm began, and SQL decides by the fate
/// claim, so a confirm still in flight past the grace is never undone.
async fn resolve_confirming(
    db: &Db,
    store: &dyn ReservationStore,
    sku: &reservation_core::Sku,
    grace: Duration,
    report: &mut SkuReport,
    metrics: Option<&Metrics>,
) -> Result<(), MaintenanceError> {
    let cutoff = (now_ms().max(0) as u64).saturating_sub(grace.as_millis() as u64);
    for confirming in store.confirming_holds(sku).await? {
        if confirming.since_ms > cutoff {
            continue;
        }
        let hold = confirming.hold;
        let fate = fates::claim_released(db, hold.id.as_str(), fates::reason::RECONCILER).await?;
        let result = match fate {
            Fate::Ordered => {
                store.finish_confirm(&hold.id).await?;
                report.confirming_confirmed += 1;
                "confirmed"
            }
            Fate::Released => {
                store.abort_confirm(&hold.id, AbortTo::Released).await?;
                report.confirming_released += 1;
                "released"
            }
        };
        tracing::info!(reservation_id = %hold.id, result, "stuck confirming hold resolved");
        if let Some(m) = metrics {
            m.confirming_resolved.with_label_values(&[result]).inc();
        }
    }
    Ok(())
}

/// Expires due holds of every SKU the store knows, `batch` at a time. Returns how many.
pub async fn sweep(store: &dyn ReservationStore, batch: usize) -> Result<usize, MaintenanceError> {
    let mut expired = 0;
    for sku in store.skus().await? {
        loop {
            let done = store.expire_due(&sku, batch).await?.len();
            expired += done;
            if done < batch {
                break;
            }
        }
    }
    Ok(expired)
}

/// The periodic task: sweeps every `sweep_interval`, reconciles (report + confirming
/// resolution, never repair: a repair is an operator's decision) every
/// `reconcile_interval`, only while leader. A replica that is not (or no longer) the leader
/// clears its drift gauges, so a former leader's last values do not page forever.
pub(crate) async fn run(
    db: Db,
    store: Arc<dyn ReservationStore>,
    leader: Leader,
    metrics: Metrics,
    config: MaintenanceConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sweep_tick = tokio::time::interval(Duration::from_millis(config.sweep_interval_ms));
    let mut reconcile_tick =
        tokio::time::interval(Duration::from_millis(config.reconcile_interval_ms));
    sweep_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    reconcile_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let reconcile_now = tokio::select! {
            _ = sweep_tick.tick() => false,
            _ = reconcile_tick.tick() => true,
            _ = shutdown.changed() => return,
        };
        let leading = leader.is_leader().await;
        metrics.leader("maintenance", leading);
        if !leading {
            metrics.drift_sold.reset();
            metrics.drift_unbalanced.reset();
            continue;
        }
        if reconcile_now {
            let options = ReconcileOptions {
                repair: false,
                confirming_grace: Some(Duration::from_millis(config.confirming_grace_ms)),
            };
            if let Err(e) = reconcile(&db, store.as_ref(), Some(&metrics), options).await {
                tracing::warn!(error = %e, "reconcile round failed");
            }
        } else {
            match sweep(store.as_ref(), config.sweep_batch).await {
                Ok(n) => metrics.holds_expired.inc_by(n as u64),
                Err(e) => tracing::warn!(error = %e, "sweep round failed"),
            }
        }
    }
}
