//! `stockgate-chaos`: fault runs against real processes, and the invariant checker on its own.
//!
//! ```text
//! stockgate-chaos run --stockgate target/release/stockgate --private-postgres [--fault NAME]...
//!                     [--profile flash|slow-buyers|churn]
//! stockgate-chaos check --database-url … --redis-url … --key-prefix … --sku SKU [--history FILE]
//! ```
//! `run` prints one line per fault and writes a JSON report (`--report`); it exits 1 when any
//! run broke an invariant. `loadtests/chaos` wraps it. `broker-restart` runs in a world whose
//! outbox relay publishes to the AMQP 1.0 broker at `--amqp-url` too (`<dir>/broker`), and
//! `redis-failover` last, in a world of its own (a replica and a stable endpoint in front of
//! the primary, `<dir>/failover`), so the other faults run as they always did.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use backend_adapters::amqp::{AmqpSettings, AmqpTarget};
use clap::{Args, Parser, Subcommand};
use reliability::faults::{self, Fault, Profile, RunSize, World};
use reliability::history;
use reliability::invariants::{self, Sources};
use reliability::world::{Postgres, StockgateSettings};

#[derive(Parser)]
#[command(about = "Fault runs and the invariant checker for stockgate")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start private Redis (+ PostgreSQL) and stockgate, and run a flash sale per fault.
    Run(RunArgs),
    /// Check the invariants of SKUs on a running system (and a recorded history).
    Check(CheckArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The `stockgate` binary to run.
    #[arg(long)]
    stockgate: PathBuf,
    /// Faults to run, in order (default: all).
    #[arg(long = "fault", value_parser = Fault::parse)]
    faults: Vec<Fault>,
    /// Who buys: `flash` (confirm at once), `slow-buyers` (think up to past the hold TTL,
    /// maintenance on short intervals), `churn` (ops cancel orders and restock meanwhile).
    #[arg(long, value_parser = Profile::parse, default_value = "flash")]
    profile: Profile,
    /// The hold TTL in seconds (default: 20; 10 with `slow-buyers`).
    #[arg(long)]
    hold_ttl_secs: Option<u64>,
    /// Start a private PostgreSQL cluster (needed for `postgres-restart`); otherwise use
    /// `--database-url`.
    #[arg(long)]
    private_postgres: bool,
    #[arg(long, env = "DATABASE_URL")]
    database_url: Option<String>,
    /// Where logs, histories and the data dir go (default: a new temp dir).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Write every outcome as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    #[arg(long, default_value_t = 1_000)]
    stock: u64,
    #[arg(long, default_value_t = 10_000)]
    attempts: usize,
    #[arg(long, default_value_t = 5_000)]
    buyers: usize,
    #[arg(long, default_value_t = 200)]
    concurrency: usize,
    /// Runs of each fault.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// The AMQP 1.0 broker of `broker-restart` (RabbitMQ with rabbitmq_amqp1_0 on this
    /// machine: the fault restarts it with rabbitmqctl).
    #[arg(long, env = "AMQP_URL", default_value = "amqp://127.0.0.1:5672")]
    amqp_url: String,
    /// Its SASL PLAIN user and key.
    #[arg(long, env = "AMQP_USER", default_value = "guest")]
    amqp_user: String,
    #[arg(
        long,
        env = "AMQP_KEY",
        default_value = "guest",
        hide_env_values = true
    )]
    amqp_key: String,
}

