//! The invariant checker: reads the Redis counters and holds and the SQL products and orders
//! after a run, and holds them, and a recorded client history, to the invariants of
//! docs/design.md §6. Reading ([`observe`]) and judging ([`check`]) are separate so the
//! judging is tested on hand-made states that break each invariant.

use std::collections::{BTreeMap, HashMap, HashSet};

use backend_adapters::redis::{RedisStore, RedisStoreConfig};
use backend_adapters::sql::Db;
use reservation_core::{HoldState, ReservationId, ReservationStore, Sku};
use serde::Serialize;
use sqlx::Row;

use crate::history::{Op, Record};

/// The Redis counters of one SKU (`None` fields: the SKU has no counters in Redis).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    pub total_stock: u64,
    pub available: u64,
    pub held: u64,
    pub confirming: u64,
    pub sold: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SkuState {
    pub sku: String,
    pub sql_total_stock: i64,
    pub sql_sold: i64,
    pub per_buyer_limit: i64,
    /// `Err` holds why the counters could not be read (missing, or not a valid snapshot).
    pub redis: Result<Counters, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OrderRow {
    pub order_id: String,
    pub reservation_id: String,
    pub buyer: String,
    pub sku: String,
    pub qty: i64,
    pub status: String,
}

/// Everything the checker looks at, read after a run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Observed {
    pub skus: Vec<SkuState>,
    pub orders: Vec<OrderRow>,
    /// State of every hold the history or SQL names that Redis still has (`held`,
    /// `confirming`, `confirmed`, `released`, `expired`).
    pub holds: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Short name of the broken invariant.
    pub invariant: &'static str,
    pub detail: String,
}

/// Counts of what the history and the state hold, for the report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tally {
    pub attempts: usize,
    pub reserves_acknowledged: usize,
    pub reserves_unknown: usize,
    pub confirms_acknowledged: usize,
    pub confirms_unknown: usize,
    pub releases_acknowledged: usize,
    /// Confirms judged by the hold TTL (`Rules::hold_ttl_ms`): first sent while the hold
    /// surely lived (and nobody released it), and surely after it expired.
    pub confirms_inside_ttl: usize,
    pub confirms_after_expiry: usize,
    /// Refused confirms of holds the client was given and Redis no longer has (a failover).
    pub lost_holds_answered_410: usize,
    pub cancels_acknowledged: usize,
    pub restocked_units: i64,
    pub sql_orders: usize,
    pub sql_units_sold: i64,
    pub total_stock: i64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub tally: Tally,
    pub violations: Vec<Violation>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// Where to read the state from.
pub struct Sources<'a> {
    pub database_url: &'a str,
    pub redis_url: &'a str,
    /// The reservation store's key prefix (`redis_key_prefix` of the gateway).
    pub redis_key_prefix: &'a str,
}

/// Reads the state of `skus` and of every hold `history` or SQL names.
pub async fn observe(
    sources: &Sources<'_>,
    skus: &[String],
    history: &[Record],
) -> anyhow::Result<Observed> {
    let db = Db::connect(sources.database_url, 2).await?;
    let store = RedisStore::connect(
        sources.redis_url,
        RedisStoreConfig {
            prefix: sources.redis_key_prefix.to_owned(),
            ..RedisStoreConfig::default()
        },
    )
    .await?;
    let mut observed = Observed::default();
    for sku in skus {
        let row =
            sqlx::query("SELECT total_stock, sold, per_buyer_limit FROM products WHERE sku = $1")
                .bind(sku)
                .fetch_optional(db.pool())
                .await?
                .ok_or_else(|| anyhow::anyhow!("SKU {sku} is not in SQL"))?;
        let redis = match store.snapshot(&Sku::parse(sku)?).await {
            Ok(s) => Ok(Counters {
                total_stock: s.total_stock,
                available: s.available,
                held: s.held,
                confirming: s.confirming,
                sold: s.sold,
            }),
            Err(error) => Err(error.to_string()),
        };
        observed.skus.push(SkuState {
            sku: sku.clone(),
            sql_total_stock: row.try_get("total_stock")?,
            sql_sold: row.try_get("sold")?,
            per_buyer_limit: row.try_get("per_buyer_limit")?,
            redis,
        });
        let orders = sqlx::query(
            "SELECT id, reservation_id, user_sub, sku, qty, status FROM orders WHERE sku = $1",
        )
        .bind(sku)
        .fetch_all(db.pool())
        .await?;
        for row in orders {
            observed.orders.push(OrderRow {
                order_id: row.try_get("id")?,
                reservation_id: row.try_get("reservation_id")?,
                buyer: row.try_get("user_sub")?,
                sku: row.try_get("sku")?,
                qty: row.try_get("qty")?,
                status: row.try_get("status")?,
            });
        }
    }
    db.close().await;

    let mut ids: HashSet<&str> = history
        .iter()
        .filter_map(|r| r.reservation_id.as_deref())
        .collect();
    ids.extend(observed.orders.iter().map(|o| o.reservation_id.as_str()));
    for id in ids {
        let Ok(rid) = ReservationId::parse(id) else {
            continue;
        };
        if let Ok(hold) = store.get_hold(&rid).await {
            observed
                .holds
                .insert(id.to_owned(), hold_state_name(hold.state).to_owned());
        }
    }
    Ok(observed)
}

