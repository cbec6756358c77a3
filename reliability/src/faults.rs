//! The faults and the profiles, and one fault run from start to verdict: a fresh SKU of `stock`
//! units, a flash sale of `attempts` tries in flight (buyers as the profile has them, ops
//! cancelling and restocking in the churn profile), the fault struck once the sale is under
//! way, recovery, the wait until every hold has ended and every event is published, a
//! reconcile, and the invariant check over the state and every answer the clients got.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use backend_adapters::redis::{RedisStore, RedisStoreConfig};
use reservation_core::{ReservationStore, Sku};
use serde::Serialize;
use serde_json::json;
use strum::{EnumString, IntoStaticStr};

use backend_adapters::amqp::AmqpSettings;

use crate::broker::{Collector, DeliveryReport, check_delivery, restart_rabbitmq};
use crate::churn::{self, Churn};
use crate::endpoint::Endpoint;
use crate::flash_sale::{self, Buyer, FlashSale, Progress};
use crate::history::{self, Record, now_ms};
use crate::invariants::{self, Report, Rules, Sources};
use crate::lock_hold::{self, LockHoldProbe};
use crate::world::{AmqpSink, Postgres, RedisServer, Stockgate, StockgateSettings};

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
    /// Redis fails over to a replica that missed the last writes: the replication link is cut,
    /// 1 s later the primary is killed (SIGKILL), the replica promoted (`REPLICAOF NO ONE`)
    /// and the services' stable endpoint switched to it. Needs a world started with
    /// [`World::start_failover_ready`].
    RedisFailover,
    /// The AMQP broker of the relay's broker sink restarted (RabbitMQ `stop_app`, then
    /// `start_app`): the relay fails its rounds, reconnects, and every outbox event reaches
    /// the broker's consumer, once after dropping repeats, in order per order. Needs a world
    /// started with [`World::start_with_broker`].
    BrokerRestart,
}

impl Fault {
    pub const ALL: [Fault; 11] = [
        Fault::None,
        Fault::RedisKill,
        Fault::RedisPause,
        Fault::ScriptFlush,
        Fault::SettlementKill,
        Fault::PostgresRestart,
        Fault::GatewayTerm,
        Fault::GatewayKill,
        Fault::PgLockHold,
        Fault::RedisFailover,
        Fault::BrokerRestart,
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
            Fault::RedisFailover => "redis-failover",
            Fault::BrokerRestart => "broker-restart",
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

/// Who buys and who else acts during the sale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, IntoStaticStr, EnumString)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Profile {
    /// Buyers confirm as soon as their hold is made; nothing else touches the SKU.
    Flash,
    /// Buyers think before they confirm, up to a quarter past the hold TTL (some confirm past
    /// the reconcile grace, some after expiry), with the reconciler and the sweeper on short
    /// intervals: maintenance runs while confirms do ([`Profile::settings`]).
    SlowBuyers,
    /// Ops cancel a fifth of the orders buyers are told about and restock the SKU by a few
    /// units every `RunSize::restock_every` while the sale runs (`crate::churn`); buyers think
    /// up to 1 s, so the sale lasts long enough for ops to act in it.
    Churn,
}

impl Profile {
    pub const ALL: [Profile; 3] = [Profile::Flash, Profile::SlowBuyers, Profile::Churn];

    /// As the command line and the report spell it: the variant in kebab-case.
    pub fn name(self) -> &'static str {
        self.into()
    }

    pub fn parse(name: &str) -> anyhow::Result<Profile> {
        name.parse()
            .ok()
            .with_context(|| format!("unknown profile `{name}`; one of flash, slow-buyers, churn"))
    }

    /// The stockgate settings the profile runs with, from `base`. Slow buyers: the reconciler
    /// and the sweeper every 100 ms, and a confirming grace just above the settle timeout (it
    /// must exceed it), below the hold TTL (the reconciler once judged holds by the reservation's age: a buyer
    /// confirming after the grace lost its hold under its order; issue 13).
    pub fn settings(self, base: StockgateSettings) -> StockgateSettings {
        match self {
            Profile::Flash | Profile::Churn => base,
            Profile::SlowBuyers => StockgateSettings {
                confirming_grace_ms: base.settle_timeout_ms + 500,
                reconcile_interval_ms: 100,
                sweep_interval_ms: 100,
                ..base
            },
        }
    }

