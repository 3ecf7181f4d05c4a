//! The inbox: effects of an event applied once.
//!
//! Delivery is at least once (a consumer killed before it committed gets the same events
//! again). A handler whose effect must happen once records the event id in the `inbox` table
//! (one of plt-db's platform tables) **in the same transaction as the effect**:
//!
//! ```ignore
//! let mut tx = pool.begin().await?;
//! if plt_events::inbox::first_time(&mut *tx, "audit", &event.id).await? {
//!     apply(&mut tx, &event).await?;
//! }
//! tx.commit().await?;
//! ```
//!
//! A repeat finds its id and changes nothing. [`prune`] forgets ids older than any
//! redelivery can be.

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use plt_db::Db;

const INSERT: &str = "INSERT INTO inbox (consumer, event_id, handled_at) VALUES ($1, $2, $3) \
                      ON CONFLICT (consumer, event_id) DO NOTHING";

/// A connection inside the caller's transaction that can take inbox entries.
#[async_trait]
pub trait InboxConn: Send {
    /// `true` when the id was not there (now it is).
    async fn mark(&mut self, consumer: &str, event_id: &str) -> Result<bool, sqlx::Error>;
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

#[async_trait]
impl InboxConn for sqlx::PgConnection {
    async fn mark(&mut self, consumer: &str, event_id: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(INSERT)
            .bind(consumer)
            .bind(event_id)
            .bind(now())
            .execute(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}

#[async_trait]
impl InboxConn for sqlx::SqliteConnection {
    async fn mark(&mut self, consumer: &str, event_id: &str) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(INSERT)
            .bind(consumer)
            .bind(event_id)
            .bind(now())
            .execute(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}

/// Records that `consumer` handles event `event_id`, through `conn` (inside the transaction
/// that applies the effect): `false` if it already did — skip the effect.
pub async fn first_time<C: InboxConn + ?Sized>(
    conn: &mut C,
    consumer: &str,
    event_id: &str,
) -> Result<bool, sqlx::Error> {
    conn.mark(consumer, event_id).await
}

/// Forgets entries handled before `before`; the number removed.
pub async fn prune(db: &Db, before: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    const DELETE: &str = "DELETE FROM inbox WHERE handled_at < $1";
    Ok(match db {
        Db::Postgres(p) => sqlx::query(DELETE)
            .bind(before)
            .execute(&**p)
            .await?
            .rows_affected(),
        Db::Sqlite(p) => sqlx::query(DELETE)
            .bind(before)
            .execute(&**p)
            .await?
            .rows_affected(),
    })
}
