//! The fate of a reservation id, decided once in SQL (table `reservation_fates`).
//!
//! Two actors may end a reservation that is `confirming` in the store: the settlement (an
//! order, or a final refusal) and the reconciler (released: the gateway that began the confirm
//! is presumed dead). Each claims the reservation id by inserting its row; the primary key
//! lets exactly one insert win, and the loser obeys the winner's fate. So a confirm that
//! settlement committed is never undone by maintenance, and a reservation the reconciler
//! released can never be committed afterwards, however the two interleave (docs/design.md §3).
//!
//! The settlement's side of the claim is inside its batch transaction (`settle.rs`); this
//! module holds the reconciler's side and the names both use.

use sqlx::{Any, Row, Transaction};

use super::db::Db;
use super::{SqlError, now_ms, value_rows};

/// What a reservation id came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// An order exists for it.
    Ordered,
    /// It will never become an order.
    Released,
}

impl Fate {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Fate::Ordered => "ordered",
            Fate::Released => "released",
        }
    }

    fn parse(text: &str) -> Result<Self, SqlError> {
        match text {
            "ordered" => Ok(Fate::Ordered),
            "released" => Ok(Fate::Released),
            other => Err(SqlError::Corrupt(format!("reservation fate {other:?}"))),
        }
    }
}

/// Why a fate was decided (the `reason` column), for operators reading the table.
pub mod reason {
    pub const ORDER: &str = "order";
    pub const NO_STOCK: &str = "no_stock";
    pub const UNKNOWN_SKU: &str = "unknown_sku";
    pub const PURCHASE_LIMIT: &str = "purchase_limit";
    pub const TOTAL_OUT_OF_RANGE: &str = "total_out_of_range";
    pub const RECONCILER: &str = "reconciler";
    /// The gateway found no hold for a confirm (a Redis failover lost it, or it was pruned)
    /// and asked settlement to decide: `POST /internal/settlements/fate`.
    pub const LOST_HOLD: &str = "lost_hold";
}

/// The reconciler's claim: "released", unless the id already has a fate. Returns the fate in
/// force afterwards: `Released` (this call won, or an earlier release did) or `Ordered` (an
/// order was committed first: the hold must be finished, not released).
///
/// On PostgreSQL an insert that meets an uncommitted insert of the same id waits for that
/// transaction, so a settle batch in flight is never overtaken: it commits and the claim finds
/// its row, or it rolls back and the claim wins.
///
/// An order with no fate row (settled by a replica older than migration 0002 during a rolling
/// upgrade: it inserts orders without claiming) is claimed `ordered` here, never released.
pub async fn claim_released(db: &Db, reservation_id: &str, why: &str) -> Result<Fate, SqlError> {
    let inserted = sqlx::query(
        "INSERT INTO reservation_fates (reservation_id, fate, reason, decided_at_ms) \
         SELECT $1, 'released', $2, $3 \
         WHERE NOT EXISTS (SELECT 1 FROM orders WHERE reservation_id = $1) \
         ON CONFLICT (reservation_id) DO NOTHING",
    )
    .bind(reservation_id)
    .bind(why)
    .bind(now_ms())
    .execute(db.pool())
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(Fate::Released);
    }
    sqlx::query(
        "INSERT INTO reservation_fates (reservation_id, fate, reason, decided_at_ms) \
         SELECT reservation_id, 'ordered', $2, created_at_ms FROM orders WHERE reservation_id = $1 \
         ON CONFLICT (reservation_id) DO NOTHING",
    )
    .bind(reservation_id)
    .bind(reason::ORDER)
    .execute(db.pool())
    .await?;
    get(db, reservation_id)
        .await?
        .ok_or_else(|| SqlError::Invariant(format!("fate of {reservation_id} vanished")))
}

/// The fate of a reservation id, if it has one.
pub async fn get(db: &Db, reservation_id: &str) -> Result<Option<Fate>, SqlError> {
    let row = sqlx::query("SELECT fate FROM reservation_fates WHERE reservation_id = $1")
        .bind(reservation_id)
        .fetch_optional(db.pool())
        .await?;
    row.map(|r| Fate::parse(&r.try_get::<String, _>("fate")?))
        .transpose()
}

/// Which of `reservation_ids` have an order (their fate is `ordered`).
pub async fn ordered_among(
    db: &Db,
    reservation_ids: &[&str],
) -> Result<std::collections::HashSet<String>, SqlError> {
    if reservation_ids.is_empty() {
        return Ok(Default::default());
    }
    let sql = format!(
        "SELECT reservation_id FROM reservation_fates WHERE fate = 'ordered' \
         AND reservation_id IN ({})",
        super::placeholders(1, reservation_ids.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for rid in reservation_ids {
        query = query.bind(*rid);
    }
    let rows = query.fetch_all(db.pool()).await?;
    rows.iter()
        .map(|row| row.try_get("reservation_id").map_err(Into::into))
        .collect()
}

/// Inside a settle batch: claims `ordered` for each id that has no fate yet and returns the
/// ids this transaction claimed (the others already had a fate).
pub(crate) async fn claim_ordered(
    tx: &mut Transaction<'static, Any>,
    reservation_ids: &[&str],
    at_ms: i64,
) -> Result<Vec<String>, SqlError> {
    if reservation_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "INSERT INTO reservation_fates (reservation_id, fate, reason, decided_at_ms) VALUES {} \
         ON CONFLICT (reservation_id) DO NOTHING RETURNING reservation_id",
        value_rows(reservation_ids.len(), 4)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for rid in reservation_ids {
        query = query
            .bind(*rid)
            .bind(Fate::Ordered.as_str())
            .bind(reason::ORDER)
            .bind(at_ms);
    }
    let rows = query.fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|row| row.try_get("reservation_id").map_err(Into::into))
        .collect()
}

/// Inside a settle batch: the fate and reason of ids the batch could not claim (decided
/// before), so a retry of a refused confirm is answered what the first try was answered.
pub(crate) async fn decided(
    tx: &mut Transaction<'static, Any>,
    reservation_ids: &[&str],
) -> Result<std::collections::HashMap<String, (Fate, String)>, SqlError> {
    if reservation_ids.is_empty() {
        return Ok(Default::default());
    }
    let sql = format!(
        "SELECT reservation_id, fate, reason FROM reservation_fates WHERE reservation_id IN ({})",
        super::placeholders(1, reservation_ids.len())
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for rid in reservation_ids {
        query = query.bind(*rid);
    }
    let rows = query.fetch_all(&mut **tx).await?;
    rows.iter()
        .map(|row| {
            let fate = Fate::parse(&row.try_get::<String, _>("fate")?)?;
            Ok((
                row.try_get("reservation_id")?,
                (fate, row.try_get("reason")?),
            ))
        })
        .collect()
}

/// Inside a settle batch: turns this transaction's own `ordered` claim into a final refusal.
pub(crate) async fn refuse(
    tx: &mut Transaction<'static, Any>,
    reservation_id: &str,
    why: &str,
) -> Result<(), SqlError> {
    sqlx::query(
        "UPDATE reservation_fates SET fate = 'released', reason = $1 WHERE reservation_id = $2",
    )
    .bind(why)
    .bind(reservation_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
