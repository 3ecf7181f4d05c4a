//! The audit destination: outbox messages of topic [`TOPIC`] are audit records
//! ([`NewAuditEntry`] as JSON), recorded through audit's `Record` with the message id as the
//! record id, so a repeated delivery writes nothing twice. And [`AuditEvent`], how services
//! build those messages.

use crate::{Delivery, DeliveryError, Destination, Message};
use async_trait::async_trait;
use plt_contracts::{
    ErrorCode, RequestContext,
    audit::{AuditServiceClient, NewAuditEntry, Outcome},
};
use serde_json::Value;
use std::{net::IpAddr, sync::Arc, time::Duration};

/// The outbox topic of audit records.
pub const TOPIC: &str = "audit";

/// The longest user agent kept (audit's limit).
const MAX_USER_AGENT_CHARS: usize = 512;
/// Audit's limits of actor, action and resource.
const MAX_ACTOR_CHARS: usize = 256;
const MAX_ACTION_CHARS: usize = 128;
const MAX_RESOURCE_CHARS: usize = 1024;

/// `s` as audit accepts it: control characters dropped, at most `max` characters. (A value
/// taken from a request — an e-mail address tried at sign-in — must not make audit refuse
/// the record.)
pub fn clean(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// An audit record to enqueue. Never put secrets, passwords, tokens or hashes into it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    entry: NewAuditEntry,
}

impl AuditEvent {
    /// `actor` (a user id, a service name, `anonymous`) did `action` (`auth.login`) to
    /// `resource` (`user/<id>`), with `outcome`. Values are [`clean`]ed to audit's limits.
    pub fn new(
        actor: impl Into<String>,
        action: &str,
        resource: impl Into<String>,
        outcome: Outcome,
    ) -> Self {
        Self {
            entry: NewAuditEntry {
                id: None,
                actor: clean(&actor.into(), MAX_ACTOR_CHARS),
                action: clean(action, MAX_ACTION_CHARS),
                resource: clean(&resource.into(), MAX_RESOURCE_CHARS),
                outcome,
                metadata: serde_json::Map::new(),
                source_ip: String::new(),
                user_agent: String::new(),
                // The trace of the request it happened in (the current span's).
                trace_id: plt_kernel::trace::current_trace_id().unwrap_or_default(),
            },
        }
    }

    /// The request it happened in: its id (metadata `request_id`), the end user's user agent
    /// and `source`, the client address as the service determined it.
    pub fn request(mut self, ctx: &RequestContext, source: Option<IpAddr>) -> Self {
        if let Some(id) = &ctx.request_id {
            self.entry
                .metadata
                .insert("request_id".into(), Value::String(id.clone()));
        }
        if let Some(ua) = &ctx.user_agent {
            self.entry.user_agent = clean(ua, MAX_USER_AGENT_CHARS);
        }
        if let Some(ip) = source {
            self.entry.source_ip = plt_kernel::net::canonical(ip).to_string();
        }
        self
    }

    /// One more metadata field.
    pub fn meta(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.entry.metadata.insert(key.to_owned(), value.into());
        self
    }

    /// The record as it stands.
    pub fn entry(&self) -> &NewAuditEntry {
        &self.entry
    }

    /// The outbox message carrying this record; metadata `occurred_at` is when the event
    /// happened (audit's own time is when it was recorded, later if audit was down).
    pub fn message(&self) -> Message {
        let mut m = Message::new(TOPIC, Value::Null);
        let mut entry = self.entry.clone();
        entry.metadata.insert(
            "occurred_at".into(),
            Value::String(
                m.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ),
        );
        m.payload = serde_json::to_value(&entry).unwrap_or(Value::Null);
        m
    }
}

/// Delivers audit records to audit's `Record` (through the client factory's balanced
/// client), the batch's records concurrently (audit commits them in groups).
pub struct AuditDestination {
    client: Arc<dyn AuditServiceClient>,
    timeout: Duration,
}

impl AuditDestination {
    /// Records through `client`, each call given at most `timeout`.
    pub fn new(client: Arc<dyn AuditServiceClient>, timeout: Duration) -> Self {
        Self { client, timeout }
    }
}

/// Audit refusing a record as it is (it will refuse it again).
fn permanent(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::InvalidArgument | ErrorCode::PayloadTooLarge
    )
}

#[async_trait]
impl Destination for AuditDestination {
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        let calls = batch.iter().map(|d| async move {
            let mut entry: NewAuditEntry = serde_json::from_value(d.payload.clone())
                .map_err(|e| DeliveryError::Rejected(format!("not an audit record: {e}")))?;
            entry.id = Some(d.id);
            let ctx = RequestContext::new().with_timeout(self.timeout);
            match self.client.record(&ctx, entry).await {
                Ok(_) => Ok(()),
                Err(e) if permanent(e.code) => Err(DeliveryError::Rejected(e.to_string())),
                Err(e) => Err(DeliveryError::Retry(e.to_string())),
            }
        });
        futures_util::future::join_all(calls).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_carry_the_request_and_never_overlong_agents() {
        let mut ctx = RequestContext::new().with_request_id("req-1");
        ctx.user_agent = Some(format!("agent\u{7}{}", "x".repeat(600)));
        let e = AuditEvent::new("u1", "auth.login", "user/u1", Outcome::Failure)
            .request(&ctx, Some("::ffff:192.0.2.7".parse().unwrap()))
            .meta("reason", "invalid_credentials");
        let m = e.message();
        assert_eq!(m.topic, TOPIC);
        let entry: NewAuditEntry = serde_json::from_value(m.payload).unwrap();
        assert_eq!(entry.source_ip, "192.0.2.7");
        assert_eq!(entry.user_agent.chars().count(), 512);
        assert!(entry.user_agent.starts_with("agentx"));
        assert_eq!(entry.metadata["request_id"], "req-1");
        assert_eq!(entry.metadata["reason"], "invalid_credentials");
        assert!(
            entry.metadata["occurred_at"]
                .as_str()
                .unwrap()
                .ends_with('Z')
        );
        assert_eq!(entry.id, None, "the id is the message's, set at delivery");
    }
}