    /// The longest think time of a buyer with holds of `hold_ttl`.
    fn think_time(self, hold_ttl: Duration) -> Duration {
        match self {
            Profile::Flash => Duration::ZERO,
            Profile::Churn => Duration::from_secs(1).min(hold_ttl / 4),
            Profile::SlowBuyers => hold_ttl.mul_f64(1.25),
        }
    }
}

/// Everything a fault run starts and breaks.
pub struct World {
    pub dir: PathBuf,
    /// The Redis primary (after a failover: the promoted replica).
    pub redis: RedisServer,
    /// Failover-ready worlds: the replica, following the primary through `link`, and the
    /// stable endpoint the services use.
    replica: Option<RedisServer>,
    link: Option<Endpoint>,
    endpoint: Option<Endpoint>,
    /// How many Redis servers this world has started (their directories are numbered).
    redis_started: usize,
    /// The window in which the last `redis-failover` strike lost writes (Unix ms).
    pub lost_window: Option<(u64, u64)>,
    pub postgres: Postgres,
    pub settings: StockgateSettings,
    pub stockgate: Stockgate,
    /// What the probe saw during the last `pg-lock-hold` strike.
    pub lock_hold: Option<LockHoldProbe>,
    /// The probe's SKU and buyer, made ready by [`World::prepare_strike`].
    lock_probe: Option<(String, Buyer)>,
    ops_token: String,
    http: reqwest::Client,
    /// Worlds started with [`World::start_with_broker`]: the relay's broker and the consumer
    /// of its queue.
    pub broker: Option<WorldBroker>,
}

/// The AMQP broker a world's relay publishes to, and what its consumer received.
pub struct WorldBroker {
    pub settings: AmqpSettings,
    pub collector: Collector,
}

impl World {
    /// Starts a private Redis and stockgate (settlement + gateway) on `postgres`.
    pub fn start(
        stockgate_bin: &Path,
        dir: &Path,
        postgres: Postgres,
        settings: &StockgateSettings,
    ) -> anyhow::Result<World> {
        World::start_inner(stockgate_bin, dir, postgres, settings, false, None)
    }

    /// [`World::start`] whose outbox relay publishes to the AMQP broker of `broker` too (on a
    /// queue of its own, `/queue/chaos-<random>`, which replaces `broker.address`), with a
    /// consumer of that queue, so that `broker-restart` can strike and every run checks what
    /// the broker delivered. Fails at once when the broker does not answer.
    pub fn start_with_broker(
        stockgate_bin: &Path,
        dir: &Path,
        postgres: Postgres,
        settings: &StockgateSettings,
        mut broker: AmqpSettings,
    ) -> anyhow::Result<World> {
        broker.address = format!("/queue/chaos-{}", uuid::Uuid::new_v4().simple());
        // The link declares the queue (durable) before the relay sends anything to it.
        let probe = backend_adapters::amqp::AmqpPublisher::new(broker.clone());
        tokio::runtime::Handle::current()
            .block_on(probe.connect())
            .with_context(|| {
                format!(
                    "no AMQP 1.0 broker at {} (RabbitMQ: rabbitmq-plugins enable rabbitmq_amqp1_0)",
                    broker.target.endpoint()
                )
            })?;
        World::start_inner(stockgate_bin, dir, postgres, settings, false, Some(broker))
    }

    /// [`World::start`] with a replica of the Redis primary and a stable endpoint in front
    /// of it, so that `redis-failover` can strike (every other fault runs the same).
    pub fn start_failover_ready(
        stockgate_bin: &Path,
        dir: &Path,
        postgres: Postgres,
        settings: &StockgateSettings,
    ) -> anyhow::Result<World> {
        World::start_inner(stockgate_bin, dir, postgres, settings, true, None)
    }

