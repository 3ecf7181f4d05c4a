//! The outbox's SQL, per backend. The statements are the same but for PostgreSQL's
//! `FOR UPDATE SKIP LOCKED` (concurrent relays claim disjoint rows; SQLite has one writer)
//! and its JSONB payload column.

use crate::{Delivery, Message};
use chrono::{DateTime, Utc};
use plt_db::Db;
use uuid::Uuid;

const INSERT_PG: &str = "INSERT INTO outbox (id, topic, payload, created_at, attempts, next_attempt_at) \
                         VALUES ($1, $2, CAST($3 AS JSONB), $4, 0, $4)";
const INSERT_SQLITE: &str = "INSERT INTO outbox (id, topic, payload, created_at, attempts, next_attempt_at) \
                             VALUES ($1, $2, $3, $4, 0, $4)";

/// Claims up to `$4` due rows of topic `$1` (due at `$2`), leasing them until `$3`.
const CLAIM_PG: &str = "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $3 \
     WHERE id IN (SELECT id FROM outbox WHERE topic = $1 AND next_attempt_at <= $2 \
                  ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING id, topic, CAST(payload AS TEXT) AS payload, created_at, attempts";
const CLAIM_SQLITE: &str = "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $3 \
     WHERE id IN (SELECT id FROM outbox WHERE topic = $1 AND next_attempt_at <= $2 \
                  ORDER BY id LIMIT $4) \
     RETURNING id, topic, payload, created_at, attempts";

/// The oldest row of topic `$1` that is not due at `$2` (in delivery or backing off) and not
/// parked: an ordered relay delivers nothing from it on.
const BARRIER: &str = "SELECT id FROM outbox WHERE topic = $1 AND next_attempt_at > $2 AND NOT parked \
     ORDER BY id LIMIT 1";

/// Like `CLAIM_*`, only rows older than `$5` (the barrier).
const CLAIM_BEFORE_PG: &str = "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $3 \
     WHERE id IN (SELECT id FROM outbox WHERE topic = $1 AND next_attempt_at <= $2 AND id < $5 \
                  ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) \
     RETURNING id, topic, CAST(payload AS TEXT) AS payload, created_at, attempts";
const CLAIM_BEFORE_SQLITE: &str = "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $3 \
     WHERE id IN (SELECT id FROM outbox WHERE topic = $1 AND next_attempt_at <= $2 AND id < $5 \
                  ORDER BY id LIMIT $4) \
     RETURNING id, topic, payload, created_at, attempts";

const PENDING: &str = "SELECT COUNT(*), MIN(created_at) FROM outbox WHERE topic = $1";

pub(crate) async fn insert_pg(
    conn: &mut sqlx::PgConnection,
    m: &Message,
) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_PG)
        .bind(m.id)
        .bind(&m.topic)
        .bind(m.payload.to_string())
        .bind(m.created_at)
        .execute(conn)
        .await
        .map(drop)
}

/// Many rows in one statement: the columns as arrays, unnested in step.
const INSERT_MANY_PG: &str = "INSERT INTO outbox (id, topic, payload, created_at, attempts, next_attempt_at) \
     SELECT id, topic, CAST(payload AS JSONB), created_at, 0, created_at \
     FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::timestamptz[]) AS m(id, topic, payload, created_at)";

pub(crate) async fn insert_many_pg(
    conn: &mut sqlx::PgConnection,
    messages: &[Message],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = messages.iter().map(|m| m.id).collect();
    let topics: Vec<&str> = messages.iter().map(|m| m.topic.as_str()).collect();
    let payloads: Vec<String> = messages.iter().map(|m| m.payload.to_string()).collect();
    let created: Vec<DateTime<Utc>> = messages.iter().map(|m| m.created_at).collect();
    sqlx::query(INSERT_MANY_PG)
        .bind(ids)
        .bind(topics)
        .bind(payloads)
        .bind(created)
        .execute(conn)
        .await
        .map(drop)
}

pub(crate) async fn insert_sqlite(
    conn: &mut sqlx::SqliteConnection,
    m: &Message,
) -> Result<(), sqlx::Error> {
    sqlx::query(INSERT_SQLITE)
        .bind(m.id)
        .bind(&m.topic)
        .bind(m.payload.to_string())
        .bind(m.created_at)
        .execute(conn)
        .await
        .map(drop)
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: Uuid,
    topic: String,
    payload: String,
    created_at: DateTime<Utc>,
    attempts: i32,
}

/// A claimed row: its delivery, or why its stored payload cannot be delivered.
pub(crate) type Claimed = (Delivery, Option<String>);

fn delivery(r: ClaimedRow) -> Claimed {
    let (payload, broken) = match serde_json::from_str(&r.payload) {
        Ok(v) => (v, None),
        Err(e) => (
            serde_json::Value::Null,
            Some(format!("stored payload is not JSON: {e}")),
        ),
    };
    (
        Delivery {
            id: r.id,
            topic: r.topic,
            payload,
            created_at: r.created_at,
            attempts: u32::try_from(r.attempts).unwrap_or(0),
        },
        broken,
    )
}

