//! The store on a local 3-master Redis Cluster (`REDIS_CLUSTER_URL`, started by
//! `scripts/redis-cluster.sh start`): the flash-sale races of `concurrency_cases`, the
//! cross-slot idempotency binding, script reload after every master lost its scripts, the
//! fenced lock, and reserve throughput across many SKUs on 3 masters vs one Redis
//! (`--nocapture` prints the numbers; BENCHMARKS.md records them).

mod cluster_support;
mod concurrency_cases;
mod redis_support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_adapters::redis::RedisStore;
use backend_adapters::redis::lock::FencedLock;
use cluster_support::{clean_up_cluster, cluster_store_on, keys_per_node};
use redis_support::store_on;
use reservation_core::testsuite::{buyer, qty, sku, stock};
use reservation_core::{IdempotencyKey, ReservationError, ReservationStore, ReserveRequest};
use testkit::{delete_keys_under, redis_cluster_nodes, redis_cluster_url, scratch_prefix};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_race_sells_exactly_the_stock() {
    let prefix = scratch_prefix("cluster");
    concurrency_cases::race_sells_exactly_the_stock(Arc::new(cluster_store_on(&prefix).await))
        .await;
    clean_up_cluster(&prefix);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_race_with_releases_confirms_and_expiries_balances() {
    let prefix = scratch_prefix("cluster");
    let store = Arc::new(cluster_store_on(&prefix).await);
    concurrency_cases::race_with_releases_confirms_and_expiries_balances(store).await;
    clean_up_cluster(&prefix);
}

fn request(sku_name: &str, buyer_name: &str, units: u32, key: &str) -> ReserveRequest {
    ReserveRequest {
        sku: sku(sku_name),
        buyer: buyer(buyer_name),
        qty: qty(units),
        idempotency_key: IdempotencyKey::parse(key).unwrap_or_else(|e| panic!("key: {e}")),
        hold_ttl_ms: 600_000,
    }
}

/// SKU names that land on every master: the store's keys of each are in one slot, and
/// together they cover all three nodes.
fn skus_on_every_master(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("SKU-{i}")).collect()
}