    fn start_inner(
        stockgate_bin: &Path,
        dir: &Path,
        postgres: Postgres,
        settings: &StockgateSettings,
        failover_ready: bool,
        broker: Option<AmqpSettings>,
    ) -> anyhow::Result<World> {
        let redis = RedisServer::start(dir)?;
        let endpoint = failover_ready
            .then(|| Endpoint::start(redis.port))
            .transpose()?;
        let redis_url = endpoint.as_ref().map_or_else(|| redis.url(), Endpoint::url);
        let sink = broker.as_ref().map(|b| AmqpSink {
            url: b.target.endpoint(),
            address: b.address.clone(),
            user: b.user.clone(),
            key: b.key.clone(),
        });
        let stockgate = Stockgate::start(
            stockgate_bin,
            dir,
            &redis_url,
            &postgres.url(),
            settings,
            sink.as_ref(),
        )?;
        let ops_token = stockgate.ops_token()?;
        let mut world = World {
            dir: dir.to_owned(),
            redis,
            replica: None,
            link: None,
            endpoint,
            redis_started: 1,
            lost_window: None,
            postgres,
            settings: settings.clone(),
            stockgate,
            lock_hold: None,
            lock_probe: None,
            ops_token,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
            broker: broker.map(|settings| WorldBroker {
                collector: Collector::start(settings.clone()),
                settings,
            }),
        };
        if failover_ready {
            world.start_replica()?;
        }
        Ok(world)
    }

    /// A new replica of the primary, following it through a link the fault can cut; returns
    /// once it has synced.
    fn start_replica(&mut self) -> anyhow::Result<()> {
        let link = Endpoint::start(self.redis.port)?;
        let name = format!("redis-{}", self.redis_started);
        self.replica = Some(RedisServer::start_replica(&self.dir, &name, link.port)?);
        self.redis_started += 1;
        self.link = Some(link);
        Ok(())
    }

