//! The AMQP 1.0 broker tests run against: RabbitMQ with its `rabbitmq_amqp1_0` plugin on
//! `AMQP_URL` (default `amqp://127.0.0.1:5672`, user `AMQP_USER`/`guest`, key
//! `AMQP_KEY`/`guest`; `scripts/test.sh` installs, starts and enables it). Each test sends to a
//! queue of its own ([`scratch_queue`]), so tests run side by side; a broker that does not
//! answer fails the test with what to do.
//!
//! [`collect`] consumes a queue in the background through every broker restart, and
//! [`restart_broker`] restarts the RabbitMQ application on this machine (both from
//! `reliability::broker`, which the fault runs use too).

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

/// Restarts the RabbitMQ application of this machine's node (`rabbitmqctl stop_app`, then
/// `start_app`; [`reliability::broker::restart_rabbitmq`]) and returns once it takes AMQP 1.0
/// links to `address` again.
///
/// Every test of the broker tolerates a restart (it is what they test), so two test binaries
/// restarting it at once cost time, not a wrong result.
pub async fn restart_broker(address: &str) -> Duration {
    restart_rabbitmq(&broker_settings(address))
        .await
        .unwrap_or_else(|e| panic!("restarting the broker: {e:#}"))
}

/// Stops the RabbitMQ application (`rabbitmqctl stop_app`): the broker is down until
/// [`start_broker`].
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
