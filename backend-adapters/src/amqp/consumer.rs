//! [`AmqpConsumer`]: a receiving link on one address that accepts each message once it has
//! handed it to the caller. After a connection failure it reconnects on the next `recv`;
//! messages it had received but not yet accepted come again (at-least-once), so a consumer
//! dedupes by `message-id` as every stockgate subscriber must.

use std::collections::BTreeMap;
use std::time::Duration;

use fe2o3_amqp::Receiver;
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::Delivery;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{Body, MessageId, Source, TerminusDurability};
use fe2o3_amqp::types::primitives::{SimpleValue, Value};

use super::publisher::open_session;
use super::{AmqpError, AmqpSettings};

/// One received message, in the terms [`super::OutgoingMessage`] sends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub message_id: Option<String>,
    pub subject: Option<String>,
    pub group_id: Option<String>,
    pub content_type: Option<String>,
    pub durable: bool,
    /// String application properties (others are left out).
    pub properties: BTreeMap<String, String>,
    /// The data sections, concatenated.
    pub body: Vec<u8>,
}

pub struct AmqpConsumer {
    settings: AmqpSettings,
    link: Option<(ConnectionHandle<()>, SessionHandle<()>, Receiver)>,
}

impl AmqpConsumer {
    /// A consumer of `settings.address`; it connects on the first `recv`.
    pub fn new(settings: AmqpSettings) -> AmqpConsumer {
        AmqpConsumer {
            settings,
            link: None,
        }
    }

    /// The next message within `wait` (`None`: nothing came), accepted on the broker. A
    /// connection error is returned once and the link dropped; the next call reconnects.
    pub async fn recv(&mut self, wait: Duration) -> Result<Option<Received>, AmqpError> {
        if self.link.is_none() {
            let (connection, mut session) = open_session(&self.settings, "consumer").await?;
            let name = format!("stockgate-consumer-{}", uuid::Uuid::new_v4().simple());
            let attach = Receiver::builder()
                .name(name)
                .source(
                    Source::builder()
                        .address(self.settings.address.clone())
                        .durable(TerminusDurability::Configuration)
                        .build(),
                )
                .auto_accept(false)
                .attach(&mut session);
            match tokio::time::timeout(self.settings.connect_timeout, attach).await {
                Ok(Ok(receiver)) => self.link = Some((connection, session, receiver)),
                Ok(Err(e)) => return Err(AmqpError::Receive(format!("attach: {e}"))),
                Err(_) => return Err(AmqpError::Receive("attach: no answer".into())),
            }
        }
        let Some((_, _, receiver)) = self.link.as_mut() else {
            return Err(AmqpError::Receive("no link".into()));
        };
        let delivery = match tokio::time::timeout(wait, receiver.recv::<Body<Value>>()).await {
            Err(_) => return Ok(None),
            Ok(Ok(delivery)) => delivery,
            Ok(Err(e)) => {
                self.link = None;
                return Err(AmqpError::Receive(e.to_string()));
            }
        };
        let received = read(&delivery);
        let accepted =
            tokio::time::timeout(self.settings.send_timeout, receiver.accept(&delivery)).await;
        match accepted {
            Ok(Ok(())) => Ok(Some(received)),
            // Not accepted: the broker delivers it again after the reconnect.
            Ok(Err(e)) => {
                self.link = None;
                Err(AmqpError::Receive(format!("accept: {e}")))
            }
            Err(_) => {
                self.link = None;
                Err(AmqpError::Receive("accept: no answer".into()))
            }
        }
    }

    /// Closes the link and the connection (best effort, quickly).
    pub async fn close(mut self) {
        if let Some((mut connection, mut session, receiver)) = self.link.take() {
            let quick = Duration::from_secs(2);
            let _ = tokio::time::timeout(quick, receiver.close()).await;
            let _ = tokio::time::timeout(quick, session.end()).await;
            let _ = tokio::time::timeout(quick, connection.close()).await;
        }
    }
}

fn read(delivery: &Delivery<Body<Value>>) -> Received {
    let message = delivery.message();
    let properties = message.properties.as_ref();
    let message_id = properties
        .and_then(|p| p.message_id.as_ref())
        .map(|id| match id {
            MessageId::String(s) => s.clone(),
            MessageId::Ulong(n) => n.to_string(),
            other => format!("{other:?}"),
        });
    let body = match &message.body {
        Body::Data(batch) => batch.iter().flat_map(|d| d.0.iter().copied()).collect(),
        _ => Vec::new(),
    };
    Received {
        message_id,
        subject: properties.and_then(|p| p.subject.clone()),
        group_id: properties.and_then(|p| p.group_id.clone()),
        content_type: properties.and_then(|p| p.content_type.as_ref().map(|s| s.0.clone())),
        durable: message.header.as_ref().is_some_and(|h| h.durable),
        properties: message
            .application_properties
            .as_ref()
            .map(|a| {
                a.iter()
                    .filter_map(|(k, v)| match v {
                        SimpleValue::String(s) => Some((k.clone(), s.clone())),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        body,
    }
}
