//! The AMQP 1.0 broker of a fault run (RabbitMQ with its `rabbitmq_amqp1_0` plugin on this
//! machine): a [`Collector`] that consumes the outbox relay's queue through every broker
//! restart, the `broker-restart` fault itself ([`restart_rabbitmq`]), and the verdict on what
//! arrived ([`check_delivery`]): every outbox event exactly once after dropping repeats by
//! `message-id`, each order's events in outbox id order, nothing the outbox does not have.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use backend_adapters::amqp::{AmqpConsumer, AmqpPublisher, AmqpSettings, Received};
use serde::Serialize;

/// Consumes one address in a background task into a list, reconnecting after every error;
/// the messages are kept as received, repeats included.
pub struct Collector {
    received: Arc<Mutex<Vec<Received>>>,
    errors: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub fn start(settings: AmqpSettings) -> Collector {
        let received = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(0));
        let mut consumer = AmqpConsumer::new(settings);
        let (list, failures) = (received.clone(), errors.clone());
        let task = tokio::spawn(async move {
            loop {
                match consumer.recv(Duration::from_millis(500)).await {
                    Ok(Some(message)) => lock(&list).push(message),
                    Ok(None) => {}
                    Err(_) => {
                        *lock(&failures) += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Collector {
            received,
            errors,
            task,
        }
    }

    /// Everything received so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.received).clone()
    }

    /// How many receive errors (broker gone, link dropped) the consumer rode through.
    pub fn errors(&self) -> usize {
        *lock(&self.errors)
    }

    /// Waits until every id of `ids` has arrived at least once, then a moment longer for
    /// repeats still on their way; returns everything received. Errs after `within`, naming
    /// how many never came.
    pub async fn wait_for(
        &self,
        ids: &BTreeSet<String>,
        within: Duration,
    ) -> anyhow::Result<Vec<Received>> {
        let deadline = Instant::now() + within;
        loop {
            let received = self.received();
            let seen: BTreeSet<&str> = received
                .iter()
                .filter_map(|m| m.message_id.as_deref())
                .collect();
            let missing: Vec<&String> = ids
                .iter()
                .filter(|id| !seen.contains(id.as_str()))
                .collect();
            if missing.is_empty() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                return Ok(self.received());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} of {} messages never arrived within {within:?} (first missing: {:?}); \
                     {} received, {} consumer errors",
                    missing.len(),
                    ids.len(),
                    &missing[..missing.len().min(5)],
                    received.len(),
                    self.errors()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Restarts the RabbitMQ application of this machine's node ([`stop_rabbitmq`], then
/// [`start_rabbitmq`]): every connection drops, durable queues come back from disk with their
/// messages. Returns once the broker of `settings` takes an AMQP 1.0 link again, and how long
/// it all took. The node's Erlang VM stays up, so this takes seconds.
pub async fn restart_rabbitmq(settings: &AmqpSettings) -> anyhow::Result<Duration> {
    let started = Instant::now();
    stop_rabbitmq().await?;
    start_rabbitmq(settings).await?;
    Ok(started.elapsed())
}

/// `rabbitmqctl stop_app`: the node closes every connection and stops serving.
pub async fn stop_rabbitmq() -> anyhow::Result<()> {
    rabbitmqctl("stop_app").await
}

/// `rabbitmqctl start_app`, then waits (up to 60 s) until the broker of `settings` takes an
/// AMQP 1.0 link again.
pub async fn start_rabbitmq(settings: &AmqpSettings) -> anyhow::Result<()> {
    rabbitmqctl("start_app").await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match AmqpPublisher::new(settings.clone()).connect().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                bail!("the broker did not come back within 60 s of start_app: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

async fn rabbitmqctl(step: &'static str) -> anyhow::Result<()> {
    let output = tokio::task::spawn_blocking(move || {
        Command::new("rabbitmqctl").arg("-q").arg(step).output()
    })
    .await?
    .with_context(|| format!("rabbitmqctl {step} (is rabbitmq-server installed?)"))?;
    anyhow::ensure!(
        output.status.success(),
        "rabbitmqctl {step}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// What the broker delivered against what the outbox holds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DeliveryReport {
    pub outbox_events: usize,
    /// Messages received, repeats included.
    pub deliveries: usize,
    pub repeats: usize,
    /// Outbox ids no message carried.
    pub lost: Vec<i64>,
    /// Message ids the outbox does not have (or no id at all).
    pub unknown: Vec<String>,
    /// `(order id, earlier outbox id, later outbox id)` where the later id came first.
    pub out_of_order: Vec<(String, i64, i64)>,
    /// Messages whose subject, body or `order_id`/`sku` properties differ from their row.
    pub mismatched: Vec<String>,
}

impl DeliveryReport {
    pub fn ok(&self) -> bool {
        self.lost.is_empty()
            && self.unknown.is_empty()
            && self.out_of_order.is_empty()
            && self.mismatched.is_empty()
    }
}

/// Checks `received` against the outbox rows `(id, topic, payload)`: after dropping repeats
/// by `message-id` (first arrival kept), every row once, each as its row says, and each
/// order's events in outbox id order.
pub fn check_delivery(outbox: &[(i64, String, String)], received: &[Received]) -> DeliveryReport {
    let rows: BTreeMap<String, (i64, &str, &str)> = outbox
        .iter()
        .map(|(id, topic, payload)| (id.to_string(), (*id, topic.as_str(), payload.as_str())))
        .collect();
    let mut report = DeliveryReport {
        outbox_events: outbox.len(),
        deliveries: received.len(),
        ..DeliveryReport::default()
    };
    let mut seen = HashSet::new();
    let mut last_of_order: BTreeMap<String, i64> = BTreeMap::new();
    for message in received {
        let id = message.message_id.clone().unwrap_or_default();
        if !seen.insert(id.clone()) {
            report.repeats += 1;
            continue;
        }
        let Some(&(n, topic, payload)) = rows.get(&id) else {
            report.unknown.push(id);
            continue;
        };
        let json: serde_json::Value = serde_json::from_str(payload).unwrap_or_default();
        let field = |name: &str| json.get(name).and_then(|v| v.as_str());
        let fits = message.subject.as_deref() == Some(topic)
            && message.body == payload.as_bytes()
            && message.properties.get("sku").map(String::as_str) == field("sku")
            && message.properties.get("order_id").map(String::as_str) == field("order_id");
        if !fits {
            report.mismatched.push(id.clone());
        }
        if let Some(order_id) = field("order_id")
            && let Some(before) = last_of_order.insert(order_id.to_owned(), n)
            && before > n
        {
            report.out_of_order.push((order_id.to_owned(), n, before));
        }
    }
    report.lost = rows
        .values()
        .filter(|(n, _, _)| !seen.contains(&n.to_string()))
        .map(|(n, _, _)| *n)
        .collect();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(id: &str, topic: &str, payload: &str) -> Received {
        let json: serde_json::Value = serde_json::from_str(payload).unwrap();
        let mut properties = BTreeMap::new();
        for name in ["order_id", "sku"] {
            if let Some(v) = json[name].as_str() {
                properties.insert(name.to_owned(), v.to_owned());
            }
        }
        Received {
            message_id: Some(id.into()),
            subject: Some(topic.into()),
            group_id: None,
            content_type: Some("application/json".into()),
            durable: true,
            properties,
            body: payload.as_bytes().to_vec(),
        }
    }

    #[test]
    fn repeats_are_dropped_and_loss_disorder_and_strangers_are_named() {
        let created = r#"{"order_id":"o1","sku":"S"}"#;
        let changed = r#"{"order_id":"o1","sku":"S","to":"shipped"}"#;
        let outbox = vec![
            (1, "order.created".to_owned(), created.to_owned()),
            (2, "order.status_changed".to_owned(), changed.to_owned()),
            (3, "product.updated".to_owned(), r#"{"sku":"S"}"#.to_owned()),
        ];
        let good = [
            message("1", "order.created", created),
            message("1", "order.created", created),
            message("2", "order.status_changed", changed),
            message("3", "product.updated", r#"{"sku":"S"}"#),
        ];
        let report = check_delivery(&outbox, &good);
        assert!(report.ok(), "{report:?}");
        assert_eq!((report.deliveries, report.repeats), (4, 1));

        let bad = [
            message("2", "order.status_changed", changed),
            message("1", "order.created", created),
            message("9", "order.created", created),
            message("3", "order.created", r#"{"sku":"S"}"#),
        ];
        let report = check_delivery(&outbox[..], &bad[..2]);
        assert_eq!(report.out_of_order, vec![("o1".to_owned(), 1, 2)]);
        assert_eq!(report.lost, vec![3]);
        let report = check_delivery(&outbox, &bad);
        assert_eq!(report.unknown, vec!["9".to_owned()]);
        assert_eq!(report.mismatched, vec!["3".to_owned()]);
        assert!(!report.ok());
    }
}
