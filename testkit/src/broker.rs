//! The AMQP 1.0 broker tests run against: RabbitMQ with its `rabbitmq_amqp1_0` plugin on
//! `AMQP_URL` (default `amqp://127.0.0.1:5672`, user `AMQP_USER`/`guest`, key
//! `AMQP_KEY`/`guest`; `scripts/test.sh` installs, starts and enables it). Each test sends to a
//! queue of its own ([`scratch_queue`]), so tests run side by side; a broker that does not
//! answer fails the test with what to do.
//!
//! [`collect`] consumes a queue in the background through every broker restart, and
//! [`restart_broker`] restarts the RabbitMQ application on this machine (both from
//! `reliability::broker`, which the fault runs use too).
//!
//! A restart would break the tests beside it that are not about restarts (a link refused in
//! the middle of their setup), in this test binary and in others running at the same time:
//! every broker test first takes the machine-wide [`BrokerLock`], shared
//! ([`share_broker`]) or, to stop or restart the broker, exclusive ([`own_broker`]).

use std::time::Duration;

use backend_adapters::amqp::{AmqpPublisher, AmqpSettings, AmqpTarget};
use reliability::broker::restart_rabbitmq;
pub use reliability::broker::{Collector, DeliveryReport, check_delivery};

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

/// A file lock on the broker of this machine (`flock` on a file in the temp dir), held until
/// dropped: shared by tests that only use the broker, exclusive for one that stops it.
pub struct BrokerLock {
    _file: std::fs::File,
}

/// Waits for the broker lock, shared: no test stops the broker while this is held.
pub async fn share_broker() -> BrokerLock {
    broker_lock(false).await
}

/// Waits for the broker lock, exclusive: no other broker test runs while this is held, so the
/// holder may stop and restart the broker.
pub async fn own_broker() -> BrokerLock {
    broker_lock(true).await
}

async fn broker_lock(exclusive: bool) -> BrokerLock {
    let path = std::env::temp_dir().join("stockgate-test-broker.lock");
    let file = tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)?;
        if exclusive {
            file.lock()?;
        } else {
            file.lock_shared()?;
        }
        Ok::<_, std::io::Error>(file)
    })
    .await
    .unwrap_or_else(|e| panic!("broker lock task: {e}"))
    .unwrap_or_else(|e| panic!("the broker lock file in the temp dir: {e}"));
    BrokerLock { _file: file }
}

/// Restarts the RabbitMQ application of this machine's node (`rabbitmqctl stop_app`, then
/// `start_app`; [`reliability::broker::restart_rabbitmq`]) and returns once it takes AMQP 1.0
/// links to `address` again.
///
/// Hold [`own_broker`] meanwhile.
pub async fn restart_broker(address: &str) -> Duration {
    restart_rabbitmq(&broker_settings(address))
        .await
        .unwrap_or_else(|e| panic!("restarting the broker: {e:#}"))
}

/// Stops the RabbitMQ application (`rabbitmqctl stop_app`): the broker is down until
/// [`start_broker`]. Hold [`own_broker`] meanwhile.
pub async fn stop_broker() {
    reliability::broker::stop_rabbitmq()
        .await
        .unwrap_or_else(|e| panic!("stopping the broker: {e:#}"))
}

/// Starts the RabbitMQ application again and returns once it takes links to `address`.
pub async fn start_broker(address: &str) {
    reliability::broker::start_rabbitmq(&broker_settings(address))
        .await
        .unwrap_or_else(|e| panic!("starting the broker: {e:#}"))
}

/// A [`Collector`] of `address` on the test broker.
pub fn collect(address: &str) -> Collector {
    Collector::start(broker_settings(address))
}