/// The idempotency binding lives outside the SKU's slot (usually on another master); the
/// store sends it beside the script, and a key reused for another SKU is still refused with
/// nothing left behind in the second SKU.
#[tokio::test]
async fn cluster_binding_on_another_master_refuses_a_reused_key() {
    let prefix = scratch_prefix("cluster");
    let store = cluster_store_on(&prefix).await;
    for name in ["A", "B"] {
        store
            .configure_product(&sku(name), &stock(10, 10, 5))
            .await
            .unwrap_or_else(|e| panic!("configure: {e}"));
    }
    let first = store
        .reserve(&request("A", "alice", 1, "k1"))
        .await
        .unwrap_or_else(|e| panic!("reserve: {e}"));
    let replay = store
        .reserve(&request("A", "alice", 1, "k1"))
        .await
        .unwrap_or_else(|e| panic!("replay: {e}"));
    assert!(replay.replayed);
    assert_eq!(replay.hold.id, first.hold.id);
    let other = store.reserve(&request("B", "alice", 1, "k1")).await;
    assert!(
        matches!(other, Err(ReservationError::IdempotencyMismatch)),
        "{other:?}"
    );
    let b = store
        .snapshot(&sku("B"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (b.available, b.held),
        (10, 0),
        "the refused hold was taken back"
    );
    clean_up_cluster(&prefix);
}

/// After every master dropped its script cache (a failover to a fresh node does this), calls
/// reload the script on NOSCRIPT, readiness reports the loss until then, and
/// `ReservationStore::ensure_ready` reloads the rest.
#[tokio::test]
async fn cluster_script_flush_on_every_master_reloads_the_scripts() {
    let prefix = scratch_prefix("cluster");
    let store = cluster_store_on(&prefix).await;
    assert!(
        store
            .scripts_loaded()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    for node in redis_cluster_nodes() {
        let mut conn = redis::Client::open(node.as_str())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("{node}: {e}"));
        redis::cmd("SCRIPT")
            .arg("FLUSH")
            .exec(&mut conn)
            .unwrap_or_else(|e| panic!("SCRIPT FLUSH on {node}: {e}"));
    }
    assert!(
        !store
            .scripts_loaded()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    store
        .configure_product(&sku("FLUSHED"), &stock(5, 5, 5))
        .await
        .unwrap_or_else(|e| panic!("configure after flush: {e}"));
    let held = store
        .reserve(&request("FLUSHED", "bob", 2, "k"))
        .await
        .unwrap_or_else(|e| panic!("reserve after flush: {e}"));
    assert_eq!(held.hold.qty.get(), 2);
    // Readiness (the gateway's dependency monitor) reloads what is still missing, once.
    let repaired = store.ensure_ready().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(repaired, "the other scripts were still missing");
    let repaired = store.ensure_ready().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!repaired, "nothing left to reload");
    store
        .load_scripts()
        .await
        .unwrap_or_else(|e| panic!("load: {e}"));
    assert!(
        store
            .scripts_loaded()
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    );
    clean_up_cluster(&prefix);
}

/// The fenced lock's two keys share the `{name}` slot, so it works on a cluster unchanged.
#[tokio::test]
async fn cluster_fenced_lock_hands_out_growing_tokens() {
    let prefix = scratch_prefix("cluster");
    let lock = FencedLock::connect(&redis_cluster_url(), &prefix)
        .await
        .unwrap_or_else(|e| panic!("lock: {e}"));
    let mut last = 0;
    for name in ["order:1", "order:2", "order:1"] {
        let lease = lock
            .try_acquire(name, "owner-a", Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("{name} is free"));
        let busy = lock
            .try_acquire(name, "owner-b", Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(busy.is_none(), "a second owner got {name}");
        assert!(lock.release(&lease).await.unwrap_or_else(|e| panic!("{e}")));
        if name == "order:1" {
            assert!(lease.fence > last, "fence must grow");
            last = lease.fence;
        }
    }
    clean_up_cluster(&prefix);
}

const BENCH_SKUS: usize = 64;
const BENCH_TASKS: usize = 128;
const BENCH_PER_TASK: usize = 200;

/// `BENCH_TASKS` tasks, each reserving one unit `BENCH_PER_TASK` times across `BENCH_SKUS`
/// SKUs, every call a distinct buyer and key. Returns reserves per second.
async fn reserve_throughput(store: Arc<RedisStore>, label: &str) -> f64 {
    let skus = skus_on_every_master(BENCH_SKUS);
    for name in &skus {
        store
            .configure_product(&sku(name), &stock(1_000_000, 1_000_000, 5))
            .await
            .unwrap_or_else(|e| panic!("configure: {e}"));
    }
    let skus = Arc::new(skus);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for task in 0..BENCH_TASKS {
        let (store, skus) = (Arc::clone(&store), Arc::clone(&skus));
        tasks.push(tokio::spawn(async move {
            for n in 0..BENCH_PER_TASK {
                let name = &skus[(task * 7 + n) % skus.len()];
                let r = request(name, &format!("b{task}-{n}"), 1, "k");
                store
                    .reserve(&r)
                    .await
                    .unwrap_or_else(|e| panic!("reserve: {e}"));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap_or_else(|e| panic!("task: {e}"));
    }
    let elapsed = started.elapsed();
    let total = BENCH_TASKS * BENCH_PER_TASK;
    let rate = total as f64 / elapsed.as_secs_f64();
    println!(
        "reserve throughput {label}: {total} reserves over {BENCH_SKUS} SKUs by {BENCH_TASKS} \
         tasks in {:.2} s = {rate:.0}/s",
        elapsed.as_secs_f64()
    );
    rate
}

/// Reserve throughput on one Redis vs the 3-master cluster, same load. Asserts only that every
/// reserve succeeded and that the cluster really spread the SKUs over all masters; the numbers
/// are printed (on this 2-core box the three masters share the cores with the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_throughput_one_redis_vs_three_masters() {
    let single_prefix = scratch_prefix("cluster");
    let single = reserve_throughput(Arc::new(store_on(&single_prefix).await), "1 redis").await;
    delete_keys_under(&single_prefix).await;

    let prefix = scratch_prefix("cluster");
    let cluster = reserve_throughput(Arc::new(cluster_store_on(&prefix).await), "3 masters").await;
    let spread = keys_per_node(&prefix);
    println!(
        "cluster/single = {:.2}; keys per master {spread:?}",
        cluster / single
    );
    assert!(
        spread.iter().all(|&n| n > 0),
        "every master must hold some SKUs: {spread:?}"
    );
    clean_up_cluster(&prefix);
}
