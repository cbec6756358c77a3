//! The system under test as real processes on loopback, each of which a fault can kill, pause
//! or restart: a private `redis-server` (AOF on, its own port and directory), PostgreSQL
//! (a private cluster that can be restarted, or a database/schema on a server that is already
//! running), and the `stockgate settlement` and `stockgate gateway` processes.
//!
//! Signals go through `kill(1)`: no unsafe code, and the same commands an operator would type.

use std::fs::OpenOptions;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};

/// A free loopback port (the OS picks it; a race with another process is unlikely enough).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(free_ports::<1>()?[0])
}

/// `N` distinct free loopback ports: all held open until each is picked, so the OS cannot
/// hand out one twice (one at a time it may: a closed port is free again at once, and a
/// gateway given the same port for two listeners refuses to start).
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

/// Waits until something accepts connections on `port`.
pub fn wait_for_port(port: u16, within: Duration) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on 127.0.0.1:{port} after {within:?}")
}

/// Sends `signal` (`STOP`, `CONT`, `TERM`, `KILL`) to `pid`.
pub fn signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// Opens `dir/name.log` for appending (restarts add to the same log).
fn log_file(dir: &Path, name: &str) -> anyhow::Result<Stdio> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))?;
    Ok(Stdio::from(file))
}

fn spawn_logged(mut command: Command, dir: &Path, name: &str) -> anyhow::Result<Child> {
    command
        .stdin(Stdio::null())
        .stdout(log_file(dir, name)?)
        .stderr(log_file(dir, name)?);
    command
        .spawn()
        .with_context(|| format!("starting {name} ({command:?})"))
}

/// Kills and reaps a child (already gone is fine).
fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

// --- Redis -----------------------------------------------------------------------------

/// A private `redis-server` with the append-only file on (`appendfsync everysec`: Redis writes
/// each command to the AOF before it answers, so `kill -9` loses nothing acknowledged).
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    /// The primary's port while this server is a replica.
    replica_of: Option<u16>,
    child: Option<Child>,
}

impl RedisServer {
    /// A primary in `dir/redis`.
    pub fn start(dir: &Path) -> anyhow::Result<RedisServer> {
        RedisServer::start_as(dir, "redis", None)
    }

    /// A replica of the server on `primary_port`, in `dir/<name>`; returns once it has synced.
    pub fn start_replica(dir: &Path, name: &str, primary_port: u16) -> anyhow::Result<RedisServer> {
        let replica = RedisServer::start_as(dir, name, Some(primary_port))?;
        replica.wait_in_sync(Duration::from_secs(30))?;
        Ok(replica)
    }

