//! The audit contract (the seeds' `AuditServiceClient`): append-only, hash-chained entries.
//! The trait every audit implementation (the service's core, the gRPC client, the HTTP
//! client, test fakes) provides, and its domain types.

pub mod grpc;
pub mod http;

use crate::{RequestContext, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "success" => Some(Outcome::Success),
            "failure" => Some(Outcome::Failure),
            "denied" => Some(Outcome::Denied),
            _ => None,
        }
    }
}

/// What a caller records. Sequence, time and hash are set by the audit service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewAuditEntry {
    /// The record id chosen by the caller (a UUID; the outbox uses its message id). A
    /// `record` with an id the log already holds writes nothing and answers the sequence of
    /// the entry it holds: senders that deliver at least once retry safely.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<uuid::Uuid>,
    /// Who acted: a user id or a service name. Required.
    pub actor: String,
    /// What was done, e.g. `authz.role.grant`. Required.
    pub action: String,
    /// What it was done to.
    pub resource: String,
    pub outcome: Outcome,
    /// A JSON object, size-limited by the service (`audit.max_metadata_bytes`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// The end user's IP address, or empty.
    #[serde(default)]
    pub source_ip: String,
    #[serde(default)]
    pub user_agent: String,
    #[serde(default)]
    pub trace_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// Gap-free, starting at 1, in the order entries were committed.
    pub sequence: u64,
    #[serde(flatten)]
    pub entry: NewAuditEntry,
    /// When the service committed the entry (microsecond precision, never decreasing along
    /// the chain).
    pub time: DateTime<Utc>,
    /// Hex SHA-256 of the previous hash and this entry's canonical form.
    pub hash: String,
}

/// Filters of `query`. `None` (or an empty string) means: no filter on that field.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub outcome: Option<Outcome>,
    /// Entries at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Entries before this time (exclusive). `from` after `to` is invalid.
    pub to: Option<DateTime<Utc>>,
    /// 0 means the server default; larger values are capped by the server.
    pub page_size: u32,
    /// The `next_page_token` of the previous page (opaque).
    pub page_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
    /// Absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// The result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct VerifyReport {
    pub ok: bool,
    /// Entries found intact before the first broken one (all of them when `ok`).
    pub checked: u64,
    /// The first sequence whose hash, link to its predecessor or position is wrong: for a
    /// deleted entry the sequence after the gap, for swapped entries the first of them.
    pub first_broken_sequence: Option<u64>,
    /// Why it is broken; empty when `ok`.
    pub reason: String,
}

pub const IDEMPOTENT_METHODS: &[&str] = &["Query", "Verify"];

#[async_trait]
pub trait AuditServiceClient: Send + Sync + 'static {
    /// Internal: appends an entry; returns its sequence number once it is durable. An entry
    /// whose `id` the log already holds is not appended again: its sequence is returned.
    async fn record(&self, ctx: &RequestContext, entry: NewAuditEntry) -> Result<u64>;
    /// Newest first.
    async fn query(&self, ctx: &RequestContext, filters: AuditQuery) -> Result<AuditPage>;
    /// Walks the whole chain: sequence continuity, links and hashes.
    async fn verify(&self, ctx: &RequestContext) -> Result<VerifyReport>;
}
