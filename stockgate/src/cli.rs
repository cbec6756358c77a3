//! The `stockgate` command line: `gateway | settlement | all-in-one | migrate | reconcile |
//! token | check | ratelimits check`. Each subcommand loads the configuration and starts the
//! pieces in order; nothing here decides how a request is answered.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use std::sync::Arc;

use gateway::app::{self, Gateway, Shared};
use gateway::auth::devkeys;

use crate::all_in_one;
use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "stockgate",
    version,
    about = "Flash-sale edge gateway and settlement service"
)]
pub struct Cli {
    /// TOML configuration file (see config/stockgate.toml); defaults are the embedded setup.
    #[arg(long, short, global = true, env = "STOCKGATE_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the edge gateway (proxies to the settlement service at upstream.settlement_addr).
    Gateway,
    /// Run the settlement service.
    Settlement,
    /// Run gateway and settlement in one process (the embedded default without a config).
    AllInOne,
    /// Apply the SQL migrations and exit.
    Migrate,
    /// Compare store counters with SQL and report drift.
    Reconcile(ReconcileArgs),
    /// Mint a buyer JWT with the local dev identity key.
    Token(TokenArgs),
    /// Validate the configuration offline (the file given with --config, the environment
    /// overrides, and the files it names); exits non-zero naming the field at fault.
    Check,
    /// Rate-limit rules: `stockgate ratelimits check FILE` validates a rules file offline.
    #[command(subcommand)]
    Ratelimits(RatelimitsCommand),
}

#[derive(Debug, Subcommand)]
pub enum RatelimitsCommand {
    /// Parse and validate a rules file; exits non-zero naming the rule and field at fault.
    Check {
        /// The rules file, e.g. config/ratelimits.toml.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ReconcileArgs {
    /// Rebuild the store's counters from SQL.
    #[arg(long)]
    pub repair: bool,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// The buyer's subject.
    #[arg(
        long,
        required_unless_present = "sub_prefix",
        conflicts_with = "sub_prefix"
    )]
    pub sub: Option<String>,
    /// Bulk minting (load tests): `--count` tokens for the subjects `<prefix>0`,
    /// `<prefix>1`, …, e.g. `--sub-prefix buyer- --count 5000 --format json`.
    #[arg(long)]
    pub sub_prefix: Option<String>,
    /// How many tokens `--sub-prefix` mints (default 1).
    #[arg(long, conflicts_with = "sub", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub count: Option<u32>,
    /// Output: `text` (one token per line) or `json` (an array of `{"sub", "token"}`).
    #[arg(long, value_enum, default_value_t = TokenFormat::Text)]
    pub format: TokenFormat,
    /// A role to grant (repeatable), e.g. `--role ops`.
    #[arg(long = "role")]
    pub roles: Vec<String>,
    /// Lifetime in whole seconds, 1s to 30d: a number of seconds, or a duration such as 90s,
    /// 15m, 1h, 7d or 1h 30m.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,
}

/// How `stockgate token` prints what it minted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TokenFormat {
    Text,
    Json,
}

