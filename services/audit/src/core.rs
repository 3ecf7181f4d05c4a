//! The audit core: the business rules, implementing the audit contract directly. The gRPC
//! and HTTP servers are thin adapters over it.

use crate::{
    chain,
    config::AuditConfig,
    store::{AuditStore, Filter, StoreError, StoredEntry},
    validate,
    writer::WriterHandle,
};
use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use plt_authn::ServiceGuard;
use plt_contracts::{
    Error, RequestContext, Result,
    audit::{
        AuditEntry, AuditPage, AuditQuery, AuditServiceClient, NewAuditEntry, Outcome, VerifyReport,
    },
};
use std::sync::Arc;

/// The default page size of `query`.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

pub struct AuditCore {
    store: Arc<dyn AuditStore>,
    writer: WriterHandle,
    cfg: AuditConfig,
    guard: ServiceGuard,
}

fn store_err(context: &str, e: StoreError) -> Error {
    match e {
        StoreError::Db(e) if plt_db::is_unavailable(&e) => {
            Error::dependency_unavailable("the database", context, &e)
        }
        e => Error::internal(context, &e),
    }
}

fn malformed_token() -> Error {
    Error::invalid("page_token", "is malformed")
}

/// The keyset position after `e`, as an opaque token: time (µs) and sequence, big-endian.
fn encode_token(time: DateTime<Utc>, sequence: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&time.timestamp_micros().to_be_bytes());
    bytes[8..].copy_from_slice(&sequence.to_be_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode_token(token: &str) -> Result<(DateTime<Utc>, u64)> {
    if token.len() > 64 {
        return Err(malformed_token());
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| malformed_token())?;
    let bytes: [u8; 16] = bytes.try_into().map_err(|_| malformed_token())?;
    let (t, s) = bytes.split_at(8);
    let micros = i64::from_be_bytes(t.try_into().map_err(|_| malformed_token())?);
    let sequence = u64::from_be_bytes(s.try_into().map_err(|_| malformed_token())?);
    let time = DateTime::from_timestamp_micros(micros).ok_or_else(malformed_token)?;
    if sequence == 0 {
        return Err(malformed_token());
    }
    Ok((time, sequence))
}

/// A stored row that cannot be what the service wrote (tampered with, or a bug).
fn corrupt(sequence: u64, what: &str) -> Error {
    Error::internal(
        "reading audit entry",
        &std::io::Error::other(format!("sequence {sequence}: {what}")),
    )
}

fn to_entry(e: StoredEntry) -> Result<AuditEntry> {
    let outcome = Outcome::parse(&e.outcome)
        .ok_or_else(|| corrupt(e.sequence, &format!("unknown outcome {:?}", e.outcome)))?;
    let metadata = match serde_json::from_str(&e.metadata) {
        Ok(serde_json::Value::Object(m)) => m,
        Ok(_) => return Err(corrupt(e.sequence, "metadata is not an object")),
        Err(err) => return Err(corrupt(e.sequence, &format!("metadata: {err}"))),
    };
    Ok(AuditEntry {
        sequence: e.sequence,
        time: e.time,
        hash: e.hash,
        entry: NewAuditEntry {
            id: e.record_id,
            actor: e.actor,
            action: e.action,
            resource: e.resource,
            outcome,
            metadata,
            source_ip: e.source_ip,
            user_agent: e.user_agent,
            trace_id: e.trace_id,
        },
    })
}

impl AuditCore {
    /// `guard` admits `Record` callers: platform services only.
    pub fn new(
        store: Arc<dyn AuditStore>,
        writer: WriterHandle,
        cfg: AuditConfig,
        guard: ServiceGuard,
    ) -> Self {
        Self {
            store,
            writer,
            cfg,
            guard,
        }
    }
}

#[async_trait]
impl AuditServiceClient for AuditCore {
    async fn record(&self, ctx: &RequestContext, entry: NewAuditEntry) -> Result<u64> {
        self.guard.caller(ctx).await?;
        let draft = validate::entry(entry, self.cfg.max_metadata_bytes)?;
        self.writer.append(draft).await
    }

    async fn query(&self, _ctx: &RequestContext, q: AuditQuery) -> Result<AuditPage> {
        if let (Some(from), Some(to)) = (q.from, q.to)
            && from > to
        {
            return Err(Error::invalid("from", "must not be after to"));
        }
        let size = match q.page_size {
            0 => DEFAULT_PAGE_SIZE.min(self.cfg.max_page_size),
            n => n.min(self.cfg.max_page_size),
        };
        let before = match q.page_token.as_deref() {
            None | Some("") => None,
            Some(t) => Some(decode_token(t)?),
        };
        let filter = Filter {
            actor: validate::filter("actor", q.actor, validate::MAX_ACTOR_CHARS)?,
            action: validate::filter("action", q.action, validate::MAX_ACTION_CHARS)?,
            resource: validate::filter("resource", q.resource, validate::MAX_RESOURCE_CHARS)?,
            outcome: q.outcome,
            from: q.from,
            to: q.to,
            before,
        };
        // One extra row tells whether another page follows.
        let mut rows = self
            .store
            .query(&filter, size + 1)
            .await
            .map_err(|e| store_err("querying audit log", e))?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_page_token = if more {
            rows.last().map(|e| encode_token(e.time, e.sequence))
        } else {
            None
        };
        Ok(AuditPage {
            entries: rows.into_iter().map(to_entry).collect::<Result<_>>()?,
            next_page_token,
        })
    }

    async fn verify(&self, _ctx: &RequestContext) -> Result<VerifyReport> {
        let committed = self.writer.committed();
        let report = chain::verify(self.store.as_ref(), committed)
            .await
            .map_err(|e| store_err("verifying audit chain", e))?;
        if report.ok {
            tracing::info!(checked = report.checked, "audit chain verified");
        } else {
            tracing::error!(
                first_broken_sequence = report.first_broken_sequence,
                reason = %report.reason,
                "audit chain broken"
            );
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_refuse_garbage() {
        let t = DateTime::from_timestamp_micros(1_790_000_000_123_456).unwrap();
        let token = encode_token(t, 42);
        assert_eq!(decode_token(&token).unwrap(), (t, 42));
        for bad in ["", "%%%", "AAAA", &"A".repeat(100), &encode_token(t, 0)] {
            assert_eq!(
                decode_token(bad).unwrap_err().violations[0].field,
                "page_token"
            );
        }
    }
}