#[derive(Args)]
struct CheckArgs {
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long, env = "REDIS_URL")]
    redis_url: String,
    /// The gateway's `redis_key_prefix`.
    #[arg(long)]
    key_prefix: String,
    #[arg(long = "sku", required = true)]
    skus: Vec<String>,
    /// A JSON-lines history written by `run`.
    #[arg(long)]
    history: Option<PathBuf>,
    /// Requests may still be in flight: skip the at-rest checks (counters add up, nothing
    /// confirming).
    #[arg(long)]
    live: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args).await,
        Command::Check(args) => check(args).await,
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(error) => {
            eprintln!("stockgate-chaos: {error:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("stockgate-chaos-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    eprintln!("logs and histories in {}", dir.display());
    let faults = if args.faults.is_empty() {
        Fault::ALL.to_vec()
    } else {
        args.faults.clone()
    };
    let size = RunSize {
        stock: args.stock,
        attempts: args.attempts,
        buyers: args.buyers,
        concurrency: args.concurrency,
        // Strike while units are still being sold: about half the stock gone.
        strike_after: (args.stock as usize / 2).min(args.attempts),
        ..RunSize::full()
    };
    let default_ttl = match args.profile {
        Profile::SlowBuyers => 10,
        Profile::Flash | Profile::Churn => StockgateSettings::default().hold_ttl_secs,
    };
    let settings = args.profile.settings(StockgateSettings {
        hold_ttl_secs: args.hold_ttl_secs.unwrap_or(default_ttl),
        ..StockgateSettings::default()
    });
    let (failover, rest): (Vec<Fault>, Vec<Fault>) =
        faults.into_iter().partition(|f| *f == Fault::RedisFailover);
    let (broker, plain): (Vec<Fault>, Vec<Fault>) =
        rest.into_iter().partition(|f| *f == Fault::BrokerRestart);
    let mut outcomes = Vec::new();
    let mut all_ok = true;
    for (kind, group) in [("plain", plain), ("broker", broker), ("failover", failover)] {
        if group.is_empty() {
            continue;
        }
        let dir = match kind {
            "plain" => dir.clone(),
            other => dir.join(other),
        };
        std::fs::create_dir_all(&dir)?;
        let postgres = if args.private_postgres {
            tokio::task::block_in_place(|| Postgres::start_private(&dir))?
        } else {
            let url = args
                .database_url
                .clone()
                .context("--database-url (or DATABASE_URL) or --private-postgres")?;
            Postgres::existing(url)
        };
        let mut world = tokio::task::block_in_place(|| match kind {
            "failover" => World::start_failover_ready(&args.stockgate, &dir, postgres, &settings),
            "broker" => World::start_with_broker(
                &args.stockgate,
                &dir,
                postgres,
                &settings,
                broker_settings(&args)?,
            ),
            _ => World::start(&args.stockgate, &dir, postgres, &settings),
        })?;
        for fault in group {
            for _ in 0..args.repeat {
                let outcome = faults::run(&mut world, fault, args.profile, &size)
                    .await
                    .with_context(|| format!("fault run {}", fault.name()))?;
                all_ok &= outcome.ok();
                print_outcome(&outcome);
                outcomes.push(outcome);
            }
        }
        // Let the world go down before the next one (and the runtime).
        tokio::task::block_in_place(|| drop(world));
    }
    if let Some(path) = args.report {
        std::fs::write(&path, serde_json::to_vec_pretty(&outcomes)?)?;
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(all_ok)
}

/// The broker of `broker-restart`; the world picks the address.
fn broker_settings(args: &RunArgs) -> anyhow::Result<AmqpSettings> {
    Ok(AmqpSettings {
        target: AmqpTarget::parse(&args.amqp_url).context("--amqp-url")?,
        address: String::new(),
        user: args.amqp_user.clone(),
        key: args.amqp_key.clone(),
        connect_timeout: Duration::from_secs(5),
        send_timeout: Duration::from_secs(10),
    })
}

fn print_outcome(outcome: &faults::Outcome) {
    let t = &outcome.report.tally;
    println!(
        "{:<17} {:<11} {}  orders {} = {} units of {}  reserves ok {} / unknown {}  confirms ok {} / unknown {}  released {}  cancelled {}  restocked {}  confirms inside TTL {} / after expiry {}  lost holds 410 {}  load {:.1} s  drained {:.1} s  SQL sold max {} ({} samples)  repaired {}  violations {}",
        outcome.fault.name(),
        outcome.profile.name(),
        if outcome.ok() { "PASS" } else { "FAIL" },
        t.sql_orders,
        t.sql_units_sold,
        t.total_stock,
        t.reserves_acknowledged,
        t.reserves_unknown,
        t.confirms_acknowledged,
        t.confirms_unknown,
        t.releases_acknowledged,
        t.cancels_acknowledged,
        t.restocked_units,
        t.confirms_inside_ttl,
        t.confirms_after_expiry,
        t.lost_holds_answered_410,
        outcome.load_secs,
        outcome.drained_secs,
        outcome.sql_sold_watch.max,
        outcome.sql_sold_watch.samples,
        outcome.reconcile["repaired"],
        outcome.report.violations.len()
    );
    println!("    {}", outcome.struck);
    if let Some(probe) = &outcome.lock_hold {
        println!("    {}", probe.summary());
    }
    if let Some(b) = &outcome.broker {
        println!(
            "    broker: {} outbox events, {} deliveries ({} repeats), lost {}, unknown {}, out of order {}, altered {}",
            b.outbox_events,
            b.deliveries,
            b.repeats,
            b.lost.len(),
            b.unknown.len(),
            b.out_of_order.len(),
            b.mismatched.len()
        );
    }
    for v in outcome.report.violations.iter().take(20) {
        println!("    {}: {}", v.invariant, v.detail);
    }
}

async fn check(args: CheckArgs) -> anyhow::Result<bool> {
    let records = match &args.history {
        Some(path) => history::read_jsonl(path)?,
        None => Vec::new(),
    };
    let observed = invariants::observe(
        &Sources {
            database_url: &args.database_url,
            redis_url: &args.redis_url,
            redis_key_prefix: &args.key_prefix,
        },
        &args.skus,
        &records,
    )
    .await?;
    let report = invariants::check(
        &observed,
        &records,
        &if args.live {
            invariants::Rules::live()
        } else {
            invariants::Rules::at_rest()
        },
    );
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report.ok())
}
