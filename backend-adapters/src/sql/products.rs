//! Products: the catalog reads and the ops upsert. An upsert is handed back uncommitted so
//! the caller can configure the reservation store in between and roll SQL back if the store
//! refuses (e.g. the new total is below units already held in Redis).

use std::collections::HashSet;

use reservation_core::{BuyerId, ReservationId, Sku, SoldUnits};
use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use super::db::Db;
use super::model::{OrderStatus, PRODUCT_COLUMNS, Product, ProductUpsert};
use super::outbox::{self, NewEvent, topic};
use super::{SqlError, now_ms, placeholders};

/// A product write that has not been committed yet; dropping it rolls back.
pub struct PendingUpsert {
    tx: Transaction<'static, Any>,
    pub product: Product,
}

impl PendingUpsert {
    pub async fn commit(self) -> Result<Product, SqlError> {
        self.tx.commit().await?;
        Ok(self.product)
    }
}

/// The result of [`begin_upsert`].
pub enum UpsertOutcome {
    Pending(PendingUpsert),
    /// The new total stock is below the units SQL has already sold.
    StockBelowSold {
        sold: i64,
    },
}

#[derive(Serialize)]
struct ProductEvent<'a> {
    sku: &'a str,
    version: i64,
}

/// Creates or updates a product (bumping `version`) and appends `product.updated`, inside a
/// transaction the caller commits.
pub async fn begin_upsert(
    db: &Db,
    sku: &Sku,
    upsert: &ProductUpsert,
) -> Result<UpsertOutcome, SqlError> {
    let mut tx = db.begin_write().await?;
    let sql = format!(
        "SELECT sold FROM products WHERE sku = $1{}",
        db.for_update()
    );
    let sold: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(sku.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    if let Some(sold) = sold.filter(|sold| *sold > upsert.total_stock) {
        return Ok(UpsertOutcome::StockBelowSold { sold });
    }
    let sql = format!(
        "INSERT INTO products (sku, name, price_cents, total_stock, sold, per_buyer_limit, \
         max_per_order, sale_state, version, updated_at_ms) \
         VALUES ($1, $2, $3, $4, 0, $5, $6, $7, 1, $8) \
         ON CONFLICT (sku) DO UPDATE SET name = excluded.name, price_cents = excluded.price_cents, \
         total_stock = excluded.total_stock, per_buyer_limit = excluded.per_buyer_limit, \
         max_per_order = excluded.max_per_order, sale_state = excluded.sale_state, \
         version = products.version + 1, updated_at_ms = excluded.updated_at_ms \
         RETURNING {PRODUCT_COLUMNS}"
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(sku.as_str())
        .bind(upsert.name.clone())
        .bind(upsert.price_cents)
        .bind(upsert.total_stock)
        .bind(upsert.per_buyer_limit)
        .bind(upsert.max_per_order)
        .bind(upsert.sale_state.as_str())
        .bind(now_ms())
        .fetch_one(&mut *tx)
        .await?;
    let product = Product::from_row(&row)?;
    let event = NewEvent::new(
        topic::PRODUCT_UPDATED,
        ProductEvent {
            sku: &product.sku,
            version: product.version,
        },
    );
    outbox::append(&mut tx, db.backend(), &[event]).await?;
    Ok(UpsertOutcome::Pending(PendingUpsert { tx, product }))
}

pub async fn get(db: &Db, sku: &str) -> Result<Option<Product>, SqlError> {
    let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE sku = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(sku)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(Product::from_row).transpose()
}

/// Every product, by SKU.
pub async fn list(db: &Db) -> Result<Vec<Product>, SqlError> {
    let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products ORDER BY sku");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(Product::from_row).collect()
}

/// What a counter repair of `sku` needs from SQL, read in one snapshot (so an order that
/// commits meanwhile is in all of it or in none): units in live orders, in total and per
/// buyer; which reservation ids have an order, among `asked` (the holds the store has as
/// held or confirming) and every order created at or after `recent_since_ms` (holds that
/// began confirming while the repair ran); and the reservation ids of cancelled orders.
pub async fn repair_basis(
    db: &Db,
    sku: &str,
    asked: &[ReservationId],
    recent_since_ms: i64,
) -> Result<SoldUnits, SqlError> {
    let mut tx = db.begin_snapshot().await?;
    let rows = sqlx::query(
        "SELECT user_sub, CAST(SUM(qty) AS BIGINT) AS units FROM orders \
         WHERE sku = $1 AND status <> 'cancelled' GROUP BY user_sub ORDER BY user_sub",
    )
    .bind(sku)
    .fetch_all(&mut *tx)
    .await?;
    let mut sold = SoldUnits::default();
    for row in &rows {
        let sub: String = row.try_get("user_sub")?;
        let units: i64 = row.try_get("units")?;
        let buyer = BuyerId::parse(&sub)
            .map_err(|e| SqlError::Corrupt(format!("order buyer {sub:?}: {e}")))?;
        let units = units.max(0) as u64;
        sold.total += units;
        sold.by_buyer.push((buyer, units));
    }
    let asked_list = if asked.is_empty() {
        String::new()
    } else {
        format!("reservation_id IN ({}) OR ", placeholders(4, asked.len()))
    };
    let sql = format!(
        "SELECT reservation_id, status FROM orders WHERE sku = $1 \
         AND ({asked_list}created_at_ms >= $2 OR status = $3)"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(sku)
        .bind(recent_since_ms)
        .bind(OrderStatus::Cancelled.as_str());
    for id in asked {
        query = query.bind(id.as_str());
    }
    let asked: HashSet<&str> = asked.iter().map(ReservationId::as_str).collect();
    for row in query.fetch_all(&mut *tx).await? {
        let rid: String = row.try_get("reservation_id")?;
        let status: String = row.try_get("status")?;
        let id = ReservationId::parse(&rid)
            .map_err(|e| SqlError::Corrupt(format!("order reservation id {rid:?}: {e}")))?;
        if status == OrderStatus::Cancelled.as_str() {
            sold.cancelled.push(id.clone());
        }
        if asked.contains(rid.as_str()) || status != OrderStatus::Cancelled.as_str() {
            sold.ordered.push(id);
        }
    }
    tx.commit().await?;
    Ok(sold)
}