    /// The ops bearer token.
    pub fn ops_token(&self) -> &str {
        &self.ops_token
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

    /// Creates (or resets) a product on sale through the ops API. The gateway's `/readyz` no
    /// longer waits for its upstream (issue 14.5): right after a start its health check may not
    /// have found settlement yet, and it refuses with 503 `upstream_unavailable` without
    /// forwarding, which is retried here for up to 30 s.
    pub async fn put_product(
        &self,
        sku: &str,
        stock: u64,
        per_buyer_limit: u32,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
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
            if status.is_success() {
                return Ok(());
            }
            let body = response.text().await.unwrap_or_default();
            let not_forwarded = status == reqwest::StatusCode::SERVICE_UNAVAILABLE
                && body.contains("\"upstream_unavailable\"");
            if !not_forwarded || Instant::now() > deadline {
                bail!("PUT product {sku}: {status} {body}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// What `fault` needs ready before the sale starts, so that the strike itself is quick:
    /// for `pg-lock-hold` the probe's product (an edit appends to the outbox, so it could
    /// not be made while the lock is held) and buyer.
    pub async fn prepare_strike(&mut self, fault: Fault) -> anyhow::Result<()> {
        if fault == Fault::RedisFailover {
            ensure_failover_ready(self.endpoint.is_some())?;
            // A failover before promoted the replica: the new primary gets one of its own.
            if self.replica.is_none() {
                blocking(|| self.start_replica())?;
            }
        }
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
            Fault::RedisFailover => self.fail_over().await?,
            Fault::BrokerRestart => {
                let broker = self.broker.as_ref().context(
                    "broker-restart needs a world started with World::start_with_broker",
                )?;
                let took = restart_rabbitmq(&broker.settings).await?;
                format!(
                    "RabbitMQ restarted (rabbitmqctl stop_app, start_app), AMQP 1.0 links taken again after {:.1} s",
                    took.as_secs_f64()
                )
            }
        };
        Ok(format!("{what}; {:.1} s", started.elapsed().as_secs_f64()))
    }

    /// Cuts the replication link, lets the primary take writes for 1 s that the replica never
    /// sees, kills the primary, promotes the replica and switches the endpoint to it.
    async fn fail_over(&mut self) -> anyhow::Result<String> {
        ensure_failover_ready(self.endpoint.is_some())?;
        let (Some(link), Some(mut replica)) = (self.link.take(), self.replica.take()) else {
            bail!("redis-failover struck without a replica (prepare_strike starts one)");
        };
        let cut_at = now_ms();
        link.cut();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let replica_at = blocking(|| replica.repl_offset())?;
        let primary_at = blocking(|| self.redis.repl_offset())?;
        blocking(|| self.redis.kill());
        blocking(|| replica.promote())?;
        let endpoint = self.endpoint.as_ref().context("no endpoint")?;
        endpoint.switch(replica.port);
        let switched_at = now_ms();
        drop(link);
        // The promoted replica is the primary from now on; the dead one is dropped.
        let dead = std::mem::replace(&mut self.redis, replica);
        blocking(|| drop(dead));
        // Writes the replica may not have received before the cut count as lost too: the
        // window starts a second early.
        self.lost_window = Some((cut_at.saturating_sub(1_000), switched_at));
        Ok(format!(
            "replication cut, primary went on {} ms and {} bytes of replication stream past the replica (at {replica_at}), killed (SIGKILL), replica promoted (REPLICAOF NO ONE), endpoint switched",
            switched_at - cut_at,
            primary_at.saturating_sub(replica_at)
        ))
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
    /// resolves stuck confirms) and the relay has published every outbox event (a cancelled
    /// order's units are back in the store); returns how long that took.
    pub async fn wait_drained(&self, sku: &str, within: Duration) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let store = self.store().await?;
        let db = backend_adapters::sql::Db::connect(&self.postgres.url(), 1).await?;
        let sku = Sku::parse(sku)?;
        loop {
            let snapshot = store.snapshot(&sku).await;
            let outbox = backend_adapters::sql::outbox::lag(
                &db,
                backend_adapters::sql::outbox::Delivery::Redis,
            )
            .await;
            if let (Ok(s), Ok((0, _))) = (&snapshot, &outbox)
                && s.held == 0
                && s.confirming == 0
            {
                db.close().await;
                return Ok(started.elapsed());
            }
            if started.elapsed() > within {
                bail!("{sku} not drained after {within:?}: {snapshot:?}, outbox {outbox:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

fn ensure_failover_ready(ready: bool) -> anyhow::Result<()> {
    anyhow::ensure!(
        ready,
        "redis-failover needs a world started with World::start_failover_ready"
    );
    Ok(())
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
    /// Churn profile: ops restock 1..=`restock_max_units` units every `restock_every`.
    pub restock_every: Duration,
    pub restock_max_units: u32,
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
            restock_every: Duration::from_millis(100),
            restock_max_units: 10,
        }
    }
}

/// The verdict of one fault run.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub fault: Fault,
    pub profile: Profile,
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
    /// `redis-failover` only: the window whose Redis writes were lost (Unix ms).
    pub lost_window: Option<(u64, u64)>,
    /// Worlds with a broker: what it delivered against the whole outbox.
    pub broker: Option<DeliveryReport>,
    pub report: Report,
    pub history_file: PathBuf,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.report.ok()
    }
}

/// One run: a fresh SKU, the sale (buyers and ops as `profile` has them), the fault,
/// recovery, drain, reconcile, check.
pub async fn run(
    world: &mut World,
    fault: Fault,
    profile: Profile,
    size: &RunSize,
) -> anyhow::Result<Outcome> {
    if fault == Fault::BrokerRestart && world.broker.is_none() {
        bail!("the broker-restart fault needs a world with a broker (World::start_with_broker)");
    }
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
    world.lost_window = None;
    let buyers = blocking(|| {
        world
            .stockgate
            .buyer_tokens(&format!("{}-b", sku.to_lowercase()), size.buyers)
    })?;
    let hold_ttl = Duration::from_secs(world.settings.hold_ttl_secs);
    let (placed, placed_rx) = tokio::sync::mpsc::unbounded_channel();
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
        think_time: profile.think_time(hold_ttl),
        placed: (profile == Profile::Churn).then_some(placed),
    });
    let ops_stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ops = (profile == Profile::Churn).then(|| {
        tokio::spawn(churn::run(
            Churn {
                base_url: world.stockgate.base_url(),
                ops_token: world.ops_token.clone(),
                sku: sku.clone(),
                cancel_share: 0.2,
                restock_every: size.restock_every,
                restock_max_units: size.restock_max_units,
                first_attempt: size.attempts,
            },
            placed_rx,
            ops_stop.clone(),
        ))
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
    let mut records = load.await??;
    ops_stop.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(ops) = ops {
        records.extend(ops.await??);
    }
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

    let history_file = world.dir.join(format!(
        "{}-{}-{}.history.jsonl",
        fault.name(),
        profile.name(),
        &sku[sku.len() - 8..]
    ));
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
    let rules = Rules {
        at_rest: true,
        initial_stock: [(sku.clone(), size.stock as i64)].into(),
        hold_ttl_ms: Some(hold_ttl.as_millis() as u64),
        // Without a fault every confirm of a live hold must go through.
        confirms_in_ttl_succeed: fault == Fault::None,
        redis_lost_writes: world.lost_window,
    };
    let mut report = invariants::check(&observed, &records, &rules);
    if sql_sold_watch.max_over_total > 0 {
        report.violations.push(invariants::Violation {
            invariant: "sql_sold_within_stock",
            detail: format!(
                "SQL sold was {} above the total stock during the run (sold at most {})",
                sql_sold_watch.max_over_total, sql_sold_watch.max
            ),
        });
    }
    let broker = match &world.broker {
        Some(broker) => Some(broker_delivery(world, broker, &mut report).await?),
        None => None,
    };
    // Only a failover may leave the counters for the repair: everything else keeps Redis and
    // SQL in step by itself once at rest.
    if reconcile["repaired"] == true && fault != Fault::RedisFailover {
        report.violations.push(invariants::Violation {
            invariant: "counters_agree_without_repair",
            detail: format!("the reconciler had to repair {sku}: {reconcile}"),
        });
    }
    Ok(Outcome {
        fault,
        profile,
        sku,
        size: size.clone(),
        struck,
        load_secs,
        drained_secs: drained.as_secs_f64(),
        answers: tally_answers(&records),
        reconcile,
        sql_sold_watch,
        lock_hold: world.lock_hold.take(),
        lost_window: world.lost_window,
        broker,
        report,
        history_file,
    })
}

/// Compares what the world's broker consumer received with every row of the outbox (the relay
/// has published them all: [`World::wait_drained`]); a lost, repeated-out-of-order, unknown or
/// altered event is a violation.
async fn broker_delivery(
    world: &World,
    broker: &WorldBroker,
    report: &mut Report,
) -> anyhow::Result<DeliveryReport> {
    let db = backend_adapters::sql::Db::connect(&world.postgres.url(), 1).await?;
    let outbox: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, topic, payload FROM outbox ORDER BY id")
            .fetch_all(db.pool())
            .await?;
    db.close().await;
    let ids = outbox.iter().map(|(id, _, _)| id.to_string()).collect();
    let delivered = match broker
        .collector
        .wait_for(&ids, Duration::from_secs(60))
        .await
    {
        Ok(received) => check_delivery(&outbox, &received),
        // Some never came: the check names them.
        Err(_) => check_delivery(&outbox, &broker.collector.received()),
    };
    if !delivered.ok() {
        report.violations.push(invariants::Violation {
            invariant: "broker_events_exactly_once_in_order",
            detail: format!(
                "{} lost (first {:?}), {} unknown, {} out of order per order, {} altered",
                delivered.lost.len(),
                &delivered.lost[..delivered.lost.len().min(5)],
                delivered.unknown.len(),
                delivered.out_of_order.len(),
                delivered.mismatched.len()
            ),
        });
    }
    Ok(delivered)
}

/// The highest SQL `sold` seen while the run went on (reads fail while PostgreSQL is down),
/// and the most it was ever above the total stock of the same sample (restocks move it).
#[derive(Clone, Debug, Default, Serialize)]
pub struct SoldWatch {
    pub samples: usize,
    pub max: i64,
    pub max_over_total: i64,
}

/// Samples SQL `sold` of `sku` into `seen` every 100 ms until the task is aborted.
async fn watch_sql_sold(database_url: String, sku: String, seen: Arc<Mutex<SoldWatch>>) {
    loop {
        if let Ok(db) = backend_adapters::sql::Db::connect(&database_url, 1).await {
            while let Ok((sold, total)) = sqlx::query_as::<_, (i64, i64)>(
                "SELECT sold, total_stock FROM products WHERE sku = $1",
            )
            .bind(&sku)
            .fetch_one(db.pool())
            .await
            {
                {
                    let mut watch = seen.lock().unwrap_or_else(|e| e.into_inner());
                    watch.samples += 1;
                    watch.max = watch.max.max(sold);
                    watch.max_over_total = watch.max_over_total.max(sold - total);
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

#[cfg(test)]
mod tests {
    use super::Profile;

    #[test]
    fn profile_names_are_serdes_and_parse_back() {
        for profile in Profile::ALL {
            assert_eq!(serde_json::json!(profile), profile.name());
            assert_eq!(Profile::parse(profile.name()).unwrap(), profile);
        }
        assert_eq!(Profile::SlowBuyers.name(), "slow-buyers");
        let error = Profile::parse("slow_buyers").unwrap_err().to_string();
        assert_eq!(
            error,
            "unknown profile `slow_buyers`; one of flash, slow-buyers, churn"
        );
    }
}
