//! Redis-specific behaviour of `RedisStore` that the shared conformance suite cannot see:
//! script reloading, hash slots, key lifetimes, the cross-slot idempotency binding, and
//! failing fast when Redis is gone. Runs against the Redis at `REDIS_URL`.

mod redis_support;

use std::time::{Duration, Instant};

use backend_adapters::redis::{RedisStore, RedisStoreConfig};
use redis::AsyncCommands;
use redis_support::store_on;
use reservation_core::testsuite::{buyer, product, request};
use reservation_core::{ReservationError, ReservationStore};
use testkit::{delete_keys_under, keys_under, redis_connection, scratch_prefix};

/// CRC16/XMODEM, the checksum Redis Cluster maps keys to slots with (spec: `CLUSTER KEYSLOT`
/// is not available on this non-cluster server, so the slot is computed here).
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The cluster slot of a key, honouring the first non-empty `{...}` hash tag.
fn key_slot(key: &str) -> u16 {
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    crc16(hashed.as_bytes()) % 16384
}

#[test]
fn key_slot_matches_the_cluster_spec() {
    // Test vectors from the Redis Cluster specification.
    assert_eq!(crc16(b"123456789"), 0x31C3);
    assert_eq!(
        key_slot("{user1000}.following"),
        key_slot("{user1000}.followers")
    );
    assert_eq!(key_slot("foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_keys_of_a_sku_share_one_hash_slot() {
    let prefix = scratch_prefix("store");
    let store = store_on(&prefix).await;
    let sku = product(&store, "SLOT-1", 10).await;
    let a = store
        .reserve(&request("SLOT-1", "alice", 1, "k1"))
        .await
        .unwrap_or_else(|e| panic!("reserve: {e}"));
    let b = store
        .reserve(&request("SLOT-1", "bob", 2, "k1"))
        .await
        .unwrap_or_else(|e| panic!("reserve: {e}"));
    store.begin_confirm(&a.hold.id, &a.hold.buyer).await.ok();
    store.finish_confirm(&a.hold.id).await.ok();
    store
        .return_cancelled(&a.hold.id, &a.hold.buyer, a.hold.qty)
        .await
        .unwrap_or_else(|e| panic!("return_cancelled: {e}"));
    store.release(&b.hold.id, &b.hold.buyer).await.ok();

    let keys = keys_under(&prefix).await;
    let tag = format!("{{{sku}}}");
    let (in_sku, global): (Vec<&String>, Vec<&String>) =
        keys.iter().partition(|k| k.contains(&tag));
    // What is left: stock, returned, two final holds and their idempotency records (the
    // buyers hash and the expiry index went away when they emptied).
    for part in [":stock", ":returned", ":hold:", ":idem:"] {
        assert!(
            in_sku.iter().any(|k| k.contains(part)),
            "no {part} key in {keys:?}"
        );
    }
    let slot = key_slot(in_sku[0]);
    for key in &in_sku {
        assert_eq!(key_slot(key), slot, "{key} is outside the SKU's slot");
    }
    // Only the SKU list and the cross-slot idempotency bindings live elsewhere.
    for key in &global {
        assert!(
            **key == format!("{prefix}:skus") || key.starts_with(&format!("{prefix}:idem:")),
            "unexpected key outside the SKU's slot: {key}"
        );
    }
    delete_keys_under(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_between_calls_reloads_the_scripts() {
    let prefix = scratch_prefix("store");
    let store = store_on(&prefix).await;
    let sku = product(&store, "FLUSH", 10).await;
    let mut conn = redis_connection().await;
    let flush = || redis::cmd("SCRIPT").arg("FLUSH").to_owned();

    flush()
        .query_async::<()>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("SCRIPT FLUSH: {e}"));
    // reserve sends its script in a pipeline beside the idempotency SET.
    let first = store
        .reserve(&request("FLUSH", "alice", 2, "k1"))
        .await
        .unwrap_or_else(|e| panic!("reserve after SCRIPT FLUSH: {e}"));
    assert!(!first.replayed);

    flush()
        .query_async::<()>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("SCRIPT FLUSH: {e}"));
    // The binding made before the flush is still there: the same request replays.
    let again = store
        .reserve(&request("FLUSH", "alice", 2, "k1"))
        .await
        .unwrap_or_else(|e| panic!("replay after SCRIPT FLUSH: {e}"));
    assert!(again.replayed);
    assert_eq!(again.hold.id, first.hold.id);

    flush()
        .query_async::<()>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("SCRIPT FLUSH: {e}"));
    // The other operations send their script on its own.
    let released = store
        .release(&first.hold.id, &buyer("alice"))
        .await
        .unwrap_or_else(|e| panic!("release after SCRIPT FLUSH: {e}"));
    assert_eq!(released.state, reservation_core::HoldState::Released);
    let s = store.snapshot(&sku).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.available, s.held), (10, 0));

    flush()
        .query_async::<()>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("SCRIPT FLUSH: {e}"));
    assert_eq!(store.scripts_loaded().await, Ok(false));
    store
        .load_scripts()
        .await
        .unwrap_or_else(|e| panic!("load: {e}"));
    assert_eq!(store.scripts_loaded().await, Ok(true));

    // Readiness reloads what a flush (or a restart) took: found by the redis-kill fault run,
    // where a gateway stayed not-ready for good because only its probe noticed the loss.
    flush()
        .query_async::<()>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("SCRIPT FLUSH: {e}"));
    assert_eq!(store.ensure_scripts_loaded().await, Ok(true));
    assert_eq!(store.scripts_loaded().await, Ok(true));
    assert_eq!(store.ensure_scripts_loaded().await, Ok(false));
    delete_keys_under(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_holds_and_idempotency_records_expire_after_the_retention() {
    let prefix = scratch_prefix("store");
    let retention = Duration::from_secs(600);
    let config = RedisStoreConfig {
        prefix: prefix.clone(),
        retention,
        ..RedisStoreConfig::default()
    };
    let store = RedisStore::connect(&testkit::redis_url(), config)
        .await
        .unwrap_or_else(|e| panic!("Redis unreachable: {e}"));
    product(&store, "RET", 10).await;
    let r = store
        .reserve(&request("RET", "alice", 1, "k1"))
        .await
        .unwrap_or_else(|e| panic!("reserve: {e}"));
    let hold_key = format!("{prefix}:{{RET}}:hold:{}", r.hold.id);
    let record_key = format!("{prefix}:{{RET}}:idem:5:alice:k1");
    let binding_key = format!("{prefix}:idem:5:alice:k1");
    let mut conn = redis_connection().await;

    // While held: the hold has no TTL; its records last the hold's TTL plus the retention.
    let pttl: i64 = conn.pttl(&hold_key).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(pttl, -1, "a live hold must not expire on its own");
    let binding: String = conn
        .get(&binding_key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(binding, format!("RET|1|{}", r.hold.id));
    let max = (retention.as_millis() as i64) + 60_000;
    for key in [&record_key, &binding_key] {
        let pttl: i64 = conn.pttl(key).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(pttl > max - 5_000 && pttl <= max, "{key}: pttl {pttl}");
    }

    store
        .release(&r.hold.id, &buyer("alice"))
        .await
        .unwrap_or_else(|e| panic!("release: {e}"));
    let retention_ms = retention.as_millis() as i64;
    for key in [&hold_key, &record_key] {
        let pttl: i64 = conn.pttl(key).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(
            pttl > retention_ms - 5_000 && pttl <= retention_ms,
            "{key}: pttl {pttl}"
        );
    }
    delete_keys_under(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_bound_to_another_sku_leaves_no_trace_in_the_second_sku() {
    let prefix = scratch_prefix("store");
    let store = store_on(&prefix).await;
    product(&store, "ONE", 10).await;
    let two = product(&store, "TWO", 10).await;
    let first = store
        .reserve(&request("ONE", "alice", 2, "k1"))
        .await
        .unwrap_or_else(|e| panic!("reserve: {e}"));

    // The reserve script of TWO cannot see the binding (another slot) and takes units; the
    // store must give them back and erase the hold and its record.
    let err = store.reserve(&request("TWO", "alice", 2, "k1")).await;
    assert_eq!(err.unwrap_err(), ReservationError::IdempotencyMismatch);
    let s = store.snapshot(&two).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.available, s.held), (10, 0));
    let leftovers: Vec<String> = keys_under(&prefix)
        .await
        .into_iter()
        .filter(|k| k.contains("{TWO}") && !k.ends_with(":stock"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");

    // The key still replays its first request.
    let again = store
        .reserve(&request("ONE", "alice", 2, "k1"))
        .await
        .unwrap_or_else(|e| panic!("replay: {e}"));
    assert!(again.replayed);
    assert_eq!(again.hold.id, first.hold.id);
    delete_keys_under(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_for_an_unknown_sku_does_not_bind_its_key() {
    let prefix = scratch_prefix("store");
    let store = store_on(&prefix).await;
    let err = store.reserve(&request("LATER", "alice", 1, "k1")).await;
    assert_eq!(err.unwrap_err(), ReservationError::UnknownSku);
    product(&store, "NOW", 5).await;
    let made = store
        .reserve(&request("NOW", "alice", 3, "k1"))
        .await
        .unwrap_or_else(|e| panic!("the key must still be free: {e}"));
    assert!(!made.replayed);
    let mut conn = redis_connection().await;
    let binding: String = conn
        .get(format!("{prefix}:idem:5:alice:k1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(binding, format!("NOW|3|{}", made.hold.id));
    delete_keys_under(&prefix).await;
}

#[tokio::test]
async fn unreachable_redis_is_a_retryable_backend_error() {
    let started = Instant::now();
    // Port 1 on loopback: nothing listens there.
    let result = RedisStore::connect("redis://127.0.0.1:1", RedisStoreConfig::default()).await;
    match result {
        Err(ReservationError::Backend { retryable, message }) => {
            assert!(retryable, "connection refused must be retryable: {message}");
        }
        Err(other) => panic!("expected a backend error, got {other:?}"),
        Ok(_) => panic!("connected to a closed port"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_redis_that_never_answers_times_out_quickly() {
    // A server that accepts connections and never replies: a hung Redis.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("bind: {e}"));
    let addr = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("local_addr: {e}"));
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket); // keep it open, never answer
        }
    });
    let config = RedisStoreConfig {
        response_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(200),
        ..RedisStoreConfig::default()
    };
    let started = Instant::now();
    let result = RedisStore::connect(&format!("redis://{addr}"), config).await;
    let elapsed = started.elapsed();
    silent.abort();
    match result {
        Err(ReservationError::Backend { retryable, message }) => {
            assert!(retryable, "a timeout must be retryable: {message}");
        }
        Err(other) => panic!("expected a backend error, got {other:?}"),
        Ok(_) => panic!("a silent server cannot load scripts"),
    }
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
}

#[test]
fn prefix_must_not_move_the_hash_tag() {
    for bad in ["", "a{b", "a}b", "a b"] {
        let config = RedisStoreConfig {
            prefix: bad.to_owned(),
            ..RedisStoreConfig::default()
        };
        assert!(
            matches!(
                config.validate(),
                Err(ReservationError::InvalidInput {
                    field: "prefix",
                    ..
                })
            ),
            "{bad:?} accepted"
        );
    }
    assert_eq!(RedisStoreConfig::default().validate(), Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uncheckable_binding_refuses_and_takes_back_the_hold() {
    let prefix = scratch_prefix("store");
    let store = store_on(&prefix).await;
    let sku = product(&store, "BROKEN", 10).await;
    // A key of the wrong type where the binding should be: SET .. GET fails on it.
    let mut conn = redis_connection().await;
    let _: i64 = conn
        .lpush(format!("{prefix}:idem:5:alice:k1"), "junk")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = store.reserve(&request("BROKEN", "alice", 2, "k1")).await;
    assert!(
        matches!(
            err,
            Err(ReservationError::Backend {
                retryable: false,
                ..
            })
        ),
        "{err:?}"
    );
    let s = store.snapshot(&sku).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((s.available, s.held), (10, 0));
    let holds: Vec<String> = keys_under(&prefix)
        .await
        .into_iter()
        .filter(|k| k.contains(":hold:") || k.contains("{BROKEN}:idem:"))
        .collect();
    assert!(holds.is_empty(), "left behind: {holds:?}");
    delete_keys_under(&prefix).await;
}

/// The store's binding scripts, run directly to stage the steps of a race.
static DROP_BINDING: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(include_str!("../src/redis/lua/drop_binding.lua"))
});
static CLAIM_BINDING: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(include_str!("../src/redis/lua/claim_binding.lua"))
});

/// Every key under `prefix` that a test's setup did not leave: the refusals' leftovers.
async fn new_keys(prefix: &str, before: &[String]) -> Vec<String> {
    let after = keys_under(prefix).await;
    after.into_iter().filter(|k| !before.contains(k)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_reserves_leave_no_key_behind() {
    // Failed before refusals deleted their bindings: 200 keys with a PTTL of hold TTL + 24 h.
    let prefix = scratch_prefix("store");
    let store = store_on(&prefix).await;
    let sku = reservation_core::testsuite::sku("LIMIT");
    store
        .configure_product(&sku, &reservation_core::testsuite::stock(100, 1, 1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .reserve(&request("LIMIT", "alice", 1, "first"))
        .await
        .unwrap_or_else(|e| panic!("reserve: {e}"));
    let before = keys_under(&prefix).await;
    for i in 0..200 {
        let err = store
            .reserve(&request("LIMIT", "alice", 1, &format!("fresh-{i}")))
            .await;
        assert_eq!(
            err.unwrap_err(),
            ReservationError::PurchaseLimit { limit: 1 }
        );
        // And an unknown SKU, which the script refuses before anything else.
        let err = store
            .reserve(&request("GONE", "alice", 1, &format!("gone-{i}")))
            .await;
        assert_eq!(err.unwrap_err(), ReservationError::UnknownSku);
    }
    let left = new_keys(&prefix, &before).await;
    delete_keys_under(&prefix).await;
    assert!(
        left.is_empty(),
        "{} keys left: {:?}",
        left.len(),
        &left[..left.len().min(3)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_made_under_an_equal_binding_of_a_refused_request_keeps_its_binding() {
    // The race, step by step: a refused request R wrote the binding (same SKU and quantity)
    // and has not deleted it yet; a retry S found it, made the hold; then R deletes "its"
    // binding. S must have made the binding its own, or the key would come loose from its
    // hold (and could then make a second hold for another SKU).
    let prefix = scratch_prefix("store");
    let store = store_on(&prefix).await;
    product(&store, "RACE", 10).await;
    product(&store, "OTHER", 10).await;
    let binding_key = format!("{prefix}:idem:5:alice:k1");
    let refused_value = "RACE|1|rsv_00000000000000000000000000000000_RACE";
    let mut conn = redis_connection().await;
    let _: () = conn
        .set(&binding_key, refused_value)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let made = store
        .reserve(&request("RACE", "alice", 1, "k1"))
        .await
        .unwrap_or_else(|e| panic!("reserve: {e}"));
    assert!(!made.replayed);
    // R's compare-and-delete comes late.
    let deleted: Vec<String> = DROP_BINDING
        .key(&binding_key)
        .arg(refused_value)
        .invoke_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        deleted,
        ["ok", "0"],
        "the refused request deleted the hold's binding"
    );
    let binding: String = conn
        .get(&binding_key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(binding, format!("RACE|1|{}", made.hold.id));
    let err = store.reserve(&request("OTHER", "alice", 1, "k1")).await;
    assert_eq!(err.unwrap_err(), ReservationError::IdempotencyMismatch);

    // A binding written by an older version ("<sku>|<qty>") counts as equal too.
    let legacy = format!("{prefix}:idem:5:alice:k2");
    let _: () = conn
        .set(&legacy, "RACE|2")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let old = store
        .reserve(&request("RACE", "alice", 2, "k2"))
        .await
        .unwrap_or_else(|e| panic!("reserve under a legacy binding: {e}"));
    let binding: String = conn.get(&legacy).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(binding, format!("RACE|2|{}", old.hold.id));
    let err = store.reserve(&request("RACE", "alice", 3, "k2")).await;
    assert_eq!(err.unwrap_err(), ReservationError::IdempotencyMismatch);
    delete_keys_under(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claiming_a_binding_replaces_only_an_equal_one() {
    // The step after a hold made under another request's equal binding. If the key was bound
    // to another SKU meanwhile (that request was refused, deleted its value, and a request
    // for another SKU bound the key), the claim fails and the store takes the hold back.
    let prefix = scratch_prefix("store");
    let key = format!("{prefix}:idem:5:alice:k1");
    let mut conn = redis_connection().await;
    let claim = |value: &'static str| {
        let mut invocation = CLAIM_BINDING.prepare_invoke();
        invocation
            .key(key.clone())
            .arg(format!("A|1|{value}"))
            .arg("A|1")
            .arg(60_000);
        invocation
    };
    let get = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let key = key.clone();
        async move {
            conn.get::<_, Option<String>>(key)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        }
    };
    let claimed: Vec<String> = claim("mine")
        .invoke_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(claimed, vec!["ok"]);
    assert_eq!(get(&mut conn).await.as_deref(), Some("A|1|mine"));
    for equal in ["A|1|someone-else", "A|1"] {
        let _: () = conn
            .set(&key, equal)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let claimed: Vec<String> = claim("mine")
            .invoke_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(claimed, vec!["ok"], "{equal}");
        assert_eq!(get(&mut conn).await.as_deref(), Some("A|1|mine"));
    }
    for other in ["B|1|theirs", "A|12|theirs", "A|2"] {
        let _: () = conn
            .set(&key, other)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let claimed: Vec<String> = claim("mine")
            .invoke_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            claimed,
            vec!["idempotency_mismatch".to_owned(), other.to_owned()]
        );
        assert_eq!(
            get(&mut conn).await.as_deref(),
            Some(other),
            "left as it was"
        );
    }
    // And the compare-and-delete of a refused request deletes its own value only.
    let _: () = conn
        .set(&key, "A|1|mine")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let kept: Vec<String> = DROP_BINDING
        .key(&key)
        .arg("A|1|other")
        .invoke_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (kept, get(&mut conn).await.as_deref()),
        (vec!["ok".to_owned(), "0".to_owned()], Some("A|1|mine"))
    );
    let dropped: Vec<String> = DROP_BINDING
        .key(&key)
        .arg("A|1|mine")
        .invoke_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (dropped, get(&mut conn).await),
        (vec!["ok".to_owned(), "1".to_owned()], None)
    );
    delete_keys_under(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancellation_an_older_release_returned_is_not_returned_again() {
    // Releases before 2026-12 recorded returned ids in one set per SKU; after an upgrade a
    // redelivered cancellation found no marker and went back to stock a second time.
    let prefix = scratch_prefix("store");
    let store = store_on(&prefix).await;
    let sku = product(&store, "LEGACY-1", 10).await;
    let made = store
        .reserve(&request("LEGACY-1", "alice", 2, "k1"))
        .await
        .unwrap_or_else(|e| panic!("reserve: {e}"));
    let hold = made.hold;
    store
        .begin_confirm(&hold.id, &hold.buyer)
        .await
        .unwrap_or_else(|e| panic!("begin_confirm: {e}"));
    store
        .finish_confirm(&hold.id)
        .await
        .unwrap_or_else(|e| panic!("finish_confirm: {e}"));
    // Another buyer's order keeps `sold` above the cancelled quantity after the first return.
    let other = store
        .reserve(&request("LEGACY-1", "bob", 2, "k1"))
        .await
        .unwrap_or_else(|e| panic!("reserve: {e}"))
        .hold;
    store.begin_confirm(&other.id, &other.buyer).await.ok();
    store.finish_confirm(&other.id).await.ok();
    // What an older release left after returning this cancellation: the id in the set and
    // the units back on sale.
    let mut raw = redis_connection().await;
    let stock_key = format!("{prefix}:{{{sku}}}:stock");
    let _: () = raw
        .sadd(format!("{prefix}:{{{sku}}}:returned"), hold.id.as_str())
        .await
        .unwrap_or_else(|e| panic!("sadd: {e}"));
    let _: () = redis::pipe()
        .hincr(&stock_key, "sold", -2)
        .hincr(&stock_key, "available", 2)
        .query_async(&mut raw)
        .await
        .unwrap_or_else(|e| panic!("hincr: {e}"));

    let returned = store
        .return_cancelled(&hold.id, &hold.buyer, hold.qty)
        .await
        .unwrap_or_else(|e| panic!("return_cancelled: {e}"));
    let available: i64 = raw
        .hget(&stock_key, "available")
        .await
        .unwrap_or_else(|e| panic!("hget: {e}"));
    delete_keys_under(&prefix).await;
    assert!(!returned, "the redelivery was applied again");
    assert_eq!(
        available, 8,
        "bob's 2 units are sold, alice's are back once"
    );
}
