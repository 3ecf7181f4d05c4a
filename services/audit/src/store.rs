//! Audit storage: the [`AuditStore`] trait and its PostgreSQL and SQLite implementations.
//! Both run the same SQL through one macro, so the two cannot drift apart; the schemas differ
//! only in column types (see migrations/).
//!
//! The store is append-only by construction: its only write is [`AuditStore::append`]. The
//! tables refuse UPDATE and DELETE (and TRUNCATE) with triggers besides.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plt_contracts::audit::Outcome;

/// An entry as stored: sealed (sequence, time and hashes set), every field exactly as hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub sequence: u64,
    pub time: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub resource: String,
    /// As stored (`success`, `failure`, `denied`); hashed as text.
    pub outcome: String,
    /// Canonical JSON text of the metadata object, exactly as hashed.
    pub metadata: String,
    pub source_ip: String,
    pub user_agent: String,
    pub trace_id: String,
    /// The caller's record id, when it gave one (unique in the log).
    pub record_id: Option<uuid::Uuid>,
    /// The hash of the entry with the previous sequence.
    pub prev_hash: String,
    pub hash: String,
}

/// The newest entry: where the writer continues the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub sequence: u64,
    pub hash: String,
    pub time: DateTime<Utc>,
}

/// The filters of a query, already validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub resource: Option<String>,
    pub outcome: Option<Outcome>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive.
    pub to: Option<DateTime<Utc>>,
    /// Keyset: only entries strictly older than this `(time, sequence)`.
    pub before: Option<(DateTime<Utc>, u64)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A sequence (or a record id) is taken: another writer appended since the head was
    /// read.
    #[error("sequence or record id already taken")]
    Conflict,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Db(e),
    }
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// The newest entry (`None` while the log is empty).
    async fn head(&self) -> Result<Option<ChainHead>, StoreError>;
    /// Appends sealed entries in one transaction, committed when this returns: all or
    /// none. The log's only write.
    async fn append(&self, entries: &[StoredEntry]) -> Result<(), StoreError>;
    /// Entries matching `filter`, newest first (by time, then sequence), at most `limit`.
    async fn query(&self, filter: &Filter, limit: u32) -> Result<Vec<StoredEntry>, StoreError>;
    /// The sequences of the entries holding any of these record ids.
    async fn find_records(
        &self,
        ids: &[uuid::Uuid],
    ) -> Result<std::collections::HashMap<uuid::Uuid, u64>, StoreError>;
    /// Entries with a sequence above `after`, in sequence order, at most `limit`.
    async fn chain(&self, after: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError>;
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    sequence: i64,
    recorded_at: DateTime<Utc>,
    actor: String,
    action: String,
    resource: String,
    outcome: String,
    metadata: String,
    source_ip: String,
    user_agent: String,
    trace_id: String,
    record_id: Option<uuid::Uuid>,
    prev_hash: String,
    hash: String,
}

fn decode_err(msg: String) -> StoreError {
    StoreError::Db(sqlx::Error::Decode(msg.into()))
}

fn to_i64(sequence: u64) -> Result<i64, StoreError> {
    i64::try_from(sequence).map_err(|_| decode_err(format!("sequence {sequence} out of range")))
}

impl TryFrom<EntryRow> for StoredEntry {
    type Error = StoreError;

    fn try_from(r: EntryRow) -> Result<Self, StoreError> {
        let sequence = u64::try_from(r.sequence)
            .map_err(|_| decode_err(format!("negative sequence {}", r.sequence)))?;
        Ok(StoredEntry {
            sequence,
            time: r.recorded_at,
            actor: r.actor,
            action: r.action,
            resource: r.resource,
            outcome: r.outcome,
            metadata: r.metadata,
            source_ip: r.source_ip,
            user_agent: r.user_agent,
            trace_id: r.trace_id,
            record_id: r.record_id,
            prev_hash: r.prev_hash,
            hash: r.hash,
        })
    }
}

const COLUMNS: &str = "sequence, recorded_at, actor, action, resource, outcome, metadata, \
                       source_ip, user_agent, trace_id, record_id, prev_hash, hash";

