//! The relay's AMQP 1.0 sink (Azure Service Bus): one durable message per outbox event, whose
//! `message-id` is the outbox id, so a batch sent again after a crash or a broker failure is
//! dropped by Service Bus duplicate detection (or by a consumer that dedupes on the id). The
//! batch counts as delivered only when the broker accepted every message; anything else
//! fails the round and nothing of it is marked published.
//!
//! Order: the relay sends batches one after the other in outbox id order on one link, so a
//! consumer sees each order's events in id order once repeats are dropped. With
//! `session_per_order` the `group-id` (Service Bus `SessionId`) is the order id and a
//! session-enabled subscription keeps that order per order across competing receivers.

use async_trait::async_trait;
use backend_adapters::amqp::{AmqpPublisher, OutgoingMessage};
use backend_adapters::sql::outbox::OutboxEvent;

use super::{OutboxSink, RelayError};
use crate::metrics::Metrics;

pub struct AmqpSink {
    pub publisher: AmqpPublisher,
    pub session_per_order: bool,
    pub metrics: Metrics,
}

#[async_trait]
impl OutboxSink for AmqpSink {
    async fn deliver(&self, events: &[OutboxEvent]) -> Result<(), RelayError> {
        let messages: Vec<OutgoingMessage> = events
            .iter()
            .map(|e| message_for(e, self.session_per_order))
            .collect();
        let sent = self.publisher.publish(&messages).await;
        self.metrics
            .outbox_amqp_connected
            .set(i64::from(self.publisher.is_connected()));
        match sent {
            Ok(()) => {
                self.metrics
                    .outbox_amqp_published
                    .inc_by(messages.len() as u64);
                Ok(())
            }
            Err(error) => {
                self.metrics
                    .outbox_amqp_failures
                    .with_label_values(&[error.kind()])
                    .inc();
                Err(RelayError::Sink {
                    sink: "amqp",
                    message: error.to_string(),
                })
            }
        }
    }
}

/// The message of one outbox event: `message-id` the outbox id, `subject` the topic,
/// application properties `order_id` and `sku` when the payload has them, the payload as the
/// JSON body.
pub fn message_for(event: &OutboxEvent, session_per_order: bool) -> OutgoingMessage {
    let payload: serde_json::Value = serde_json::from_str(&event.payload).unwrap_or_default();
    let field = |name: &str| {
        payload
            .get(name)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let (order_id, sku) = (field("order_id"), field("sku"));
    let group_id = session_per_order
        .then(|| match (&order_id, &sku) {
            (Some(order), _) => Some(order.clone()),
            // A session-enabled subscription refuses messages without a SessionId: product
            // events get one per SKU.
            (None, Some(sku)) => Some(format!("product:{sku}")),
            (None, None) => Some(format!("event:{}", event.topic)),
        })
        .flatten();
    let mut properties = Vec::new();
    if let Some(order) = order_id {
        properties.push(("order_id".to_owned(), order));
    }
    if let Some(sku) = sku {
        properties.push(("sku".to_owned(), sku));
    }
    OutgoingMessage {
        message_id: event.id.to_string(),
        subject: event.topic.clone(),
        group_id,
        properties,
        content_type: "application/json".to_owned(),
        body: event.payload.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: i64, topic: &str, payload: &str) -> OutboxEvent {
        OutboxEvent {
            id,
            topic: topic.into(),
            payload: payload.into(),
            created_at_ms: 0,
        }
    }

    #[test]
    fn an_order_event_carries_its_id_type_order_and_sku() {
        let payload =
            r#"{"order_id":"ord_1","reservation_id":"r","user_sub":"u","sku":"HOT","qty":1}"#;
        let message = message_for(&event(42, "order.created", payload), true);
        assert_eq!(
            message,
            OutgoingMessage {
                message_id: "42".into(),
                subject: "order.created".into(),
                group_id: Some("ord_1".into()),
                properties: vec![
                    ("order_id".into(), "ord_1".into()),
                    ("sku".into(), "HOT".into())
                ],
                content_type: "application/json".into(),
                body: payload.as_bytes().to_vec(),
            }
        );
    }

    #[test]
    fn sessions_only_when_configured_and_products_get_one_per_sku() {
        let status =
            r#"{"order_id":"ord_2","sku":"HOT","from":"confirmed","to":"shipped","fence":1}"#;
        assert_eq!(
            message_for(&event(1, "order.status_changed", status), false).group_id,
            None
        );
        let product = message_for(
            &event(2, "product.updated", r#"{"sku":"HOT","version":3}"#),
            true,
        );
        assert_eq!(product.group_id.as_deref(), Some("product:HOT"));
        assert_eq!(
            product.properties,
            vec![("sku".to_owned(), "HOT".to_owned())]
        );
    }

    #[test]
    fn a_payload_that_is_not_json_still_goes_out_as_it_is() {
        let message = message_for(&event(3, "order.created", "not json"), true);
        assert_eq!(message.body, b"not json");
        assert!(message.properties.is_empty());
        assert_eq!(message.group_id.as_deref(), Some("event:order.created"));
    }
}
