//! The schedule table's SQL. The statements are the same on both backends; only the table's
//! column types differ (SQLite keeps times as RFC 3339 text, which sorts as time since every
//! value is UTC and written the same way).

use chrono::{DateTime, Utc};
use plt_db::Db;

/// The table, in the service's schema (PostgreSQL) or file (SQLite).
pub(crate) const TABLE: &str = "plt_schedule";

/// PostgreSQL: created once per schema, under a transaction-scoped advisory lock so that
/// instances starting together do not race on the catalog.
const CREATE_PG: &str = "CREATE TABLE IF NOT EXISTS plt_schedule (
    name               TEXT PRIMARY KEY,
    schedule           TEXT NOT NULL,
    next_run_at        TIMESTAMPTZ NOT NULL,
    attempt            INTEGER NOT NULL DEFAULT 0,
    retry_at           TIMESTAMPTZ,
    fence              BIGINT NOT NULL DEFAULT 0,
    owner              TEXT,
    lease_until        TIMESTAMPTZ,
    last_run_at        TIMESTAMPTZ,
    last_scheduled_for TIMESTAMPTZ,
    last_outcome       TEXT,
    last_error         TEXT,
    last_success_at    TIMESTAMPTZ
)";
const LOCK_PG: &str = "SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.plt_schedule'))";

const CREATE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS plt_schedule (
    name               TEXT PRIMARY KEY NOT NULL,
    schedule           TEXT NOT NULL,
    next_run_at        TEXT NOT NULL,
    attempt            INTEGER NOT NULL DEFAULT 0,
    retry_at           TEXT,
    fence              INTEGER NOT NULL DEFAULT 0,
    owner              TEXT,
    lease_until        TEXT,
    last_run_at        TEXT,
    last_scheduled_for TEXT,
    last_outcome       TEXT,
    last_error         TEXT,
    last_success_at    TEXT
)";

const SELECT: &str = "SELECT name, schedule, next_run_at, attempt, retry_at, fence, owner, \
     lease_until, last_run_at, last_scheduled_for, last_outcome, last_error, last_success_at \
     FROM plt_schedule";

/// A job seen for the first time: its first occurrence.
const REGISTER: &str = "INSERT INTO plt_schedule (name, schedule, next_run_at) VALUES ($1, $2, $3) \
     ON CONFLICT (name) DO NOTHING";

/// A job whose declared schedule changed: it starts over from the new schedule's first
/// occurrence. The fence moves, so a run of the old schedule still in flight records nothing.
const RESCHEDULE: &str = "UPDATE plt_schedule SET schedule = $2, next_run_at = $3, attempt = 0, \
     retry_at = NULL, lease_until = NULL, fence = fence + 1 WHERE name = $1 AND schedule <> $2";

/// Claims the due occurrence of job `$1` last seen with fence `$2`: due at `$8` (its time
/// and its retry back-off passed), its lease free or expired, declared with the same
/// schedule `$7`. Moves the fence, leases it to `$3` until `$4`, and sets the occurrence
/// (`$5`, `$6`: the catch-up policy may move past missed ones).
const CLAIM: &str = "UPDATE plt_schedule SET fence = fence + 1, owner = $3, lease_until = $4, \
     next_run_at = $5, attempt = $6, retry_at = NULL \
     WHERE name = $1 AND fence = $2 AND schedule = $7 AND next_run_at <= $8 \
       AND (retry_at IS NULL OR retry_at <= $8) AND (lease_until IS NULL OR lease_until <= $8) \
     RETURNING fence";

/// Extends the lease of the run holding fence `$2`.
const RENEW: &str = "UPDATE plt_schedule SET lease_until = $3 WHERE name = $1 AND fence = $2";

/// Records the end of the run holding fence `$2` (nothing when another instance took the
/// occurrence over since): the next occurrence or the retry, and the outcome.
const COMPLETE: &str = "UPDATE plt_schedule SET next_run_at = $3, attempt = $4, retry_at = $5, \
     lease_until = NULL, last_run_at = $6, last_scheduled_for = $7, last_outcome = $8, \
     last_error = $9, last_success_at = COALESCE($10, last_success_at) \
     WHERE name = $1 AND fence = $2";

/// Takes the job's row lock inside the caller's transaction if fence `$2` still holds.
pub(crate) const HOLD: &str =
    "UPDATE plt_schedule SET fence = fence WHERE name = $1 AND fence = $2";

/// One row of the table.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Row {
    pub name: String,
    pub schedule: String,
    pub next_run_at: DateTime<Utc>,
    pub attempt: i32,
    pub retry_at: Option<DateTime<Utc>>,
    pub fence: i64,
    pub owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_scheduled_for: Option<DateTime<Utc>>,
    pub last_outcome: Option<String>,
    pub last_error: Option<String>,
    pub last_success_at: Option<DateTime<Utc>>,
}

impl Row {
    /// When the row may next be claimed: its occurrence's time, the end of its retry
    /// back-off, the end of a lease.
    pub(crate) fn claimable_at(&self) -> DateTime<Utc> {
        let mut at = self.next_run_at;
        if let Some(r) = self.retry_at {
            at = at.max(r);
        }
        if let Some(l) = self.lease_until {
            at = at.max(l);
        }
        at
    }
}

