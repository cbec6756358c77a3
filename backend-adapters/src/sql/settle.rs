//! Settling a batch of confirmed reservations into orders in ONE transaction (group commit).
//!
//! Steps, all inside the transaction:
//! 1. lock the batch's product rows (sorted by SKU, so concurrent batches cannot deadlock);
//! 2. find orders that already exist for the batch's reservation ids (retries → `Existing`);
//! 3. claim the fate of every other id (`fates.rs`): an id the reconciler released, or that an
//!    earlier batch refused, is `Released` and never becomes an order;
//! 4. decide, **first come first served, as many as fit**, for each claimed id: the product
//!    exists, the buyer's live order units + qty stay within the per-buyer limit (SQL is the
//!    final authority on the limit too), `qty` fits in `total_stock - sold`, and the total
//!    fits in 64 bits; an order that fails one is refused and its claim becomes a final
//!    `released`, while later, smaller orders of the same SKU may still fit — one buyer's
//!    refusal never sinks the whole group;
//! 5. insert the fitting orders `ON CONFLICT (reservation_id) DO NOTHING`;
//! 6. one `UPDATE products SET sold = sold + n WHERE sold + n <= total_stock` per SKU — the
//!    conditional update stays the guard even though the lock already makes it hold;
//! 7. status history and outbox rows; COMMIT. Callers are answered only after this returns.
//!
//! One transaction per order (the benchmark's baseline) is the same function with a batch of
//! one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use reservation_core::{BuyerId, Qty, ReservationId, Sku};
use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use super::db::Db;
use super::fates::{self, reason};
use super::model::{ORDER_COLUMNS, Order, OrderStatus};
use super::outbox::{self, NewEvent, topic};
use super::{SqlError, now_ms, placeholders, value_rows};

/// One verified reservation to settle.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettleRequest {
    pub reservation_id: ReservationId,
    pub buyer: BuyerId,
    pub sku: Sku,
    pub qty: Qty,
}

/// The answer for one request of a batch. Every refusal is final: the reservation id is
/// claimed `released` in the same transaction, so no retry can turn it into an order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SettleOutcome {
    /// The order was inserted by this batch.
    Created(Order),
    /// An order for this reservation id already existed (a retry or a duplicate).
    Existing(Order),
    /// SQL has not enough stock left: the order was refused (Redis drifted).
    Oversell,
    /// No such product in SQL.
    UnknownSku,
    /// The buyer's live orders for the SKU plus this one would exceed its per-buyer limit.
    PurchaseLimit { limit: i64 },
    /// `price × qty` does not fit in 64 bits.
    TotalOutOfRange,
    /// The reservation was released (by the reconciler, or refused before): no order.
    Released,
}

/// The payload of `order.created` / `order.cancelled` events.
#[derive(Serialize)]
pub(crate) struct OrderEvent<'a> {
    pub order_id: &'a str,
    pub reservation_id: &'a str,
    pub user_sub: &'a str,
    pub sku: &'a str,
    pub qty: i64,
}

impl<'a> OrderEvent<'a> {
    pub(crate) fn of(order: &'a Order) -> Self {
        OrderEvent {
            order_id: &order.id,
            reservation_id: &order.reservation_id,
            user_sub: &order.user_sub,
            sku: &order.sku,
            qty: order.qty,
        }
    }
}

/// A fresh order id: `ord_` + a time-ordered UUIDv7.
pub fn new_order_id() -> String {
    format!("ord_{}", uuid::Uuid::now_v7().simple())
}

