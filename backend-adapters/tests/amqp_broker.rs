//! The AMQP publisher and consumer against a real AMQP 1.0 broker (RabbitMQ's amqp1_0 plugin,
//! `testkit::broker`): every field arrives as sent, a refused message is an error, and a
//! publisher whose broker restarted reconnects by itself and loses nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use backend_adapters::amqp::{AmqpError, AmqpPublisher, AmqpSettings, OutgoingMessage};
use testkit::broker::{
    assert_broker_up, broker_settings, collect, own_broker, restart_broker, scratch_queue,
    share_broker,
};

fn message(id: u32) -> OutgoingMessage {
    OutgoingMessage {
        message_id: id.to_string(),
        subject: "order.created".into(),
        group_id: Some(format!("order-{}", id % 3)),
        properties: vec![
            ("order_id".into(), format!("order-{}", id % 3)),
            ("sku".into(), "HOT".into()),
        ],
        content_type: "application/json".into(),
        body: format!(r#"{{"n":{id}}}"#).into_bytes(),
    }
}

#[tokio::test]
async fn messages_arrive_as_sent() {
    let _broker = share_broker().await;
    let queue = scratch_queue("amqp-fields");
    assert_broker_up(&queue).await;
    let publisher = AmqpPublisher::new(broker_settings(&queue));
    let batch: Vec<_> = (1..=5).map(message).collect();
    publisher.publish(&batch).await.unwrap();
    assert!(publisher.is_connected());

    let collector = collect(&queue);
    let ids: BTreeSet<String> = (1..=5).map(|i| i.to_string()).collect();
    let received = collector
        .wait_for(&ids, Duration::from_secs(20))
        .await
        .unwrap();
    let order: Vec<_> = received
        .iter()
        .filter_map(|m| m.message_id.clone())
        .collect();
    assert_eq!(order, ["1", "2", "3", "4", "5"]);
    let first = &received[0];
    assert_eq!(first.subject.as_deref(), Some("order.created"));
    assert_eq!(first.group_id.as_deref(), Some("order-1"));
    assert_eq!(first.content_type.as_deref(), Some("application/json"));
    assert!(first.durable);
    assert_eq!(first.properties["order_id"], "order-1");
    assert_eq!(first.properties["sku"], "HOT");
    assert_eq!(first.body, br#"{"n":1}"#);
}

#[tokio::test]
async fn an_address_the_broker_refuses_is_an_error_not_a_success() {
    let _broker = share_broker().await;
    let queue = scratch_queue("amqp-refused");
    assert_broker_up(&queue).await;
    // An exchange that does not exist: RabbitMQ refuses the link (or the message).
    let publisher = AmqpPublisher::new(broker_settings(&format!(
        "/exchange/sgtest-missing-{}/key",
        uuid::Uuid::new_v4().simple()
    )));
    let error = publisher.publish(&[message(1)]).await.unwrap_err();
    assert!(
        matches!(
            error,
            AmqpError::Connect { .. } | AmqpError::NotAccepted { .. } | AmqpError::Send { .. }
        ),
        "{error}"
    );
    // Right after a failure the publisher backs off instead of hammering the broker.
    let again = publisher.publish(&[message(1)]).await.unwrap_err();
    assert!(
        matches!(
            again,
            AmqpError::Backoff { .. }
                | AmqpError::Connect { .. }
                | AmqpError::NotAccepted { .. }
                | AmqpError::Send { .. }
        ),
        "{again}"
    );
}

#[tokio::test]
async fn a_broker_restart_loses_nothing_and_the_publisher_reconnects() {
    let _broker = own_broker().await;
    let queue = scratch_queue("amqp-restart");
    assert_broker_up(&queue).await;
    let publisher = AmqpPublisher::new(broker_settings(&queue));
    publisher
        .publish(&(1..=10).map(message).collect::<Vec<_>>())
        .await
        .unwrap();

    restart_broker(&queue).await;
    // The old link died with the broker: the publisher finds out on its first send and
    // sends the batch again on a fresh connection, within the same call.
    let second: Vec<_> = (11..=20).map(message).collect();
    publisher.publish(&second).await.unwrap();
    assert!(publisher.is_connected());

    let collector = collect(&queue);
    let ids: BTreeSet<String> = (1..=20).map(|i| i.to_string()).collect();
    let received = collector
        .wait_for(&ids, Duration::from_secs(30))
        .await
        .unwrap();
    let distinct: BTreeSet<_> = received
        .iter()
        .filter_map(|m| m.message_id.clone())
        .collect();
    assert_eq!(
        distinct, ids,
        "the durable messages sent before the restart survived it"
    );
}

/// A queue that refuses every message (a RabbitMQ policy: at most 0 messages, overflow
/// `reject-publish`): the broker does not accept the transfer — RabbitMQ 3.10's amqp1_0
/// plugin never settles it at all, a broker that does would answer `rejected` — and
/// `publish` fails (within the send timeout) instead of returning `Ok`.
#[tokio::test]
async fn a_message_the_broker_does_not_accept_is_an_error() {
    let _broker = share_broker().await;
    let queue = scratch_queue("amqp-full");
    let name = queue.trim_start_matches("/queue/").to_owned();
    let policy = std::process::Command::new("rabbitmqctl")
        .args(["-q", "set_policy", &name, &format!("^{name}$")])
        .arg(r#"{"max-length":0,"overflow":"reject-publish"}"#)
        .args(["--apply-to", "queues"])
        .output()
        .expect("rabbitmqctl set_policy (is rabbitmq-server installed?)");
    assert!(policy.status.success(), "{policy:?}");
    assert_broker_up(&queue).await;
    let settings = AmqpSettings {
        send_timeout: Duration::from_secs(1),
        ..broker_settings(&queue)
    };
    let publisher = AmqpPublisher::new(settings);
    let error = publisher.publish(&[message(1)]).await.unwrap_err();
    let _ = std::process::Command::new("rabbitmqctl")
        .args(["-q", "clear_policy", &name])
        .output();
    assert!(
        matches!(error, AmqpError::NotAccepted { .. } | AmqpError::Timeout(_)),
        "{error}"
    );
}
