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

use thiserror::Error;

pub use db::{Backend, Db, migrate};
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
}

impl SqlError {
    /// Whether a retry may succeed (connection trouble, pool exhausted, serialization).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            SqlError::Database(
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
            )
        )
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