    fn start_as(dir: &Path, name: &str, replica_of: Option<u16>) -> anyhow::Result<RedisServer> {
        let dir = dir.join(name);
        std::fs::create_dir_all(&dir)?;
        let mut redis = RedisServer {
            port: free_port()?,
            dir,
            replica_of,
            child: None,
        };
        redis.launch()?;
        Ok(redis)
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--appendonly", "yes", "--appendfsync", "everysec"])
            .args(["--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir);
        if let Some(primary) = self.replica_of {
            command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        self.child = Some(spawn_logged(command, &self.dir, "redis")?);
        wait_for_port(self.port, Duration::from_secs(10))?;
        // The port opens before an AOF is loaded: wait until Redis answers commands.
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let out = Command::new("redis-cli")
                .args(["-p", &self.port.to_string(), "PING"])
                .output()?;
            if String::from_utf8_lossy(&out.stdout).trim() == "PONG" {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("redis on port {} does not answer PING", self.port)
    }

    /// A field of `INFO replication` (`role`, `master_link_status`, `master_repl_offset`, ...).
    pub fn replication_field(&self, field: &str) -> anyhow::Result<String> {
        let info = self.cli(&["INFO", "replication"])?;
        info.lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
            .with_context(|| format!("no {field} in INFO replication of port {}", self.port))
    }

    /// The replication offset this server has reached (as primary or replica).
    pub fn repl_offset(&self) -> anyhow::Result<u64> {
        Ok(self.replication_field("master_repl_offset")?.parse()?)
    }

    /// Waits until this replica's link to its primary is up and the initial sync is done.
    fn wait_in_sync(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            let up = self.replication_field("master_link_status").ok();
            let syncing = self.replication_field("master_sync_in_progress").ok();
            if up.as_deref() == Some("up") && syncing.as_deref() == Some("0") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "replica on port {} not in sync after {within:?} (link {up:?})",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `REPLICAOF NO ONE`: this replica becomes a primary with what it has.
    pub fn promote(&mut self) -> anyhow::Result<()> {
        let reply = self.cli(&["REPLICAOF", "NO", "ONE"])?;
        ensure!(reply == "OK", "REPLICAOF NO ONE answered {reply}");
        self.replica_of = None;
        Ok(())
    }

    /// `kill -9`, for good.
    pub fn kill(&mut self) {
        kill_child(&mut self.child);
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> anyhow::Result<u32> {
        Ok(self.child.as_ref().context("redis is not running")?.id())
    }

    /// `kill -9`, then a restart on the same port and directory (it reloads the AOF).
    pub fn kill_and_restart(&mut self, down_for: Duration) -> anyhow::Result<()> {
        kill_child(&mut self.child);
        std::thread::sleep(down_for);
        self.launch()
    }

    pub fn pause(&self) -> anyhow::Result<()> {
        signal(self.pid()?, "STOP")
    }

    pub fn resume(&self) -> anyhow::Result<()> {
        signal(self.pid()?, "CONT")
    }

    /// Runs a command on this server with `redis-cli` and returns its output.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()?;
        ensure!(out.status.success(), "redis-cli {args:?} failed");
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &self.child {
            let _ = signal(c.id(), "CONT");
        }
        kill_child(&mut self.child);
    }
}

// --- PostgreSQL ------------------------------------------------------------------------

/// Where the settlement's data lives.
pub enum Postgres {
    /// A URL on a server that is already running (a scratch schema or database); it cannot
    /// be restarted by a fault.
    Existing { url: String },
    /// A cluster of its own (`initdb` into the run's directory, its own port), run as the
    /// `postgres` user when this process is root (PostgreSQL refuses to run as root).
    Private {
        dir: PathBuf,
        port: u16,
        bin: PathBuf,
    },
}

impl Postgres {
    pub fn existing(url: impl Into<String>) -> Postgres {
        Postgres::Existing { url: url.into() }
    }

    /// Creates and starts a private cluster with a `chaos` database (trust auth, loopback).
    pub fn start_private(dir: &Path) -> anyhow::Result<Postgres> {
        let bin = postgres_bin_dir()?;
        let dir = dir.join("pgdata");
        std::fs::create_dir_all(&dir)?;
        if running_as_root()? {
            // PostgreSQL refuses to run as root: the cluster belongs to `postgres`.
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:postgres"]).arg(&dir);
            run(chown)?;
        }
        let pg = Postgres::Private {
            dir,
            port: free_port()?,
            bin,
        };
        pg.pg_tool(
            "initdb",
            &[
                "-D",
                ".",
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        )?;
        pg.pg_ctl(&["start"])?;
        let mut create = Command::new("psql");
        create.args([&pg.admin_url(), "-qAtc", "CREATE DATABASE chaos"]);
        run(create)?;
        Ok(pg)
    }

    pub fn url(&self) -> String {
        match self {
            Postgres::Existing { url } => url.clone(),
            Postgres::Private { port, .. } => {
                format!("postgres://postgres@127.0.0.1:{port}/chaos")
            }
        }
    }

    fn admin_url(&self) -> String {
        match self {
            Postgres::Existing { url } => url.clone(),
            Postgres::Private { port, .. } => {
                format!("postgres://postgres@127.0.0.1:{port}/postgres")
            }
        }
    }

    /// A crash-like restart (`pg_ctl restart -m immediate`: no checkpoint, WAL recovery on
    /// start), as a lost node or an OOM kill would do.
    pub fn restart(&self) -> anyhow::Result<()> {
        match self {
            Postgres::Existing { .. } => bail!("a shared PostgreSQL is never restarted by a test"),
            Postgres::Private { .. } => self.pg_ctl(&["restart", "-m", "immediate"]),
        }
    }

    pub fn can_restart(&self) -> bool {
        matches!(self, Postgres::Private { .. })
    }

    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let Postgres::Private { dir, port, .. } = self else {
            bail!("not a private cluster")
        };
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200",
            dir.display()
        );
        let log = dir.join("postgres.log");
        let mut full = vec!["-D", ".", "-w", "-t", "60", "-l"];
        let log = log.to_string_lossy().into_owned();
        full.push(&log);
        full.extend(["-o", &options]);
        full.extend(args);
        self.pg_tool("pg_ctl", &full)
    }

    /// Runs one of PostgreSQL's programs in the data directory, as `postgres` when this
    /// process is root.
    fn pg_tool(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let Postgres::Private { bin, dir, .. } = self else {
            bail!("not a private cluster")
        };
        let program = bin.join(tool);
        let mut command = if running_as_root()? {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        command.args(args).current_dir(dir);
        run(command).map(drop)
    }
}

fn running_as_root() -> anyhow::Result<bool> {
    Ok(Command::new("id").arg("-u").output()?.stdout == b"0\n")
}

/// Runs a command to its end and returns what it printed; a failure carries its output.
fn run(mut command: Command) -> anyhow::Result<Vec<u8>> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out.stdout)
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Postgres::Private { .. } = self {
            let _ = self.pg_ctl(&["stop", "-m", "immediate"]);
        }
    }
}

/// `/usr/lib/postgresql/<newest>/bin`, where Debian keeps initdb and pg_ctl.
fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("PostgreSQL server binaries (apt-get install -y postgresql)")?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .context("no /usr/lib/postgresql/<version>/bin")
}

// --- stockgate -------------------------------------------------------------------------

/// Tunables of the stockgate processes a fault run starts.
#[derive(Clone, Debug)]
pub struct StockgateSettings {
    pub hold_ttl_secs: u64,
    /// Deadline of the gateway's call to settlement (the ambiguous-confirm timeout).
    pub settle_timeout_ms: u64,
    /// How long the reconciler leaves a `confirming` hold to its gateway; must exceed
    /// `settle_timeout_ms`.
    pub confirming_grace_ms: u64,
    pub reconcile_interval_ms: u64,
    /// How often the sweeper expires holds past their TTL.
    pub sweep_interval_ms: u64,
    pub gateway_threads: usize,
}

impl Default for StockgateSettings {
    fn default() -> Self {
        StockgateSettings {
            hold_ttl_secs: 20,
            settle_timeout_ms: 5_000,
            confirming_grace_ms: 15_000,
            reconcile_interval_ms: 2_000,
            sweep_interval_ms: 250,
            gateway_threads: 2,
        }
    }
}

/// The relay's AMQP sink of a world that runs the `broker-restart` fault: the broker, the
/// address, and the SASL PLAIN user and key (written to a file of the run directory, which
/// the config names as `sas_key_file`, as a mounted Secret would be).
#[derive(Clone, Debug)]
pub struct AmqpSink {
    pub url: String,
    pub address: String,
    pub user: String,
    pub key: String,
}

impl AmqpSink {
    /// The `[settlement.outbox.amqp]` table, its key file written into `dir`.
    fn table(&self, dir: &Path) -> anyhow::Result<String> {
        let key_file = dir.join("amqp-sas-key");
        std::fs::write(&key_file, &self.key)?;
        Ok(format!(
            r#"[settlement.outbox.amqp]
url = "{url}"
address = "{address}"
sas_key_name = "{user}"
sas_key_file = "{key_file}"
session_per_order = true
connect_timeout_ms = 2000
send_timeout_ms = 5000
"#,
            url = self.url,
            address = self.address,
            user = self.user,
            key_file = key_file.display(),
        ))
    }
}

/// `stockgate settlement` and `stockgate gateway` as processes sharing one config file.
pub struct Stockgate {
    bin: PathBuf,
    dir: PathBuf,
    pub config: PathBuf,
    pub gateway_port: u16,
    /// The gateway's admin listener (`/admin/health`, `/metrics`).
    pub admin_port: u16,
    pub settlement_port: u16,
    /// Settlement's admin listener (`/healthz`, `/readyz`, `/metrics`; no service auth).
    pub settlement_admin_port: u16,
    pub key_prefix: String,
    gateway: Option<Child>,
    settlement: Option<Child>,
}

impl Stockgate {
    /// Writes the config, migrates, and starts settlement and gateway.
    pub fn start(
        bin: &Path,
        dir: &Path,
        redis_url: &str,
        database_url: &str,
        settings: &StockgateSettings,
        amqp: Option<&AmqpSink>,
    ) -> anyhow::Result<Stockgate> {
        ensure!(
            bin.is_file(),
            "no stockgate binary at {} (cargo build --bin stockgate)",
            bin.display()
        );
        let key_prefix = format!("chaos-{}", uuid::Uuid::new_v4().simple());
        let [
            gateway_port,
            admin_port,
            settlement_port,
            settlement_admin_port,
        ] = free_ports()?;
        let config = dir.join("stockgate.toml");
        let amqp_table = match amqp {
            Some(sink) => sink.table(dir)?,
            None => String::new(),
        };
        std::fs::write(
            &config,
            format!(
                r#"data_dir = "{data}"
redis_url = "{redis_url}"
database_url = "{database_url}"
redis_key_prefix = "{key_prefix}"
[server]
listen = "127.0.0.1:{gateway_port}"
admin_listen = "127.0.0.1:{admin_port}"
threads = {threads}
grace_period_secs = 2
shutdown_timeout_secs = 2
[reservations]
hold_ttl_secs = {hold_ttl}
[upstream]
settlement_addr = "127.0.0.1:{settlement_port}"
settlement_admin_port = {settlement_admin_port}
settle_timeout_ms = {settle_timeout}
health_check_interval_secs = 1
[settlement]
listen_addr = "127.0.0.1:{settlement_port}"
admin_listen_addr = "127.0.0.1:{settlement_admin_port}"
redis_key_prefix = "{key_prefix}"
[settlement.outbox]
stream = "{key_prefix}:events"
[settlement.maintenance]
sweep_interval_ms = {sweep}
reconcile_interval_ms = {reconcile}
confirming_grace_ms = {grace}
leader_lease_ms = 3000
{amqp_table}"#,
                data = dir.join("data").display(),
                threads = settings.gateway_threads,
                hold_ttl = settings.hold_ttl_secs,
                settle_timeout = settings.settle_timeout_ms,
                reconcile = settings.reconcile_interval_ms,
                grace = settings.confirming_grace_ms,
                sweep = settings.sweep_interval_ms,
            ),
        )?;
        let mut stockgate = Stockgate {
            bin: bin.to_owned(),
            dir: dir.to_owned(),
            config,
            gateway_port,
            admin_port,
            settlement_port,
            settlement_admin_port,
            key_prefix,
            gateway: None,
            settlement: None,
        };
        run(stockgate.command(&["migrate"]))?;
        // The gateway writes the reservation-token keys the settlement verifies with.
        stockgate.start_gateway()?;
        stockgate.start_settlement()?;
        Ok(stockgate)
    }