/// What a completed run writes.
pub(crate) struct Completion<'a> {
    pub name: &'a str,
    pub fence: i64,
    pub next_run_at: DateTime<Utc>,
    pub attempt: i32,
    pub retry_at: Option<DateTime<Utc>>,
    pub ran_at: DateTime<Utc>,
    pub scheduled_for: DateTime<Utc>,
    pub outcome: &'a str,
    pub error: Option<&'a str>,
    pub success_at: Option<DateTime<Utc>>,
}

/// Creates the table when it is missing.
pub(crate) async fn install(db: &Db) -> Result<(), sqlx::Error> {
    match db {
        Db::Postgres(p) => {
            let mut tx = p.begin().await?;
            sqlx::query(LOCK_PG).execute(&mut *tx).await?;
            sqlx::query(CREATE_PG).execute(&mut *tx).await?;
            tx.commit().await
        }
        Db::Sqlite(p) => sqlx::query(CREATE_SQLITE).execute(p).await.map(drop),
    }
}

/// Adds the job unless it is there; starts it over when its stored schedule differs.
pub(crate) async fn register(
    db: &Db,
    name: &str,
    schedule: &str,
    first: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    macro_rules! run {
        ($p:expr) => {{
            sqlx::query(REGISTER)
                .bind(name)
                .bind(schedule)
                .bind(first)
                .execute($p)
                .await?;
            let changed = sqlx::query(RESCHEDULE)
                .bind(name)
                .bind(schedule)
                .bind(first)
                .execute($p)
                .await?
                .rows_affected();
            if changed > 0 {
                tracing::info!(
                    job = name,
                    schedule,
                    "the job's schedule changed: it starts over from the new one"
                );
            }
        }};
    }
    match db {
        Db::Postgres(p) => run!(p),
        Db::Sqlite(p) => run!(p),
    }
    Ok(())
}

/// Every row.
pub(crate) async fn load(db: &Db) -> Result<Vec<Row>, sqlx::Error> {
    match db {
        Db::Postgres(p) => sqlx::query_as(SELECT).fetch_all(p).await,
        Db::Sqlite(p) => sqlx::query_as(SELECT).fetch_all(p).await,
    }
}

/// One job's row.
pub(crate) async fn load_one(db: &Db, name: &str) -> Result<Option<Row>, sqlx::Error> {
    let sql = format!("{SELECT} WHERE name = $1");
    let sql = sqlx::AssertSqlSafe(sql);
    match db {
        Db::Postgres(p) => sqlx::query_as(sql).bind(name).fetch_optional(p).await,
        Db::Sqlite(p) => sqlx::query_as(sql).bind(name).fetch_optional(p).await,
    }
}

/// The claim (see [`CLAIM`]): the new fence, or `None` when the row changed or is not due.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn claim(
    db: &Db,
    name: &str,
    seen_fence: i64,
    owner: &str,
    lease_until: DateTime<Utc>,
    occurrence: DateTime<Utc>,
    attempt: i32,
    schedule: &str,
    now: DateTime<Utc>,
) -> Result<Option<i64>, sqlx::Error> {
    macro_rules! run {
        ($p:expr) => {
            sqlx::query_scalar(CLAIM)
                .bind(name)
                .bind(seen_fence)
                .bind(owner)
                .bind(lease_until)
                .bind(occurrence)
                .bind(attempt)
                .bind(schedule)
                .bind(now)
                .fetch_optional($p)
                .await
        };
    }
    match db {
        Db::Postgres(p) => run!(p),
        Db::Sqlite(p) => run!(p),
    }
}

/// Extends a lease; `false` when the fence moved on.
pub(crate) async fn renew(
    db: &Db,
    name: &str,
    fence: i64,
    lease_until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    macro_rules! run {
        ($p:expr) => {
            sqlx::query(RENEW)
                .bind(name)
                .bind(fence)
                .bind(lease_until)
                .execute($p)
                .await?
                .rows_affected()
        };
    }
    Ok(match db {
        Db::Postgres(p) => run!(p),
        Db::Sqlite(p) => run!(p),
    } == 1)
}

/// Records a run's end; `false` when the fence moved on (nothing written).
pub(crate) async fn complete(db: &Db, c: &Completion<'_>) -> Result<bool, sqlx::Error> {
    // Bounded: an error message is a diagnosis, not a payload.
    let error: Option<String> = c.error.map(|e| e.chars().take(2000).collect());
    macro_rules! run {
        ($p:expr) => {
            sqlx::query(COMPLETE)
                .bind(c.name)
                .bind(c.fence)
                .bind(c.next_run_at)
                .bind(c.attempt)
                .bind(c.retry_at)
                .bind(c.ran_at)
                .bind(c.scheduled_for)
                .bind(c.outcome)
                .bind(error.as_deref())
                .bind(c.success_at)
                .execute($p)
                .await?
                .rows_affected()
        };
    }
    Ok(match db {
        Db::Postgres(p) => run!(p),
        Db::Sqlite(p) => run!(p),
    } == 1)
}