macro_rules! sql_store {
    ($name:ident, $db:ty, $pool:ty, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone)]
        pub struct $name {
            pool: $pool,
        }

        impl $name {
            pub fn new(pool: $pool) -> Self {
                Self { pool }
            }
        }

        #[async_trait]
        impl AuditStore for $name {
            async fn head(&self) -> Result<Option<ChainHead>, StoreError> {
                let row: Option<(i64, String, DateTime<Utc>)> = sqlx::query_as(
                    "SELECT sequence, hash, recorded_at FROM audit_log ORDER BY sequence DESC LIMIT 1",
                )
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
                row.map(|(sequence, hash, time)| {
                    let sequence = u64::try_from(sequence)
                        .map_err(|_| decode_err(format!("negative sequence {sequence}")))?;
                    Ok(ChainHead { sequence, hash, time })
                })
                .transpose()
            }

            async fn append(&self, entries: &[StoredEntry]) -> Result<(), StoreError> {
                if entries.is_empty() {
                    return Ok(());
                }
                let mut rows = Vec::with_capacity(entries.len());
                for e in entries {
                    rows.push((to_i64(e.sequence)?, e));
                }
                let mut insert = sqlx::QueryBuilder::<$db>::new(format!("INSERT INTO audit_log ({COLUMNS}) "));
                insert.push_values(rows, |mut b, (sequence, e)| {
                    b.push_bind(sequence)
                        .push_bind(e.time)
                        .push_bind(e.actor.clone())
                        .push_bind(e.action.clone())
                        .push_bind(e.resource.clone())
                        .push_bind(e.outcome.clone())
                        .push_bind(e.metadata.clone())
                        .push_bind(e.source_ip.clone())
                        .push_bind(e.user_agent.clone())
                        .push_bind(e.trace_id.clone())
                        .push_bind(e.record_id)
                        .push_bind(e.prev_hash.clone())
                        .push_bind(e.hash.clone());
                });
                // One multi-row INSERT is one transaction (autocommit): all rows or none,
                // durable when it returns, in one round trip instead of three.
                insert.build().execute(&self.pool).await.map_err(map_err)?;
                Ok(())
            }

            async fn query(&self, f: &Filter, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
                let mut q = sqlx::QueryBuilder::<$db>::new(format!(
                    "SELECT {COLUMNS} FROM audit_log WHERE 1 = 1"
                ));
                for (column, value) in [
                    ("actor", &f.actor),
                    ("action", &f.action),
                    ("resource", &f.resource),
                ] {
                    if let Some(v) = value {
                        q.push(format_args!(" AND {column} = ")).push_bind(v.clone());
                    }
                }
                if let Some(o) = f.outcome {
                    q.push(" AND outcome = ").push_bind(o.as_str());
                }
                if let Some(from) = f.from {
                    q.push(" AND recorded_at >= ").push_bind(from);
                }
                if let Some(to) = f.to {
                    q.push(" AND recorded_at < ").push_bind(to);
                }
                if let Some((time, sequence)) = f.before {
                    q.push(" AND (recorded_at < ")
                        .push_bind(time)
                        .push(" OR (recorded_at = ")
                        .push_bind(time)
                        .push(" AND sequence < ")
                        .push_bind(to_i64(sequence)?)
                        .push("))");
                }
                q.push(" ORDER BY recorded_at DESC, sequence DESC LIMIT ")
                    .push_bind(i64::from(limit));
                let rows: Vec<EntryRow> = q
                    .build_query_as()
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                rows.into_iter().map(StoredEntry::try_from).collect()
            }

            async fn find_records(
                &self,
                ids: &[uuid::Uuid],
            ) -> Result<std::collections::HashMap<uuid::Uuid, u64>, StoreError> {
                let mut found = std::collections::HashMap::new();
                if ids.is_empty() {
                    return Ok(found);
                }
                let mut q = sqlx::QueryBuilder::<$db>::new(
                    "SELECT record_id, sequence FROM audit_log WHERE record_id IN (",
                );
                let mut list = q.separated(", ");
                for id in ids {
                    list.push_bind(*id);
                }
                q.push(")");
                let rows: Vec<(uuid::Uuid, i64)> = q
                    .build_query_as()
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?;
                for (id, sequence) in rows {
                    let sequence = u64::try_from(sequence)
                        .map_err(|_| decode_err(format!("negative sequence {sequence}")))?;
                    found.insert(id, sequence);
                }
                Ok(found)
            }

            async fn chain(&self, after: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
                let rows: Vec<EntryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM audit_log WHERE sequence > $1 ORDER BY sequence LIMIT $2"
                )))
                .bind(to_i64(after)?)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(map_err)?;
                rows.into_iter().map(StoredEntry::try_from).collect()
            }
        }
    };
}

sql_store!(
    PgAuditStore,
    sqlx::Postgres,
    plt_db::PgPool,
    "The audit store on PostgreSQL (schema `audit`)."
);
sql_store!(
    SqliteAuditStore,
    sqlx::Sqlite,
    plt_db::SqlitePool,
    "The audit store on SQLite (`audit.db`)."
);

/// The store for a connected database.
pub fn for_db(db: &plt_db::Db) -> std::sync::Arc<dyn AuditStore> {
    match db {
        plt_db::Db::Postgres(p) => std::sync::Arc::new(PgAuditStore::new(p.clone())),
        plt_db::Db::Sqlite(p) => std::sync::Arc::new(SqliteAuditStore::new(p.clone())),
    }
}
