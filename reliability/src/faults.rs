//! The faults, and one fault run from start to verdict: a fresh SKU of `stock` units, a flash
//! sale of `attempts` tries in flight, the fault struck once the sale is under way, recovery,
//! the wait until every hold has ended, a reconcile, and the invariant check over the state
//! and every answer the clients got.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use backend_adapters::redis::{RedisStore, RedisStoreConfig};
use reservation_core::{ReservationStore, Sku};
use serde::Serialize;
use serde_json::json;

use crate::flash_sale::{self, Buyer, FlashSale, Progress};
use crate::history::{self, Record};
use crate::invariants::{self, Report, Sources};
use crate::lock_hold::{self, LockHoldProbe};
use crate::world::{Postgres, RedisServer, Stockgate, StockgateSettings};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// No fault: the baseline every other run is compared with.
    None,
    /// `kill -9` of redis-server, restarted 1 s later from its AOF.
    RedisKill,
    /// `SIGSTOP` of redis-server for 3 s, then `SIGCONT`.
    RedisPause,
    /// `SCRIPT FLUSH`: every loaded Lua script is gone (the store must reload on NOSCRIPT).
    ScriptFlush,
    /// `kill -9` of the settlement service, restarted 1 s later.
    SettlementKill,
    /// PostgreSQL restarted with `-m immediate` (crash recovery on start).
    PostgresRestart,
    /// SIGTERM of the gateway (graceful drain), restarted once it exited.
    GatewayTerm,
    /// `kill -9` of the gateway, restarted 1 s later.
    GatewayKill,
    /// Another PostgreSQL session holds the outbox append lock for 30 s in an open
    /// transaction (a stuck ops edit, a hung pod): every confirm must fail fast with 503 and
    /// `Retry-After` meanwhile, and the sale go on once it is let go.
    PgLockHold,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::None,
        Fault::RedisKill,
        Fault::RedisPause,
        Fault::ScriptFlush,
        Fault::SettlementKill,
        Fault::PostgresRestart,
        Fault::GatewayTerm,
        Fault::GatewayKill,
        Fault::PgLockHold,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::RedisKill => "redis-kill",
            Fault::RedisPause => "redis-pause",
            Fault::ScriptFlush => "script-flush",
            Fault::SettlementKill => "settlement-kill",
            Fault::PostgresRestart => "postgres-restart",
            Fault::GatewayTerm => "gateway-term",
            Fault::GatewayKill => "gateway-kill",
            Fault::PgLockHold => "pg-lock-hold",
        }
    }

    pub fn parse(name: &str) -> anyhow::Result<Fault> {
        Fault::ALL
            .into_iter()
            .find(|f| f.name() == name)
            .with_context(|| {
                let names: Vec<_> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault `{name}`; one of {}", names.join(", "))
            })
    }
}

/// Everything a fault run starts and breaks.
pub struct World {
    pub dir: PathBuf,
    pub redis: RedisServer,
    pub postgres: Postgres,
    pub stockgate: Stockgate,
    /// What the probe saw during the last `pg-lock-hold` strike.
    pub lock_hold: Option<LockHoldProbe>,
    /// The probe's SKU and buyer, made ready by [`World::prepare_strike`].
    lock_probe: Option<(String, Buyer)>,
    ops_token: String,
    http: reqwest::Client,
}

impl World {
    /// Starts a private Redis and stockgate (settlement + gateway) on `postgres`.
    pub fn start(
        stockgate_bin: &Path,
        dir: &Path,
        postgres: Postgres,
        settings: &StockgateSettings,
    ) -> anyhow::Result<World> {
        let redis = RedisServer::start(dir)?;
        let stockgate =
            Stockgate::start(stockgate_bin, dir, &redis.url(), &postgres.url(), settings)?;
        let ops_token = stockgate.ops_token()?;
        Ok(World {
            dir: dir.to_owned(),
            redis,
            postgres,
            stockgate,
            lock_hold: None,
            lock_probe: None,
            ops_token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        })
    }

