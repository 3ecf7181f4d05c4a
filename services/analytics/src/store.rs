//! Analytics storage: [`CountStore`] and its PostgreSQL and SQLite implementations, one SQL
//! text for both (numbered `$n` parameters work in both dialects) through one macro.
//!
//! `daily_counts (day, type, count)` holds how many events of each type happened on each day
//! (UTC). [`CountStore::record`] bumps a row in the same transaction that enters the event's
//! id into the platform's inbox, so an event counts once however often it is delivered.

use async_trait::async_trait;
use chrono::NaiveDate;
use plt_contracts::Error;
use std::sync::Arc;

/// The inbox's consumer name: the consumer group's.
pub const CONSUMER: &str = "analytics";

#[async_trait]
pub trait CountStore: Send + Sync + 'static {
    /// Counts event `event_id` of `event_type` on `day`, unless it was counted before:
    /// `true` when it counted now. Inbox entry and count commit together or not at all.
    async fn record(
        &self,
        event_id: &str,
        day: NaiveDate,
        event_type: &str,
    ) -> Result<bool, sqlx::Error>;

    /// The days from `from` to `to` (inclusive) on which `event_type` happened, with their
    /// counts, in day order.
    async fn series(
        &self,
        event_type: &str,
        from: NaiveDate,
        to: NaiveDate,
    ) -> Result<Vec<(NaiveDate, i64)>, Error>;

    /// Every counted type with its total between `from` and `to` (inclusive; `None`:
    /// unbounded), in type order.
    async fn totals(
        &self,
        from: Option<NaiveDate>,
        to: Option<NaiveDate>,
    ) -> Result<Vec<(String, i64)>, Error>;
}

/// A database failure as the contract's error: 503 while the database is unreachable,
/// otherwise an internal error (logged, details not sent).
fn db_error(e: sqlx::Error) -> Error {
    if plt_db::is_unavailable(&e) {
        Error::dependency_unavailable("the database", "analytics store", &e)
    } else {
        Error::internal("analytics store", &e)
    }
}

const BUMP: &str = "INSERT INTO daily_counts (day, type, count) VALUES ($1, $2, 1) \
                    ON CONFLICT (day, type) DO UPDATE SET count = daily_counts.count + 1";

macro_rules! sql_store {
    ($name:ident, $pool:ty) => {
        pub struct $name(pub $pool);

        #[async_trait]
        impl CountStore for $name {
            async fn record(
                &self,
                event_id: &str,
                day: NaiveDate,
                event_type: &str,
            ) -> Result<bool, sqlx::Error> {
                let mut tx = self.0.begin().await?;
                if !plt_events::inbox::first_time(&mut *tx, CONSUMER, event_id).await? {
                    // Seen before: nothing to change (dropping the transaction rolls back).
                    return Ok(false);
                }
                sqlx::query(BUMP)
                    .bind(day)
                    .bind(event_type)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn series(
                &self,
                event_type: &str,
                from: NaiveDate,
                to: NaiveDate,
            ) -> Result<Vec<(NaiveDate, i64)>, Error> {
                sqlx::query_as(
                    "SELECT day, count FROM daily_counts WHERE type = $1 AND day >= $2 AND day <= $3 ORDER BY day",
                )
                .bind(event_type)
                .bind(from)
                .bind(to)
                .fetch_all(&self.0)
                .await
                .map_err(db_error)
            }

            async fn totals(
                &self,
                from: Option<NaiveDate>,
                to: Option<NaiveDate>,
            ) -> Result<Vec<(String, i64)>, Error> {
                sqlx::query_as(
                    "SELECT type, CAST(SUM(count) AS BIGINT) FROM daily_counts \
                     WHERE ($1 IS NULL OR day >= $1) AND ($2 IS NULL OR day <= $2) \
                     GROUP BY type ORDER BY type",
                )
                .bind(from)
                .bind(to)
                .fetch_all(&self.0)
                .await
                .map_err(db_error)
            }
        }
    };
}

sql_store!(PgCountStore, plt_db::PgPool);
sql_store!(SqliteCountStore, plt_db::SqlitePool);

/// The store on the configured database.
pub fn for_db(db: &plt_db::Db) -> Arc<dyn CountStore> {
    match db {
        plt_db::Db::Postgres(p) => Arc::new(PgCountStore(p.clone())),
        plt_db::Db::Sqlite(p) => Arc::new(SqliteCountStore(p.clone())),
    }
}
