//! The fastest fault runs of `loadtests/chaos`, as tests: real `stockgate settlement` and
//! `stockgate gateway` processes on a private `redis-server` (AOF on) and a scratch
//! PostgreSQL schema (a private cluster for the PostgreSQL restart), a flash sale in flight
//! while the fault strikes, then drain, reconcile and the invariant checker over the state and
//! every answer the clients got (`reliability::invariants`). Smaller than the chaos script's
//! S = 1,000 / 10,000 attempts so the suite stays quick; the same code runs both.
//!
//! Needs `redis-server` and `redis-cli` on PATH, `DATABASE_URL`, and for the PostgreSQL case
//! the server binaries under /usr/lib/postgresql (scripts/test.sh installs them all).

use std::path::{Path, PathBuf};

use reliability::faults::{self, Fault, RunSize, World};
use reliability::world::{Postgres, StockgateSettings};

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| panic!("DATABASE_URL must be set (scripts/test.sh sets it)"))
}

/// A run directory under the system temp dir, removed when the run passed.
fn run_dir(fault: Fault) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "stockgate-faults-{}-{}",
        fault.name(),
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn fault_run(fault: Fault) {
    let dir = run_dir(fault);
    let postgres = if fault == Fault::PostgresRestart {
        tokio::task::block_in_place(|| Postgres::start_private(&dir))
            .unwrap_or_else(|e| panic!("private PostgreSQL: {e:#}"))
    } else {
        let url = backend_adapters::sql::scratch_schema_url(&database_url(), "faults")
            .await
            .unwrap_or_else(|e| panic!("scratch schema on DATABASE_URL: {e}"));
        Postgres::existing(url)
    };
    let settings = StockgateSettings {
        hold_ttl_secs: 10,
        settle_timeout_ms: 3_000,
        confirming_grace_ms: 8_000,
        reconcile_interval_ms: 1_000,
        gateway_threads: 1,
    };
    let stockgate = Path::new(env!("CARGO_BIN_EXE_stockgate"));
    let mut world =
        tokio::task::block_in_place(|| World::start(stockgate, &dir, postgres, &settings))
            .unwrap_or_else(|e| panic!("starting the world in {}: {e:#}", dir.display()));
    let size = RunSize {
        stock: 60,
        attempts: 400,
        buyers: 200,
        concurrency: 24,
        per_buyer_limit: 2,
        release_every: 10,
        strike_after: 30,
    };
    let outcome = faults::run(&mut world, fault, &size)
        .await
        .unwrap_or_else(|e| panic!("{} run (logs in {}): {e:#}", fault.name(), dir.display()));
    println!(
        "{}: {} | answers {:?} | tally {:?}",
        fault.name(),
        outcome.struck,
        outcome.answers,
        outcome.report.tally
    );
    assert!(
        outcome.ok(),
        "{} broke invariants (logs and history in {}): {:#?}",
        fault.name(),
        dir.display(),
        outcome.report.violations
    );
    // The run did sell: the check was about real orders, not an empty sale.
    let tally = &outcome.report.tally;
    assert!(
        tally.confirms_acknowledged > 0 && tally.sql_orders > 0,
        "{tally:?}"
    );
    assert!(tally.sql_units_sold <= size.stock as i64);
    tokio::task::block_in_place(|| drop(world));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_from_its_aof() {
    fault_run(Fault::RedisKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_for_three_seconds() {
    fault_run(Fault::RedisPause).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_scripts_flushed_mid_sale() {
    fault_run(Fault::ScriptFlush).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_killed_and_restarted() {
    fault_run(Fault::SettlementKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_restarted() {
    fault_run(Fault::PostgresRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_terminated_gracefully_and_restarted() {
    fault_run(Fault::GatewayTerm).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_and_restarted() {
    fault_run(Fault::GatewayKill).await;
}
