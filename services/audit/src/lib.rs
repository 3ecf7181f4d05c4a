//! audit-service: an append-only, hash-chained log of security-relevant actions, served over
//! gRPC and HTTP/JSON on one port. `App::build` wires everything explicitly so tests build
//! exactly what the binary runs, on port 0.
//!
//! - [`chain`]: the canonical form of an entry, its hash, and verification.
//! - [`writer`]: the single writer that owns the chain head, with group commit.
//! - [`store`]: `AuditStore` on PostgreSQL and SQLite (append-only tables).
//! - [`core`]: the contract implementation (validation, queries, verify).

pub mod chain;
pub mod config;
pub mod core;
pub mod store;
pub mod validate;
pub mod writer;

use crate::{config::AuditConfig, core::AuditCore, writer::Writer};
use anyhow::Context as _;
use plt_contracts::{
    audit::{AuditServiceClient, VerifyReport},
    serve::AuditServe,
};
use plt_db::{Db, Migrations};
use plt_kernel::Loaded;
use plt_runtime::{Context, Manifest, Parts, Service};
use std::sync::Arc;

/// The service's name in logs, metrics and the registry.
pub const SERVICE_NAME: &str = "audit-service";
/// The configuration section, and the database schema (PostgreSQL) or file (SQLite).
pub const SECTION: &str = "audit";

/// This service's migrations, one set per backend.
pub static MIGRATIONS: Migrations = plt_db::embed_migrations!();

pub type Config = Loaded<AuditConfig>;

/// Connects the database and applies migrations.
pub async fn connect_db(cfg: &Config, schema: &str) -> anyhow::Result<Db> {
    Ok(Db::open(&cfg.kernel.database, schema, MIGRATIONS).await?)
}

/// Walks the whole chain of the log in `db` (what `audit-service verify` runs). Without the
/// running writer, a deleted tail is not seen; everything else is.
pub async fn verify_chain(db: &Db) -> anyhow::Result<VerifyReport> {
    chain::verify(store::for_db(db).as_ref(), 0)
        .await
        .context("reading the audit log")
}

/// Records audit entries that arrive on the audit topic, through the group-commit writer.
struct Ingest {
    writer: writer::WriterHandle,
    max_metadata_bytes: usize,
}

#[async_trait::async_trait]
impl plt_events::Handler for Ingest {
    async fn handle(
        &self,
        event: &plt_events::Event,
        _: &plt_events::Received,
    ) -> Result<(), plt_events::HandlerError> {
        use plt_events::HandlerError;
        let mut entry: plt_contracts::audit::NewAuditEntry =
            serde_json::from_value(event.data.clone())
                .map_err(|e| HandlerError::Permanent(format!("not an audit record: {e}")))?;
        let id = uuid::Uuid::parse_str(&event.id)
            .map_err(|_| HandlerError::Permanent("ce_id is not a UUID".into()))?;
        entry.id = Some(id);
        let draft = validate::entry(entry, self.max_metadata_bytes)
            .map_err(|e| HandlerError::Permanent(e.to_string()))?;
        match self.writer.append(draft).await {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.code,
                    plt_contracts::ErrorCode::InvalidArgument
                        | plt_contracts::ErrorCode::PayloadTooLarge
                ) =>
            {
                Err(HandlerError::Permanent(e.to_string()))
            }
            Err(e) => Err(HandlerError::Retry(e.to_string())),
        }
    }
}

/// The audit service, as the runtime runs it. Exports its core
/// (`Arc<dyn AuditServiceClient>`, unguarded).
pub struct Audit;

#[async_trait::async_trait]
impl Service for Audit {
    type Config = AuditConfig;
    const MANIFEST: Manifest = Manifest::new(SECTION, SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .calls(&["authz"])
        .migrations(&MIGRATIONS);

    async fn build(cx: &Context<AuditConfig>) -> anyhow::Result<Parts> {
        let cfg = &cx.config;
        let store = store::for_db(cx.db()?);
        let (writer, handle) = Writer::start(
            store.clone(),
            cfg.service.max_batch,
            cfg.service.queue_capacity,
            SERVICE_NAME,
        )
        .await
        .context("loading the head of the audit chain")?;
        tracing::info!(head = handle.committed(), "audit chain head loaded");
        let verifier = cx.verifier()?;
        let ingest = Arc::new(Ingest {
            writer: handle.clone(),
            max_metadata_bytes: cfg.service.max_metadata_bytes,
        });
        let core: Arc<dyn AuditServiceClient> = Arc::new(AuditCore::new(
            store,
            handle,
            cfg.service.clone(),
            plt_authn::ServiceGuard::new(verifier, SECTION),
        ));
        // With a bus, services send their records to the audit topic: consumed by the
        // group `audit` (instances share the partitions), each fetched batch at once so
        // that the writer commits it in groups; a record's id (its outbox message id) makes
        // a redelivery write nothing twice.
        let ingest =
            plt_events::Subscription::new(SECTION, &[plt_events::outbox::AUDIT_RECORD], ingest)
                .unordered();
        // Reading needs audit.logs.read and verifying audit.logs.verify, recording a service
        // token: the runtime's guard enforces plt_contracts::guarded::AUDIT_METHODS.
        // Entries accepted before shutdown are committed before the database closes.
        Ok(Parts::new()
            .subscribe(ingest)
            .serve(AuditServe(core.clone()))
            .on_stop(async move { writer.shutdown().await })
            .export(core))
    }
}
