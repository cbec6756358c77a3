//! Products: the catalog reads and the ops edits (`PUT` of a whole product, restock).
//!
//! An edit is a [`ProductEdit`]: it takes the SKU's edit lock and reads the product as SQL
//! has it, the caller decides the new values and configures the reservation store, and only
//! then [`ProductEdit::commit`] writes the row, appends `product.updated` and commits. So a
//! store refusal (units already held above the new total) leaves SQL unchanged, two edits of
//! one SKU never interleave their store and SQL writes, and:
//!
//! - the edit lock is not the product row's lock: on PostgreSQL it is a transaction-scoped
//!   advisory lock per SKU, so a settle batch of the same SKU (which locks the row) does not
//!   wait for the store call; the row is locked only by the final `UPDATE`;
//! - the outbox append lock, which every settle batch, cancel and status change takes, is
//!   taken only inside `commit`, right before COMMIT: never across a store call.
//!
//! On SQLite the edit holds the database's write lock from the start (`BEGIN IMMEDIATE`):
//! SQLite serializes writers anyway, and its store is the in-process one.

use std::collections::HashSet;

use reservation_core::{BuyerId, ReservationId, Sku, SoldUnits};
use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use super::db::{Backend, Db};
use super::model::{OrderStatus, PRODUCT_COLUMNS, Product, ProductUpsert};
use super::outbox::{self, NewEvent, topic};
use super::{SqlError, now_ms, placeholders};

/// The class key of the per-SKU edit locks (`pg_advisory_xact_lock(class, hashtext(sku))`):
/// its class differs from the outbox append lock's (`outbox::OUTBOX_APPEND_LOCK_SQL`).
const PRODUCT_EDIT_LOCK_CLASS: i32 = 0x5347_5044; // "SGPD"

/// A product change in progress: the SKU's edit lock is held and [`ProductEdit::current`] is
/// the product as committed. Nothing is written before [`ProductEdit::commit`]; dropping the
/// edit rolls back and releases the lock.
pub struct ProductEdit {
    tx: Transaction<'static, Any>,
    backend: Backend,
    sku: String,
    /// The product as SQL has it (`None`: not created yet).
    pub current: Option<Product>,
}

/// How [`ProductEdit::commit`] ended. Anything but `Committed` wrote nothing.
#[derive(Debug, PartialEq, Eq)]
pub enum EditOutcome {
    Committed(Product),
    /// SQL sold more units than the new total (settled after the edit began).
    StockBelowSold {
        sold: i64,
    },
    /// The row is not the one the edit read: a writer that does not take the edit lock (an
    /// older release during a rolling deploy) changed or created it meanwhile.
    Changed {
        version: Option<i64>,
    },
}

#[derive(Serialize)]
struct ProductEvent<'a> {
    sku: &'a str,
    version: i64,
}

/// Takes `sku`'s edit lock (waiting for another edit of it to finish) and reads the product.
pub async fn begin_edit(db: &Db, sku: &Sku) -> Result<ProductEdit, SqlError> {
    let mut tx = db.begin_write().await?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
            .bind(PRODUCT_EDIT_LOCK_CLASS)
            .bind(sku.as_str())
            .execute(&mut *tx)
            .await?;
    }
    let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE sku = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(sku.as_str())
        .fetch_optional(&mut *tx)
        .await?;
    let current = row.as_ref().map(Product::from_row).transpose()?;
    Ok(ProductEdit {
        tx,
        backend: db.backend(),
        sku: sku.as_str().to_owned(),
        current,
    })
}

impl ProductEdit {
    /// The units SQL has sold when they are more than `total_stock` (the edit is refused).
    pub fn sold_above(&self, total_stock: i64) -> Option<i64> {
        self.current
            .as_ref()
            .map(|p| p.sold)
            .filter(|sold| *sold > total_stock)
    }

