//! The database handle: one `Any` pool that is PostgreSQL in production and an SQLite file in
//! the embedded default, its migrations, and how a write transaction begins on each.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Executor, Transaction};

use super::SqlError;

static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Which database the pool talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn from_url(url: &str) -> Result<Self, SqlError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(SqlError::UnsupportedUrl(redact(url)))
        }
    }
}

/// Keeps the scheme and host of a URL for error messages, never its password.
fn redact(url: &str) -> String {
    match url.split_once('@') {
        Some((_, host)) => format!("…@{host}"),
        None => url.chars().take(64).collect(),
    }
}

/// Time limits every PostgreSQL session of a pool runs under, in ms; 0 turns one off.
/// Without them one transaction holding a lock (the outbox append lock, a product row) makes
/// every settlement, cancel and status change wait behind it for as long as it lasts; with
/// them a waiter gives up after `lock_timeout_ms` with SQLSTATE 55P03, a runaway statement
/// after `statement_timeout_ms` (57014), and a session left idle inside a transaction (a hung
/// client holding its locks) is closed after `idle_in_transaction_session_timeout_ms`.
/// SQLite has no such settings and is left alone (its writers wait on `busy_timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionLimits {
    pub statement_timeout_ms: u64,
    pub lock_timeout_ms: u64,
    pub idle_in_transaction_session_timeout_ms: u64,
}

impl SessionLimits {
    /// No limit at all: PostgreSQL's own default, for migrations and tools.
    pub const OFF: SessionLimits = SessionLimits {
        statement_timeout_ms: 0,
        lock_timeout_ms: 0,
        idle_in_transaction_session_timeout_ms: 0,
    };

    fn is_off(&self) -> bool {
        *self == Self::OFF
    }
}

impl Default for SessionLimits {
    /// The service's limits: a settle batch is a few ms of work, so a lock waited on for 2 s
    /// is held by something stuck, a statement running 5 s is a runaway, and a transaction
    /// idle for 10 s (longer than any Redis call a product edit makes inside one) is abandoned.
    fn default() -> Self {
        SessionLimits {
            statement_timeout_ms: 5_000,
            lock_timeout_ms: 2_000,
            idle_in_transaction_session_timeout_ms: 10_000,
        }
    }
}

/// A pool plus the dialect it speaks. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

impl Db {
    /// Connects (one connection is opened now, so a wrong URL fails here). SQLite
    /// connections get WAL, a busy timeout and foreign keys.
    ///
    /// For PostgreSQL the URL may pick a schema with `?options[search_path]=name`, which is
    /// how tests isolate themselves. No session limits: tools, tests and migrations; the
    /// service connects with [`Db::connect_with_limits`].
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, SqlError> {
        Self::connect_with_limits(url, max_connections, SessionLimits::OFF).await
    }

    /// Like [`Db::connect`], and every PostgreSQL connection of the pool is given `limits`
    /// before its first use.
    pub async fn connect_with_limits(
        url: &str,
        max_connections: u32,
        limits: SessionLimits,
    ) -> Result<Self, SqlError> {
        install_default_drivers();
        let backend = Backend::from_url(url)?;
        let mut options = AnyPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(30));
        if backend == Backend::Postgres && !limits.is_off() {
            options = options.after_connect(move |conn, _meta| {
                Box::pin(async move {
                    // Session-wide (`false`: not only this transaction), one round trip.
                    sqlx::query(
                        "SELECT set_config('statement_timeout', $1, false), \
                                set_config('lock_timeout', $2, false), \
                                set_config('idle_in_transaction_session_timeout', $3, false)",
                    )
                    .bind(limits.statement_timeout_ms.to_string())
                    .bind(limits.lock_timeout_ms.to_string())
                    .bind(limits.idle_in_transaction_session_timeout_ms.to_string())
                    .execute(conn)
                    .await?;
                    Ok(())
                })
            });
        }
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the one writer; the busy timeout makes a
                    // second writer wait instead of failing with SQLITE_BUSY.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    conn.execute("PRAGMA busy_timeout = 10000").await?;
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await?;
        Ok(Db { pool, backend })
    }

    /// Applies the migrations of this backend that have not run yet.
    pub async fn migrate(&self) -> Result<(), SqlError> {
        match self.backend {
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// One round trip: is the database reachable (readiness)?
    pub async fn ping(&self) -> Result<(), SqlError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Begins a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads first and writes later can fail
    /// with SQLITE_BUSY when another writer got in between, without waiting.
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>, SqlError> {
        Ok(match self.backend {
            Backend::Postgres => self.pool.begin().await?,
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
        })
    }

    /// Begins a read-only view of one snapshot: every statement of the transaction sees the
    /// same committed state (PostgreSQL `REPEATABLE READ`; an SQLite read transaction in WAL
    /// mode keeps the snapshot of its first read).
    pub(crate) async fn begin_snapshot(&self) -> Result<Transaction<'static, Any>, SqlError> {
        Ok(match self.backend {
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?
            }
            Backend::Sqlite => self.pool.begin().await?,
        })
    }

    /// `FOR UPDATE` where the dialect has row locks (SQLite's write lock already covers it).
    pub(crate) fn for_update(&self) -> &'static str {
        match self.backend {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Connects to `database_url` and applies the pending migrations: what `stockgate migrate`
/// runs. The settlement service also migrates on start.
pub async fn migrate(database_url: &str) -> Result<(), SqlError> {
    let db = Db::connect(database_url, 1).await?;
    db.migrate().await?;
    db.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_is_chosen_by_scheme_and_errors_hide_passwords() {
        assert_eq!(
            Backend::from_url("postgres://u:p@h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("sqlite://x.db?mode=rwc").ok(),
            Some(Backend::Sqlite)
        );
        let err = Backend::from_url("mysql://u:secret@h/db").unwrap_err();
        assert!(!err.to_string().contains("secret"));
    }
}
