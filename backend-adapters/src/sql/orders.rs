//! Orders after settlement: the buyer's reads and cancel (optimistic lock on `version`), and
//! the ops status workflow (fencing token: the update requires `fence < $token`).
//!
//! A cancellation returns the units to SQL stock in the same transaction and appends an
//! `order.cancelled` event, which the relay turns into a Redis `return_cancelled`.

use serde::Serialize;
use sqlx::{Any, Transaction};

use super::db::Db;
use super::model::{ORDER_COLUMNS, Order, OrderStatus};
use super::outbox::{self, NewEvent, topic};
use super::settle::OrderEvent;
use super::{SqlError, now_ms};

/// The result of a buyer's cancel.
#[derive(Debug, PartialEq, Eq)]
pub enum CancelOutcome {
    Cancelled(Order),
    /// No such order, or not this buyer's (indistinguishable on purpose).
    NotFound,
    /// `If-Match` named another version.
    StaleVersion {
        current: i64,
    },
    /// The order is past the point where it can be cancelled.
    NotCancellable {
        status: OrderStatus,
    },
}

/// The result of an ops status change.
#[derive(Debug, PartialEq, Eq)]
pub enum StatusOutcome {
    Changed(Order),
    NotFound,
    /// A newer lock holder already changed this order: this (late) write is refused.
    StaleFence {
        current: i64,
    },
    InvalidTransition {
        from: OrderStatus,
    },
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Order>, SqlError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(Order::from_row).transpose()
}

pub async fn by_reservation(db: &Db, reservation_id: &str) -> Result<Option<Order>, SqlError> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE reservation_id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(reservation_id)
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(Order::from_row).transpose()
}

/// A buyer's newest orders first, at most `limit`.
pub async fn list_for_buyer(db: &Db, user_sub: &str, limit: i64) -> Result<Vec<Order>, SqlError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE user_sub = $1 \
         ORDER BY created_at_ms DESC, id DESC LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user_sub)
        .bind(limit)
        .fetch_all(db.pool())
        .await?;
    rows.iter().map(Order::from_row).collect()
}

async fn lock_order(
    tx: &mut Transaction<'static, Any>,
    db: &Db,
    id: &str,
) -> Result<Option<Order>, SqlError> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE id = $1{}",
        db.for_update()
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    row.as_ref().map(Order::from_row).transpose()
}

/// The buyer cancels their own order if it is still at `expected_version`.
pub async fn cancel(
    db: &Db,
    id: &str,
    user_sub: &str,
    expected_version: i64,
) -> Result<CancelOutcome, SqlError> {
    let mut tx = db.begin_write().await?;
    let order = match lock_order(&mut tx, db, id).await? {
        Some(order) if order.user_sub == user_sub => order,
        _ => return Ok(CancelOutcome::NotFound),
    };
    // The precondition is checked first, as HTTP evaluates If-Match before the method.
    if order.version != expected_version {
        return Ok(CancelOutcome::StaleVersion {
            current: order.version,
        });
    }
    if !order.status.can_become(OrderStatus::Cancelled) {
        return Ok(CancelOutcome::NotCancellable {
            status: order.status,
        });
    }
    let changed = apply(&mut tx, db, &order, OrderStatus::Cancelled, None, user_sub).await?;
    tx.commit().await?;
    Ok(CancelOutcome::Cancelled(changed))
}

/// Ops moves an order to `to` under fencing token `fence`: refused when a holder with a
/// newer token already wrote (`fence >= token` in SQL), whatever the lock says now.
pub async fn set_status_fenced(
    db: &Db,
    id: &str,
    to: OrderStatus,
    fence: i64,
    actor: &str,
) -> Result<StatusOutcome, SqlError> {
    let mut tx = db.begin_write().await?;
    let Some(order) = lock_order(&mut tx, db, id).await? else {
        return Ok(StatusOutcome::NotFound);
    };
    if order.fence >= fence {
        return Ok(StatusOutcome::StaleFence {
            current: order.fence,
        });
    }
    if !order.status.can_become(to) {
        return Ok(StatusOutcome::InvalidTransition { from: order.status });
    }
    let changed = apply(&mut tx, db, &order, to, Some(fence), actor).await?;
    tx.commit().await?;
    Ok(StatusOutcome::Changed(changed))
}

#[derive(Serialize)]
struct StatusEvent<'a> {
    order_id: &'a str,
    /// So that broker subscribers can filter a status change by SKU as they do an order.
    sku: &'a str,
    from: &'a str,
    to: &'a str,
    fence: Option<i64>,
}

/// Writes a status change of a locked order: the guarded update, the stock return for a
/// cancellation, history and events.
async fn apply(
    tx: &mut Transaction<'static, Any>,
    db: &Db,
    order: &Order,
    to: OrderStatus,
    fence: Option<i64>,
    actor: &str,
) -> Result<Order, SqlError> {
    let now = now_ms();
    // The WHERE clause repeats the checks so the row cannot have moved under us even where
    // the dialect has no row lock.
    let done = sqlx::query(
        "UPDATE orders SET status = $1, version = version + 1, fence = $2, updated_at_ms = $3 \
         WHERE id = $4 AND version = $5 AND fence <= $2",
    )
    .bind(to.as_str())
    // An unfenced change (the buyer's cancel) keeps the fence as it is.
    .bind(fence.unwrap_or(order.fence))
    .bind(now)
    .bind(order.id.clone())
    .bind(order.version)
    .execute(&mut **tx)
    .await?;
    if done.rows_affected() != 1 {
        return Err(SqlError::Invariant(format!(
            "order {} changed while locked",
            order.id
        )));
    }
    let mut events = Vec::new();
    if to == OrderStatus::Cancelled {
        let returned = sqlx::query(
            "UPDATE products SET sold = sold - $1, updated_at_ms = $2 WHERE sku = $3 AND sold >= $1",
        )
        .bind(order.qty)
        .bind(now)
        .bind(order.sku.clone())
        .execute(&mut **tx)
        .await?;
        if returned.rows_affected() != 1 {
            return Err(SqlError::Invariant(format!(
                "sold of {} is below a live order's qty",
                order.sku
            )));
        }
        events.push(NewEvent::new(topic::ORDER_CANCELLED, OrderEvent::of(order)));
    }
    sqlx::query(
        "INSERT INTO order_status_history (order_id, from_status, to_status, actor, fence, at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(order.id.clone())
    .bind(order.status.as_str())
    .bind(to.as_str())
    .bind(actor.to_owned())
    .bind(fence)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    events.push(NewEvent::new(
        topic::ORDER_STATUS_CHANGED,
        StatusEvent {
            order_id: &order.id,
            sku: &order.sku,
            from: order.status.as_str(),
            to: to.as_str(),
            fence,
        },
    ));
    outbox::append(tx, db.backend(), &events).await?;

    let mut changed = order.clone();
    changed.status = to;
    changed.version += 1;
    changed.updated_at_ms = now;
    if let Some(fence) = fence {
        changed.fence = fence;
    }
    Ok(changed)
}
