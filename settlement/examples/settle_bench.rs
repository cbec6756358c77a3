//! Settlements per second on one hot SKU: group commit vs one transaction per order, same
//! run, same PostgreSQL, same client. Each mode gets a fresh schema and a fresh service on
//! `127.0.0.1:0`; the client fires `--requests` settlements (one unit each, distinct buyers,
//! tokens and the gateway's service assertions signed before the clock starts, so the client
//! costs no signing; settlement verifies each assertion as in production) with
//! `--concurrency` in flight over HTTP. Besides the rate it prints the CPU time this process
//! (the service and the client together; PostgreSQL's own processes not included) spent per
//! settlement, from `/proc/self/stat`.
//!
//! ```sh
//! DATABASE_URL=postgres://postgres:postgres@127.0.0.1:5432/test \
//!   cargo run --release -p settlement --example settle_bench -- --requests 4000 --concurrency 64
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use reservation_core::assertion::{
    ASSERTION_HEADER, AssertionSigner, AssertionVerifier, Bound, Identity,
};
use reservation_core::token::RESERVATION_AUDIENCE;
use reservation_core::{
    BuyerId, InMemoryStore, Qty, ReservationClaims, ReservationId, Sku, TokenSigner, TokenVerifier,
};
use settlement::{CommitMode, SettlementConfig, SettlementDeps};

struct Args {
    requests: usize,
    concurrency: usize,
    max_batch: usize,
    max_wait_us: u64,
    rounds: usize,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        requests: 4000,
        concurrency: 64,
        max_batch: 128,
        max_wait_us: 2000,
        rounds: 2,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))?;
        match flag.as_str() {
            "--requests" => args.requests = value.parse()?,
            "--concurrency" => args.concurrency = value.parse()?,
            "--max-batch" => args.max_batch = value.parse()?,
            "--max-wait-us" => args.max_wait_us = value.parse()?,
            "--rounds" => args.rounds = value.parse()?,
            other => anyhow::bail!("unknown flag {other}"),
        }
    }
    Ok(args)
}

struct Result {
    mode: CommitMode,
    seconds: f64,
    ok: usize,
    p50_ms: f64,
    p99_ms: f64,
    transactions: u64,
    /// CPU seconds (user + system) of this process during the run, when Linux says.
    cpu_secs: Option<f64>,
}

/// User + system CPU seconds of this process so far: fields 14 and 15 of `/proc/self/stat`,
/// in clock ticks of 1/100 s (`CLK_TCK` on every Linux this runs on). `None` elsewhere.
fn process_cpu_secs() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

async fn fresh_schema_url() -> anyhow::Result<String> {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres:postgres@127.0.0.1:5432/test".into());
    Ok(backend_adapters::sql::scratch_schema_url(&url, "bench").await?)
}

