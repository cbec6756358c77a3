//! AMQP 1.0 (Azure Service Bus, RabbitMQ's `rabbitmq_amqp1_0` plugin, ActiveMQ) with
//! `fe2o3-amqp`: [`AmqpPublisher`] sends messages and waits for the broker to accept each one,
//! reconnecting with backoff after the broker went away; [`AmqpConsumer`] receives them (tests,
//! fault runs, and any subscriber written in Rust).
//!
//! The URL names the broker only, never credentials: `amqp://host:5672` (plain TCP) or
//! `amqps://host:5671` (TLS from the first byte, as Service Bus serves it, the certificate and
//! host name checked against the system's roots). Authentication is SASL PLAIN: on Service Bus
//! the user is the SAS policy name (`SharedAccessKeyName`) and the password its key.

mod consumer;
mod message;
mod publisher;

use std::time::Duration;

use thiserror::Error;

pub use consumer::{AmqpConsumer, Received};
pub use message::OutgoingMessage;
pub use publisher::AmqpPublisher;

/// Why the broker did not take a batch, or could not be reached.
#[derive(Debug, Error)]
pub enum AmqpError {
    #[error("amqp url {0}")]
    Url(String),
    #[error("connecting to {endpoint}: {message}")]
    Connect { endpoint: String, message: String },
    #[error("not reconnecting to {endpoint} for another {wait_ms} ms (backoff after: {last})")]
    Backoff {
        endpoint: String,
        wait_ms: u64,
        last: String,
    },
    #[error("sending message {message_id}: {message}")]
    Send { message_id: String, message: String },
    /// The broker settled the message with another outcome than `accepted` (rejected,
    /// released, modified): it is not stored.
    #[error("the broker did not accept message {message_id}: {outcome}")]
    NotAccepted { message_id: String, outcome: String },
    #[error("no answer from the broker within {0:?}")]
    Timeout(Duration),
    #[error("receiving: {0}")]
    Receive(String),
}

impl AmqpError {
    /// A short fixed name for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            AmqpError::Url(_) => "url",
            AmqpError::Connect { .. } => "connect",
            AmqpError::Backoff { .. } => "backoff",
            AmqpError::Send { .. } => "send",
            AmqpError::NotAccepted { .. } => "not_accepted",
            AmqpError::Timeout(_) => "timeout",
            AmqpError::Receive(_) => "receive",
        }
    }
}

/// Where the broker is: parsed from `amqp://host[:port]` or `amqps://host[:port]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpTarget {
    pub tls: bool,
    /// Host name or address (without the brackets of an IPv6 literal).
    pub host: String,
    pub port: u16,
}

impl AmqpTarget {
    /// Parses the broker URL. Credentials in it are refused (they would end up in logs and
    /// config dumps: the key comes from a file or an environment variable), and so is a path:
    /// the entity is the link's address, not part of the URL.
    pub fn parse(url: &str) -> Result<AmqpTarget, AmqpError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| AmqpError::Url("must start with amqp:// or amqps://".into()))?;
        let (tls, default_port) = match scheme {
            "amqp" => (false, 5672),
            "amqps" => (true, 5671),
            _ => {
                return Err(AmqpError::Url(format!(
                    "scheme must be amqp or amqps, not {scheme:?}"
                )));
            }
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains('@') {
            return Err(AmqpError::Url(
                "must not carry credentials: set sas_key_name and the key (file or environment)"
                    .into(),
            ));
        }
        if authority.contains(['/', '?', '#']) {
            return Err(AmqpError::Url(
                "must be scheme://host:port only: the entity goes in `address`".into(),
            ));
        }
        let (host, port) = match authority.strip_prefix('[') {
            // [v6]:port or [v6]
            Some(v6) => {
                let (host, after) = v6
                    .split_once(']')
                    .ok_or_else(|| AmqpError::Url("unclosed [ in the host".into()))?;
                let port = match after {
                    "" => None,
                    _ => Some(after.strip_prefix(':').ok_or_else(|| {
                        AmqpError::Url(format!("{after:?} after the IPv6 address"))
                    })?),
                };
                (host, port)
            }
            None => match authority.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            return Err(AmqpError::Url("has no host".into()));
        }
        let port = match port {
            None => default_port,
            Some(port) => port
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| AmqpError::Url(format!("port {port:?} is not a port number")))?,
        };
        // SASL PLAIN sends the key as it is: over plain amqp:// only to this machine.
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !tls && !loopback {
            return Err(AmqpError::Url(format!(
                "amqp:// to {host} would send the key in clear: use amqps:// (plain amqp:// is for loopback only)"
            )));
        }
        Ok(AmqpTarget {
            tls,
            host: host.to_owned(),
            port,
        })
    }

    /// `amqp[s]://host:port`, for logs and errors.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls { "amqps" } else { "amqp" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// What a publisher or consumer connects with.
#[derive(Clone)]
pub struct AmqpSettings {
    pub target: AmqpTarget,
    /// The entity: a Service Bus topic or queue name; on RabbitMQ 3.x `/queue/<q>`,
    /// `/exchange/<x>/<routing key>` or `/topic/<key>`.
    pub address: String,
    /// SASL PLAIN user: the SAS policy name on Service Bus.
    pub user: String,
    /// SASL PLAIN password: the SAS key. Never logged (see the `Debug` impl).
    pub key: String,
    pub connect_timeout: Duration,
    /// Longest wait for the broker to settle one batch (every message's disposition).
    pub send_timeout: Duration,
}

impl std::fmt::Debug for AmqpSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpSettings")
            .field("endpoint", &self.target.endpoint())
            .field("address", &self.address)
            .field("user", &self.user)
            .field("key", &"<redacted>")
            .field("connect_timeout", &self.connect_timeout)
            .field("send_timeout", &self.send_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_default_ports() {
        let t = AmqpTarget::parse("amqps://ns.servicebus.windows.net").unwrap();
        assert_eq!(
            (t.tls, t.host.as_str(), t.port),
            (true, "ns.servicebus.windows.net", 5671)
        );
        let t = AmqpTarget::parse("amqp://127.0.0.1:5673/").unwrap();
        assert_eq!((t.tls, t.host.as_str(), t.port), (false, "127.0.0.1", 5673));
        let t = AmqpTarget::parse("amqp://[::1]:5672").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 5672));
        assert_eq!(t.endpoint(), "amqp://[::1]:5672");
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, why) in [
            ("http://h", "scheme must be amqp or amqps"),
            ("h:5672", "must start with amqp://"),
            ("amqp://user:key@h", "must not carry credentials"),
            ("amqp://h/queue", "the entity goes in `address`"),
            ("amqp://h:0", "is not a port number"),
            ("amqp://h:99999", "is not a port number"),
            ("amqp://:5672", "has no host"),
            ("amqp://[::1]junk", "after the IPv6 address"),
            ("amqp://broker.example.com", "would send the key in clear"),
            ("amqp://10.0.0.5:5672", "would send the key in clear"),
        ] {
            let error = AmqpTarget::parse(url).unwrap_err().to_string();
            assert!(error.contains(why), "{url}: {error}");
        }
    }

    #[test]
    fn the_key_is_not_in_debug_output() {
        let settings = AmqpSettings {
            target: AmqpTarget::parse("amqps://h").unwrap(),
            address: "orders".into(),
            user: "send-only".into(),
            key: "s3cr3t-key".into(),
            connect_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("s3cr3t-key"), "{shown}");
        assert!(shown.contains("send-only"), "{shown}");
    }
}
