//! The relay's AMQP sink on real PostgreSQL and a real AMQP 1.0 broker (RabbitMQ's amqp1_0
//! plugin, `testkit::broker`): a round the broker does not take marks nothing published, and
//! the next round, once the broker takes the messages, publishes every row once.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use backend_adapters::amqp::AmqpPublisher;
use backend_adapters::sql::Db;
use backend_adapters::sql::outbox::{self, Delivery, NewEvent, topic};
use settlement::relay::{AmqpSink, OutboxSink, RelayChannel, RelayError, relay_once};
use testkit::broker::{
    assert_broker_up, broker_settings, check_delivery, collect, scratch_queue, share_broker,
};

fn sink(address: &str, metrics: &settlement::Metrics) -> Arc<dyn OutboxSink> {
    Arc::new(AmqpSink {
        publisher: AmqpPublisher::new(broker_settings(address)),
        session_per_order: true,
        metrics: metrics.clone(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_marked_published_until_the_broker_accepted_it() -> anyhow::Result<()> {
    let _broker = share_broker().await;
    let queue = scratch_queue("amqp-sink");
    assert_broker_up(&queue).await;
    let db = Db::connect(&testkit::scratch_schema("amqpsink").await, 2).await?;
    db.migrate().await?;
    let events: Vec<NewEvent> = (1..=12)
        .map(|n| {
            NewEvent::new(
                topic::ORDER_CREATED,
                serde_json::json!({"order_id": format!("ord_{}", n % 4), "sku": "HOT", "qty": 1}),
            )
        })
        .collect();
    outbox::append_now(&db, &events).await?;
    let metrics = settlement::Metrics::new(&prometheus::Registry::new())?;

    // An exchange that does not exist: RabbitMQ refuses the link, the round fails, every row
    // stays unpublished.
    let refused = format!(
        "/exchange/sgtest-missing-{}/k",
        uuid::Uuid::new_v4().simple()
    );
    let error = relay_once(&db, &RelayChannel::broker(sink(&refused, &metrics)), 100)
        .await
        .unwrap_err();
    assert!(
        matches!(error, RelayError::Sink { sink: "amqp", .. }),
        "{error}"
    );
    assert_eq!(
        outbox::unpublished(&db, Delivery::Broker, 100).await?.len(),
        12
    );
    assert!(
        metrics
            .outbox_amqp_failures
            .with_label_values(&["connect"])
            .get()
            > 0
    );
    assert_eq!(metrics.outbox_amqp_connected.get(), 0);

    // The real queue: two rounds of 8 and 4, all published, all delivered once in order.
    let good = RelayChannel::broker(sink(&queue, &metrics));
    assert_eq!(relay_once(&db, &good, 8).await?, 8);
    assert_eq!(relay_once(&db, &good, 8).await?, 4);
    assert!(
        outbox::unpublished(&db, Delivery::Broker, 100)
            .await?
            .is_empty()
    );
    assert_eq!(metrics.outbox_amqp_published.get(), 12);
    assert_eq!(metrics.outbox_amqp_connected.get(), 1);

    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT id, topic, payload FROM outbox ORDER BY id")
            .fetch_all(db.pool())
            .await?;
    let ids: BTreeSet<String> = rows.iter().map(|r| r.0.to_string()).collect();
    let received = collect(&queue)
        .wait_for(&ids, Duration::from_secs(20))
        .await?;
    let report = check_delivery(&rows, &received);
    assert!(report.ok(), "{report:#?}");
    assert_eq!(report.repeats, 0);
    db.close().await;
    Ok(())
}