fn hold_state_name(state: HoldState) -> &'static str {
    match state {
        HoldState::Held => "held",
        HoldState::Confirming => "confirming",
        HoldState::Confirmed => "confirmed",
        HoldState::Released => "released",
        HoldState::Expired => "expired",
    }
}

/// What a run lets the checker expect besides the invariants that always hold.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Rules {
    /// The run is over, no request is in flight, the relay has published every event and the
    /// reconciler has run: the counters must add up and nothing may stay `confirming`.
    pub at_rest: bool,
    /// SKU → the total stock it was created with. Given, SQL's total must be that plus the
    /// acknowledged restocks (plus any of those whose answer was lost).
    pub initial_stock: BTreeMap<String, i64>,
    /// The hold TTL. Given, a confirm first sent more than a TTL (+ [`CLOCK_MARGIN_MS`]) after
    /// its reserve was answered must be refused with 410 and never become an order.
    pub hold_ttl_ms: Option<u64>,
    /// With `hold_ttl_ms`: a confirm of a hold nobody released, first sent more than
    /// [`CLOCK_MARGIN_MS`] before the hold could expire, must succeed (no fault in the run).
    pub confirms_in_ttl_succeed: bool,
    /// A Redis failover lost the writes made in this window (Unix ms, from shortly before the
    /// replica stopped following to the switch of the endpoint). For reservations with an
    /// operation under way in it, what Redis says about the hold and what a release was told
    /// are not binding (see [`check`]); SQL and every acknowledged order still are.
    pub redis_lost_writes: Option<(u64, u64)>,
}

/// How far apart "sent" on the client and "expired" on the server may be judged: scheduling
/// on a loaded 2-core box, the reserve's answer in flight.
pub const CLOCK_MARGIN_MS: u64 = 1_000;

impl Rules {
    /// After a run: every invariant, no profile's extras.
    pub fn at_rest() -> Rules {
        Rules {
            at_rest: true,
            ..Rules::default()
        }
    }

    /// Requests may still be in flight: the at-rest checks are skipped.
    pub fn live() -> Rules {
        Rules::default()
    }
}

