//! Chaos case of issue 15.2: a flash sale on the real stack (`stockgate settlement` and
//! `stockgate gateway` processes, a private `redis-server`, a scratch PostgreSQL schema) while
//! another session holds the outbox append lock for 30 s in an open transaction. Every confirm
//! made meanwhile must come back fast — 503 with `Retry-After`, in about the settlement's
//! `lock_timeout` (2 s) and never past its group-commit deadline plus a queued batch — nothing
//! may hang, and once the lock is let go the sale goes on and the invariant checker finds 0
//! violations. The fault is `pg-lock-hold` of `loadtests/chaos` (RELIABILITY.md).
//!
//! Needs `redis-server` and `redis-cli` on PATH and `DATABASE_URL`. About 75 s.

use std::path::Path;
use std::time::Duration;

use reliability::faults::{self, Fault, Profile, RunSize, World};
use reliability::world::{Postgres, StockgateSettings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirms_fail_fast_while_a_session_holds_the_outbox_lock_and_the_sale_recovers() {
    let database_url = testkit::database_url();
    let dir = std::env::temp_dir().join(format!(
        "stockgate-pg-lock-hold-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let url = backend_adapters::sql::scratch_schema_url(&database_url, "lockhold")
        .await
        .unwrap_or_else(|e| panic!("scratch schema on DATABASE_URL: {e}"));
    let settings = StockgateSettings {
        // Holds (and their tokens) outlive the hold of the lock, as with the default 10 min:
        // settlement never settles an expired token, so a shorter TTL would turn every retry
        // after it into a 410.
        hold_ttl_secs: 60,
        // The shipped gateway timeout: longer than settlement's deadline, so what the buyer
        // hears is settlement's "busy", not a gateway timeout.
        settle_timeout_ms: 5_000,
        // Longer than the hold, as in production (60 s): holds left `confirming` by a 503 are
        // settled by the buyers' retries once the lock is let go. (With a grace shorter than
        // the hold the reconciler releases them during it instead and the retries get 410;
        // the invariants hold either way.)
        confirming_grace_ms: 40_000,
        reconcile_interval_ms: 1_000,
        sweep_interval_ms: 250,
        gateway_threads: 1,
    };
    let stockgate = Path::new(env!("CARGO_BIN_EXE_stockgate"));
    let mut world = tokio::task::block_in_place(|| {
        World::start(stockgate, &dir, Postgres::existing(url), &settings)
    })
    .unwrap_or_else(|e| panic!("starting the world in {}: {e:#}", dir.display()));
    let size = RunSize {
        stock: 60,
        attempts: 400,
        buyers: 200,
        concurrency: 24,
        per_buyer_limit: 2,
        release_every: 10,
        strike_after: 30,
        ..RunSize::full()
    };
    // Bounded: the hold is 30 s, each probe try at most 15 s, the sale's operations give up
    // after 60 s, draining after 120 s.
    let outcome = tokio::time::timeout(
        Duration::from_secs(300),
        faults::run(&mut world, Fault::PgLockHold, Profile::Flash, &size),
    )
    .await
    .unwrap_or_else(|_| panic!("the run hung (logs in {})", dir.display()))
    .unwrap_or_else(|e| panic!("pg-lock-hold run (logs in {}): {e:#}", dir.display()));
    let probe = outcome
        .lock_hold
        .clone()
        .expect("the strike probed confirms");
    println!(
        "{} | answers {:?} | tally {:?}",
        outcome.struck, outcome.answers, outcome.report.tally
    );
    println!("probe confirms: {:?}", probe.confirms);

    assert!(probe.held_secs >= 29.0, "{}", outcome.struck);
    assert!(probe.confirms.len() >= 3, "{}", outcome.struck);
    assert!(
        probe.all_busy_with_retry_after(),
        "every confirm during the hold is a 503 with Retry-After: {:?}",
        probe.confirms
    );
    let (min, _median, max) = probe.latency_ms();
    // Fast: after the lock timeout (2 s), at most one failing batch ahead of it; never the
    // 30 s the lock is held, never the gateway's own 5 s timeout.
    assert!(min >= 1_500, "answered before the lock timeout: {min} ms");
    assert!(max < 5_000, "a confirm took {max} ms");
    // Nothing hung in the sale either: every operation got an answer.
    assert!(
        !outcome.answers.keys().any(|k| k.ends_with(" none")),
        "operations without an answer: {:?}",
        outcome.answers
    );
    assert!(
        outcome.ok(),
        "pg-lock-hold broke invariants (logs and history in {}): {:#?}",
        dir.display(),
        outcome.report.violations
    );
    // The sale ran into the hold: confirms refused during it were retried and settled after.
    let records = reliability::history::read_jsonl(&outcome.history_file).unwrap();
    let retried = records
        .iter()
        .filter(|r| r.op == reliability::history::Op::Confirm && r.succeeded() && r.tries > 1)
        .count();
    assert!(retried > 0, "no sale confirm met the held lock");
    println!("sale confirms that met the lock and settled after it: {retried}");
    let tally = &outcome.report.tally;
    assert!(
        tally.confirms_acknowledged > 0 && tally.sql_orders > 0,
        "{tally:?}"
    );
    tokio::task::block_in_place(|| drop(world));
    let _ = std::fs::remove_dir_all(&dir);
}
