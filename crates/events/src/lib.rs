//! plt-events: the platform's asynchronous half.
//!
//! * **Envelope** — an [`Event`] is a CloudEvents 1.0 event. On the wire (Kafka or the
//!   embedded bus) it travels in *binary content mode*: the attributes are headers
//!   (`ce_specversion`, `ce_id`, `ce_source`, `ce_type`, `ce_time`, `ce_subject`,
//!   `traceparent`, `content-type: application/json`) and the message value is the JSON data,
//!   so any Kafka client in any language can read it. Event types are versioned
//!   (`plt.identity.user.created.v1`); an event's topic is its type.
//! * **Bus** — [`Bus`] publishes [`Outgoing`] messages (in order per topic and key) and lets
//!   consumer groups join topics. Backends: [`kafka::KafkaBus`] (librdkafka, idempotent
//!   producer) and [`memory::MemoryBus`] (embedded, for `plt dev` and tests: partitions,
//!   consumer groups, committed offsets, redelivery of what was not committed).
//! * **Consumers** — [`consumer::run`] drives a [`Handler`] for one consumer group:
//!   partitions are handled concurrently, each in order (so per-key order holds); success
//!   commits the offset; a failure is retried with back-off; after `max_attempts` (or at
//!   once for a [`HandlerError::Permanent`]) the message goes to the group's dead-letter topic
//!   with its error and original coordinates, and the partition moves on. Stopping finishes
//!   the handlers in flight and commits.
//! * **Outbox and inbox** — services publish through their transactional outbox
//!   ([`outbox::message`] in the same database transaction as the change, relayed in order by
//!   [`outbox::BusDestination`]); consumers apply effects once through [`inbox`].

pub mod bridge;
pub mod config;
pub mod consumer;
pub mod inbox;
pub mod kafka;
pub mod memory;
pub mod outbox;

pub use config::EventsConfig;
pub use consumer::{Handler, HandlerError, Start, Subscription};

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde_json::Value;
use std::{sync::Arc, time::Duration};
use uuid::Uuid;

/// The CloudEvents version plt speaks.
pub const SPEC_VERSION: &str = "1.0";
/// The media type of every event's data.
pub const CONTENT_TYPE: &str = "application/json";

/// Headers of a message in binary content mode: name and raw value.
pub type Headers = Vec<(String, Vec<u8>)>;

/// A CloudEvents 1.0 event with JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Unique per source (a UUID v7: ordered by creation); consumers' inboxes key on it.
    pub id: String,
    /// Who emitted it: `/plt/<service>`.
    pub source: String,
    /// Versioned type: `plt.<service>.<entity>.<what happened>.v<N>`.
    pub event_type: String,
    /// What it is about (`user/<id>`), when it is about one thing.
    pub subject: Option<String>,
    pub time: DateTime<Utc>,
    /// W3C trace context of the request that caused it.
    pub traceparent: Option<String>,
    pub data: Value,
}

/// Why a message is not a well-formed event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a CloudEvents 1.0 binary-mode event: {0}")]
pub struct EnvelopeError(pub String);

impl Event {
    /// A new event of `event_type` from service `service` (source `/plt/<service>`), with a
    /// new id, happening now, in the trace of the current span (the request that caused it).
    pub fn new(event_type: &str, service: &str, data: Value) -> Self {
        Self {
            id: Uuid::now_v7().to_string(),
            source: format!("/plt/{service}"),
            event_type: event_type.to_owned(),
            subject: None,
            time: Utc::now().trunc_subsecs(6),
            traceparent: plt_kernel::trace::current_traceparent(),
            data,
        }
    }

    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    pub fn with_traceparent(mut self, traceparent: Option<String>) -> Self {
        self.traceparent = traceparent;
        self
    }

    /// The binary-mode headers carrying the attributes.
    pub fn headers(&self) -> Headers {
        let mut h: Headers = vec![
            ("ce_specversion".into(), SPEC_VERSION.into()),
            ("ce_id".into(), self.id.clone().into_bytes()),
            ("ce_source".into(), self.source.clone().into_bytes()),
            ("ce_type".into(), self.event_type.clone().into_bytes()),
            (
                "ce_time".into(),
                self.time
                    .to_rfc3339_opts(SecondsFormat::Micros, true)
                    .into_bytes(),
            ),
            ("content-type".into(), CONTENT_TYPE.into()),
        ];
        if let Some(s) = &self.subject {
            h.push(("ce_subject".into(), s.clone().into_bytes()));
        }
        if let Some(t) = &self.traceparent {
            h.push(("traceparent".into(), t.clone().into_bytes()));
        }
        h
    }