    /// Writes `upsert` (a new product at version 1, or the read product at version + 1),
    /// appends `product.updated` and commits. The write is conditioned on the row being the
    /// one read, and on `sold <= total_stock`.
    pub async fn commit(mut self, upsert: &ProductUpsert) -> Result<EditOutcome, SqlError> {
        let now = now_ms();
        let row = match &self.current {
            None => {
                let sql = format!(
                    "INSERT INTO products (sku, name, price_cents, total_stock, sold, \
                     per_buyer_limit, max_per_order, sale_state, version, updated_at_ms) \
                     VALUES ($1, $2, $3, $4, 0, $5, $6, $7, 1, $8) \
                     ON CONFLICT (sku) DO NOTHING RETURNING {PRODUCT_COLUMNS}"
                );
                bind_upsert(
                    sqlx::query(sqlx::AssertSqlSafe(sql)),
                    &self.sku,
                    upsert,
                    now,
                )
                .fetch_optional(&mut *self.tx)
                .await?
            }
            Some(read) => {
                let sql = format!(
                    "UPDATE products SET name = $2, price_cents = $3, total_stock = $4, \
                     per_buyer_limit = $5, max_per_order = $6, sale_state = $7, \
                     version = version + 1, updated_at_ms = $8 \
                     WHERE sku = $1 AND version = $9 AND sold <= $4 RETURNING {PRODUCT_COLUMNS}"
                );
                bind_upsert(
                    sqlx::query(sqlx::AssertSqlSafe(sql)),
                    &self.sku,
                    upsert,
                    now,
                )
                .bind(read.version)
                .fetch_optional(&mut *self.tx)
                .await?
            }
        };
        let Some(row) = row else {
            return self.refusal().await;
        };
        let product = Product::from_row(&row)?;
        let event = NewEvent::new(
            topic::PRODUCT_UPDATED,
            ProductEvent {
                sku: &product.sku,
                version: product.version,
            },
        );
        // Last, so the append lock is held only for the INSERT and the COMMIT.
        outbox::append(&mut self.tx, self.backend, &[event]).await?;
        self.tx.commit().await?;
        Ok(EditOutcome::Committed(product))
    }

    /// Ends the edit without writing and waits until SQL released the edit lock (dropping the
    /// edit rolls back too, but only once the connection is next used).
    pub async fn rollback(self) {
        if let Err(e) = self.tx.rollback().await {
            tracing::warn!(error = %e, "product edit rollback failed; the connection is dropped");
        }
    }

    /// Why the conditional write matched no row.
    async fn refusal(mut self) -> Result<EditOutcome, SqlError> {
        let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE sku = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(self.sku.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        let now = row.as_ref().map(Product::from_row).transpose()?;
        let read_version = self.current.as_ref().map(|p| p.version);
        Ok(match now {
            Some(p) if Some(p.version) == read_version => {
                EditOutcome::StockBelowSold { sold: p.sold }
            }
            now => EditOutcome::Changed {
                version: now.map(|p| p.version),
            },
        })
    }
}

/// Binds `$1..$8` of the product write: sku, the upsert's fields, the time.
fn bind_upsert<'q>(
    query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
    sku: &str,
    upsert: &ProductUpsert,
    now: i64,
) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
    query
        .bind(sku.to_owned())
        .bind(upsert.name.clone())
        .bind(upsert.price_cents)
        .bind(upsert.total_stock)
        .bind(upsert.per_buyer_limit)
        .bind(upsert.max_per_order)
        .bind(upsert.sale_state.as_str())
        .bind(now)
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
/// buyer; which reservation ids have an order, live or cancelled, among `asked` (the holds
/// the store had as confirming when the repair began) and every order created at or after
/// `recent_since_ms` (holds that began confirming while the repair ran); and the reservation
/// ids of cancelled orders. And the product row itself, in the same snapshot: the settings
/// the repair writes are the ones SQL had then, not those of an earlier read (an ops edit that
/// commits later supersedes the repair in the store).
pub async fn repair_basis(
    db: &Db,
    sku: &str,
    asked: &[ReservationId],
    recent_since_ms: i64,
) -> Result<(Option<Product>, SoldUnits), SqlError> {
    let mut tx = db.begin_snapshot().await?;
    let sql = format!("SELECT {PRODUCT_COLUMNS} FROM products WHERE sku = $1");
    let product = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(sku)
        .fetch_optional(&mut *tx)
        .await?
        .as_ref()
        .map(Product::from_row)
        .transpose()?;
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
        "SELECT reservation_id, status, created_at_ms FROM orders WHERE sku = $1 \
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
        // Live or cancelled: a hold of a cancelled order the repair finds still confirming
        // must be finished uncounted too (SQL's sold no longer has it, and it is marked
        // returned), or its late finish would add it to sold for good.
        let created_at_ms: i64 = row.try_get("created_at_ms")?;
        if asked.contains(rid.as_str()) || created_at_ms >= recent_since_ms {
            sold.ordered.push(id);
        }
    }
    tx.commit().await?;
    Ok((product, sold))
}
