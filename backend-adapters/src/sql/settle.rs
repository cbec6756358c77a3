//! Settling a batch of confirmed reservations into orders in ONE transaction (group commit).
//!
//! Steps, all inside the transaction:
//! 1. lock the batch's product rows (sorted by SKU, so concurrent batches cannot deadlock);
//! 2. find orders that already exist for the batch's reservation ids (retries → `Existing`);
//! 3. decide which new orders fit in `total_stock - sold`, **first come first served, as many
//!    as fit**: an order that does not fit is refused (`Oversell`) while later, smaller orders
//!    of the same SKU may still fit — one buyer's refusal never sinks the whole group;
//! 4. insert the fitting orders `ON CONFLICT (reservation_id) DO NOTHING`;
//! 5. one `UPDATE products SET sold = sold + n WHERE sold + n <= total_stock` per SKU — the
//!    conditional update stays the guard even though the lock already makes it hold;
//! 6. status history and outbox rows; COMMIT. Callers are answered only after this returns.
//!
//! One transaction per order (the benchmark's baseline) is the same function with a batch of
//! one.

use std::collections::{BTreeMap, HashMap, HashSet};

use reservation_core::{BuyerId, Qty, ReservationId, Sku};
use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use super::db::Db;
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

/// The answer for one request of a batch.
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

    let skus: Vec<&str> = requests
        .iter()
        .map(|r| r.sku.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let products = lock_products(&mut tx, db, &skus).await?;
    let rids: Vec<&str> = requests.iter().map(|r| r.reservation_id.as_str()).collect();
    let mut existing = orders_by_reservation(&mut tx, &rids).await?;

    // Decide, in arrival order, what each unique reservation id gets.
    let mut room: HashMap<&str, i64> = products
        .iter()
        .map(|(sku, p)| (sku.as_str(), p.total_stock - p.sold))
        .collect();
    let now = now_ms();
    let mut decided: HashMap<&str, Decision> = HashMap::new();
    let mut fresh: Vec<Order> = Vec::new();
    for req in requests {
        let rid = req.reservation_id.as_str();
        if decided.contains_key(rid) {
            continue;
        }
        let decision = if existing.contains_key(rid) {
            Decision::Existing
        } else if let (Some(product), Some(left)) = (
            products.get(req.sku.as_str()),
            room.get_mut(req.sku.as_str()),
        ) {
            let qty = i64::from(req.qty.get());
            if qty <= *left {
                *left -= qty;
                fresh.push(Order {
                    id: new_order_id(),
                    reservation_id: rid.to_owned(),
                    user_sub: req.buyer.as_str().to_owned(),
                    sku: req.sku.as_str().to_owned(),
                    qty,
                    unit_price_cents: product.price_cents,
                    total_cents: product.price_cents * qty,
                    status: OrderStatus::Confirmed,
                    version: 1,
                    fence: 0,
                    created_at_ms: now,
                    updated_at_ms: now,
                });
                Decision::Fresh
            } else {
                Decision::Oversell
            }
        } else {
            Decision::UnknownSku
        };
        decided.insert(rid, decision);
    }

    let inserted = insert_orders(&mut tx, &fresh).await?;
    let (created, raced): (Vec<Order>, Vec<Order>) = fresh
        .into_iter()
        .partition(|o| inserted.contains(&o.reservation_id));
    if !raced.is_empty() {
        // Another writer inserted these reservation ids between our read and our insert; the
        // product lock makes this unreachable on one database, but the answer is still clear.
        let raced_ids: Vec<&str> = raced.iter().map(|o| o.reservation_id.as_str()).collect();
        existing.extend(orders_by_reservation(&mut tx, &raced_ids).await?);
    }

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
            match (created.get(rid), existing.get(rid)) {
                (Some(order), _) if first => SettleOutcome::Created((*order).clone()),
                (Some(order), _) => SettleOutcome::Existing((*order).clone()),
                (None, Some(order)) => SettleOutcome::Existing(order.clone()),
                (None, None) => match decided.get(rid) {
                    Some(Decision::UnknownSku) => SettleOutcome::UnknownSku,
                    _ => SettleOutcome::Oversell,
                },
            }
        })
        .collect();
    Ok(outcomes)
}

enum Decision {
    Existing,
    Fresh,
    Oversell,
    UnknownSku,
}

struct LockedProduct {
    price_cents: i64,
    total_stock: i64,
    sold: i64,
}

async fn lock_products(
    tx: &mut Transaction<'static, Any>,
    db: &Db,
    skus: &[&str],
) -> Result<HashMap<String, LockedProduct>, SqlError> {
    let sql = format!(
        "SELECT sku, price_cents, total_stock, sold FROM products WHERE sku IN ({}) ORDER BY sku{}",
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
                },
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
