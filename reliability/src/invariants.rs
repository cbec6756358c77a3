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

/// Judges a state and a history. `at_rest`: the run is over, no request is in flight and
/// the reconciler has run, so the counters must add up and nothing may stay `confirming`.
pub fn check(observed: &Observed, history: &[Record], at_rest: bool) -> Report {
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
    for order in &observed.orders {
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
        attempts.insert(record.attempt);
        match record.op {
            Op::Reserve => {
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
                if record.ids_seen.iter().any(|seen| seen != id) {
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
                                && order.status != "cancelled";
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
                }
            }
            Op::Release => {
                if !record.succeeded() {
                    continue;
                }
                report.tally.releases_acknowledged += 1;
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
        }
    }
    report.tally.attempts = attempts.len();

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
