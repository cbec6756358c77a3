//! The transactional outbox: events are appended in the same transaction as the change they
//! describe, and the relay publishes them in id order and marks them published, once per
//! [`Delivery`]: the Redis side and the message broker each have their own mark, so a broker
//! that is down never holds back the Redis side.
//!
//! Ids are stable and commit in id order: on PostgreSQL every appender first takes one
//! transaction-scoped advisory lock (per schema), so a transaction that took id `n` commits before any
//! transaction takes `n + 1`; SQLite serializes writers anyway. A relay that has seen id `n`
//! committed has therefore seen every lower id too: publishing "unpublished rows in id order"
//! never skips a late committer, and consumers may dedupe on the id.

use serde::Serialize;
use sqlx::{Any, Row, Transaction};

use super::db::{Backend, Db};
use super::{SqlError, now_ms, placeholders, value_rows};

/// Topics of the events the settlement writes.
pub mod topic {
    /// `{"order_id","reservation_id","user_sub","sku","qty"}`
    pub const ORDER_CREATED: &str = "order.created";
    /// Same fields as `order.created`: the units return to stock (Redis `return_cancelled`).
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    /// `{"order_id","sku","from","to","fence"}`
    pub const ORDER_STATUS_CHANGED: &str = "order.status_changed";
    /// `{"sku","version"}`: cached product pages are stale.
    pub const PRODUCT_UPDATED: &str = "product.updated";
}

/// The advisory lock that orders outbox appends, one per schema: the first key is ours
/// ("STOC"), the second the schema's hash, so deployments or tests sharing a database in
/// separate schemas never queue behind each other's appends (a session holding one schema's
/// lock once stalled every schema's settlements).
pub const OUTBOX_APPEND_LOCK_SQL: &str =
    "SELECT pg_advisory_xact_lock(1398034243, hashtext(current_schema()))";

/// Where the relay delivers a row, each marked in a column of its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The store's effects (a cancellation's units back in stock) and the Redis stream:
    /// `published_at_ms`.
    Redis,
    /// The message broker (AMQP 1.0, Azure Service Bus): `broker_published_at_ms`.
    Broker,
}

impl Delivery {
    fn column(self) -> &'static str {
        match self {
            Delivery::Redis => "published_at_ms",
            Delivery::Broker => "broker_published_at_ms",
        }
    }
}

/// An event to append.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub topic: &'static str,
    pub payload: serde_json::Value,
}

impl NewEvent {
    pub fn new(topic: &'static str, payload: impl Serialize) -> Self {
        NewEvent {
            topic,
            payload: serde_json::to_value(payload).unwrap_or(serde_json::Value::Null),
        }
    }
}

/// A stored event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxEvent {
    pub id: i64,
    pub topic: String,
    /// JSON text.
    pub payload: String,
    pub created_at_ms: i64,
}

/// Appends events inside the caller's transaction. Call it last in a transaction: on
/// PostgreSQL it holds the append lock until COMMIT.
pub async fn append(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    events: &[NewEvent],
) -> Result<(), SqlError> {
    if events.is_empty() {
        return Ok(());
    }
    if backend == Backend::Postgres {
        sqlx::query(OUTBOX_APPEND_LOCK_SQL)
            .execute(&mut **tx)
            .await?;
    }
    let sql = format!(
        "INSERT INTO outbox (topic, payload, created_at_ms) VALUES {}",
        value_rows(events.len(), 3)
    );
    let now = now_ms();
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for event in events {
        query = query
            .bind(event.topic)
            .bind(event.payload.to_string())
            .bind(now);
    }
    query.execute(&mut **tx).await?;
    Ok(())
}

/// Up to `limit` events not yet delivered to `delivery`, oldest id first.
pub async fn unpublished(
    db: &Db,
    delivery: Delivery,
    limit: i64,
) -> Result<Vec<OutboxEvent>, SqlError> {
    let sql = format!(
        "SELECT id, topic, payload, created_at_ms FROM outbox \
         WHERE {} IS NULL ORDER BY id LIMIT $1",
        delivery.column()
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|row| {
            Ok(OutboxEvent {
                id: row.try_get("id")?,
                topic: row.try_get("topic")?,
                payload: row.try_get("payload")?,
                created_at_ms: row.try_get("created_at_ms")?,
            })
        })
        .collect()
}

/// Marks events delivered to each of `deliveries` (idempotent: a mark already set stays).
pub async fn mark_published(db: &Db, deliveries: &[Delivery], ids: &[i64]) -> Result<(), SqlError> {
    if ids.is_empty() || deliveries.is_empty() {
        return Ok(());
    }
    let sets: Vec<String> = deliveries
        .iter()
        .map(|d| format!("{0} = COALESCE({0}, $1)", d.column()))
        .collect();
    let sql = format!(
        "UPDATE outbox SET {} WHERE id IN ({})",
        sets.join(", "),
        placeholders(2, ids.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now_ms());
    for id in ids {
        query = query.bind(*id);
    }
    query.execute(db.pool()).await?;
    Ok(())
}

/// How far the relay is behind: unpublished events and the age of the oldest, in ms.
/// Units of cancelled orders whose `order.cancelled` event the relay has not delivered yet,
/// per SKU: the store still counts them as sold (the reconciler's explained drift).
pub async fn pending_cancellations(
    db: &Db,
) -> Result<std::collections::HashMap<String, i64>, SqlError> {
    #[derive(serde::Deserialize)]
    struct Cancelled {
        sku: String,
        qty: i64,
    }
    let rows = sqlx::query(
        "SELECT payload FROM outbox WHERE published_at_ms IS NULL AND topic = $1 ORDER BY id",
    )
    .bind(topic::ORDER_CANCELLED)
    .fetch_all(db.pool())
    .await?;
    let mut units = std::collections::HashMap::new();
    for row in &rows {
        let payload: String = row.try_get("payload")?;
        let event: Cancelled = serde_json::from_str(&payload)
            .map_err(|e| SqlError::Corrupt(format!("order.cancelled payload: {e}")))?;
        *units.entry(event.sku).or_insert(0) += event.qty;
    }
    Ok(units)
}

pub async fn lag(db: &Db, delivery: Delivery) -> Result<(i64, i64), SqlError> {
    let sql = format!(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n, CAST(COALESCE(MIN(created_at_ms), 0) AS BIGINT) AS oldest \
         FROM outbox WHERE {} IS NULL",
        delivery.column()
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(db.pool())
        .await?;
    let count: i64 = row.try_get("n")?;
    let oldest: i64 = row.try_get("oldest")?;
    let age = if count == 0 { 0 } else { now_ms() - oldest };
    Ok((count, age.max(0)))
}

/// Appends events in a transaction of their own (tests and tools).
pub async fn append_now(db: &Db, events: &[NewEvent]) -> Result<(), SqlError> {
    let mut tx = db.begin_write().await?;
    append(&mut tx, db.backend(), events).await?;
    tx.commit().await?;
    Ok(())
}
