//! The audit contract (the seeds' `AuditServiceClient`): append-only, hash-chained entries.
//! Adapters arrive with the audit service.

use crate::{RequestContext, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    Failure,
    Denied,
}

/// What a caller records. Sequence, time and hash are set by the audit service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub outcome: Outcome,
    /// A JSON object, size-limited by the service.
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub source_ip: String,
    #[serde(default)]
    pub user_agent: String,
    #[serde(default)]
    pub trace_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub sequence: u64,
    #[serde(flatten)]
    pub entry: NewAuditEntry,
    pub time: DateTime<Utc>,
    /// Hex SHA-256 of the previous hash and this entry's canonical form.
    pub hash: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub outcome: Option<Outcome>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub page_size: u32,
    pub page_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next_page_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub checked: u64,
    pub first_broken_sequence: Option<u64>,
    pub reason: String,
}

pub const IDEMPOTENT_METHODS: &[&str] = &["Query", "Verify"];

#[async_trait]
pub trait AuditServiceClient: Send + Sync + 'static {
    /// Internal: appends an entry; returns its sequence number once it is durable.
    async fn record(&self, ctx: &RequestContext, entry: NewAuditEntry) -> Result<u64>;
    /// Newest first.
    async fn query(&self, ctx: &RequestContext, filters: AuditQuery) -> Result<AuditPage>;
    async fn verify(&self, ctx: &RequestContext) -> Result<VerifyReport>;
}
