//! The outbox relay on real PostgreSQL and Redis: every event reaches a consumer group exactly
//! once and in order across a relay crash and restart, and entries a dead consumer read but
//! never acknowledged are taken over with XAUTOCLAIM.

mod common;

use std::sync::Arc;
use std::time::Duration;

use backend_adapters::redis::stream::{ConsumerGroup, StreamPublisher};
use backend_adapters::sql::Db;
use backend_adapters::sql::outbox::{self, Delivery, NewEvent};
use settlement::relay::{OutboxSink, RelayChannel, StreamSink, relay_once};
use testkit::{redis_url, scratch_prefix};

async fn database() -> anyhow::Result<Db> {
    let db = Db::connect(&testkit::scratch_schema("outbox").await, 4).await?;
    db.migrate().await?;
    Ok(db)
}

fn metrics() -> settlement::Metrics {
    settlement::Metrics::new(&prometheus::Registry::new()).expect("fresh registry")
}

async fn append(db: &Db, from: i64, to: i64) -> anyhow::Result<()> {
    let events: Vec<NewEvent> = (from..=to)
        .map(|n| NewEvent::new("test.event", serde_json::json!({ "n": n })))
        .collect();
    outbox::append_now(db, &events).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_reaches_the_group_exactly_once_across_a_relay_restart() -> anyhow::Result<()> {
    let db = database().await?;
    let stream = format!("{}:events", scratch_prefix("outbox"));
    let group = ConsumerGroup::connect(&redis_url(), &stream, "gateway", "reader-1").await?;
    group.ensure().await?;
    append(&db, 1, 25).await?;

    // Relay #1 publishes one batch, then crashes after XADD-ing the next five events but
    // before marking them published.
    let first: Vec<Arc<dyn OutboxSink>> = vec![Arc::new(StreamSink {
        publisher: StreamPublisher::connect(&redis_url(), &stream, 10_000).await?,
        metrics: metrics(),
    })];
    assert_eq!(
        relay_once(&db, &RelayChannel::redis(first.clone(), false), 10).await?,
        10
    );
    let unmarked = outbox::unpublished(&db, Delivery::Redis, 5).await?;
    first[0].deliver(&unmarked).await?;
    drop(first);

    // More events arrive while no relay runs; then relay #2 starts and drains everything.
    append(&db, 26, 40).await?;
    let second: Vec<Arc<dyn OutboxSink>> = vec![Arc::new(StreamSink {
        publisher: StreamPublisher::connect(&redis_url(), &stream, 10_000).await?,
        metrics: metrics(),
    })];
    while relay_once(&db, &RelayChannel::redis(second.clone(), false), 7).await? > 0 {}
    assert!(
        outbox::unpublished(&db, Delivery::Redis, 1)
            .await?
            .is_empty()
    );

    let mut seen: Vec<(i64, i64)> = Vec::new();
    loop {
        let mut round = Vec::new();
        let acked = group
            .process(
                100,
                Duration::from_millis(50),
                Duration::from_secs(60),
                |event| {
                    let n = serde_json::from_str::<serde_json::Value>(&event.payload)
                        .ok()
                        .and_then(|v| v["n"].as_i64())
                        .unwrap_or(-1);
                    round.push((event.event_id, n));
                    async { Ok::<(), std::convert::Infallible>(()) }
                },
            )
            .await?;
        seen.extend(round);
        if acked == 0 {
            break;
        }
    }
    let expected: Vec<(i64, i64)> = (1..=40).map(|n| (n, n)).collect();
    assert_eq!(seen, expected, "each event once, in outbox order");
    Ok(())
}

/// Issue 15.4: the stream's last id is above this outbox's ids (a restored or fresh database
/// against an existing Redis, or another deployment on the same stream). Before, the publisher
/// skipped every such event and the relay marked it published: nothing reached the stream, no
/// log, no metric. Now each is appended with a Redis-assigned id and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_below_the_streams_last_id_are_appended_not_dropped() -> anyhow::Result<()> {
    let db = database().await?;
    let stream = format!("{}:events", scratch_prefix("outbox"));
    let group = ConsumerGroup::connect(&redis_url(), &stream, "gateway", "reader").await?;
    group.ensure().await?;
    // Another deployment's entry, far ahead of this fresh outbox.
    let mut redis = redis::Client::open(redis_url())?
        .get_multiplexed_async_connection()
        .await?;
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("900000-0")
        .arg(&["id", "900000", "topic", "other.event", "payload", "{}"])
        .query_async(&mut redis)
        .await?;
    append(&db, 1, 3).await?;

    let metrics = metrics();
    let sinks: Vec<Arc<dyn OutboxSink>> = vec![Arc::new(StreamSink {
        publisher: StreamPublisher::connect(&redis_url(), &stream, 10_000).await?,
        metrics: metrics.clone(),
    })];
    assert_eq!(
        relay_once(&db, &RelayChannel::redis(sinks.clone(), false), 10).await?,
        3
    );
    assert_eq!(metrics.outbox_stream_reassigned.get(), 3);

    let mut seen = Vec::new();
    group
        .process(
            100,
            Duration::from_millis(50),
            Duration::from_secs(60),
            |e| {
                seen.push((e.event_id, e.topic));
                async { Ok::<(), std::convert::Infallible>(()) }
            },
        )
        .await?;
    let ours: Vec<i64> = seen
        .iter()
        .filter(|(_, topic)| topic == "test.event")
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(ours, [1, 2, 3], "{seen:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_consumers_entries_are_claimed_by_another() -> anyhow::Result<()> {
    let stream = format!("{}:events", scratch_prefix("outbox"));
    let publisher = StreamPublisher::connect(&redis_url(), &stream, 10_000).await?;
    let dead = ConsumerGroup::connect(&redis_url(), &stream, "gateway", "dead").await?;
    let alive = ConsumerGroup::connect(&redis_url(), &stream, "gateway", "alive").await?;
    dead.ensure().await?;
    let payload = "{}";
    let events: Vec<(i64, &str, &str)> = (1..=8).map(|id| (id, "t", payload)).collect();
    assert_eq!(publisher.publish(&events).await?.appended, 8);
    // Publishing the same ids again appends nothing.
    let again = publisher.publish(&events).await?;
    assert_eq!((again.appended, again.skipped), (0, 8));

    // "dead" reads five entries and never acknowledges them.
    let taken = dead.read_new(5, Duration::from_millis(10)).await?;
    assert_eq!(taken.len(), 5);
    tokio::time::sleep(Duration::from_millis(150)).await;

    let mut handled = Vec::new();
    for _ in 0..3 {
        alive
            .process(
                100,
                Duration::from_millis(10),
                Duration::from_millis(100),
                |e| {
                    handled.push(e.event_id);
                    async { Ok::<(), std::convert::Infallible>(()) }
                },
            )
            .await?;
    }
    assert_eq!(handled, (1..=8).collect::<Vec<i64>>());
    // Nothing is left pending: the group acknowledged every entry once.
    assert!(alive.claim_stale(Duration::ZERO, 100).await?.is_empty());
    Ok(())
}

/// The running service's relay task: a settlement's `order.created` and the product's
/// `product.updated` reach the configured stream without anyone calling the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_service_relays_its_events_to_the_stream() -> anyhow::Result<()> {
    let prefix = scratch_prefix("outbox");
    let stream = format!("{prefix}:events");
    let mut config = common::test_config(&testkit::scratch_schema("outbox").await);
    config.redis_url = Some(redis_url());
    config.redis_key_prefix = prefix.clone();
    config.outbox.stream = stream.clone();
    let app = common::start_with(config, Arc::new(reservation_core::InMemoryStore::new())).await?;
    let group = ConsumerGroup::connect(&redis_url(), &stream, "gateway", "reader").await?;
    group.ensure().await?;
    app.put_product("RLY", 5).await?;
    let (rid, token) = app.token("RLY", "alice", 1)?;
    assert_eq!(app.settle("alice", &token).await?.status(), 201);

    let mut events = Vec::new();
    for _ in 0..100 {
        events.extend(group.read_new(10, Duration::from_millis(20)).await?);
        if events.len() >= 2 {
            break;
        }
    }
    let topics: Vec<&str> = events.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(topics, ["product.updated", "order.created"]);
    let created: serde_json::Value = serde_json::from_str(&events[1].payload)?;
    assert_eq!(created["reservation_id"], rid.as_str());
    assert_eq!(created["user_sub"], "alice");
    app.running.shutdown().await;
    Ok(())
}

