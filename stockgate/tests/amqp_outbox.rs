//! The outbox relay's AMQP 1.0 sink end to end: the real stack (gateway and settlement on Redis
//! and PostgreSQL) relays to a real broker (RabbitMQ's amqp1_0 plugin, `testkit::broker`), a
//! flash sale and ops status changes make events, the broker is restarted while the relay
//! runs (ops change orders while it is down), and a consumer must see every outbox event exactly once after dropping repeats by
//! `message-id`, each order's events in outbox id order, with the fields the subscribers
//! filter on. Needs REDIS_URL, DATABASE_URL and AMQP_URL (scripts/test.sh sets them).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use settlement::config::{AmqpConfig, Secret};
use testkit::broker::{
    amqp_credentials, amqp_url, assert_broker_up, check_delivery, collect, own_broker,
    scratch_queue, start_broker, stop_broker,
};
use testkit::{RealStack, body, fresh_key};

const BUYERS: usize = 200;
const STOCK: i64 = 100;

/// The stack with the AMQP sink on `queue`, next to the Redis stream.
async fn stack_on(queue: &str) -> RealStack {
    let (user, key) = amqp_credentials();
    let address = queue.to_owned();
    RealStack::start("amqp", move |config| {
        config.settlement.outbox.amqp = Some(AmqpConfig {
            url: amqp_url(),
            address,
            sas_key_name: user,
            sas_key: Secret(key),
            session_per_order: true,
            connect_timeout_ms: 2_000,
            send_timeout_ms: 5_000,
            ..AmqpConfig::default()
        });
        // Small rounds: the events of the broker's downtime are many rounds, so the Redis
        // side must really go on without the broker (one round of 256 hid that it did not).
        config.settlement.outbox.batch = 16;
    })
    .await
}

/// One buyer's try: a hold of one unit, then the confirm. The order id when it was created.
async fn buy(stack: &RealStack, buyer: usize) -> Option<String> {
    let token = stack.idp.token(&format!("amqp-buyer-{buyer}"));
    let (status, hold) = stack.reserve(&token, &fresh_key(), "FLASH", 1).await;
    if status != 201 {
        assert!(status == 409 || status == 422, "reserve: {status} {hold}");
        return None;
    }
    let reservation = hold["token"].as_str().unwrap_or_default().to_owned();
    let (status, order) = stack.confirm(&token, &fresh_key(), &reservation).await;
    assert_eq!(status, 201, "confirm: {order}");
    order["order_id"].as_str().map(str::to_owned)
}

async fn set_status(stack: &RealStack, order_id: &str, to: &str) {
    let ops = stack.idp.ops_token("olga");
    let response = stack
        .http
        .post(stack.url(&format!("/api/v1/admin/orders/{order_id}/status")))
        .bearer_auth(ops)
        .json(&json!({ "status": to }))
        .send()
        .await
        .unwrap();
    let (status, answer) = body(response).await;
    assert_eq!(status, 200, "{to} {order_id}: {answer}");
}

