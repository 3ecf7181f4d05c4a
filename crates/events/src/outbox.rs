//! Publishing through the transactional outbox.
//!
//! A service writes an event's outbox message ([`message`]) in the same database transaction
//! as the change it announces (`plt_outbox::enqueue(&mut *tx, &[...])`); the runtime's relay
//! of outbox topic [`TOPIC`] hands due messages, oldest first, to a [`BusDestination`], which
//! publishes them and acknowledges what the bus acknowledged. The relay is *ordered*: it never
//! delivers a message while an older one of the same outbox waits, so events of one key reach
//! the bus in the order they were committed. A crash at any point loses nothing: the row
//! stays until the bus acknowledged it (at least once; consumers' inboxes absorb repeats).

use crate::{Bus, BusError, Event, Outgoing};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plt_outbox::{Delivery, DeliveryError, Destination, Message};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// The outbox topic of events (one relay per service delivers it to the bus).
pub const TOPIC: &str = "events";

/// An event as its outbox row keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    topic: String,
    key: String,
    id: String,
    source: String,
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    time: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    traceparent: Option<String>,
    data: Value,
}

/// The outbox message publishing `event` to its type's topic under `key` (events of one key
/// keep their order: use the id of what the event is about).
pub fn message(event: &Event, key: &str) -> Message {
    message_to(event, &event.event_type, key)
}

/// Like [`message`], to topic `topic`.
pub fn message_to(event: &Event, topic: &str, key: &str) -> Message {
    let stored = Stored {
        topic: topic.to_owned(),
        key: key.to_owned(),
        id: event.id.clone(),
        source: event.source.clone(),
        event_type: event.event_type.clone(),
        subject: event.subject.clone(),
        time: event.time,
        traceparent: event.traceparent.clone(),
        data: event.data.clone(),
    };
    Message::new(TOPIC, serde_json::to_value(stored).unwrap_or(Value::Null))
}

/// The message of an outbox row, and its producer span: a child of the request that wrote
/// the event, and the parent its consumers continue (the message's `traceparent`).
fn outgoing(d: &Delivery) -> Result<(Outgoing, tracing::Span), DeliveryError> {
    let s: Stored = serde_json::from_value(d.payload.clone())
        .map_err(|e| DeliveryError::Rejected(format!("not an event: {e}")))?;
    let span = tracing::info_span!(
        "publish",
        otel.name = %format_args!("publish {}", s.topic),
        otel.kind = "producer",
        topic = %s.topic,
        event_id = %s.id,
        trace_id = tracing::field::Empty,
    );
    plt_kernel::trace::continue_from_traceparent(&span, s.traceparent.as_deref());
    plt_kernel::trace::set_attribute(&span, "messaging.operation.type", "send");
    plt_kernel::trace::set_attribute(&span, "messaging.destination.name", s.topic.clone());
    plt_kernel::trace::set_attribute(&span, "messaging.message.id", s.id.clone());
    let traceparent = plt_kernel::trace::traceparent_of(&span).or(s.traceparent);
    let event = Event {
        id: s.id,
        source: s.source,
        event_type: s.event_type,
        subject: s.subject,
        time: s.time,
        traceparent,
        data: s.data,
    };
    Ok((event.to_message(&s.topic, &s.key), span))
}

/// Publishes outbox messages of topic [`TOPIC`] on a bus.
pub struct BusDestination {
    bus: Arc<dyn Bus>,
}

impl BusDestination {
    pub fn new(bus: Arc<dyn Bus>) -> Self {
        Self { bus }
    }
}

#[async_trait]
impl Destination for BusDestination {
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        let mut results: Vec<Option<Result<(), DeliveryError>>> = vec![None; batch.len()];
        let mut messages = Vec::with_capacity(batch.len());
        let mut slots = Vec::with_capacity(batch.len());
        let mut spans = Vec::with_capacity(batch.len());
        for (i, d) in batch.iter().enumerate() {
            match outgoing(d) {
                Ok((m, span)) => {
                    messages.push(m);
                    slots.push(i);
                    spans.push(span);
                }
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        let published = self.bus.publish(&messages).await;
        for (span, r) in spans.iter().zip(&published) {
            if let Err(e) = r {
                plt_kernel::trace::set_error(span, e.to_string());
            }
        }
        drop(spans);
        // Once a key's message failed, its later ones in this batch count as failed too:
        // they go again after it (a repeat that the consumers' inboxes absorb).
        let mut failed_keys: Vec<&Option<Vec<u8>>> = Vec::new();
        for ((slot, m), r) in slots.iter().zip(&messages).zip(published) {
            let r = match r {
                Ok(()) if failed_keys.contains(&&m.key) => Err(DeliveryError::Retry(
                    "an older event of its key failed".into(),
                )),
                Ok(()) => Ok(()),
                Err(BusError::Rejected(why)) => {
                    failed_keys.push(&m.key);
                    Err(DeliveryError::Rejected(why))
                }
                Err(e) => {
                    failed_keys.push(&m.key);
                    Err(DeliveryError::Retry(e.to_string()))
                }
            };
            results[*slot] = Some(r);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(DeliveryError::Retry("no answer".into()))))
            .collect()
    }
}

/// Publishes outbox messages of another topic as events of one type: each message's payload
/// is the event's data and its id the event's id (so a consumer's inbox or the destination's
/// own idempotency absorbs repeats). Audit records take this way to audit when a bus is
/// configured ([`AUDIT_RECORD`]).
pub struct TopicDestination {
    bus: Arc<dyn Bus>,
    event_type: String,
    service: String,
}

/// The event type (and topic) of audit records sent through the bus; the data is a
/// `NewAuditEntry`.
pub const AUDIT_RECORD: &str = "plt.audit.record.v1";

impl TopicDestination {
    /// Messages of service `service` published as events of `event_type`.
    pub fn new(bus: Arc<dyn Bus>, event_type: &str, service: &str) -> Self {
        Self {
            bus,
            event_type: event_type.to_owned(),
            service: service.to_owned(),
        }
    }
}

#[async_trait]
impl Destination for TopicDestination {
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        let messages: Vec<Outgoing> = batch
            .iter()
            .map(|d| {
                let mut e = Event::new(&self.event_type, &self.service, d.payload.clone());
                e.id = d.id.to_string();
                e.time = d.created_at;
                e.to_message(&self.event_type, &e.id)
            })
            .collect();
        self.bus
            .publish(&messages)
            .await
            .into_iter()
            .map(|r| match r {
                Ok(()) => Ok(()),
                Err(BusError::Rejected(why)) => Err(DeliveryError::Rejected(why)),
                Err(e) => Err(DeliveryError::Retry(e.to_string())),
            })
            .collect()
    }
}