    /// `stockgate --config <ours> <args>`, logging like the services.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("RUST_LOG", "warn");
        command
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.gateway_port)
    }

    pub fn admin_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin_port)
    }

    pub fn start_settlement(&mut self) -> anyhow::Result<()> {
        let child = spawn_logged(self.command(&["settlement"]), &self.dir, "settlement")?;
        self.settlement = Some(child);
        wait_for_port(self.settlement_port, Duration::from_secs(30))
    }

    pub fn start_gateway(&mut self) -> anyhow::Result<()> {
        let child = spawn_logged(self.command(&["gateway"]), &self.dir, "gateway")?;
        self.gateway = Some(child);
        wait_for_port(self.gateway_port, Duration::from_secs(30))
    }

    pub fn kill_settlement(&mut self) {
        kill_child(&mut self.settlement);
    }

    pub fn kill_gateway(&mut self) {
        kill_child(&mut self.gateway);
    }

    /// SIGTERM: the gateway stops accepting, drains in-flight requests for its grace period
    /// and exits; waits for the exit.
    pub fn terminate_gateway(&mut self, within: Duration) -> anyhow::Result<()> {
        let Some(mut child) = self.gateway.take() else {
            bail!("the gateway is not running")
        };
        signal(child.id(), "TERM")?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("the gateway did not exit within {within:?} of SIGTERM")
    }

    /// Buyer tokens `<prefix>0..<prefix>count-1`, minted with the gateway's dev identity key.
    pub fn buyer_tokens(
        &self,
        prefix: &str,
        count: usize,
    ) -> anyhow::Result<Vec<crate::flash_sale::Buyer>> {
        let count = count.to_string();
        let args = [
            "token",
            "--sub-prefix",
            prefix,
            "--count",
            &count,
            "--format",
            "json",
            "--ttl",
            "2h",
        ];
        Ok(serde_json::from_slice(&run(self.command(&args))?)?)
    }

    pub fn ops_token(&self) -> anyhow::Result<String> {
        let args = [
            "token",
            "--sub",
            "chaos-ops",
            "--role",
            "ops",
            "--ttl",
            "2h",
        ];
        Ok(String::from_utf8(run(self.command(&args))?)?
            .trim()
            .to_owned())
    }

    /// `stockgate reconcile --repair`; returns its JSON report.
    pub fn reconcile_repair(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_slice(&run(
            self.command(&["reconcile", "--repair"])
        )?)?)
    }
}

impl Drop for Stockgate {
    fn drop(&mut self) {
        kill_child(&mut self.gateway);
        kill_child(&mut self.settlement);
    }
}