/// A sink that records what it was given, or refuses everything while `down`.
struct Recording {
    down: std::sync::atomic::AtomicBool,
    seen: std::sync::Mutex<Vec<i64>>,
}

#[async_trait::async_trait]
impl OutboxSink for Recording {
    async fn deliver(
        &self,
        events: &[outbox::OutboxEvent],
    ) -> Result<(), settlement::relay::RelayError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(settlement::relay::RelayError::Sink {
                sink: "recording",
                message: "down".into(),
            });
        }
        let mut seen = self.seen.lock().unwrap();
        seen.extend(events.iter().map(|e| e.id));
        Ok(())
    }
}

fn recording(down: bool) -> Arc<Recording> {
    Arc::new(Recording {
        down: std::sync::atomic::AtomicBool::new(down),
        seen: Default::default(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_never_holds_back_the_redis_side() -> anyhow::Result<()> {
    let db = database().await?;
    append(&db, 1, 40).await?;
    let redis_side = recording(false);
    let broker = recording(true);
    let redis_channel = RelayChannel::redis(vec![redis_side.clone()], true);
    let broker_channel = RelayChannel::broker(broker.clone());

    // The broker refuses every round; the Redis side goes through all 40 rows in rounds of 8,
    // far past the first round the broker is stuck on.
    assert!(relay_once(&db, &broker_channel, 8).await.is_err());
    while relay_once(&db, &redis_channel, 8).await? > 0 {}
    assert_eq!(
        *redis_side.seen.lock().unwrap(),
        (1..=40).collect::<Vec<_>>()
    );
    assert_eq!(outbox::lag(&db, Delivery::Redis).await?.0, 0);
    assert_eq!(outbox::lag(&db, Delivery::Broker).await?.0, 40);

    // The broker comes back: its channel delivers all 40 in id order, once.
    broker
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    while relay_once(&db, &broker_channel, 8).await? > 0 {}
    assert_eq!(*broker.seen.lock().unwrap(), (1..=40).collect::<Vec<_>>());
    assert_eq!(outbox::lag(&db, Delivery::Broker).await?.0, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_the_redis_side_marks_both_so_a_later_broker_starts_from_now()
-> anyhow::Result<()> {
    let db = database().await?;
    append(&db, 1, 10).await?;
    let redis_side = recording(false);
    while relay_once(
        &db,
        &RelayChannel::redis(vec![redis_side.clone()], false),
        100,
    )
    .await?
        > 0
    {}
    assert_eq!(outbox::lag(&db, Delivery::Broker).await?.0, 0);

    // A broker configured now gets what happens from now on, not the history.
    append(&db, 11, 12).await?;
    let broker = recording(false);
    while relay_once(&db, &RelayChannel::broker(broker.clone()), 100).await? > 0 {}
    let seen = broker.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    Ok(())
}
