//! SQL adapters (PostgreSQL, and SQLite for the embedded default): the settlement schema and
//! its migrations, the group-commit settlement of orders, the order and product repository,
//! and the transactional outbox.
//!
//! One SQL text serves both databases through sqlx's `Any` driver: placeholders are `$n`
//! (SQLite accepts them), every integer is a 64-bit `BIGINT`/`INTEGER`, times are epoch
//! milliseconds. The few places where the dialects differ (row locks, advisory locks, how a
//! write transaction begins) ask [`Db::backend`].

mod db;
pub mod fates;
pub mod model;
pub mod orders;
pub mod outbox;
pub mod products;
pub mod scratch;
pub mod settle;

use std::time::Duration;

use thiserror::Error;

pub use db::{Backend, Db, SessionLimits, migrate};
pub use model::{Order, OrderStatus, Product, ProductUpsert};
pub use scratch::{SCRATCH_SCHEMA_PREFIX, scratch_schema_url};
pub use settle::{SettleOutcome, SettleRequest, settle_batch};

/// A failure of the SQL layer. Business outcomes (stale version, oversell, …) are not errors:
/// they are the `…Outcome` enums of each operation.
#[derive(Debug, Error)]
pub enum SqlError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unsupported database url {0:?} (expected postgres://… or sqlite:…)")]
    UnsupportedUrl(String),
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A rule the code relies on did not hold; the transaction was rolled back.
    #[error("invariant violated: {0}")]
    Invariant(String),
    /// The caller stopped waiting for the database after this long. The work was dropped
    /// mid-way; a COMMIT already sent may still land, so the outcome is open (a retry of a
    /// settlement finds the order if it did).
    #[error("no answer from the database within {0:?}")]
    Deadline(Duration),
}

/// SQLSTATEs of a statement that lost to a time limit or to another transaction: it was
/// rolled back and a retry may succeed.
const BUSY_SQLSTATES: &[&str] = &[
    "55P03", // lock_not_available: waited `lock_timeout` for a lock
    "57014", // query_canceled: ran `statement_timeout`
    "25P03", // idle_in_transaction_session_timeout: the session was closed
    "40001", // serialization_failure
    "40P01", // deadlock_detected
];

/// SQLSTATEs of a server shutting down or starting up: nothing was done, retry later.
const UNAVAILABLE_SQLSTATES: &[&str] = &["57P01", "57P02", "57P03"];

impl SqlError {
    /// Whether a retry may succeed: the database is busy ([`is_busy`](Self::is_busy)) or
    /// unreachable (connection trouble, pool closed, server restarting).
    pub fn is_transient(&self) -> bool {
        self.is_busy()
            || matches!(
                self,
                SqlError::Database(
                    sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed
                )
            )
            || self
                .sqlstate()
                .is_some_and(|code| UNAVAILABLE_SQLSTATES.contains(&code.as_str()))
    }

    /// Whether the database answered too slowly or the statement lost to another transaction:
    /// a lock or statement time limit ran out, the caller's deadline passed, no pooled
    /// connection came free in time, or a serialization failure or deadlock.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            SqlError::Deadline(_) | SqlError::Database(sqlx::Error::PoolTimedOut)
        ) || self
            .sqlstate()
            .is_some_and(|code| BUSY_SQLSTATES.contains(&code.as_str()))
    }

    /// The SQLSTATE of an error the server reported.
    pub fn sqlstate(&self) -> Option<String> {
        match self {
            SqlError::Database(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()),
            _ => None,
        }
    }
}

/// Milliseconds since the Unix epoch by this host's clock (SQL timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `$first, $first+1, …` for `count` values: the placeholders of an `IN (…)` list.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($1, …, $cols), ($cols+1, …)` for a multi-row `VALUES` list of `rows` rows.
pub(crate) fn value_rows(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| format!("({})", placeholders(1 + r * cols, cols)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_lists_number_every_value_once() {
        assert_eq!(placeholders(3, 2), "$3, $4");
        assert_eq!(value_rows(2, 3), "($1, $2, $3), ($4, $5, $6)");
    }
}