/// Settles `requests` in one transaction and returns one outcome per request, in order.
/// A reservation id that appears twice in the batch gets one order: `Created` for its first
/// appearance and `Existing` for the others.
pub async fn settle_batch(
    db: &Db,
    requests: &[SettleRequest],
) -> Result<Vec<SettleOutcome>, SqlError> {
    if requests.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = db.begin_write().await?;
    let now = now_ms();

    let skus: Vec<&str> = requests
        .iter()
        .map(|r| r.sku.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let products = lock_products(&mut tx, db, &skus).await?;
    let rids: Vec<&str> = requests.iter().map(|r| r.reservation_id.as_str()).collect();
    let existing = orders_by_reservation(&mut tx, &rids).await?;

    // Claim every id that has no order yet. An id this batch could not claim already has a
    // fate, and it is `released` (an `ordered` claim commits with its order, found above):
    // the reconciler released it, or an earlier batch refused it. It never becomes an order.
    let mut unsettled: Vec<&str> = Vec::new();
    let mut listed: HashSet<&str> = HashSet::new();
    for rid in &rids {
        if !existing.contains_key(*rid) && listed.insert(rid) {
            unsettled.push(rid);
        }
    }
    let claimed: HashSet<String> = fates::claim_ordered(&mut tx, &unsettled, now)
        .await?
        .into_iter()
        .collect();

    // Decide, in arrival order, what each claimed reservation id gets.
    let mut room: HashMap<&str, i64> = products
        .iter()
        .map(|(sku, p)| (sku.as_str(), p.total_stock - p.sold))
        .collect();
    let buyers: Vec<&str> = requests
        .iter()
        .filter(|r| claimed.contains(r.reservation_id.as_str()))
        .map(|r| r.buyer.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut bought = live_units(&mut tx, &skus, &buyers).await?;
    let mut seen: HashSet<&str> = HashSet::new();
    let mut refused: HashMap<&str, Refusal> = HashMap::new();
    let mut fresh: Vec<Order> = Vec::new();
    for req in requests {
        let rid = req.reservation_id.as_str();
        if !claimed.contains(rid) || !seen.insert(rid) {
            continue;
        }
        match decide(req, products.get(req.sku.as_str()), &room, &bought) {
            Ok(product) => {
                let qty = i64::from(req.qty.get());
                *room.entry(req.sku.as_str()).or_default() -= qty;
                *bought
                    .entry((req.sku.as_str().to_owned(), req.buyer.as_str().to_owned()))
                    .or_default() += qty;
                fresh.push(Order {
                    id: new_order_id(),
                    reservation_id: rid.to_owned(),
                    user_sub: req.buyer.as_str().to_owned(),
                    sku: req.sku.as_str().to_owned(),
                    qty,
                    unit_price_cents: product.price_cents,
                    // `decide` checked that this fits.
                    total_cents: product.price_cents.saturating_mul(qty),
                    status: OrderStatus::Confirmed,
                    version: 1,
                    fence: 0,
                    created_at_ms: now,
                    updated_at_ms: now,
                });
            }
            Err(refusal) => {
                fates::refuse(&mut tx, rid, refusal.reason()).await?;
                refused.insert(rid, refusal);
            }
        }
    }

    let inserted = insert_orders(&mut tx, &fresh).await?;
    if inserted.len() != fresh.len() {
        // The fate claim makes a second order for one id impossible; if the unique key still
        // caught one, roll the whole batch back rather than answer something untrue.
        return Err(SqlError::Invariant(
            "an order insert met an existing reservation id after its fate was claimed".into(),
        ));
    }
    let created = fresh;
    let mut units_by_sku: BTreeMap<&str, i64> = BTreeMap::new();
    for order in &created {
        *units_by_sku.entry(order.sku.as_str()).or_default() += order.qty;
    }
    for (sku, units) in &units_by_sku {
        let done = sqlx::query(
            "UPDATE products SET sold = sold + $1, updated_at_ms = $2 \
             WHERE sku = $3 AND sold + $1 <= total_stock",
        )
        .bind(*units)
        .bind(now)
        .bind(*sku)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(SqlError::Invariant(format!(
                "locked stock of {sku} changed under the batch"
            )));
        }
    }
    record_created(&mut tx, db, &created).await?;
    tx.commit().await?;

    let created: HashMap<&str, &Order> = created
        .iter()
        .map(|o| (o.reservation_id.as_str(), o))
        .collect();
    let mut answered: HashSet<&str> = HashSet::new();
    let outcomes = requests
        .iter()
        .map(|req| {
            let rid = req.reservation_id.as_str();
            let first = answered.insert(rid);
            match (created.get(rid), existing.get(rid), refused.get(rid)) {
                (Some(order), _, _) if first => SettleOutcome::Created((*order).clone()),
                (Some(order), _, _) => SettleOutcome::Existing((*order).clone()),
                (None, Some(order), _) => SettleOutcome::Existing(order.clone()),
                (None, None, Some(refusal)) => refusal.outcome(),
                // Not claimed by this batch and no order: released before.
                (None, None, None) => SettleOutcome::Released,
            }
        })
        .collect();
    Ok(outcomes)
}

/// Why a claimed request cannot become an order.
#[derive(Clone, Copy)]
enum Refusal {
    UnknownSku,
    TotalOutOfRange,
    PurchaseLimit { limit: i64 },
    Oversell,
}

impl Refusal {
    fn outcome(self) -> SettleOutcome {
        match self {
            Refusal::UnknownSku => SettleOutcome::UnknownSku,
            Refusal::TotalOutOfRange => SettleOutcome::TotalOutOfRange,
            Refusal::PurchaseLimit { limit } => SettleOutcome::PurchaseLimit { limit },
            Refusal::Oversell => SettleOutcome::Oversell,
        }
    }

    /// The `reason` the refusal is recorded under in `reservation_fates`.
    fn reason(self) -> &'static str {
        match self {
            Refusal::UnknownSku => reason::UNKNOWN_SKU,
            Refusal::TotalOutOfRange => reason::TOTAL_OUT_OF_RANGE,
            Refusal::PurchaseLimit { .. } => reason::PURCHASE_LIMIT,
            Refusal::Oversell => reason::NO_STOCK,
        }
    }
}

