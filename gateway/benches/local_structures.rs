//! The gateway's two in-process structures against the crates that could replace them, side
//! by side in one run and with the same operations: the product cache's local tier
//! (`cache/local.rs`) against `moka::sync::Cache`, and the local limiter (`ratelimit/local.rs`)
//! against `governor`'s keyed GCRA limiter. One thread; each figure is one call.
//!
//! `cargo bench -p gateway --bench local_structures`

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use gateway::cache::entry::Entry;
use gateway::cache::local::LocalTier;
use gateway::ratelimit::local::LocalLimiter;
use governor::middleware::StateInformationMiddleware;
use governor::{Quota, RateLimiter};

/// `[cache] local_max_entries` by default.
const CAPACITY: usize = 10_000;
/// Distinct keys of the many-keys cases: more than the capacity, so a key comes back after
/// it was dropped.
const KEYS: usize = 100_000;

fn product_keys(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("/api/v1/products/SKU-{i}"))
        .collect()
}

fn entry() -> Entry {
    Entry::new(
        Bytes::from(vec![b'x'; 300]),
        Some("\"7\"".to_owned()),
        0,
        60_000,
    )
}

fn cache(c: &mut Criterion) {
    let mut group = c.benchmark_group("cache");
    let keys = product_keys(KEYS);
    let live = &keys[..CAPACITY];
    // Wall-clock ms as the cache passes them: every copy is kept past `NOW`, so a full tier
    // has nothing expired to drop first and must pick a victim.
    const NOW: u64 = 1_000;
    const KEEP_UNTIL: u64 = 1_000_000;

    let local = LocalTier::new(CAPACITY);
    let moka = moka::sync::Cache::<String, (Entry, u64)>::new(CAPACITY as u64);
    for key in live {
        local.put(key, entry(), KEEP_UNTIL, NOW);
        moka.insert(key.clone(), (entry(), KEEP_UNTIL));
    }
    moka.run_pending_tasks();

    let mut i = 0;
    group.bench_function("get_hit/local", |b| {
        b.iter(|| {
            i = (i + 1) % CAPACITY;
            black_box(local.get(&live[i]))
        })
    });
    group.bench_function("get_hit/moka", |b| {
        b.iter(|| {
            i = (i + 1) % CAPACITY;
            black_box(moka.get(live[i].as_str()))
        })
    });

    // A refill of a key the tier holds (a copy went stale and was fetched again).
    group.bench_function("insert_present/local", |b| {
        b.iter(|| {
            i = (i + 1) % CAPACITY;
            local.put(&live[i], entry(), KEEP_UNTIL, NOW)
        })
    });
    group.bench_function("insert_present/moka", |b| {
        b.iter(|| {
            i = (i + 1) % CAPACITY;
            moka.insert(live[i].clone(), (entry(), KEEP_UNTIL))
        })
    });

    // A key the full tier does not hold: one copy has to go.
    let mut j = CAPACITY;
    group.bench_function("insert_new_full/local", |b| {
        b.iter(|| {
            j = (j + 1) % KEYS;
            local.put(&keys[j], entry(), KEEP_UNTIL, NOW)
        })
    });
    group.bench_function("insert_new_full/moka", |b| {
        b.iter(|| {
            j = (j + 1) % KEYS;
            moka.insert(keys[j].clone(), (entry(), KEEP_UNTIL))
        })
    });
    group.finish();
}

/// The rule both limiters enforce in the `allowed` cases: one request a µs, burst 4e9, so
/// every call admits and writes (the path that costs most).
const OPEN_INTERVAL: Duration = Duration::from_micros(1);
const OPEN_BURST: u32 = 4_000_000_000;
/// The rule of the `refused` case: 10 at once, then one a minute; after the first ten calls
/// every call is a refusal with its wait.
const TIGHT_INTERVAL: Duration = Duration::from_secs(60);
const TIGHT_BURST: u32 = 10;

fn governor_limiter(
    interval: Duration,
    burst: u32,
) -> RateLimiter<
    String,
    governor::state::keyed::DefaultKeyedStateStore<String>,
    governor::clock::DefaultClock,
    StateInformationMiddleware,
> {
    let quota = Quota::with_period(interval)
        .expect("a non-zero period")
        .allow_burst(NonZeroU32::new(burst).expect("a non-zero burst"));
    // With the middleware that reports the remaining burst, as LocalDecision does.
    RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>()
}

fn limiter(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter");
    let hot = "ip:203.0.113.7".to_owned();
    let keys: Vec<String> = (0..10_000).map(|i| format!("sub:buyer-{i}")).collect();

    // Both answer allowed/remaining/wait, as the edge needs for its headers.
    let local = LocalLimiter::default();
    let gov = governor_limiter(OPEN_INTERVAL, OPEN_BURST);
    group.bench_function("hot_key_allowed/local", |b| {
        b.iter(|| {
            let d = local.check(&hot, OPEN_INTERVAL, u64::from(OPEN_BURST));
            black_box((d.allowed, d.remaining))
        })
    });
    group.bench_function("hot_key_allowed/governor", |b| {
        b.iter(|| match gov.check_key(&hot) {
            Ok(s) => black_box((true, s.remaining_burst_capacity())),
            Err(_) => black_box((false, 0)),
        })
    });

    let mut i = 0;
    group.bench_function("many_keys_allowed/local", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            let d = local.check(&keys[i], OPEN_INTERVAL, u64::from(OPEN_BURST));
            black_box((d.allowed, d.remaining))
        })
    });
    group.bench_function("many_keys_allowed/governor", |b| {
        b.iter(|| {
            i = (i + 1) % keys.len();
            match gov.check_key(&keys[i]) {
                Ok(s) => black_box((true, s.remaining_burst_capacity())),
                Err(_) => black_box((false, 0)),
            }
        })
    });

    let local = LocalLimiter::default();
    let gov = governor_limiter(TIGHT_INTERVAL, TIGHT_BURST);
    group.bench_function("hot_key_refused/local", |b| {
        b.iter(|| {
            let d = local.check(&hot, TIGHT_INTERVAL, u64::from(TIGHT_BURST));
            black_box((d.allowed, d.retry_after))
        })
    });
    group.bench_function("hot_key_refused/governor", |b| {
        b.iter(|| match gov.check_key(&hot) {
            Ok(_) => black_box((true, Duration::ZERO)),
            Err(not_until) => {
                use governor::clock::Clock;
                black_box((false, not_until.wait_time_from(gov.clock().now())))
            }
        })
    });
    group.finish();
}

criterion_group!(benches, cache, limiter);
criterion_main!(benches);