/// Mints the tokens `args` asks for and renders them in its format (no trailing newline).
pub fn mint_tokens(config: &Config, args: &TokenArgs) -> Result<String> {
    let subs: Vec<String> = match (&args.sub, &args.sub_prefix) {
        (Some(sub), _) => vec![sub.clone()],
        (None, Some(prefix)) => (0..args.count.unwrap_or(1))
            .map(|i| format!("{prefix}{i}"))
            .collect(),
        (None, None) => bail!("give --sub or --sub-prefix"),
    };
    let mut minted = Vec::with_capacity(subs.len());
    for sub in subs {
        let token = devkeys::mint_dev_token(&config.gateway, &sub, &args.roles, args.ttl)?;
        minted.push((sub, token));
    }
    Ok(match args.format {
        TokenFormat::Text => minted
            .iter()
            .map(|(_, token)| token.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        TokenFormat::Json => {
            let list: Vec<_> = minted
                .iter()
                .map(|(sub, token)| serde_json::json!({"sub": sub, "token": token}))
                .collect();
            serde_json::to_string(&list)?
        }
    })
}

/// Parses a lifetime such as `90s`, `15m`, `1h`, `7d` or `1h 30m` (`humantime`'s syntax; a
/// bare number is seconds). Token lifetimes are whole seconds: `1500ms` is refused, not cut.
pub fn parse_ttl(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let ttl = match raw.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(raw).map_err(|e| format!("{raw:?}: {e}"))?,
    };
    if ttl.subsec_nanos() != 0 {
        return Err(format!("{raw:?} is not a whole number of seconds"));
    }
    if ttl < Duration::from_secs(1) || ttl > Duration::from_secs(30 * 86_400) {
        return Err("ttl must be between 1s and 30d".into());
    }
    Ok(ttl)
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    // Checking a rules file needs no configuration (ops run it before shipping a file).
    if let Command::Ratelimits(RatelimitsCommand::Check { file }) = &cli.command {
        let rules = gateway::ratelimit::rules::load(file)?;
        println!("{}: {} rules, valid", file.display(), rules.len());
        return Ok(());
    }
    let config = Config::load(cli.config.as_deref()).context("loading the configuration")?;
    match cli.command {
        Command::Token(args) => {
            println!("{}", mint_tokens(&config, &args)?);
            Ok(())
        }
        Command::Check => {
            println!("{}", check(&config, cli.config.as_deref())?);
            Ok(())
        }
        Command::Gateway => run_gateway(&config),
        Command::AllInOne => background_runtime()?.block_on(run_all_in_one(config)),
        Command::Settlement => background_runtime()?.block_on(run_settlement(&config)),
        Command::Migrate => background_runtime()?.block_on(async {
            let url = config.database_url_or_embedded();
            settlement::migrate(&url)
                .await
                .context("applying migrations")?;
            println!("migrations applied");
            Ok(())
        }),
        Command::Ratelimits(_) => Ok(()),
        Command::Reconcile(args) => {
            background_runtime()?.block_on(run_reconcile(&config, args.repair))
        }
    }
}

/// A runtime for everything outside Pingora's own (key refresh, store connections, the
/// in-process settlement service).
fn background_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("stockgate-bg")
        .enable_all()
        .build()
        .context("starting the background runtime")
}

/// `stockgate check`: the configuration loaded and validated (by the caller), then every key,
/// key set and rules file it names read and parsed as the service reads it, without writing
/// anything (keys that are absent and would be generated on first use are not checked) and
/// without the network (a `jwks_url` is fetched only by the running gateway). The summary on
/// success; the first fault, naming its field, otherwise.
pub fn check(config: &Config, file: Option<&std::path::Path>) -> Result<String> {
    let edge = &config.gateway;
    if edge.auth.jwks_file.is_some() {
        background_runtime()?
            .block_on(app::load_keys(edge))
            .context("config field `auth.jwks_file`")?;
    }
    if let Some(ca_file) = &edge.auth.ca_file {
        gateway::auth::fetch::Fetcher::new(Some(ca_file)).context("config field `auth.ca_file`")?;
    }
    match (
        &edge.reservations.signing_key_file,
        &edge.reservations.public_jwks_file,
    ) {
        (Some(_), _) => {
            let signer = devkeys::reservation_signer(edge)?;
            // With a published set, it must publish the signing key under its kid.
            devkeys::reservation_verifier(edge, &signer)?;
        }
        (None, Some(_)) => {
            devkeys::published_reservation_verifier(edge)?;
        }
        (None, None) => {}
    }
    if edge.settlement_auth.signing_key_file.is_some() {
        gateway::service_auth::signer(edge, gateway::service_auth::UnsetKey::Ephemeral)?;
    }
    if edge.settlement_auth.gateway_jwks_file.is_some() {
        gateway::service_auth::published_verifier(edge)?;
    }
    if let Some(tls) = edge.server.tls.listener() {
        gateway::server::install_crypto_provider();
        gateway::server::load_pair(tls.cert_file, tls.key_file)
            .context("config field `server.tls.cert_file` / `server.tls.key_file`")?;
    }
    let rules = match &edge.ratelimit.rules_file {
        Some(path) => {
            let rules = gateway::ratelimit::rules::load(path).with_context(|| {
                format!("config field `ratelimit.rules_file` ({})", path.display())
            })?;
            format!(", {} rate-limit rules", rules.len())
        }
        None => String::new(),
    };
    let source = file.map_or_else(
        || "the built-in defaults".to_owned(),
        |f| f.display().to_string(),
    );
    Ok(format!("{source}: valid{rules}"))
}