    /// The message for `topic` (default: the event's type) under `key`.
    pub fn to_message(&self, topic: &str, key: &str) -> Outgoing {
        Outgoing {
            topic: topic.to_owned(),
            key: Some(key.as_bytes().to_vec()),
            headers: self.headers(),
            value: serde_json::to_vec(&self.data).unwrap_or_else(|_| b"null".to_vec()),
        }
    }

    /// Reads an event from binary-mode headers and a JSON value.
    pub fn from_message(
        headers: &[(String, Vec<u8>)],
        value: &[u8],
    ) -> Result<Self, EnvelopeError> {
        let get = |name: &str| -> Result<Option<String>, EnvelopeError> {
            match headers.iter().rev().find(|(k, _)| k == name) {
                None => Ok(None),
                Some((_, v)) => String::from_utf8(v.clone())
                    .map(Some)
                    .map_err(|_| EnvelopeError(format!("header {name} is not UTF-8"))),
            }
        };
        let need = |name: &str| -> Result<String, EnvelopeError> {
            get(name)?
                .filter(|v| !v.is_empty())
                .ok_or_else(|| EnvelopeError(format!("header {name} is missing")))
        };
        let version = need("ce_specversion")?;
        if version != SPEC_VERSION {
            return Err(EnvelopeError(format!(
                "ce_specversion is {version:?}, expected {SPEC_VERSION}"
            )));
        }
        if let Some(ct) = get("content-type")?
            && !ct.starts_with(CONTENT_TYPE)
        {
            return Err(EnvelopeError(format!(
                "content-type is {ct:?}, expected {CONTENT_TYPE}"
            )));
        }
        let time = match get("ce_time")? {
            Some(t) => DateTime::parse_from_rfc3339(&t)
                .map_err(|e| EnvelopeError(format!("ce_time {t:?}: {e}")))?
                .with_timezone(&Utc),
            None => Utc::now(),
        };
        let data = if value.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(value)
                .map_err(|e| EnvelopeError(format!("the value is not JSON: {e}")))?
        };
        Ok(Self {
            id: need("ce_id")?,
            source: need("ce_source")?,
            event_type: need("ce_type")?,
            subject: get("ce_subject")?,
            time,
            traceparent: get("traceparent")?,
            data,
        })
    }
}

/// A message to publish: what any Kafka client would send.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    /// Messages with the same key go to the same partition, in order.
    pub key: Option<Vec<u8>>,
    pub headers: Headers,
    pub value: Vec<u8>,
}

/// A message as a consumer receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub headers: Headers,
    pub value: Vec<u8>,
}

impl Received {
    /// The event it carries.
    pub fn event(&self) -> Result<Event, EnvelopeError> {
        Event::from_message(&self.headers, &self.value)
    }

    /// The key as text (keys plt writes are text).
    pub fn key_str(&self) -> Option<&str> {
        self.key
            .as_deref()
            .and_then(|k| std::str::from_utf8(k).ok())
    }

    /// The value of header `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| std::str::from_utf8(v).ok())
    }
}

/// A bus error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The broker cannot be reached or did not answer in time: try again later.
    #[error("event bus unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the message as it is (too large, invalid topic).
    #[error("event bus refused the message: {0}")]
    Rejected(String),
    #[error("event bus configuration: {0}")]
    Config(String),
}

/// A position to commit: the next offset to read of a topic's partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Position {
    pub topic: String,
    pub partition: i32,
    /// The next offset to read (the last handled plus one).
    pub next: i64,
}

/// An event bus: Kafka or the embedded one.
#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// `kafka` or `memory`.
    fn backend(&self) -> &'static str;

    /// Publishes `messages`; one result per message, in order. Messages of one topic and key
    /// are appended in the order given. Each result is known within the configured publish
    /// timeout.
    async fn publish(&self, messages: &[Outgoing]) -> Vec<Result<(), BusError>>;

    /// Joins consumer group `group` reading `topics`. A group that has committed nothing
    /// starts at `start`.
    async fn join(
        &self,
        group: &str,
        topics: &[String],
        start: Start,
    ) -> Result<Box<dyn Consumer>, BusError>;
}

/// One member of a consumer group.
#[async_trait]
pub trait Consumer: Send {
    /// Up to `max` messages of the partitions assigned to this member, waiting up to `wait`
    /// for the first. Messages of one partition come in offset order.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Received>, BusError>;

