//! One message as stockgate sends it, and its AMQP 1.0 form: a durable message whose
//! `message-id` (a string) is what Service Bus duplicate detection and consumers dedupe on, a
//! `subject`, an optional `group-id` (Service Bus `SessionId`), string application properties,
//! and the body as one data section with its content type.

use fe2o3_amqp::types::messaging::{
    ApplicationProperties, Data, Header, Message, MessageId, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, SimpleValue};

/// A message to send; built by the caller (the outbox relay maps its events to these).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutgoingMessage {
    pub message_id: String,
    pub subject: String,
    /// AMQP `group-id`, which Service Bus reads as the `SessionId`.
    pub group_id: Option<String>,
    /// Application properties, all strings (subscription filters match on them).
    pub properties: Vec<(String, String)>,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl OutgoingMessage {
    /// The AMQP message: header durable (the broker stores it before it accepts it),
    /// properties, application properties, one data section.
    pub(crate) fn to_amqp(&self) -> Message<Data> {
        let mut application = ApplicationProperties::builder();
        for (name, value) in &self.properties {
            application = application.insert(name.clone(), SimpleValue::String(value.clone()));
        }
        Message::builder()
            .header(Header::builder().durable(true).build())
            .properties(
                Properties::builder()
                    .message_id(MessageId::String(self.message_id.clone()))
                    .subject(self.subject.clone())
                    .group_id(self.group_id.clone())
                    .content_type(self.content_type.clone())
                    .build(),
            )
            .application_properties(application.build())
            .data(Binary::from(self.body.clone()))
            .build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_lands_in_its_amqp_section() {
        let outgoing = OutgoingMessage {
            message_id: "42".into(),
            subject: "order.created".into(),
            group_id: Some("order-7".into()),
            properties: vec![
                ("order_id".into(), "order-7".into()),
                ("sku".into(), "HOT-1".into()),
            ],
            content_type: "application/json".into(),
            body: br#"{"order_id":"order-7"}"#.to_vec(),
        };
        let message = outgoing.to_amqp();
        assert_eq!(message.header.as_ref().map(|h| h.durable), Some(true));
        let properties = message.properties.as_ref().unwrap();
        assert_eq!(properties.message_id, Some(MessageId::String("42".into())));
        assert_eq!(properties.subject.as_deref(), Some("order.created"));
        assert_eq!(properties.group_id.as_deref(), Some("order-7"));
        assert_eq!(
            properties.content_type.as_ref().map(|s| s.0.as_str()),
            Some("application/json")
        );
        let application = message.application_properties.as_ref().unwrap();
        assert_eq!(
            application.get("sku"),
            Some(&SimpleValue::String("HOT-1".into()))
        );
        assert_eq!(
            application.get("order_id"),
            Some(&SimpleValue::String("order-7".into()))
        );
        assert_eq!(message.body.0.as_slice(), br#"{"order_id":"order-7"}"#);
    }

    #[test]
    fn no_group_id_leaves_the_field_empty() {
        let outgoing = OutgoingMessage {
            message_id: "1".into(),
            subject: "product.updated".into(),
            group_id: None,
            properties: vec![],
            content_type: "application/json".into(),
            body: b"{}".to_vec(),
        };
        let message = outgoing.to_amqp();
        assert_eq!(message.properties.unwrap().group_id, None);
    }
}
