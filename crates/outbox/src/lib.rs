//! plt-outbox: the transactional outbox of plt services.
//!
//! A service writes a [`Message`] into the `outbox` table of its own database (schema or
//! file; the table is one of plt-db's platform tables, created by `Db::migrate`) **in the
//! same transaction** as the change the message describes ([`enqueue`] on the
//! transaction's connection). Either both commit or neither does. A [`Relay`] (a background
//! job of the service) then reads due rows in id order (UUID v7: creation order), hands
//! them to the topic's [`Destination`], deletes those the destination acknowledged and
//! reschedules the others with a jittered, growing back-off. Delivery is at least once:
//! the message id travels with it so that the destination can ignore a repeat (audit does).
//!
//! Several instances of a service may relay from one database: a relay claims rows by
//! leasing them (moving `next_attempt_at` past the lease) — on PostgreSQL through
//! `FOR UPDATE SKIP LOCKED`, so concurrent relays claim disjoint rows; on SQLite the single
//! writer serialises claims. A relay that dies with rows leased leaves them due again when
//! the lease ends. Nothing is deleted before the destination acknowledged it.
//!
//! A relay wakes at once after a local enqueue ([`Outbox::wake`], called after the commit)
//! and polls every `outbox.poll_interval` (rows committed by other instances, rows whose
//! back-off ended).

pub mod audit;
mod relay;
mod sql;

pub use relay::{Relay, RelayStats};

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use plt_db::Db;
use plt_kernel::{ConfigError, config::Validate};
use serde::{Deserialize, Serialize};
use std::{sync::Arc, time::Duration};
use tokio::sync::watch;
use uuid::Uuid;

/// The `outbox` configuration section (shared by every service).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxConfig {
    /// How often a relay looks for due rows besides being woken by a local enqueue.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Rows claimed and handed to the destination at once.
    pub batch_size: u32,
    /// Time the destination has to answer for one batch.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// A claimed row is not claimed again (by any relay) for this long unless its delivery
    /// ended; must exceed `timeout`.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Wait after a failed delivery, doubling up to `retry_max_backoff` (with jitter).
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            batch_size: 100,
            timeout: Duration::from_secs(10),
            lease: Duration::from_secs(30),
            retry_initial_backoff: Duration::from_millis(200),
            retry_max_backoff: Duration::from_secs(30),
        }
    }
}

impl Validate for OutboxConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{p}.{k}");
        if self.poll_interval.is_zero() {
            return Err(ConfigError::new(
                key("poll_interval"),
                "must be greater than 0",
            ));
        }
        if self.batch_size == 0 || self.batch_size > 10_000 {
            return Err(ConfigError::new(
                key("batch_size"),
                "must be between 1 and 10000",
            ));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(key("timeout"), "must be greater than 0"));
        }
        if self.lease <= self.timeout {
            return Err(ConfigError::new(
                key("lease"),
                "must be longer than outbox.timeout (a row in delivery must not be claimed again)",
            ));
        }
        if self.retry_initial_backoff.is_zero()
            || self.retry_max_backoff < self.retry_initial_backoff
        {
            return Err(ConfigError::new(
                key("retry_max_backoff"),
                "must be at least outbox.retry_initial_backoff, which must be greater than 0",
            ));
        }
        Ok(())
    }
}

/// One message to deliver to `topic`.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// UUID v7: orders messages by creation, and is the idempotency id at the destination.
    pub id: Uuid,
    /// The destination (`audit`; event topics later).
    pub topic: String,
    /// A JSON value; the destination defines its shape.
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

impl Message {
    /// A new message (new id, created now).
    pub fn new(topic: &str, payload: serde_json::Value) -> Self {
        Self {
            id: Uuid::now_v7(),
            topic: topic.to_owned(),
            payload,
            created_at: now(),
        }
    }
}

/// A message as a relay hands it to its destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub id: Uuid,
    pub topic: String,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// Delivery attempts so far, this one included.
    pub attempts: u32,
}

/// Why a message was not delivered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The destination may take it later (unreachable, timing out, overloaded): retried
    /// with back-off.
    #[error("{0}")]
    Retry(String),
    /// The destination refused this message as it is. It is kept (never lost), logged at
    /// error level, counted, and retried only after `retry_max_backoff`.
    #[error("rejected: {0}")]
    Rejected(String),
}

/// Where a topic's messages go. The relay calls `deliver` with due messages in id order
/// and deletes each message whose result is `Ok`.
#[async_trait]
pub trait Destination: Send + Sync + 'static {
    /// One result per message of `batch`, in the same order.
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>>;
}

