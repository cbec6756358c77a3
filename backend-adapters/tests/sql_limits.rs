//! PostgreSQL session limits (issue 15.2): a pool connected with [`SessionLimits`] gives up on
//! a lock held by someone else after `lock_timeout` and on a runaway statement after
//! `statement_timeout`, with an error that says "busy, retry"; without limits the same settle
//! waits as long as the lock is held. Each test in its own schema; SQLite is left alone.

use std::time::{Duration, Instant};

use backend_adapters::sql::outbox::OUTBOX_APPEND_LOCK_SQL;
use backend_adapters::sql::products::{self, EditOutcome};
use backend_adapters::sql::{
    Db, ProductUpsert, SessionLimits, SettleRequest, SqlError, settle_batch,
};
use reservation_core::{BuyerId, Qty, ReservationId, SaleState, Sku};

/// Short limits so the tests are quick; production defaults are 5 s / 2 s / 10 s.
const LIMITS: SessionLimits = SessionLimits {
    statement_timeout_ms: 1_500,
    lock_timeout_ms: 300,
    idle_in_transaction_session_timeout_ms: 3_000,
};
/// Longer than any limit above: a settle still waiting by then hangs behind the lock.
const HANG: Duration = Duration::from_secs(10);

async fn schema_url() -> anyhow::Result<String> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into());
    Ok(backend_adapters::sql::scratch_schema_url(&url, "limits").await?)
}

/// The service's pool (with `LIMITS`) and a second, unlimited one on the same schema: the
/// other transaction that holds a lock.
async fn pools() -> anyhow::Result<(Db, Db)> {
    let url = schema_url().await?;
    let service = Db::connect_with_limits(&url, 4, LIMITS).await?;
    service.migrate().await?;
    let other = Db::connect(&url, 2).await?;
    Ok((service, other))
}

async fn product(db: &Db, sku: &str) -> anyhow::Result<Sku> {
    let sku = Sku::parse(sku)?;
    let upsert = ProductUpsert {
        name: format!("{sku} tee"),
        price_cents: 1999,
        total_stock: 10,
        per_buyer_limit: 5,
        max_per_order: 5,
        sale_state: SaleState::OnSale,
    };
    match products::begin_edit(db, &sku)
        .await?
        .commit(&upsert)
        .await?
    {
        EditOutcome::Committed(_) => Ok(sku),
        refused => anyhow::bail!("fresh product refused: {refused:?}"),
    }
}

fn request(sku: &Sku) -> anyhow::Result<SettleRequest> {
    Ok(SettleRequest {
        reservation_id: ReservationId::generate(sku),
        buyer: BuyerId::parse("alice")?,
        sku: sku.clone(),
        qty: Qty::new(1)?,
    })
}

/// Settles one request on `db`, failing the test if it is still waiting after [`HANG`].
async fn settle_bounded(db: &Db, sku: &Sku) -> anyhow::Result<(SqlError, Duration)> {
    let started = Instant::now();
    let settled = tokio::time::timeout(HANG, settle_batch(db, &[request(sku)?])).await;
    let took = started.elapsed();
    match settled {
        Err(_) => anyhow::bail!("the settle still waits for the lock after {HANG:?}"),
        Ok(Ok(outcomes)) => anyhow::bail!("the settle went through a held lock: {outcomes:?}"),
        Ok(Err(error)) => Ok((error, took)),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_of_a_limited_pool_runs_under_the_limits() -> anyhow::Result<()> {
    let (service, other) = pools().await?;
    // More connections than one, all of them: after_connect, not a one-off SET.
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(service.pool().acquire().await?);
    }
    for conn in &mut conns {
        let row: (String, String, String) = sqlx::query_as(
            "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), \
                    current_setting('idle_in_transaction_session_timeout')",
        )
        .fetch_one(&mut **conn)
        .await?;
        assert_eq!(row, ("1500ms".into(), "300ms".into(), "3s".into()));
    }
    let unlimited: String = sqlx::query_scalar("SELECT current_setting('lock_timeout')")
        .fetch_one(other.pool())
        .await?;
    assert_eq!(unlimited, "0", "Db::connect sets no limit");
    Ok(())
}

/// A transaction holding the outbox append lock (an ops edit stuck before COMMIT, a hung pod)
/// no longer freezes settlement: the settle gives up after `lock_timeout` with 55P03.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_outbox_lock_fails_a_settle_fast_as_busy() -> anyhow::Result<()> {
    let (service, other) = pools().await?;
    let sku = product(&service, "LOCKED-OUTBOX").await?;
    let mut holder = other.pool().begin().await?;
    sqlx::query(OUTBOX_APPEND_LOCK_SQL)
        .execute(&mut *holder)
        .await?;

    let (error, took) = settle_bounded(&service, &sku).await?;
    assert_eq!(error.sqlstate().as_deref(), Some("55P03"), "{error}");
    assert!(error.is_busy() && error.is_transient(), "{error}");
    assert!(took < Duration::from_secs(2), "gave up after {took:?}");
    println!("settle behind a held outbox lock failed after {took:?}: {error}");

    // Nothing of it stayed: once the lock is free the same reservation settles.
    holder.rollback().await?;
    let outcomes = settle_batch(&service, &[request(&sku)?]).await?;
    assert_eq!(outcomes.len(), 1);
    let sold = products::get(&service, sku.as_str()).await?.map(|p| p.sold);
    assert_eq!(sold, Some(1));
    Ok(())
}

/// Same for the product row: a transaction holding it `FOR UPDATE` makes the settle of that
/// SKU fail after `lock_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_product_row_fails_a_settle_fast_as_busy() -> anyhow::Result<()> {
    let (service, other) = pools().await?;
    let sku = product(&service, "LOCKED-ROW").await?;
    let mut holder = other.pool().begin().await?;
    sqlx::query("SELECT sku FROM products WHERE sku = $1 FOR UPDATE")
        .bind(sku.as_str())
        .fetch_one(&mut *holder)
        .await?;

    let (error, took) = settle_bounded(&service, &sku).await?;
    assert_eq!(error.sqlstate().as_deref(), Some("55P03"), "{error}");
    assert!(error.is_busy(), "{error}");
    assert!(took < Duration::from_secs(2), "gave up after {took:?}");
    holder.rollback().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_statement_is_cancelled_as_busy() -> anyhow::Result<()> {
    let (service, _other) = pools().await?;
    let started = Instant::now();
    let error = sqlx::query("SELECT pg_sleep(5)")
        .execute(service.pool())
        .await
        .map_err(SqlError::from)
        .expect_err("statement_timeout cancels a 5 s statement");
    assert_eq!(error.sqlstate().as_deref(), Some("57014"), "{error}");
    assert!(error.is_busy(), "{error}");
    assert!(started.elapsed() < Duration::from_secs(4));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_connects_with_limits_untouched() -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("sg-{}.db", uuid::Uuid::new_v4().simple()));
    let db = Db::connect_with_limits(&format!("sqlite://{}?mode=rwc", path.display()), 2, LIMITS)
        .await?;
    db.migrate().await?;
    db.ping().await?;
    db.close().await;
    let _ = std::fs::remove_file(&path);
    Ok(())
}

#[test]
fn the_default_limits_are_the_documented_production_ones() {
    let limits = SessionLimits::default();
    assert_eq!(
        (
            limits.statement_timeout_ms,
            limits.lock_timeout_ms,
            limits.idle_in_transaction_session_timeout_ms
        ),
        (5_000, 2_000, 10_000)
    );
}