    /// For each partition assigned to this member, how many messages are behind the
    /// group's committed position (the partition's end offset minus it)
    /// (`events_consumer_lag`). Empty when it cannot tell.
    async fn lag(&mut self) -> Vec<(String, i32, i64)> {
        Vec::new()
    }

    /// Commits positions: the group resumes there after a restart or rebalance.
    async fn commit(&mut self, positions: &[Position]) -> Result<(), BusError>;

    /// Leaves the group (its partitions go to the other members).
    async fn close(self: Box<Self>);
}

/// How a service builds the events it publishes through its outbox. Disabled (no messages)
/// when no bus is configured: nothing accumulates that nobody will relay.
#[derive(Debug, Clone)]
pub struct Publisher {
    service: String,
    enabled: bool,
}

impl Publisher {
    pub fn new(service: &str, enabled: bool) -> Self {
        Self {
            service: service.to_owned(),
            enabled,
        }
    }

    /// A publisher that publishes nothing (tests, services without a bus).
    pub fn disabled(service: &str) -> Self {
        Self::new(service, false)
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// An event of `event_type` about `subject` (`user/<id>`) from this service.
    pub fn event(&self, event_type: &str, subject: &str, data: Value) -> Event {
        Event::new(event_type, &self.service, data).with_subject(subject)
    }

    /// The outbox message publishing one event of `event_type` about `subject`, with `data`
    /// (a contract type of `plt_contracts::events`), under `key`; none when disabled.
    pub fn message(
        &self,
        event_type: &str,
        subject: &str,
        key: &str,
        data: impl serde::Serialize,
    ) -> Vec<plt_outbox::Message> {
        if !self.enabled {
            return Vec::new();
        }
        let data = serde_json::to_value(data).unwrap_or(Value::Null);
        self.messages(&[(key, self.event(event_type, subject, data))])
    }

    /// The outbox messages publishing `events`, each under its key; none when disabled.
    /// Enqueue them in the transaction of the change they announce.
    pub fn messages(&self, events: &[(&str, Event)]) -> Vec<plt_outbox::Message> {
        if !self.enabled {
            return Vec::new();
        }
        events
            .iter()
            .map(|(key, e)| outbox::message(e, key))
            .collect()
    }
}

/// The configured bus: `None` when `events.backend` is `none`.
pub fn connect(cfg: &EventsConfig, client_id: &str) -> Result<Option<Arc<dyn Bus>>, BusError> {
    Ok(match cfg.backend {
        config::Backend::None => None,
        config::Backend::Memory => Some(Arc::new(memory::MemoryBus::shared())),
        config::Backend::Kafka => Some(Arc::new(kafka::KafkaBus::new(&cfg.kafka, client_id)?)),
        config::Backend::Bridge => Some(Arc::new(bridge::BridgeBus::new(&cfg.bridge.url)?)),
    })
}

/// `d` with equal jitter: between half of it and all of it.
pub(crate) fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let r = f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX);
    d.mul_f64(0.5 + r * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_binary_mode() {
        let e = Event::new(
            "plt.identity.user.created.v1",
            "identity",
            serde_json::json!({"user_id": "u1", "email": "a@example.com"}),
        )
        .with_subject("user/u1")
        .with_traceparent(Some(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        ));
        let m = e.to_message(&e.event_type, "u1");
        assert_eq!(m.key.as_deref(), Some(&b"u1"[..]));
        let header = |n: &str| {
            m.headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| String::from_utf8(v.clone()).unwrap())
        };
        assert_eq!(header("ce_specversion").as_deref(), Some("1.0"));
        assert_eq!(
            header("ce_type").as_deref(),
            Some("plt.identity.user.created.v1")
        );
        assert_eq!(header("ce_source").as_deref(), Some("/plt/identity"));
        assert_eq!(header("ce_subject").as_deref(), Some("user/u1"));
        assert!(header("ce_time").unwrap().ends_with('Z'));
        let back = Event::from_message(&m.headers, &m.value).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn malformed_envelopes_name_what_is_wrong() {
        let e = Event::new("t.v1", "s", serde_json::json!(1));
        let mut m = e.to_message("t.v1", "k");
        m.headers.retain(|(k, _)| k != "ce_id");
        let err = Event::from_message(&m.headers, &m.value).unwrap_err();
        assert!(err.0.contains("ce_id"), "{err}");
        let m = e.to_message("t.v1", "k");
        let err = Event::from_message(&m.headers, b"{not json").unwrap_err();
        assert!(err.0.contains("not JSON"), "{err}");
    }
}
