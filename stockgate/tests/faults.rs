//! The fastest fault runs of `loadtests/chaos`, as tests: real `stockgate settlement` and
//! `stockgate gateway` processes on a private `redis-server` (AOF on) and a scratch
//! PostgreSQL schema (a private cluster for the PostgreSQL restart), a flash sale in flight
//! while the fault strikes, then drain, reconcile and the invariant checker over the state and
//! every answer the clients got (`reliability::invariants`). Smaller than the chaos script's
//! S = 1,000 / 10,000 attempts so the suite stays quick; the same code runs both. The profiles
//! (`--profile slow-buyers`, `--profile churn`) and the Redis failover (a replica behind a
//! stable endpoint) run here too.
//!
//! Needs `redis-server` and `redis-cli` on PATH, `DATABASE_URL`, for the PostgreSQL case
//! the server binaries under /usr/lib/postgresql, and for the broker restart RabbitMQ with
//! its AMQP 1.0 plugin (`AMQP_URL`, `rabbitmqctl`; scripts/test.sh installs them all).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reliability::faults::{self, Fault, Outcome, Profile, RunSize, World};
use reliability::world::{Postgres, StockgateSettings};

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

/// One small run of `fault` under `profile`; panics on any violation. `hold_ttl_secs` sets
/// the holds' TTL (and with it the slow buyers' think time).
async fn fault_run(fault: Fault, profile: Profile, hold_ttl_secs: u64) -> Outcome {
    let dir = run_dir(fault);
    let postgres = if fault == Fault::PostgresRestart {
        tokio::task::block_in_place(|| Postgres::start_private(&dir))
            .unwrap_or_else(|e| panic!("private PostgreSQL: {e:#}"))
    } else {
        let url = backend_adapters::sql::scratch_schema_url(&testkit::database_url(), "faults")
            .await
            .unwrap_or_else(|e| panic!("scratch schema on DATABASE_URL: {e}"));
        Postgres::existing(url)
    };
    let settings = profile.settings(StockgateSettings {
        hold_ttl_secs,
        settle_timeout_ms: 3_000,
        confirming_grace_ms: 8_000,
        reconcile_interval_ms: 1_000,
        sweep_interval_ms: 250,
        gateway_threads: 1,
    });
    let stockgate = Path::new(env!("CARGO_BIN_EXE_stockgate"));
    let mut world = tokio::task::block_in_place(|| match fault {
        Fault::RedisFailover => World::start_failover_ready(stockgate, &dir, postgres, &settings),
        Fault::BrokerRestart => World::start_with_broker(
            stockgate,
            &dir,
            postgres,
            &settings,
            testkit::broker::broker_settings(""),
        ),
        _ => World::start(stockgate, &dir, postgres, &settings),
    })
    .unwrap_or_else(|e| panic!("starting the world in {}: {e:#}", dir.display()));
    let size = RunSize {
        stock: 60,
        attempts: 400,
        buyers: 200,
        concurrency: 24,
        per_buyer_limit: 2,
        release_every: 10,
        // A failover strikes at once: holds must be made in its lost second, and a slow-buyers
        // sale holds its 60 units within the first 30 answers (the rest are quick 409s), so a
        // later strike can find no reserve left to lose (seen: 0 lost holds, the test failed).
        strike_after: if fault == Fault::RedisFailover { 0 } else { 30 },
        restock_every: Duration::from_millis(200),
        restock_max_units: 3,
    };
    let outcome = faults::run(&mut world, fault, profile, &size)
        .await
        .unwrap_or_else(|e| panic!("{} run (logs in {}): {e:#}", fault.name(), dir.display()));
    println!(
        "{} {}: {} | answers {:?} | repaired {} | tally {:?}",
        fault.name(),
        profile.name(),
        outcome.struck,
        outcome.answers,
        outcome.reconcile["repaired"],
        outcome.report.tally
    );
    assert!(
        outcome.ok(),
        "{} {} broke invariants (logs and history in {}): {:#?}",
        fault.name(),
        profile.name(),
        dir.display(),
        outcome.report.violations
    );
    // The run did sell: the check was about real orders, not an empty sale.
    let tally = &outcome.report.tally;
    assert!(
        tally.confirms_acknowledged > 0 && tally.sql_orders > 0,
        "{tally:?}"
    );
    assert!(tally.sql_units_sold <= tally.total_stock);
    tokio::task::block_in_place(|| drop(world));
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_from_its_aof() {
    fault_run(Fault::RedisKill, Profile::Flash, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_for_three_seconds() {
    fault_run(Fault::RedisPause, Profile::Flash, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_scripts_flushed_mid_sale() {
    fault_run(Fault::ScriptFlush, Profile::Flash, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlement_killed_and_restarted() {
    fault_run(Fault::SettlementKill, Profile::Flash, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_restarted() {
    fault_run(Fault::PostgresRestart, Profile::Flash, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_terminated_gracefully_and_restarted() {
    fault_run(Fault::GatewayTerm, Profile::Flash, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_killed_and_restarted() {
    fault_run(Fault::GatewayKill, Profile::Flash, 10).await;
}

/// Buyers think up to 6.25 s on 5 s holds, the reconciler and sweeper run every 100 ms with a
/// grace of 3.5 s: every confirm made while its hold lived succeeded, every one made after it
/// expired got 410 and no order (the checker's TTL rules), and both kinds happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_buyers_confirm_past_the_grace_and_after_expiry() {
    let outcome = fault_run(Fault::None, Profile::SlowBuyers, 5).await;
    let tally = &outcome.report.tally;
    assert!(
        tally.confirms_inside_ttl > 0 && tally.confirms_after_expiry > 0,
        "{tally:?}"
    );
}

/// Ops cancel orders and restock while the sale runs: SQL sold is the live orders, the total
/// is the first stock plus the restocks, and Redis agrees with SQL at rest without a repair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_cancel_and_restock_during_the_sale() {
    let outcome = fault_run(Fault::None, Profile::Churn, 10).await;
    let tally = &outcome.report.tally;
    assert!(
        tally.cancels_acknowledged > 0 && tally.restocked_units > 0,
        "{tally:?}"
    );
    assert!(tally.total_stock > 60, "{tally:?}");
}

/// Redis fails over to a replica that missed the last second of writes while slow buyers
/// hold units: the promises of RELIABILITY.md "After a Redis failover" hold (the checker, with
/// its failover rules), and holds made in the lost second were confirmed after it, answered 410
/// by settlement's fate of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_fails_over_to_a_replica_that_missed_the_last_writes() {
    let outcome = fault_run(Fault::RedisFailover, Profile::SlowBuyers, 5).await;
    assert!(outcome.lost_window.is_some(), "{}", outcome.struck);
    let tally = &outcome.report.tally;
    assert!(tally.lost_holds_answered_410 > 0, "{tally:?}");
}

/// The relay publishes to RabbitMQ over AMQP 1.0 next to the Redis stream; the broker is
/// restarted mid-sale: every outbox event of the run reached the consumer, once after dropping
/// repeats by message id and in order per order (0 lost), and the sale's invariants held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqp_broker_restarted_while_the_relay_publishes() {
    // It restarts the broker: no other broker test runs meanwhile (testkit::broker).
    let _broker = testkit::broker::own_broker().await;
    let outcome = fault_run(Fault::BrokerRestart, Profile::Flash, 10).await;
    let delivered = outcome.broker.as_ref().expect("a broker world");
    println!("broker: {delivered:?}");
    assert!(delivered.ok(), "{delivered:#?}");
    assert!(delivered.lost.is_empty());
    assert!(delivered.outbox_events > 0, "{delivered:?}");
}