fn run_gateway(config: &Config) -> Result<()> {
    let config = &config.gateway_config();
    if config.redis_url.is_none() {
        tracing::warn!(
            "no redis_url: the gateway runs an in-memory store that a separate settlement \
             service cannot see; use all-in-one, or set redis_url"
        );
    }
    let runtime = background_runtime()?;
    let (prepared, telemetry) = runtime.block_on(async {
        let shared = Shared::connect(config).await?;
        let gateway = Gateway::build(config, shared, app::load_keys(config).await?)?;
        gateway.spawn_background(config);
        let telemetry = gateway.state.telemetry.clone();
        anyhow::Ok((gateway.into_server(config)?, telemetry))
    })?;
    println!("stockgate gateway on http://{}", prepared.public_addr);
    if let Some(addr) = prepared.tls_addr {
        println!("stockgate gateway on https://{addr} (HTTP/2 and HTTP/1.1)");
    }
    println!("admin (metrics) on http://{}", prepared.admin_addr);
    // Blocks until SIGTERM (graceful drain) or SIGINT; the background runtime lives until then.
    gateway::server::run_forever(prepared);
    // The spans of the last requests, still in the exporter's queue.
    runtime.block_on(telemetry.shutdown());
    drop(runtime);
    Ok(())
}

/// Waits for SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn run_all_in_one(config: Config) -> Result<()> {
    let all = all_in_one::start(config.clone(), None, true).await?;
    let token = devkeys::mint_dev_token(
        &config.gateway,
        "alice",
        &[],
        Duration::from_secs(24 * 3600),
    )?;
    let base = format!("http://{}", all.public_addr());
    println!("stockgate is running on {base}");
    println!("  metrics: http://{}/metrics", all.admin_addr());
    println!("  buyer token for alice (valid 24h; mint more with `stockgate token --sub bob`):");
    println!("{token}");
    println!("  storefront: {base}/   ops console: {base}/ops");
    if let Some(addr) = all.gateway.tls_addr {
        println!("  https: https://{addr} (HTTP/2 and HTTP/1.1)");
    }
    let listen = all.public_addr().to_string();
    if let Some(warning) = gateway::edge::dev_token::warning(all.dev_sign_in, &listen) {
        println!("  {warning}");
    }
    println!("  try: curl {base}/api/v1/products");
    shutdown_signal().await;
    tracing::info!("shutting down");
    all.shutdown().await;
    Ok(())
}

/// The settlement service on its own. It shares its reservation store with the gateways,
/// so it needs Redis.
async fn run_settlement(config: &Config) -> Result<()> {
    let Some(url) = &config.gateway.redis_url else {
        bail!(
            "config field `redis_url` must be set for `stockgate settlement`: the gateways and \
             the settlement service share the reservation store through Redis"
        );
    };
    let store = app::connect_redis(&config.gateway, url).await?;
    let verifier = devkeys::published_reservation_verifier(&config.gateway)?;
    // Fail closed: without the gateway's public keys settlement would serve no one, so it
    // does not start at all.
    let gateway_keys = gateway::service_auth::published_verifier(&config.gateway)?;
    let running = settlement::start(
        config.settlement_config(),
        settlement::SettlementDeps {
            store: Arc::new(store),
            verifier,
            gateway_keys,
            registry: prometheus::Registry::new(),
        },
    )
    .await?;
    println!("stockgate settlement on http://{}", running.addr);
    shutdown_signal().await;
    running.shutdown().await;
    Ok(())
}

