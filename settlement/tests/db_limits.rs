//! Issue 15.2 at the service: a transaction elsewhere holding the outbox append lock (an ops
//! edit stuck before COMMIT, a hung pod) makes confirms fail fast with 503 `database_busy` and
//! `Retry-After` — from the session's `lock_timeout`, or from the group-commit deadline when
//! the session limits are off — instead of hanging until the gateway times out; a batch of
//! many such confirms fails at once rather than one by one, and once the lock is released the
//! same tokens settle. Real PostgreSQL, own schema per test.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_adapters::sql::outbox::OUTBOX_APPEND_LOCK_SQL;
use backend_adapters::sql::{Db, SessionLimits};
use common::{TestApp, scalar, start_with, test_config};
use reservation_core::InMemoryStore;
use settlement::SettlementConfig;

/// Longer than any limit these tests configure: an answer later than this is a hang.
const HANG: Duration = Duration::from_secs(15);

async fn start(config: SettlementConfig) -> anyhow::Result<Arc<TestApp>> {
    Ok(Arc::new(
        start_with(config, Arc::new(InMemoryStore::new())).await?,
    ))
}

/// Opens a transaction on a connection of its own that takes the outbox append lock of the
/// service's schema, and keeps it until the returned transaction is dropped or rolled back.
async fn hold_outbox_lock(app: &TestApp) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Any>> {
    let holder = Db::connect(&app.db_url, 1).await?;
    let mut tx = holder.pool().begin().await?;
    sqlx::query(OUTBOX_APPEND_LOCK_SQL)
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}

/// One confirm: status, code, `Retry-After`, and how long it took (bounded by [`HANG`]).
async fn confirm(app: &TestApp, buyer: &str, token: &str) -> anyhow::Result<Answer> {
    let started = Instant::now();
    let response = tokio::time::timeout(HANG, app.settle(buyer, token))
        .await
        .map_err(|_| anyhow::anyhow!("no answer within {HANG:?}: the confirm hangs"))??;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: serde_json::Value = response.json().await?;
    Ok(Answer {
        status,
        code: body["code"].as_str().unwrap_or_default().to_owned(),
        retry_after,
        took: started.elapsed(),
    })
}

#[derive(Debug)]
struct Answer {
    status: u16,
    code: String,
    retry_after: Option<String>,
    took: Duration,
}

impl Answer {
    fn assert_busy(&self, within: Duration) {
        assert_eq!(
            (self.status, self.code.as_str()),
            (503, "database_busy"),
            "{self:?}"
        );
        assert_eq!(self.retry_after.as_deref(), Some("1"), "{self:?}");
        assert!(self.took < within, "answered after {:?}", self.took);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_outbox_lock_fails_confirms_after_the_lock_timeout() -> anyhow::Result<()> {
    // The shipped limits (lock_timeout 2 s), as production runs them.
    let app = start(test_config(&testkit::scratch_schema("dblimits").await)).await?;
    app.put_product("HELD", 10).await?;
    let (_, token) = app.token("HELD", "alice", 1)?;
    let holder = hold_outbox_lock(&app).await?;

    let answer = confirm(&app, "alice", &token).await?;
    answer.assert_busy(Duration::from_secs(4));
    assert!(answer.took >= Duration::from_millis(1_900), "{answer:?}");
    println!("confirm behind the held outbox lock: {answer:?}");

    holder.rollback().await?;
    let again = confirm(&app, "alice", &token).await?;
    assert_eq!(again.status, 201, "{again:?}");
    let db = app.db().await?;
    assert_eq!(scalar(&db, "SELECT sold FROM products").await?, 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_session_limits_the_group_commit_deadline_answers() -> anyhow::Result<()> {
    let mut config = test_config(&testkit::scratch_schema("dblimits").await);
    config.db_limits = SessionLimits::OFF;
    config.group_commit.deadline_ms = 700;
    let app = start(config).await?;
    app.put_product("DEADLINE", 10).await?;
    let (_, token) = app.token("DEADLINE", "bob", 1)?;
    let holder = hold_outbox_lock(&app).await?;

    let answer = confirm(&app, "bob", &token).await?;
    answer.assert_busy(Duration::from_secs(2));
    assert!(answer.took >= Duration::from_millis(650), "{answer:?}");

    // The batch the deadline dropped was rolled back: nothing half-done blocks the retry.
    holder.rollback().await?;
    let again = confirm(&app, "bob", &token).await?;
    assert_eq!(again.status, 201, "{again:?}");
    Ok(())
}

/// Many confirms behind the lock: one failed batch answers all of them, instead of settling
/// each alone and waiting out the lock timeout once per request.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_busy_batch_fails_all_its_confirms_at_once() -> anyhow::Result<()> {
    let mut config = test_config(&testkit::scratch_schema("dblimits").await);
    config.db_limits.lock_timeout_ms = 500;
    config.group_commit.max_wait_us = 50_000; // gather them into one or two batches
    let app = start(config).await?;
    app.put_product("CROWD", 100).await?;
    let holder = hold_outbox_lock(&app).await?;

    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let app = app.clone();
        let buyer = format!("buyer-{i}");
        let (_, token) = app.token("CROWD", &buyer, 1)?;
        tasks.push(tokio::spawn(
            async move { confirm(&app, &buyer, &token).await },
        ));
    }
    for task in tasks {
        // Queued behind at most one other failing batch: two lock timeouts and change.
        task.await??.assert_busy(Duration::from_secs(3));
    }
    println!(
        "20 confirms behind the lock all answered in {:?}",
        started.elapsed()
    );
    holder.rollback().await?;
    let db = app.db().await?;
    assert_eq!(
        scalar(&db, "SELECT CAST(COUNT(*) AS BIGINT) FROM orders").await?,
        0
    );
    Ok(())
}