/// Every outbox row, once the relay has marked them all published.
async fn published_outbox(stack: &RealStack, within: Duration) -> Vec<(i64, String, String)> {
    let started = Instant::now();
    loop {
        let rows: Vec<(i64, String, String, Option<i64>)> = sqlx::query_as(
            "SELECT id, topic, payload, broker_published_at_ms FROM outbox ORDER BY id",
        )
        .fetch_all(stack.db.pool())
        .await
        .unwrap();
        if !rows.is_empty() && rows.iter().all(|r| r.3.is_some()) {
            return rows.into_iter().map(|(id, t, p, _)| (id, t, p)).collect();
        }
        assert!(
            started.elapsed() < within,
            "the relay did not publish the outbox within {within:?}: {} of {} rows unpublished",
            rows.iter().filter(|r| r.3.is_none()).count(),
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_reaches_the_broker_once_in_order_through_a_broker_restart() {
    // It stops the broker: no other broker test runs meanwhile (testkit::broker).
    let _broker = own_broker().await;
    let queue = scratch_queue("outbox");
    assert_broker_up(&queue).await;
    let stack = Arc::new(stack_on(&queue).await);
    let collector = collect(&queue);
    stack.add_product("FLASH", STOCK, 1).await;

    // The sale, a few buyers at a time so that it is still going when the broker restarts.
    let sale = {
        let stack = stack.clone();
        tokio::spawn(async move {
            let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    let (stack, next) = (stack.clone(), next.clone());
                    tokio::spawn(async move {
                        let mut orders = Vec::new();
                        loop {
                            let buyer = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if buyer >= BUYERS {
                                return orders;
                            }
                            orders.extend(buy(&stack, buyer).await);
                        }
                    })
                })
                .collect();
            let mut orders = Vec::new();
            for worker in workers {
                orders.extend(worker.await.unwrap());
            }
            orders
        })
    };
    // A real restart of the RabbitMQ application (stop_app, later start_app) once the relay
    // has published some of the sale: every connection drops, the queue and its durable
    // messages come back from disk. A restart rather than `close_all_connections`: it also
    // proves the messages the broker accepted before it were stored, not only that the relay
    // reconnects. The exclusive broker lock keeps every other broker test, of this binary or
    // another, from running meanwhile.
    while stack.orders_of_sku("FLASH").await < 20 && !sale.is_finished() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    stop_broker().await;
    let mut orders = sale.await.unwrap();
    orders.sort();
    assert_eq!(
        orders.len() as i64,
        STOCK,
        "one unit per buyer, stock {STOCK}"
    );

    // Ops move orders along while the broker is down: every 5th cancelled (its units go back
    // to stock through the relay's store effects, broker or not), every 3rd of the rest
    // shipped then delivered. These events wait in the outbox.
    for (i, order_id) in orders.iter().enumerate() {
        if i % 5 == 0 {
            set_status(&stack, order_id, "cancelled").await;
        } else if i % 3 == 0 {
            set_status(&stack, order_id, "shipped").await;
            set_status(&stack, order_id, "delivered").await;
        }
    }
    let (pending, _) = backend_adapters::sql::outbox::lag(
        &stack.db,
        backend_adapters::sql::outbox::Delivery::Broker,
    )
    .await
    .unwrap();
    assert!(
        pending > 0,
        "the events of the broker's downtime wait in the outbox"
    );
    // The broker's channel retries its failing rounds with a backoff of up to 5 s; the Redis
    // channel (store effects, stream) has its own mark and goes on meanwhile.
    let deadline = Instant::now() + Duration::from_secs(15);
    while stack.stock("FLASH").await.available != 20 {
        assert!(
            Instant::now() < deadline,
            "cancelled units are back on sale while the broker is down: {:?}",
            stack.stock("FLASH").await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start_broker(&queue).await;
    let restarted_in = started.elapsed();

    let outbox = published_outbox(&stack, Duration::from_secs(90)).await;
    let ids: BTreeSet<String> = outbox.iter().map(|(id, _, _)| id.to_string()).collect();
    let received = collector
        .wait_for(&ids, Duration::from_secs(60))
        .await
        .unwrap();

    // Exactly once after dropping repeats by message-id, each as its outbox row says (subject,
    // body, order_id and sku), each order's events in outbox id order, nothing unknown.
    let report = check_delivery(&outbox, &received);
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.outbox_events, outbox.len());
    // The rest of each message: a session per order, durable, JSON.
    let mut seen = HashSet::new();
    for message in received
        .iter()
        .filter(|m| seen.insert(m.message_id.clone()))
    {
        let id = message.message_id.as_deref().unwrap_or_default();
        let session = match (
            message.properties.get("order_id"),
            message.properties.get("sku"),
        ) {
            (Some(order_id), _) => order_id.clone(),
            (None, Some(sku)) => format!("product:{sku}"),
            (None, None) => panic!("message {id} has neither order_id nor sku"),
        };
        assert_eq!(message.group_id.as_ref(), Some(&session), "{id}");
        assert_eq!(
            message.content_type.as_deref(),
            Some("application/json"),
            "{id}"
        );
        assert!(message.durable, "{id}");
    }
    let topics: BTreeSet<&str> = outbox.iter().map(|(_, t, _)| t.as_str()).collect();
    assert_eq!(
        topics,
        BTreeSet::from([
            "order.cancelled",
            "order.created",
            "order.status_changed",
            "product.updated"
        ])
    );

    // The relay saw the restart (a failed round, then a new link) and counted what it sent.
    let metrics = &stack.all().settlement.metrics;
    let failures: u64 = ["connect", "backoff", "send", "timeout", "not_accepted"]
        .iter()
        .map(|r| metrics.outbox_amqp_failures.with_label_values(&[r]).get())
        .sum();
    assert!(failures > 0, "the relay never noticed the broker restart");
    assert!(metrics.outbox_amqp_published.get() >= outbox.len() as u64);
    assert_eq!(metrics.outbox_amqp_connected.get(), 1);
    eprintln!(
        "{} events, {} deliveries ({} repeats), {failures} failed relay rounds, broker restart {:.1} s, {} consumer errors",
        outbox.len(),
        received.len(),
        report.repeats,
        restarted_in.as_secs_f64(),
        collector.errors()
    );
    drop(collector);
    match Arc::try_unwrap(stack) {
        Ok(stack) => stack.shutdown().await,
        Err(_) => panic!("the stack is still shared"),
    }
}