async fn run_mode(mode: CommitMode, args: &Args) -> anyhow::Result<Result> {
    let signer = TokenSigner::generate("bench");
    let gateway = AssertionSigner::new(TokenSigner::generate("bench-gw"));
    let mut config = SettlementConfig {
        listen_addr: "127.0.0.1:0".parse()?,
        admin_listen_addr: "127.0.0.1:0".parse()?,
        database_url: fresh_schema_url().await?,
        db_max_connections: 32,
        commit_mode: mode,
        ..SettlementConfig::default()
    };
    config.group_commit.max_batch = args.max_batch;
    config.group_commit.max_wait_us = args.max_wait_us;
    config.maintenance.enabled = false;
    let running = settlement::start(
        config,
        SettlementDeps {
            store: Arc::new(InMemoryStore::new()),
            verifier: TokenVerifier::for_signer(&signer),
            gateway_keys: AssertionVerifier::new(&gateway.jwks())?,
            registry: prometheus::Registry::new(),
        },
    )
    .await?;
    let base = format!("http://{}", running.addr);
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .build()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let product = serde_json::json!({"name": "hot", "price_cents": 100,
        "total_stock": args.requests, "per_buyer_limit": 1, "sale_state": "on_sale"})
    .to_string();
    let ops = Identity {
        sub: Some("bench-ops".into()),
        roles: vec!["ops".into()],
    };
    let path = "/api/v1/admin/products/HOT";
    let create = Bound::new("PUT", path, product.as_bytes());
    let assertion = gateway.sign(&create, &ops, now.as_secs())?;
    let created = http
        .put(format!("{base}{path}"))
        .header(ASSERTION_HEADER, assertion)
        .header("content-type", "application/json")
        .body(product)
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "product: {}",
        created.status()
    );

    let sku = Sku::parse("HOT")?;
    let mut tokens = Vec::with_capacity(args.requests);
    for i in 0..args.requests {
        let claims = ReservationClaims {
            rid: ReservationId::generate(&sku),
            sub: BuyerId::parse(&format!("buyer-{i}"))?,
            sku: sku.clone(),
            qty: Qty::new(1)?,
            iat: now.as_secs(),
            exp: now.as_secs() + 3600,
            aud: RESERVATION_AUDIENCE.to_owned(),
        };
        let body = serde_json::json!({ "reservation_token": signer.sign(&claims)? }).to_string();
        let buyer = Identity {
            sub: Some(format!("buyer-{i}")),
            roles: vec![],
        };
        let settle = Bound::new("POST", "/internal/settlements", body.as_bytes());
        let assertion = gateway.sign(&settle, &buyer, now.as_secs())?;
        tokens.push((assertion, body));
    }
    let tokens = Arc::new(tokens);
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before = process_cpu_secs();
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (http, base, tokens, next) = (http.clone(), base.clone(), tokens.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut ok = 0;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((assertion, body)) = tokens.get(i) else {
                    break;
                };
                let sent = Instant::now();
                let answer = http
                    .post(format!("{base}/internal/settlements"))
                    .header(ASSERTION_HEADER, assertion)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                latencies.push(sent.elapsed());
                if answer.is_ok_and(|r| r.status() == 201) {
                    ok += 1;
                }
            }
            (ok, latencies)
        }));
    }
    let mut ok = 0;
    let mut latencies: Vec<Duration> = Vec::new();
    for worker in workers {
        let (n, l) = worker.await?;
        ok += n;
        latencies.extend(l);
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_secs = cpu_before.zip(process_cpu_secs()).map(|(a, b)| b - a);
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    let result = Result {
        mode,
        seconds,
        ok,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        transactions: running.metrics.batch_size.get_sample_count(),
        cpu_secs,
    };
    running.shutdown().await;
    Ok(result)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    println!(
        "requests={} concurrency={} max_batch={} max_wait_us={} rounds={}",
        args.requests, args.concurrency, args.max_batch, args.max_wait_us, args.rounds
    );
    println!(
        "| round | mode | settlements/s | ok | p50 ms | p99 ms | transactions | avg batch | cpu µs/order |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let (mut group_rate, mut per_order_rate) = (0.0, 0.0);
    let (mut group_cpu, mut per_order_cpu) = (0.0, 0.0);
    for round in 1..=args.rounds {
        for mode in [CommitMode::PerOrder, CommitMode::Group] {
            let r = run_mode(mode, &args).await?;
            let rate = r.ok as f64 / r.seconds;
            let cpu_us = r.cpu_secs.unwrap_or(f64::NAN) * 1e6 / r.ok.max(1) as f64;
            match r.mode {
                CommitMode::Group => {
                    (group_rate, group_cpu) = (group_rate + rate, group_cpu + cpu_us)
                }
                CommitMode::PerOrder => {
                    (per_order_rate, per_order_cpu) =
                        (per_order_rate + rate, per_order_cpu + cpu_us)
                }
            }
            println!(
                "| {round} | {:?} | {rate:.0} | {} | {:.1} | {:.1} | {} | {:.1} | {cpu_us:.0} |",
                r.mode,
                r.ok,
                r.p50_ms,
                r.p99_ms,
                r.transactions,
                r.ok as f64 / r.transactions.max(1) as f64
            );
        }
    }
    let rounds = args.rounds as f64;
    println!(
        "mean: group {:.0}/s, per-order {:.0}/s, ratio {:.2}x; cpu per order: group {:.0} µs, per-order {:.0} µs",
        group_rate / rounds,
        per_order_rate / rounds,
        group_rate / per_order_rate.max(f64::MIN_POSITIVE),
        group_cpu / rounds,
        per_order_cpu / rounds,
    );
    Ok(())
}
