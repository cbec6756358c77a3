//! The AMQP 1.0 broker tests run against: RabbitMQ with its `rabbitmq_amqp1_0` plugin on
//! `AMQP_URL` (default `amqp://127.0.0.1:5672`, user `AMQP_USER`/`guest`, key
//! `AMQP_KEY`/`guest`; `scripts/test.sh` installs, starts and enables it). Each test sends to a
//! queue of its own ([`scratch_queue`]), so tests run side by side; a broker that does not
//! answer fails the test with what to do.
//!
//! [`Collector`] consumes a queue in the background through every broker restart, and
//! [`restart_broker`] restarts the RabbitMQ application on this machine.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backend_adapters::amqp::{AmqpConsumer, AmqpPublisher, AmqpSettings, AmqpTarget, Received};

/// `AMQP_URL`, else the local RabbitMQ.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "amqp://127.0.0.1:5672".to_owned())
}

/// The SASL PLAIN user and key of the test broker.
pub fn amqp_credentials() -> (String, String) {
    let var = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    (var("AMQP_USER", "guest"), var("AMQP_KEY", "guest"))
}

/// A RabbitMQ address of a queue no other test uses: `/queue/sgtest-<label>-<random>`. The
/// amqp1_0 plugin declares a `/queue/` address when a link first names it (durable, as the
/// publisher's and consumer's links ask).
pub fn scratch_queue(label: &str) -> String {
    format!("/queue/sgtest-{label}-{}", uuid::Uuid::new_v4().simple())
}

/// Settings for `address` on the test broker.
pub fn broker_settings(address: &str) -> AmqpSettings {
    let url = amqp_url();
    let target = AmqpTarget::parse(&url)
        .unwrap_or_else(|e| panic!("AMQP_URL={url} is not an amqp url: {e}"));
    let (user, key) = amqp_credentials();
    AmqpSettings {
        target,
        address: address.to_owned(),
        user,
        key,
        connect_timeout: Duration::from_secs(5),
        send_timeout: Duration::from_secs(10),
    }
}

/// Panics unless the broker accepts an AMQP 1.0 connection and a link to `address` (which
/// also declares a `/queue/` address, before anything is sent to it).
pub async fn assert_broker_up(address: &str) {
    let publisher = AmqpPublisher::new(broker_settings(address));
    if let Err(e) = publisher.connect().await {
        panic!(
            "no AMQP 1.0 broker at {} ({e}). scripts/test.sh installs and starts rabbitmq-server \
             and runs `rabbitmq-plugins enable rabbitmq_amqp1_0`; or set AMQP_URL, AMQP_USER, \
             AMQP_KEY",
            amqp_url()
        );
    }
}

/// Restarts the RabbitMQ application of this machine's node (`rabbitmqctl stop_app`, then
/// `start_app`): every connection drops, queues come back from disk with their durable
/// messages. Returns once the broker takes AMQP 1.0 connections again. The node's Erlang VM
/// stays up, so this takes seconds, not the minute a service restart can.
///
/// Every test of the broker tolerates a restart (it is what they test), so two test binaries
/// restarting it at once cost time, not a wrong result.
pub async fn restart_broker(address: &str) -> Duration {
    let started = Instant::now();
    for args in [["stop_app"], ["start_app"]] {
        let output =
            tokio::task::spawn_blocking(move || Command::new("rabbitmqctl").args(args).output())
                .await
                .unwrap_or_else(|e| panic!("rabbitmqctl task: {e}"))
                .unwrap_or_else(|e| {
                    panic!("rabbitmqctl {args:?} (is rabbitmq-server installed?): {e}")
                });
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let publisher = AmqpPublisher::new(broker_settings(address));
        match publisher.connect().await {
            Ok(()) => return started.elapsed(),
            Err(e) if Instant::now() > deadline => {
                panic!("the broker did not come back within 60 s of start_app: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Consumes `address` in a background task into a list, reconnecting after every error; the
/// messages are kept as received, repeats included.
pub struct Collector {
    received: Arc<Mutex<Vec<Received>>>,
    errors: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub fn start(address: &str) -> Collector {
        let received = Arc::new(Mutex::new(Vec::new()));
        let errors = Arc::new(Mutex::new(0));
        let mut consumer = AmqpConsumer::new(broker_settings(address));
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

    /// Waits until every id of `ids` has arrived at least once; returns what was received,
    /// or panics after `within` naming how many are missing.
    pub async fn wait_for(&self, ids: &BTreeSet<String>, within: Duration) -> Vec<Received> {
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
                return received;
            }
            if Instant::now() > deadline {
                panic!(
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