/// Judges a state and a history by `rules`.
///
/// After a Redis failover (`rules.redis_lost_writes`) three checks are relaxed for the
/// reservations that had an operation under way in the lost window, because the store itself
/// went back in time for them: the hold's state in Redis (a `confirming`/`confirmed` hold may be
/// `held` again and expire under its order), a release acknowledged in the window (the
/// promoted replica never saw it, so the buyer's later confirm may be honoured), and one
/// reservation per idempotency key (the key's binding was lost with the hold, so a retry makes
/// a new one; the lost one can never be confirmed: its confirm is answered 410 from SQL).
pub fn check(observed: &Observed, history: &[Record], rules: &Rules) -> Report {
    let at_rest = rules.at_rest;
    let in_lost_window: HashSet<&str> = match rules.redis_lost_writes {
        Some(window) => history
            .iter()
            .filter(|r| r.overlaps(window))
            .filter_map(|r| r.reservation_id.as_deref())
            .chain(
                history
                    .iter()
                    .filter(|r| r.op == Op::Reserve && r.overlaps(window))
                    .flat_map(|r| r.ids_seen.iter().map(String::as_str)),
            )
            .collect(),
        None => HashSet::new(),
    };
    let relaxed = |rid: &str| in_lost_window.contains(rid);
    let mut report = Report::default();
    let mut fail = |invariant: &'static str, detail: String| {
        report.violations.push(Violation { invariant, detail });
    };

    // --- stock: Redis counters and SQL --------------------------------------------------
    let live_orders: Vec<&OrderRow> = observed
        .orders
        .iter()
        .filter(|o| o.status != "cancelled")
        .collect();
    for sku in &observed.skus {
        if sku.sql_sold > sku.sql_total_stock {
            fail(
                "sql_sold_within_stock",
                format!(
                    "{}: SQL sold {} > total {}",
                    sku.sku, sku.sql_sold, sku.sql_total_stock
                ),
            );
        }
        let order_units: i64 = live_orders
            .iter()
            .filter(|o| o.sku == sku.sku)
            .map(|o| o.qty)
            .sum();
        if order_units != sku.sql_sold {
            fail(
                "sql_sold_matches_orders",
                format!(
                    "{}: SQL sold {} but live orders hold {order_units} units",
                    sku.sku, sku.sql_sold
                ),
            );
        }
        match &sku.redis {
            Err(error) => fail("redis_counters_readable", format!("{}: {error}", sku.sku)),
            Ok(c) if at_rest => {
                if c.available + c.held + c.confirming + c.sold != c.total_stock
                    || c.total_stock as i64 != sku.sql_total_stock
                {
                    fail(
                        "redis_counters_balanced",
                        format!(
                            "{}: available {} + held {} + confirming {} + sold {} vs total {} (SQL {})",
                            sku.sku,
                            c.available,
                            c.held,
                            c.confirming,
                            c.sold,
                            c.total_stock,
                            sku.sql_total_stock
                        ),
                    );
                }
                if c.confirming != 0 {
                    fail(
                        "nothing_left_confirming",
                        format!("{}: {} units still confirming", sku.sku, c.confirming),
                    );
                }
                if c.sold as i64 != sku.sql_sold {
                    fail(
                        "redis_sold_matches_sql",
                        format!("{}: Redis sold {} vs SQL {}", sku.sku, c.sold, sku.sql_sold),
                    );
                }
            }
            Ok(_) => {}
        }
        report.tally.total_stock += sku.sql_total_stock;
        report.tally.sql_units_sold += sku.sql_sold;
    }

    // --- ops: cancels and restocks ------------------------------------------------------------
    let mut cancel_tried: HashSet<&str> = HashSet::new();
    let mut restocked: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for record in history {
        match record.op {
            Op::Cancel => {
                let Some(order_id) = record.order_id.as_deref() else {
                    continue;
                };
                if record.succeeded() || record.unknown() {
                    cancel_tried.insert(order_id);
                }
                let order = observed.orders.iter().find(|o| o.order_id == order_id);
                if record.succeeded() && order.is_none_or(|o| o.status != "cancelled") {
                    fail(
                        "acknowledged_cancel_is_cancelled",
                        format!(
                            "attempt {}: cancel of {order_id} answered {} but SQL has {:?}",
                            record.attempt,
                            record.status.unwrap_or_default(),
                            order.map(|o| &o.status)
                        ),
                    );
                }
            }
            Op::Restock => {
                let entry = restocked.entry(record.sku.as_str()).or_default();
                if record.succeeded() {
                    entry.0 += i64::from(record.qty);
                } else if record.unknown() {
                    entry.1 += i64::from(record.qty);
                }
            }
            _ => {}
        }
    }
    for order in &observed.orders {
        if order.status == "cancelled" && !cancel_tried.contains(order.order_id.as_str()) {
            fail(
                "cancelled_order_was_cancelled",
                format!(
                    "order {} is cancelled in SQL but nobody's cancel may have done it",
                    order.order_id
                ),
            );
        }
    }
    for sku in &observed.skus {
        let Some(initial) = rules.initial_stock.get(&sku.sku) else {
            continue;
        };
        let (acked, maybe) = restocked.get(sku.sku.as_str()).copied().unwrap_or_default();
        if sku.sql_total_stock < initial + acked || sku.sql_total_stock > initial + acked + maybe {
            fail(
                "restocks_counted",
                format!(
                    "{}: SQL total {} but created with {initial}, restocks acknowledged {acked}, unknown {maybe}",
                    sku.sku, sku.sql_total_stock
                ),
            );
        }
    }

    // --- orders: one per reservation, within the buyer's limit ------------------------------
    let mut by_reservation: HashMap<&str, &OrderRow> = HashMap::new();
    for order in &observed.orders {
        if by_reservation
            .insert(order.reservation_id.as_str(), order)
            .is_some()
        {
            fail(
                "one_order_per_reservation",
                format!("reservation {} has two orders", order.reservation_id),
            );
        }
    }
    report.tally.sql_orders = observed.orders.len();
    let limits: HashMap<&str, i64> = observed
        .skus
        .iter()
        .map(|s| (s.sku.as_str(), s.per_buyer_limit))
        .collect();
    let mut bought: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for order in &live_orders {
        *bought
            .entry((order.buyer.as_str(), order.sku.as_str()))
            .or_default() += order.qty;
    }
    for ((buyer, sku), units) in bought {
        let limit = limits.get(sku).copied().unwrap_or(i64::MAX);
        if units > limit {
            fail(
                "per_buyer_limit",
                format!("{buyer} holds {units} units of {sku}, limit {limit}"),
            );
        }
    }

    // --- holds: an order only for a confirmed hold ----------------------------------------
    for order in observed
        .orders
        .iter()
        .filter(|o| !relaxed(&o.reservation_id))
    {
        match observed
            .holds
            .get(&order.reservation_id)
            .map(String::as_str)
        {
            Some("released") | Some("expired") => fail(
                "released_or_expired_hold_never_confirmed",
                format!(
                    "order {} exists for hold {} which is {}",
                    order.order_id, order.reservation_id, observed.holds[&order.reservation_id]
                ),
            ),
            Some("held") => fail(
                "order_only_for_confirmed_hold",
                format!(
                    "order {} exists while hold {} is still held (its units could expire back to stock)",
                    order.order_id, order.reservation_id
                ),
            ),
            _ => {}
        }
    }

    // --- the history: what clients were told ------------------------------------------------
    let mut reserved: HashMap<&str, &Record> = HashMap::new();
    let mut attempts = HashSet::new();
    for record in history {
        match record.op {
            Op::Reserve => {
                attempts.insert(record.attempt);
                if record.unknown() {
                    report.tally.reserves_unknown += 1;
                }
                if !record.succeeded() {
                    continue;
                }
                report.tally.reserves_acknowledged += 1;
                let Some(id) = record.reservation_id.as_deref() else {
                    fail(
                        "reserve_answer_names_reservation",
                        format!("attempt {}: a 2xx reserve without an id", record.attempt),
                    );
                    continue;
                };
                if record.ids_seen.iter().any(|seen| seen != id)
                    && !record.ids_seen.iter().any(|seen| relaxed(seen))
                {
                    fail(
                        "one_reservation_per_idempotency_key",
                        format!(
                            "attempt {}: retries of key {} named {:?}",
                            record.attempt, record.idempotency_key, record.ids_seen
                        ),
                    );
                }
                if let Some(other) = reserved.insert(id, record) {
                    fail(
                        "no_reservation_id_twice",
                        format!(
                            "{id} answered to attempts {} and {}",
                            other.attempt, record.attempt
                        ),
                    );
                }
            }
            Op::Confirm => {
                let order = record
                    .reservation_id
                    .as_deref()
                    .and_then(|id| by_reservation.get(id));
                if record.succeeded() {
                    report.tally.confirms_acknowledged += 1;
                    match order {
                        None => fail(
                            "acknowledged_order_exists",
                            format!(
                                "attempt {}: confirm answered {} for {:?} but SQL has no order",
                                record.attempt,
                                record.status.unwrap_or_default(),
                                record.reservation_id
                            ),
                        ),
                        Some(order) => {
                            let same = record.order_id.as_deref() == Some(order.order_id.as_str())
                                && order.buyer == record.buyer
                                && order.sku == record.sku
                                && order.qty == i64::from(record.qty)
                                && (order.status != "cancelled"
                                    || cancel_tried.contains(order.order_id.as_str()));
                            if !same {
                                fail(
                                    "acknowledged_order_matches",
                                    format!(
                                        "attempt {}: told order {:?} ({} × {} for {}), SQL has {:?}",
                                        record.attempt,
                                        record.order_id,
                                        record.qty,
                                        record.sku,
                                        record.buyer,
                                        order
                                    ),
                                );
                            }
                        }
                    }
                } else if record.unknown() {
                    // Either outcome is allowed.
                    report.tally.confirms_unknown += 1;
                } else if let Some(order) = order {
                    fail(
                        "refused_confirm_has_no_order",
                        format!(
                            "attempt {}: confirm refused with {} {:?} but SQL has order {}",
                            record.attempt,
                            record.status.unwrap_or_default(),
                            record.code,
                            order.order_id
                        ),
                    );
                } else if let Some(id) = record.reservation_id.as_deref()
                    && reserved.contains_key(id)
                    && !observed.holds.contains_key(id)
                    && record.status == Some(410)
                {
                    report.tally.lost_holds_answered_410 += 1;
                } else if let Some(id) = record.reservation_id.as_deref()
                    && reserved.contains_key(id)
                    && !observed.holds.contains_key(id)
                {
                    // The store lost a hold the client was given (a failover): SQL decides,
                    // and with no order there the answer is "gone", never "no such thing".
                    fail(
                        "lost_hold_answered_410",
                        format!(
                            "attempt {}: confirm of {id}, whose hold Redis lost, answered {} {:?}",
                            record.attempt,
                            record.status.unwrap_or_default(),
                            record.code
                        ),
                    );
                }
            }
            Op::Release => {
                if !record.succeeded() {
                    continue;
                }
                report.tally.releases_acknowledged += 1;
                if record.reservation_id.as_deref().is_some_and(relaxed) {
                    continue;
                }
                if let Some(order) = record
                    .reservation_id
                    .as_deref()
                    .and_then(|id| by_reservation.get(id))
                {
                    fail(
                        "released_hold_never_confirmed",
                        format!(
                            "attempt {}: release of {} answered {} but SQL has order {}",
                            record.attempt,
                            order.reservation_id,
                            record.status.unwrap_or_default(),
                            order.order_id
                        ),
                    );
                }
            }
            Op::Cancel => {
                if record.succeeded() {
                    report.tally.cancels_acknowledged += 1;
                }
            }
            Op::Restock => {
                if record.succeeded() {
                    report.tally.restocked_units += i64::from(record.qty);
                }
            }
        }
    }
    report.tally.attempts = attempts.len();

    // --- confirms judged by the hold TTL ----------------------------------------------------
    if let Some(ttl) = rules.hold_ttl_ms {
        let released: HashSet<&str> = history
            .iter()
            .filter(|r| r.op == Op::Release)
            .filter_map(|r| r.reservation_id.as_deref())
            .collect();
        for confirm in history.iter().filter(|r| r.op == Op::Confirm) {
            let Some(id) = confirm.reservation_id.as_deref() else {
                continue;
            };
            let Some(reserve) = reserved.get(id) else {
                continue;
            };
            // The hold was made while its reserve was under way: it expires between a TTL
            // after the reserve was first sent and a TTL after its answer.
            let expired_by = reserve.done_ms + ttl + CLOCK_MARGIN_MS;
            let alive_until = (reserve.sent_ms + ttl).saturating_sub(CLOCK_MARGIN_MS);
            if confirm.sent_ms > expired_by {
                if let Some(order) = by_reservation.get(id) {
                    fail(
                        "expired_hold_never_ordered",
                        format!(
                            "attempt {}: confirm of {id} first sent {} ms after its reserve's answer (TTL {ttl} ms) made order {}",
                            confirm.attempt,
                            confirm.sent_ms - reserve.done_ms,
                            order.order_id
                        ),
                    );
                }
                if !(confirm.status == Some(410) || confirm.unknown()) {
                    fail(
                        "expired_hold_answered_410",
                        format!(
                            "attempt {}: confirm of {id} first sent {} ms after its reserve's answer (TTL {ttl} ms) answered {} {:?}",
                            confirm.attempt,
                            confirm.sent_ms - reserve.done_ms,
                            confirm.status.unwrap_or_default(),
                            confirm.code
                        ),
                    );
                }
                report.tally.confirms_after_expiry += 1;
            } else if confirm.sent_ms < alive_until && !released.contains(id) {
                report.tally.confirms_inside_ttl += 1;
                if rules.confirms_in_ttl_succeed && !confirm.succeeded() {
                    fail(
                        "confirm_inside_ttl_succeeds",
                        format!(
                            "attempt {}: confirm of {id} first sent {} ms before its hold could expire answered {} {:?}",
                            confirm.attempt,
                            reserve.sent_ms + ttl - confirm.sent_ms,
                            confirm
                                .status
                                .map_or("nothing".to_owned(), |s| s.to_string()),
                            confirm.code
                        ),
                    );
                }
            }
        }
    }

    // Every order must come from a reservation some client was given (or may have been).
    let history_skus: HashSet<&str> = history.iter().map(|r| r.sku.as_str()).collect();
    let maybe_reserved: HashSet<&str> = history
        .iter()
        .filter(|r| r.op == Op::Reserve)
        .flat_map(|r| r.ids_seen.iter().map(String::as_str))
        .collect();
    for order in &observed.orders {
        if history_skus.contains(order.sku.as_str())
            && !reserved.contains_key(order.reservation_id.as_str())
            && !maybe_reserved.contains(order.reservation_id.as_str())
            && !history.iter().any(|r| {
                r.op == Op::Reserve && r.unknown() && r.buyer == order.buyer && r.sku == order.sku
            })
        {
            fail(
                "order_has_a_reservation",
                format!(
                    "order {} for {} was never reserved by a client",
                    order.order_id, order.reservation_id
                ),
            );
        }
    }
    report
}

#[cfg(test)]
mod tests;