/// A connection inside the caller's transaction that can take outbox messages:
/// `plt_outbox::enqueue(&mut *tx, &[message])` for a `sqlx::Transaction` of PostgreSQL or
/// SQLite.
#[async_trait]
pub trait Enqueue: Send {
    async fn enqueue_one(&mut self, message: &Message) -> Result<(), sqlx::Error>;

    /// All of `messages`; by default one statement each.
    async fn enqueue_many(&mut self, messages: &[Message]) -> Result<(), sqlx::Error> {
        for m in messages {
            self.enqueue_one(m).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Enqueue for sqlx::PgConnection {
    async fn enqueue_one(&mut self, m: &Message) -> Result<(), sqlx::Error> {
        sql::insert_pg(self, m).await
    }

    /// One statement (a round trip to the server) for the lot, however many.
    async fn enqueue_many(&mut self, messages: &[Message]) -> Result<(), sqlx::Error> {
        match messages {
            [] => Ok(()),
            [m] => sql::insert_pg(self, m).await,
            _ => sql::insert_many_pg(self, messages).await,
        }
    }
}

#[async_trait]
impl Enqueue for sqlx::SqliteConnection {
    async fn enqueue_one(&mut self, m: &Message) -> Result<(), sqlx::Error> {
        sql::insert_sqlite(self, m).await
    }
}

/// Writes `messages` into the outbox through `conn`, a connection inside the caller's own
/// transaction (`&mut *tx`): they commit or roll back with it. Call [`Outbox::wake`] after
/// the commit.
pub async fn enqueue<C: Enqueue + ?Sized>(
    conn: &mut C,
    messages: &[Message],
) -> Result<(), sqlx::Error> {
    conn.enqueue_many(messages).await
}

/// Time as stored: microseconds, as every plt store keeps it.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A service's outbox: its database and the local wake-up of its relays. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    db: Db,
    service: Arc<str>,
    wake: Arc<watch::Sender<u64>>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("service", &self.service)
            .field("backend", &self.db.backend())
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// The outbox of `service` (its name in metrics) on `db`.
    pub fn new(db: &Db, service: &str) -> Self {
        Self {
            db: db.clone(),
            service: service.into(),
            wake: Arc::new(watch::channel(0).0),
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// Wakes this process's relays: call it after committing a transaction that enqueued.
    pub fn wake(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Writes `messages` in a transaction of their own (events that change nothing else: a
    /// failed sign-in, a refusal) and wakes the relays.
    pub async fn enqueue_alone(&self, messages: &[Message]) -> Result<(), sqlx::Error> {
        if messages.is_empty() {
            return Ok(());
        }
        match &self.db {
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                enqueue(&mut *tx, messages).await?;
                tx.commit().await?;
            }
            Db::Sqlite(p) => {
                let mut tx = p.begin().await?;
                enqueue(&mut *tx, messages).await?;
                tx.commit().await?;
            }
        }
        self.wake();
        Ok(())
    }

    /// Rows of `topic` not yet delivered, and the creation time of the oldest.
    pub async fn pending(&self, topic: &str) -> Result<(u64, Option<DateTime<Utc>>), sqlx::Error> {
        sql::pending(&self.db, topic).await
    }

    /// A relay delivering this outbox's `topic` to `destination`; run it as a background job
    /// ([`Relay::run`]).
    pub fn relay(
        &self,
        topic: &str,
        destination: Arc<dyn Destination>,
        cfg: &OutboxConfig,
    ) -> Relay {
        Relay::new(self.clone(), topic, destination, cfg.clone())
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.wake.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_name_their_key() {
        assert!(OutboxConfig::default().validate("outbox").is_ok());
        let bad = OutboxConfig {
            lease: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
            ..Default::default()
        };
        assert!(
            bad.validate("outbox")
                .unwrap_err()
                .to_string()
                .contains("outbox.lease")
        );
        let bad = OutboxConfig {
            batch_size: 0,
            ..Default::default()
        };
        assert!(
            bad.validate("outbox")
                .unwrap_err()
                .to_string()
                .contains("outbox.batch_size")
        );
        let bad = OutboxConfig {
            retry_max_backoff: Duration::from_millis(1),
            ..Default::default()
        };
        assert!(
            bad.validate("outbox")
                .unwrap_err()
                .to_string()
                .contains("outbox.retry_max_backoff")
        );
    }

    #[test]
    fn messages_are_ordered_by_creation() {
        let a = Message::new("audit", serde_json::json!({}));
        let b = Message::new("audit", serde_json::json!({}));
        assert!(a.id < b.id);
        assert_eq!(a.id.get_version_num(), 7);
    }
}