/// Claims up to `limit` rows of `topic` due at `now`, leasing them until `lease_until`, in
/// id order. `ordered`: only rows older than the oldest one not due (head of line).
pub(crate) async fn claim(
    db: &Db,
    topic: &str,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
    ordered: bool,
) -> Result<Vec<Claimed>, sqlx::Error> {
    let barrier: Option<Uuid> = if ordered {
        match db {
            Db::Postgres(p) => {
                sqlx::query_scalar(BARRIER)
                    .bind(topic)
                    .bind(now)
                    .fetch_optional(&**p)
                    .await?
            }
            Db::Sqlite(p) => {
                sqlx::query_scalar(BARRIER)
                    .bind(topic)
                    .bind(now)
                    .fetch_optional(&**p)
                    .await?
            }
        }
    } else {
        None
    };
    let mut rows: Vec<ClaimedRow> = match (db, barrier) {
        (Db::Postgres(p), Some(b)) => {
            sqlx::query_as(CLAIM_BEFORE_PG)
                .bind(topic)
                .bind(now)
                .bind(lease_until)
                .bind(i64::from(limit))
                .bind(b)
                .fetch_all(&**p)
                .await?
        }
        (Db::Sqlite(p), Some(b)) => {
            sqlx::query_as(CLAIM_BEFORE_SQLITE)
                .bind(topic)
                .bind(now)
                .bind(lease_until)
                .bind(i64::from(limit))
                .bind(b)
                .fetch_all(&**p)
                .await?
        }
        (Db::Postgres(p), None) => {
            sqlx::query_as(CLAIM_PG)
                .bind(topic)
                .bind(now)
                .bind(lease_until)
                .bind(i64::from(limit))
                .fetch_all(&**p)
                .await?
        }
        (Db::Sqlite(p), None) => {
            sqlx::query_as(CLAIM_SQLITE)
                .bind(topic)
                .bind(now)
                .bind(lease_until)
                .bind(i64::from(limit))
                .fetch_all(&**p)
                .await?
        }
    };
    // RETURNING promises no order.
    rows.sort_by_key(|r| r.id);
    Ok(rows.into_iter().map(delivery).collect())
}

macro_rules! in_list {
    ($db:ty, $head:expr, $ids:expr) => {{
        let mut q = sqlx::QueryBuilder::<$db>::new($head);
        q.push(" WHERE id IN (");
        let mut list = q.separated(", ");
        for id in $ids {
            list.push_bind(*id);
        }
        q.push(")");
        q
    }};
}

/// Deletes delivered rows.
pub(crate) async fn delete(db: &Db, ids: &[Uuid]) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    match db {
        Db::Postgres(p) => {
            in_list!(sqlx::Postgres, "DELETE FROM outbox", ids)
                .build()
                .execute(&**p)
                .await?;
        }
        Db::Sqlite(p) => {
            in_list!(sqlx::Sqlite, "DELETE FROM outbox", ids)
                .build()
                .execute(&**p)
                .await?;
        }
    }
    Ok(())
}

/// Makes rows due again at `at`, noting `error`; `park`: the destination refused them.
pub(crate) async fn reschedule(
    db: &Db,
    ids: &[Uuid],
    at: DateTime<Utc>,
    error: &str,
    park: bool,
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    // Bounded: an error message is a diagnosis, not a payload.
    let error: String = error.chars().take(1000).collect();
    match db {
        Db::Postgres(p) => {
            let mut q =
                sqlx::QueryBuilder::<sqlx::Postgres>::new("UPDATE outbox SET next_attempt_at = ");
            q.push_bind(at).push(", last_error = ").push_bind(error);
            if park {
                q.push(", parked = TRUE");
            }
            q.push(" WHERE id IN (");
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            q.push(")");
            q.build().execute(&**p).await?;
        }
        Db::Sqlite(p) => {
            let mut q =
                sqlx::QueryBuilder::<sqlx::Sqlite>::new("UPDATE outbox SET next_attempt_at = ");
            q.push_bind(at).push(", last_error = ").push_bind(error);
            if park {
                q.push(", parked = TRUE");
            }
            q.push(" WHERE id IN (");
            let mut list = q.separated(", ");
            for id in ids {
                list.push_bind(*id);
            }
            q.push(")");
            q.build().execute(&**p).await?;
        }
    }
    Ok(())
}

/// Rows of `topic` and the creation time of the oldest.
pub(crate) async fn pending(
    db: &Db,
    topic: &str,
) -> Result<(u64, Option<DateTime<Utc>>), sqlx::Error> {
    let (n, oldest): (i64, Option<DateTime<Utc>>) = match db {
        Db::Postgres(p) => sqlx::query_as(PENDING).bind(topic).fetch_one(&**p).await?,
        Db::Sqlite(p) => sqlx::query_as(PENDING).bind(topic).fetch_one(&**p).await?,
    };
    Ok((u64::try_from(n).unwrap_or(0), oldest))
}
