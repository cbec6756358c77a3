//! Hot functions of the core: a reserve on the in-memory store (one thread, and several
//! threads contending for one SKU), reservation-token sign and verify, and the service
//! assertion the gateway signs and settlement verifies on every request between them.
//!
//! Run: `cargo bench -p reservation-core -- --warm-up-time 1 --measurement-time 3`

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use reservation_core::{
    BuyerId, IdempotencyKey, InMemoryStore, ProductStock, Qty, ReservationClaims, ReservationStore,
    ReserveRequest, SaleState, Sku, TokenSigner, TokenVerifier,
};

/// Threads in the contended bench: more than this box's 2 cores, as under a flash sale.
const CONTENDING_THREADS: u64 = 4;

/// Drives a future that never waits: every in-memory store call completes on first poll,
/// so the bench measures the store rather than an executor.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

/// A fresh store with one SKU that cannot sell out or hit a limit during a bench.
fn store_with_endless_stock() -> InMemoryStore {
    let store = InMemoryStore::new();
    let stock = ProductStock {
        total_stock: i64::MAX as u64 / 4,
        per_buyer_limit: u32::MAX,
        max_per_order: 10,
        sale_state: SaleState::OnSale,
    };
    ready(store.configure_product(&Sku::parse("HOT").unwrap(), &stock)).unwrap();
    store
}

/// Requests with distinct idempotency keys, built before the timer starts.
fn requests(buyer: &str, n: u64) -> Vec<ReserveRequest> {
    let (sku, buyer) = (Sku::parse("HOT").unwrap(), BuyerId::parse(buyer).unwrap());
    (0..n)
        .map(|i| ReserveRequest {
            sku: sku.clone(),
            buyer: buyer.clone(),
            qty: Qty::new(1).unwrap(),
            idempotency_key: IdempotencyKey::parse(&format!("k{i}")).unwrap(),
            hold_ttl_ms: 600_000,
        })
        .collect()
}

fn reserve(c: &mut Criterion) {
    let mut group = c.benchmark_group("in_memory_reserve");
    group.throughput(Throughput::Elements(1));
    // A fresh store per sample keeps memory bounded: every reserve adds a hold and a key.
    group.bench_function("single_thread", |b| {
        b.iter_custom(|iters| {
            let store = store_with_endless_stock();
            let reqs = requests("alice", iters);
            let start = Instant::now();
            for req in &reqs {
                ready(store.reserve(req)).unwrap();
            }
            start.elapsed()
        })
    });
    // Wall time for `iters` reserves split over the threads: the time per reserve when the
    // threads fight over one SKU's lock.
    group.bench_function("contended_4_threads", |b| {
        b.iter_custom(|iters| {
            let store = Arc::new(store_with_endless_stock());
            let per_thread = iters.div_ceil(CONTENDING_THREADS);
            let batches: Vec<_> = (0..CONTENDING_THREADS)
                .map(|t| requests(&format!("buyer{t}"), per_thread))
                .collect();
            let start = Instant::now();
            thread::scope(|scope| {
                for reqs in &batches {
                    let store = &store;
                    scope.spawn(move || {
                        for req in reqs {
                            ready(store.reserve(req)).unwrap();
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

fn token(c: &mut Criterion) {
    let signer = TokenSigner::generate("k1");
    let verifier = TokenVerifier::for_signer(&signer);
    let store = store_with_endless_stock();
    let hold = ready(store.reserve(&requests("alice", 1)[0])).unwrap().hold;
    let claims = ReservationClaims::for_hold(&hold);
    let token = signer.sign(&claims).unwrap();

    let mut group = c.benchmark_group("reservation_token");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| b.iter(|| signer.sign(&claims).unwrap()));
    group.bench_function("verify", |b| b.iter(|| verifier.verify(&token).unwrap()));
    group.finish();
}

/// One assertion for a confirm-sized body (a reservation token in JSON, ≈ 400 bytes): the
/// gateway signs it, settlement hashes the body and verifies it.
fn service_assertion(c: &mut Criterion) {
    use reservation_core::assertion::{AssertionSigner, AssertionVerifier, Bound, Identity};
    let signer = AssertionSigner::new(TokenSigner::generate("g1"));
    let verifier = AssertionVerifier::new(&signer.jwks()).unwrap();
    let body = vec![b'x'; 400];
    let identity = Identity {
        sub: Some("José".into()),
        roles: vec!["buyer".into()],
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let path = "/internal/settlements";
    let request = Bound::new("POST", path, &body);
    let token = signer.sign(&request, &identity, now).unwrap();

    let mut group = c.benchmark_group("service_assertion");
    group.throughput(Throughput::Elements(1));
    group.bench_function("sign", |b| {
        b.iter(|| signer.sign(&request, &identity, now).unwrap())
    });
    group.bench_function("verify", |b| {
        b.iter(|| verifier.verify(Some(&token), &request).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3));
    targets = reserve, token, service_assertion
}
criterion_main!(benches);