/// Whether a claimed request can become an order: its product, or the refusal. `room` is what
/// is left of each SKU's stock, `bought` each (SKU, buyer)'s live order units, both counting
/// the orders this batch already took.
fn decide<'p>(
    req: &SettleRequest,
    product: Option<&'p LockedProduct>,
    room: &HashMap<&str, i64>,
    bought: &HashMap<(String, String), i64>,
) -> Result<&'p LockedProduct, Refusal> {
    let product = product.ok_or(Refusal::UnknownSku)?;
    let qty = i64::from(req.qty.get());
    if product.price_cents.checked_mul(qty).is_none() {
        return Err(Refusal::TotalOutOfRange);
    }
    let key = (req.sku.as_str().to_owned(), req.buyer.as_str().to_owned());
    if bought.get(&key).copied().unwrap_or(0) + qty > product.per_buyer_limit {
        return Err(Refusal::PurchaseLimit {
            limit: product.per_buyer_limit,
        });
    }
    if qty > room.get(req.sku.as_str()).copied().unwrap_or(0) {
        return Err(Refusal::Oversell);
    }
    Ok(product)
}

struct LockedProduct {
    price_cents: i64,
    total_stock: i64,
    sold: i64,
    per_buyer_limit: i64,
}

async fn lock_products(
    tx: &mut Transaction<'static, Any>,
    db: &Db,
    skus: &[&str],
) -> Result<HashMap<String, LockedProduct>, SqlError> {
    let sql = format!(
        "SELECT sku, price_cents, total_stock, sold, per_buyer_limit FROM products WHERE sku IN ({}) ORDER BY sku{}",
        placeholders(1, skus.len()),
        db.for_update()
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for sku in skus {
        query = query.bind(*sku);
    }
    let rows = query.fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|row| {
            Ok((
                row.try_get("sku")?,
                LockedProduct {
                    price_cents: row.try_get("price_cents")?,
                    total_stock: row.try_get("total_stock")?,
                    sold: row.try_get("sold")?,
                    per_buyer_limit: row.try_get("per_buyer_limit")?,
                },
            ))
        })
        .collect()
}

/// Live (not cancelled) order units per (SKU, buyer) for the batch's SKUs and buyers. The
/// batch holds the SKUs' row locks, so no other batch can add to them meanwhile.
async fn live_units(
    tx: &mut Transaction<'static, Any>,
    skus: &[&str],
    buyers: &[&str],
) -> Result<HashMap<(String, String), i64>, SqlError> {
    if skus.is_empty() || buyers.is_empty() {
        return Ok(HashMap::new());
    }
    let sql = format!(
        "SELECT sku, user_sub, CAST(SUM(qty) AS BIGINT) AS units FROM orders \
         WHERE status <> 'cancelled' AND sku IN ({}) AND user_sub IN ({}) GROUP BY sku, user_sub",
        placeholders(1, skus.len()),
        placeholders(1 + skus.len(), buyers.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for value in skus.iter().chain(buyers) {
        query = query.bind(*value);
    }
    let rows = query.fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|row| {
            Ok((
                (row.try_get("sku")?, row.try_get("user_sub")?),
                row.try_get("units")?,
            ))
        })
        .collect()
}

async fn orders_by_reservation(
    tx: &mut Transaction<'static, Any>,
    rids: &[&str],
) -> Result<HashMap<String, Order>, SqlError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE reservation_id IN ({})",
        placeholders(1, rids.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for rid in rids {
        query = query.bind(*rid);
    }
    let rows = query.fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|row| Order::from_row(row).map(|o| (o.reservation_id.clone(), o)))
        .collect()
}

/// Inserts orders, skipping reservation ids that already have one; returns the reservation
/// ids actually inserted.
async fn insert_orders(
    tx: &mut Transaction<'static, Any>,
    orders: &[Order],
) -> Result<HashSet<String>, SqlError> {
    if orders.is_empty() {
        return Ok(HashSet::new());
    }
    let sql = format!(
        "INSERT INTO orders ({ORDER_COLUMNS}) VALUES {} \
         ON CONFLICT (reservation_id) DO NOTHING RETURNING reservation_id",
        value_rows(orders.len(), 12)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for o in orders {
        query = query
            .bind(o.id.clone())
            .bind(o.reservation_id.clone())
            .bind(o.user_sub.clone())
            .bind(o.sku.clone())
            .bind(o.qty)
            .bind(o.unit_price_cents)
            .bind(o.total_cents)
            .bind(o.status.as_str())
            .bind(o.version)
            .bind(o.fence)
            .bind(o.created_at_ms)
            .bind(o.updated_at_ms);
    }
    let rows = query.fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|row| {
            row.try_get::<String, _>("reservation_id")
                .map_err(Into::into)
        })
        .collect()
}

/// Status history and `order.created` events for new orders.
async fn record_created(
    tx: &mut Transaction<'static, Any>,
    db: &Db,
    created: &[Order],
) -> Result<(), SqlError> {
    if created.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "INSERT INTO order_status_history (order_id, from_status, to_status, actor, fence, at_ms) \
         VALUES {}",
        value_rows(created.len(), 6)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for o in created {
        query = query
            .bind(o.id.clone())
            .bind(None::<String>)
            .bind(o.status.as_str())
            .bind("settlement")
            .bind(None::<i64>)
            .bind(o.created_at_ms);
    }
    query.execute(&mut **tx).await?;
    let events: Vec<NewEvent> = created
        .iter()
        .map(|o| NewEvent::new(topic::ORDER_CREATED, OrderEvent::of(o)))
        .collect();
    outbox::append(tx, db.backend(), &events).await
}