/// One reconcile run; exits non-zero when drift remains.
async fn run_reconcile(config: &Config, repair: bool) -> Result<()> {
    let Some(url) = &config.gateway.redis_url else {
        bail!(
            "config field `redis_url` must be set for `stockgate reconcile`: the in-memory \
             store lives inside the all-in-one process, which rebuilds it from SQL at start"
        );
    };
    let store = app::connect_redis(&config.gateway, url).await?;
    let report = settlement::reconcile_once(&config.settlement_config(), Arc::new(store), repair)
        .await
        .context("reconciling")?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if !report.ok && !repair {
        bail!("drift found; run again with --repair to rebuild the counters from sql");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    #[test]
    fn ttl_units() {
        assert_eq!(parse_ttl("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_ttl("2d"), Ok(Duration::from_secs(172_800)));
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("5w").is_err());
        assert!(parse_ttl("0s").is_err());
        assert!(parse_ttl("31d").is_err());
        assert_eq!(parse_ttl("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_ttl("45"), Ok(Duration::from_secs(45)));
        assert!(parse_ttl("1500ms").is_err(), "no silent truncation");
    }

    #[test]
    fn command_line_parses() {
        let cli =
            Cli::try_parse_from(["stockgate", "token", "--sub", "alice", "--role", "ops"]).unwrap();
        match cli.command {
            Command::Token(args) => {
                assert_eq!(args.sub.as_deref(), Some("alice"));
                assert_eq!(args.format, TokenFormat::Text);
                assert_eq!(args.roles, vec!["ops".to_owned()]);
                assert_eq!(args.ttl, Duration::from_secs(3600));
            }
            other => panic!("parsed as {other:?}"),
        }
        assert!(Cli::try_parse_from(["stockgate", "nope"]).is_err());
    }

    #[test]
    fn bulk_tokens_as_json() {
        let parse = |args: &[&str]| {
            let argv = ["stockgate", "token"].iter().chain(args).copied();
            match Cli::try_parse_from(argv).map(|cli| cli.command) {
                Ok(Command::Token(args)) => Ok(args),
                Ok(other) => panic!("parsed as {other:?}"),
                Err(e) => Err(e),
            }
        };
        // Either --sub or --sub-prefix, not both, not neither; --count needs --sub-prefix.
        assert!(parse(&[]).is_err());
        assert!(parse(&["--sub", "a", "--sub-prefix", "b-"]).is_err());
        assert!(parse(&["--sub", "a", "--count", "3"]).is_err());
        assert!(parse(&["--sub-prefix", "b-", "--count", "0"]).is_err());
        let args = parse(&["--sub-prefix", "buyer-", "--count", "3", "--format", "json"]).unwrap();
        assert_eq!((args.count, args.format), (Some(3), TokenFormat::Json));

        let dir = std::env::temp_dir().join(format!("stockgate-cli-{}", uuid::Uuid::new_v4()));
        let mut config = Config::default();
        config.gateway.data_dir = dir.clone();
        let out = mint_tokens(&config, &args).unwrap();
        let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
        let subs: Vec<&str> = list.iter().map(|t| t["sub"].as_str().unwrap()).collect();
        assert_eq!(subs, ["buyer-0", "buyer-1", "buyer-2"]);
        // Each token is a JWT for its own subject, signed with the dev identity key.
        for entry in &list {
            let token = entry["token"].as_str().unwrap();
            let payload = token.split('.').nth(1).unwrap();
            let claims = String::from_utf8(URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
            let claims: serde_json::Value = serde_json::from_str(&claims).unwrap();
            assert_eq!(claims["sub"], entry["sub"]);
        }
        let single = parse(&["--sub", "alice"]).unwrap();
        let text = mint_tokens(&config, &single).unwrap();
        assert_eq!(text.split('.').count(), 3, "one JWT, no newline");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
