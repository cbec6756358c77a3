//! Reserve throughput of `RedisStore` over its one shared multiplexed connection at 1, 16 and
//! 128 concurrent tasks, each level followed by `redis-benchmark` sending `EVALSHA` of the
//! same reserve script at the same concurrency, so the two are compared within one run.
//!
//! ```text
//! cargo run --release -p backend-adapters --example reserve_throughput [seconds-per-level]
//! ```
//!
//! Reads `REDIS_URL` (default `redis://127.0.0.1:6379`; redis-benchmark is pointed at
//! 127.0.0.1:6379). Writes under a fresh `sgbench:<uuid>` prefix and deletes it at the end.
//! The SKU has 10^12 units and every request a fresh buyer and key, so neither the stock nor
//! the per-buyer limit ever refuses: every call takes the full write path.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use backend_adapters::redis::{RedisStore, RedisStoreConfig};
use reservation_core::{
    BuyerId, IdempotencyKey, ProductStock, Qty, ReservationStore, ReserveRequest, SaleState, Sku,
};

const LEVELS: [usize; 3] = [1, 16, 128];
const SKU: &str = "BENCH";

#[tokio::main]
async fn main() -> Result<()> {
    let seconds: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse().context("seconds per level must be a number")?,
        None => 5,
    };
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("sgbench:{}", uuid::Uuid::new_v4().simple());
    let config = RedisStoreConfig {
        prefix: prefix.clone(),
        // Generous: under 128 tasks on 2 shared cores a reply can queue for a while.
        response_timeout: Duration::from_secs(5),
        ..RedisStoreConfig::default()
    };
    let store = Arc::new(RedisStore::connect(&url, config).await?);
    let sku = Sku::parse(SKU)?;
    store
        .configure_product(
            &sku,
            &ProductStock {
                total_stock: 1_000_000_000_000,
                per_buyer_limit: 1_000_000,
                max_per_order: 10,
                sale_state: SaleState::OnSale,
            },
        )
        .await?;

    println!("# reserve throughput, {seconds} s per level, prefix {prefix}");
    println!(
        "| tasks / clients | RedisStore::reserve calls/s | p99 ms | redis-benchmark EVALSHA reserve/s | ratio |"
    );
    println!("|---|---|---|---|---|");
    for tasks in LEVELS {
        let (rate, p99) = run_level(&store, tasks, Duration::from_secs(seconds)).await?;
        let raw = redis_benchmark(&store, &prefix, tasks, seconds)?;
        println!(
            "| {tasks} | {rate:.0} | {p99:.2} | {raw:.0} | {:.2} |",
            rate / raw
        );
    }
    println!();
    println!("redis-benchmark command (c = 1, 16, 128; n = ~{seconds} s of work):");
    println!("{}", benchmark_args(&store, &prefix, 16, 200_000).join(" "));

    clean_up(&url, &prefix).await?;
    Ok(())
}

/// Runs `tasks` tasks reserving as fast as they can for `length`; returns calls/s and p99 ms.
async fn run_level(store: &Arc<RedisStore>, tasks: usize, length: Duration) -> Result<(f64, f64)> {
    let running = Arc::new(AtomicBool::new(true));
    let calls = Arc::new(AtomicU64::new(0));
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (store, running, calls) = (Arc::clone(store), Arc::clone(&running), Arc::clone(&calls));
        let run = run.clone();
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut n: u64 = 0;
            while running.load(Ordering::Relaxed) {
                let request = ReserveRequest {
                    sku: Sku::parse(SKU)?,
                    buyer: BuyerId::parse(&format!("b-{run}-{task}-{n}"))?,
                    qty: Qty::new(1)?,
                    idempotency_key: IdempotencyKey::parse(&format!("k-{n}"))?,
                    hold_ttl_ms: 600_000,
                };
                let started = Instant::now();
                store.reserve(&request).await?;
                latencies.push(started.elapsed());
                calls.fetch_add(1, Ordering::Relaxed);
                n += 1;
            }
            Ok::<_, anyhow::Error>(latencies)
        }));
    }
    let started = Instant::now();
    tokio::time::sleep(length).await;
    running.store(false, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let p99 = latencies
        .get(latencies.len() * 99 / 100)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0);
    Ok((calls.load(Ordering::Relaxed) as f64 / elapsed, p99))
}

/// The redis-benchmark arguments for EVALSHA of the reserve script. redis-benchmark replaces
/// each `__rand_int__` (with `-r`) by its own random 12-digit number, so every call names a
/// fresh idempotency record, hold key, id and buyer: no call replays an earlier one, and all
/// take the write path (HMGET, GET, HGET, 3×HINCRBY, HSET, ZADD, SET PX, TIME).
fn benchmark_args(store: &RedisStore, prefix: &str, clients: usize, requests: u64) -> Vec<String> {
    let tag = format!("{prefix}:{{{SKU}}}");
    let id = format!("rsv_00000000000000000000__rand_int___{SKU}");
    [
        "redis-benchmark".to_owned(),
        "-h".to_owned(),
        "127.0.0.1".to_owned(),
        "-p".to_owned(),
        "6379".to_owned(),
        "-q".to_owned(),
        "-r".to_owned(),
        "100000000".to_owned(),
        "-n".to_owned(),
        requests.to_string(),
        "-c".to_owned(),
        clients.to_string(),
        "EVALSHA".to_owned(),
        store.reserve_script_sha().to_owned(),
        "5".to_owned(),
        format!("{tag}:stock"),
        format!("{tag}:buyers"),
        format!("{tag}:expiry"),
        format!("{tag}:idem:rb:__rand_int__"),
        format!("{tag}:hold:{id}"),
        id,
        "rb__rand_int__".to_owned(),
        "1".to_owned(),
        "600000".to_owned(),
        format!("{tag}:hold:"),
        "87000000".to_owned(),
    ]
    .to_vec()
}

/// Runs redis-benchmark at `clients` for about as long as the store's level ran; returns
/// requests per second.
fn redis_benchmark(store: &RedisStore, prefix: &str, clients: usize, seconds: u64) -> Result<f64> {
    // About 40k/s at c >= 16 and 10k/s at c = 1 on this box (NOTES.md): aim for `seconds`.
    let per_second = if clients == 1 { 10_000 } else { 40_000 };
    let args = benchmark_args(store, prefix, clients, per_second * seconds);
    let output = Command::new(&args[0])
        .args(&args[1..])
        .output()
        .context("run redis-benchmark (apt-get install redis-tools)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    // `-q` prints `EVALSHA ...: 39876.54 requests per second, p50=...` (after \r progress).
    let line = text
        .rsplit('\r')
        .flat_map(str::lines)
        .find(|l| l.contains("requests per second"))
        .with_context(|| format!("no rate in redis-benchmark output: {text}"))?;
    // The number is the word right before "requests per second".
    let rate = line
        .split("requests per second")
        .next()
        .and_then(|head| head.split_whitespace().last())
        .and_then(|n| n.parse::<f64>().ok());
    match rate {
        Some(rate) if rate > 0.0 => Ok(rate),
        _ => bail!("cannot read the rate in: {line}"),
    }
}

/// Deletes the bench's keys (a few hundred thousand holds) in batches.
async fn clean_up(url: &str, prefix: &str) -> Result<()> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(5000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("UNLINK")
                .arg(&keys)
                .query_async::<()>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