    /// Waits until the gateway can serve the sale: `/readyz` answers 200 (this pod) and
    /// `/admin/health` reports every dependency up (Redis, scripts, the settlement upstream).
    /// `/readyz` alone no longer says the upstream is healthy (it must not, so that a
    /// settlement outage keeps the pods in the load balancer), and the first health check
    /// may run before settlement listens.
    pub async fn wait_ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let ready = format!("{}/readyz", self.stockgate.base_url());
        let health = format!("{}/admin/health", self.stockgate.admin_url());
        loop {
            let last = match self.http.get(&ready).send().await {
                Ok(r) if r.status().is_success() => match self.http.get(&health).send().await {
                    Ok(r) => {
                        let body = r.text().await.unwrap_or_default();
                        let report: serde_json::Value =
                            serde_json::from_str(&body).unwrap_or_default();
                        if report["status"] == "ok" {
                            return Ok(());
                        }
                        format!("/admin/health: {body}")
                    }
                    Err(e) => format!("/admin/health: {e}"),
                },
                Ok(r) => format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                bail!("the gateway is not ready after {within:?}: {last}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Creates (or resets) a product on sale through the ops API.
    pub async fn put_product(
        &self,
        sku: &str,
        stock: u64,
        per_buyer_limit: u32,
    ) -> anyhow::Result<()> {
        let response = self
            .http
            .put(format!(
                "{}/api/v1/admin/products/{sku}",
                self.stockgate.base_url()
            ))
            .bearer_auth(&self.ops_token)
            .json(
                &json!({"name": sku, "price_cents": 1999, "total_stock": stock,
                          "per_buyer_limit": per_buyer_limit, "max_per_order": per_buyer_limit,
                          "sale_state": "on_sale"}),
            )
            .send()
            .await?;
        let status = response.status();
        anyhow::ensure!(
            status.is_success(),
            "PUT product {sku}: {status} {}",
            response.text().await.unwrap_or_default()
        );
        Ok(())
    }

    /// What `fault` needs ready before the sale starts, so that the strike itself is quick:
    /// for `pg-lock-hold` the probe's product (an edit appends to the outbox, so it could
    /// not be made while the lock is held) and buyer.
    pub async fn prepare_strike(&mut self, fault: Fault) -> anyhow::Result<()> {
        if fault == Fault::PgLockHold {
            let probe_sku = format!(
                "PROBE-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8].to_uppercase()
            );
            self.put_product(&probe_sku, 1_000, 100).await?;
            let buyer = blocking(|| self.stockgate.buyer_tokens("chaos-lock-probe-", 1))?
                .pop()
                .context("no probe buyer token")?;
            self.lock_probe = Some((probe_sku, buyer));
        }
        Ok(())
    }

    /// Strikes `fault` and recovers from it; returns what was done.
    pub async fn strike(&mut self, fault: Fault) -> anyhow::Result<String> {
        let started = Instant::now();
        let what = match fault {
            Fault::None => "nothing".to_owned(),
            Fault::RedisKill => {
                blocking(|| self.redis.kill_and_restart(Duration::from_secs(1)))?;
                "redis-server killed (SIGKILL), restarted after 1 s from its AOF".to_owned()
            }
            Fault::RedisPause => {
                self.redis.pause()?;
                tokio::time::sleep(Duration::from_secs(3)).await;
                self.redis.resume()?;
                "redis-server stopped (SIGSTOP) for 3 s, then continued".to_owned()
            }
            Fault::ScriptFlush => {
                let reply = self.redis.cli(&["SCRIPT", "FLUSH"])?;
                format!("SCRIPT FLUSH answered {reply}")
            }
            Fault::SettlementKill => {
                self.stockgate.kill_settlement();
                tokio::time::sleep(Duration::from_secs(1)).await;
                blocking(|| self.stockgate.start_settlement())?;
                "settlement killed (SIGKILL), restarted after 1 s".to_owned()
            }
            Fault::PostgresRestart => {
                blocking(|| self.postgres.restart())?;
                "PostgreSQL restarted with -m immediate (crash recovery)".to_owned()
            }
            Fault::GatewayTerm => {
                blocking(|| {
                    self.stockgate.terminate_gateway(Duration::from_secs(15))?;
                    self.stockgate.start_gateway()
                })?;
                "gateway SIGTERM (drained and exited), restarted".to_owned()
            }
            Fault::GatewayKill => {
                self.stockgate.kill_gateway();
                tokio::time::sleep(Duration::from_secs(1)).await;
                blocking(|| self.stockgate.start_gateway())?;
                "gateway killed (SIGKILL), restarted after 1 s".to_owned()
            }
            Fault::PgLockHold => {
                let (probe_sku, buyer) = self
                    .lock_probe
                    .take()
                    .context("pg-lock-hold struck without prepare_strike")?;
                let probe = lock_hold::hold_outbox_lock(
                    &self.postgres.url(),
                    &self.stockgate.base_url(),
                    &probe_sku,
                    &buyer,
                    lock_hold::HOLD,
                )
                .await?;
                let summary = probe.summary();
                self.lock_hold = Some(probe);
                summary
            }
        };
        Ok(format!("{what}; {:.1} s", started.elapsed().as_secs_f64()))
    }

    async fn store(&self) -> anyhow::Result<RedisStore> {
        Ok(RedisStore::connect(
            &self.redis.url(),
            RedisStoreConfig {
                prefix: self.stockgate.key_prefix.clone(),
                ..RedisStoreConfig::default()
            },
        )
        .await?)
    }

    /// Waits until no unit of `sku` is held or confirming (holds expire, the reconciler
    /// resolves stuck confirms); returns how long that took.
    pub async fn wait_drained(&self, sku: &str, within: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let store = self.store().await?;
        let sku = Sku::parse(sku)?;
        loop {
            let snapshot = store.snapshot(&sku).await;
            if let Ok(s) = &snapshot
                && s.held == 0
                && s.confirming == 0
            {
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                bail!("{sku} not drained after {within:?}: {snapshot:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// Runs process management (spawning, waiting for ports, `pg_ctl`) without stalling the
/// runtime's other tasks: the flash sale keeps going while a fault is struck.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The size of a fault run.
#[derive(Clone, Debug, Serialize)]
pub struct RunSize {
    pub stock: u64,
    pub attempts: usize,
    pub buyers: usize,
    pub concurrency: usize,
    pub per_buyer_limit: u32,
    pub release_every: usize,
    /// The fault strikes once this many attempts have finished.
    pub strike_after: usize,
}

impl RunSize {
    /// The flash sale: S = 1,000 units, 10,000 attempts.
    pub fn full() -> RunSize {
        RunSize {
            stock: 1_000,
            attempts: 10_000,
            buyers: 5_000,
            concurrency: 200,
            per_buyer_limit: 2,
            release_every: 10,
            strike_after: 500,
        }
    }
}

/// The verdict of one fault run.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub fault: Fault,
    pub sku: String,
    pub size: RunSize,
    pub struck: String,
    pub load_secs: f64,
    pub drained_secs: f64,
    /// Answers by (operation, status) — `none` for no answer.
    pub answers: std::collections::BTreeMap<String, usize>,
    /// What the reconciler found (SKU report) before the check.
    pub reconcile: serde_json::Value,
    /// SQL `sold` sampled every 100 ms while the sale and the fault ran.
    pub sql_sold_watch: SoldWatch,
    /// `pg-lock-hold` only: the confirms timed while the lock was held.
    pub lock_hold: Option<LockHoldProbe>,
    pub report: Report,
    pub history_file: PathBuf,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.report.ok()
    }
}

/// One run: a fresh SKU, the sale, the fault, recovery, drain, reconcile, check.
pub async fn run(world: &mut World, fault: Fault, size: &RunSize) -> anyhow::Result<Outcome> {
    if fault == Fault::PostgresRestart && !world.postgres.can_restart() {
        bail!(
            "the postgres-restart fault needs a private PostgreSQL (stockgate-chaos --private-postgres)"
        );
    }
    world.wait_ready(Duration::from_secs(30)).await?;
    let sku = format!(
        "CHAOS-{}-{}",
        fault.name().to_uppercase(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    world
        .put_product(&sku, size.stock, size.per_buyer_limit)
        .await?;
    world.prepare_strike(fault).await?;
    let buyers = blocking(|| {
        world
            .stockgate
            .buyer_tokens(&format!("{}-b", sku.to_lowercase()), size.buyers)
    })?;
    let sale = Arc::new(FlashSale {
        base_url: world.stockgate.base_url(),
        sku: sku.clone(),
        attempts: size.attempts,
        concurrency: size.concurrency,
        buyers,
        max_qty: size.per_buyer_limit,
        release_every: size.release_every,
        request_timeout: Duration::from_secs(10),
        give_up_after: Duration::from_secs(60),
    });
    let progress = Arc::new(Progress::default());
    let started = Instant::now();
    let load = tokio::spawn(flash_sale::run(sale, progress.clone()));
    let sold_seen = Arc::new(Mutex::new(SoldWatch::default()));
    let watch = tokio::spawn(watch_sql_sold(
        world.postgres.url(),
        sku.clone(),
        sold_seen.clone(),
    ));

    while progress.finished() < size.strike_after && !load.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let struck = world.strike(fault).await?;
    let records = load.await??;
    let load_secs = started.elapsed().as_secs_f64();
    watch.abort();
    let sql_sold_watch = sold_seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    world.wait_ready(Duration::from_secs(30)).await?;

    // Holds end by their TTL; stuck confirms by the reconciler after its grace.
    let drained = world.wait_drained(&sku, Duration::from_secs(120)).await?;
    let reconcile = blocking(|| world.stockgate.reconcile_repair())?;
    let reconcile = reconcile["skus"]
        .as_array()
        .and_then(|skus| skus.iter().find(|s| s["sku"] == sku.as_str()))
        .cloned()
        .unwrap_or_default();

    let history_file = world.dir.join(format!("{}.history.jsonl", fault.name()));
    history::write_jsonl(&history_file, &records)?;
    let observed = invariants::observe(
        &Sources {
            database_url: &world.postgres.url(),
            redis_url: &world.redis.url(),
            redis_key_prefix: &world.stockgate.key_prefix,
        },
        std::slice::from_ref(&sku),
        &records,
    )
    .await?;
    let mut report = invariants::check(&observed, &records, true);
    if sql_sold_watch.max > size.stock as i64 {
        report.violations.push(invariants::Violation {
            invariant: "sql_sold_within_stock",
            detail: format!(
                "SQL sold reached {} of {} during the run",
                sql_sold_watch.max, size.stock
            ),
        });
    }
    Ok(Outcome {
        fault,
        sku,
        size: size.clone(),
        struck,
        load_secs,
        drained_secs: drained.as_secs_f64(),
        answers: tally_answers(&records),
        reconcile,
        sql_sold_watch,
        lock_hold: world.lock_hold.take(),
        report,
        history_file,
    })
}

/// The highest SQL `sold` seen while the run went on (reads fail while PostgreSQL is down).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SoldWatch {
    pub samples: usize,
    pub max: i64,
}

/// Samples SQL `sold` of `sku` into `seen` every 100 ms until the task is aborted.
async fn watch_sql_sold(database_url: String, sku: String, seen: Arc<Mutex<SoldWatch>>) {
    loop {
        if let Ok(db) = backend_adapters::sql::Db::connect(&database_url, 1).await {
            while let Ok(sold) =
                sqlx::query_scalar::<_, i64>("SELECT sold FROM products WHERE sku = $1")
                    .bind(&sku)
                    .fetch_one(db.pool())
                    .await
            {
                {
                    let mut watch = seen.lock().unwrap_or_else(|e| e.into_inner());
                    watch.samples += 1;
                    watch.max = watch.max.max(sold);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // PostgreSQL is down or restarting: connect again.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn tally_answers(records: &[Record]) -> std::collections::BTreeMap<String, usize> {
    let mut answers = std::collections::BTreeMap::new();
    for r in records {
        let status = r.status.map_or("none".to_owned(), |s| s.to_string());
        *answers
            .entry(format!("{:?} {status}", r.op).to_lowercase())
            .or_default() += 1;
    }
    answers
}
