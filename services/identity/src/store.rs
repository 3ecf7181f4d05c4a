//! Identity storage: the [`UserStore`] trait and its PostgreSQL and SQLite implementations.
//! Both run the same SQL (numbered `$n` parameters work in both dialects) through one macro,
//! so the two cannot drift apart; the schemas differ only in column types (see migrations/).
//!
//! Every change takes its audit records (`audit`) and writes them to the outbox in its own
//! transaction: they commit with the change, or not at all.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plt_contracts::identity::UserStatus;
use plt_outbox::Message;
use uuid::Uuid;

/// The audit records of a token's effect, made once the token's user is known (inside the
/// transaction that spends it).
pub type AuditFor<'a> = &'a (dyn Fn(Uuid) -> Vec<Message> + Send + Sync);

/// A stored user, with its password hash. Never leaves the service.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: Uuid,
    pub email: String,
    pub email_normalized: String,
    pub display_name: String,
    pub status: UserStatus,
    pub email_verified: bool,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserRecord")
            .field("id", &self.id)
            .field("status", &self.status)
            .field("email_verified", &self.email_verified)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenPurpose {
    VerifyEmail,
    ResetPassword,
}

impl TokenPurpose {
    fn as_str(self) -> &'static str {
        match self {
            TokenPurpose::VerifyEmail => "verify_email",
            TokenPurpose::ResetPassword => "reset_password",
        }
    }
}

/// A token to store: only its hash is kept.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub hash: Vec<u8>,
    pub user_id: Uuid,
    pub purpose: TokenPurpose,
    pub email_normalized: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What a consumed token does, applied in the same transaction that spends it.
#[derive(Clone)]
pub enum TokenAction {
    /// Mark the user's address verified, if it is still the address the token was sent to.
    VerifyEmail,
    /// Replace the password hash and spend every other reset token of the user.
    SetPassword(String),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unique constraint violated")]
    Duplicate,
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Duplicate,
        _ => StoreError::Db(e),
    }
}

/// Why a token was not applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOutcome {
    /// Applied to this user.
    Applied(Uuid),
    /// Unknown, of another purpose, expired, already used, or its address changed since.
    Rejected,
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// Inserts the user and, in the same transaction, its first token.
    async fn insert_user(
        &self,
        user: &UserRecord,
        token: Option<&NewToken>,
        audit: &[Message],
    ) -> Result<(), StoreError>;
    async fn get_user(&self, id: Uuid) -> Result<Option<UserRecord>, StoreError>;
    async fn get_user_by_email(
        &self,
        email_normalized: &str,
    ) -> Result<Option<UserRecord>, StoreError>;
    /// Users with an id greater than `after`, by id (UUIDv7: creation order).
    async fn list_users(
        &self,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<UserRecord>, StoreError>;
    /// Writes the mutable fields; with `token`, also stores it, in the same transaction.
    /// `false` when the user does not exist.
    async fn update_user(
        &self,
        user: &UserRecord,
        token: Option<&NewToken>,
        audit: &[Message],
    ) -> Result<bool, StoreError>;
    async fn delete_user(&self, id: Uuid, audit: &[Message]) -> Result<bool, StoreError>;
    async fn insert_token(&self, token: &NewToken, audit: &[Message]) -> Result<(), StoreError>;
    /// Spends the token with this hash if it has `purpose`, is unused and unexpired at `now`,
    /// and applies `action`, all in one transaction.
    async fn apply_token(
        &self,
        hash: &[u8],
        purpose: TokenPurpose,
        now: DateTime<Utc>,
        action: TokenAction,
        audit: AuditFor<'_>,
    ) -> Result<TokenOutcome, StoreError>;
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    email_normalized: String,
    display_name: String,
    status: String,
    email_verified: bool,
    password_hash: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<UserRow> for UserRecord {
    type Error = StoreError;

    fn try_from(r: UserRow) -> Result<Self, StoreError> {
        let status = UserStatus::parse(&r.status).ok_or_else(|| {
            StoreError::Db(sqlx::Error::Decode(
                format!("unknown status {:?}", r.status).into(),
            ))
        })?;
        Ok(UserRecord {
            id: r.id,
            email: r.email,
            email_normalized: r.email_normalized,
            display_name: r.display_name,
            status,
            email_verified: r.email_verified,
            password_hash: r.password_hash,
            created_at: r.created_at,
            updated_at: r.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    user_id: Uuid,
    purpose: String,
    email: String,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
}

const USER_COLUMNS: &str = "id, email, email_normalized, display_name, status, email_verified, password_hash, created_at, updated_at";

macro_rules! sql_store {
    ($name:ident, $pool:ty, $doc:literal) => {
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
        impl UserStore for $name {
            async fn insert_user(&self, u: &UserRecord, token: Option<&NewToken>, audit: &[Message]) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                sqlx::query(
                    "INSERT INTO users (id, email, email_normalized, display_name, status, email_verified, password_hash, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(u.id)
                .bind(&u.email)
                .bind(&u.email_normalized)
                .bind(&u.display_name)
                .bind(u.status.as_str())
                .bind(u.email_verified)
                .bind(&u.password_hash)
                .bind(u.created_at)
                .bind(u.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                if let Some(t) = token {
                    insert_token_sql(t).execute(&mut *tx).await.map_err(map_err)?;
                }
                plt_outbox::enqueue(&mut *tx, audit).await.map_err(map_err)?;
                tx.commit().await.map_err(map_err)
            }

            async fn get_user(&self, id: Uuid) -> Result<Option<UserRecord>, StoreError> {
                let row: Option<UserRow> =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1")))
                        .bind(id)
                        .fetch_optional(&self.pool)
                        .await
                        .map_err(map_err)?;
                row.map(UserRecord::try_from).transpose()
            }

            async fn get_user_by_email(&self, email_normalized: &str) -> Result<Option<UserRecord>, StoreError> {
                let row: Option<UserRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE email_normalized = $1"
                )))
                .bind(email_normalized)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_err)?;
                row.map(UserRecord::try_from).transpose()
            }

            async fn list_users(&self, after: Option<Uuid>, limit: u32) -> Result<Vec<UserRecord>, StoreError> {
                let rows: Vec<UserRow> = match after {
                    Some(after) => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT {USER_COLUMNS} FROM users WHERE id > $1 ORDER BY id LIMIT $2"
                    )))
                    .bind(after)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?,
                    None => sqlx::query_as(sqlx::AssertSqlSafe(format!(
                        "SELECT {USER_COLUMNS} FROM users ORDER BY id LIMIT $1"
                    )))
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_err)?,
                };
                rows.into_iter().map(UserRecord::try_from).collect()
            }

            async fn update_user(&self, u: &UserRecord, token: Option<&NewToken>, audit: &[Message]) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                let done = sqlx::query(
                    "UPDATE users SET email = $2, email_normalized = $3, display_name = $4, status = $5, \
                     email_verified = $6, updated_at = $7 WHERE id = $1",
                )
                .bind(u.id)
                .bind(&u.email)
                .bind(&u.email_normalized)
                .bind(&u.display_name)
                .bind(u.status.as_str())
                .bind(u.email_verified)
                .bind(u.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                if let Some(t) = token {
                    insert_token_sql(t).execute(&mut *tx).await.map_err(map_err)?;
                }
                plt_outbox::enqueue(&mut *tx, audit).await.map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(true)
            }

            async fn delete_user(&self, id: Uuid, audit: &[Message]) -> Result<bool, StoreError> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                let done = sqlx::query("DELETE FROM users WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                if done.rows_affected() == 0 {
                    return Ok(false);
                }
                plt_outbox::enqueue(&mut *tx, audit).await.map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(true)
            }

            async fn insert_token(&self, t: &NewToken, audit: &[Message]) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                insert_token_sql(t).execute(&mut *tx).await.map_err(map_err)?;
                plt_outbox::enqueue(&mut *tx, audit).await.map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(())
            }

            async fn apply_token(
                &self,
                hash: &[u8],
                purpose: TokenPurpose,
                now: DateTime<Utc>,
                action: TokenAction,
                audit: AuditFor<'_>,
            ) -> Result<TokenOutcome, StoreError> {
                let mut tx = self.pool.begin().await.map_err(map_err)?;
                // Spend first: the conditional UPDATE makes concurrent uses race on one row,
                // and only one of them sees a row affected.
                let spent = sqlx::query("UPDATE user_tokens SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL")
                    .bind(hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?;
                if spent.rows_affected() != 1 {
                    return Ok(TokenOutcome::Rejected);
                }
                let row: TokenRow = sqlx::query_as(
                    "SELECT user_id, purpose, email, expires_at, used_at FROM user_tokens WHERE token_hash = $1",
                )
                .bind(hash)
                .fetch_one(&mut *tx)
                .await
                .map_err(map_err)?;
                debug_assert!(row.used_at.is_some());
                if row.purpose != purpose.as_str() || row.expires_at <= now {
                    // Roll back: a token of the wrong kind is not spent by the attempt.
                    return Ok(TokenOutcome::Rejected);
                }
                let applied = match action {
                    TokenAction::VerifyEmail => sqlx::query(
                        "UPDATE users SET email_verified = $3, updated_at = $4 WHERE id = $1 AND email_normalized = $2",
                    )
                    .bind(row.user_id)
                    .bind(&row.email)
                    .bind(true)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(map_err)?,
                    TokenAction::SetPassword(password_hash) => {
                        sqlx::query(
                            "UPDATE user_tokens SET used_at = $3 WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
                        )
                        .bind(row.user_id)
                        .bind(purpose.as_str())
                        .bind(now)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_err)?;
                        sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE id = $1")
                            .bind(row.user_id)
                            .bind(password_hash)
                            .bind(now)
                            .execute(&mut *tx)
                            .await
                            .map_err(map_err)?
                    }
                };
                if applied.rows_affected() != 1 {
                    return Ok(TokenOutcome::Rejected);
                }
                plt_outbox::enqueue(&mut *tx, &audit(row.user_id)).await.map_err(map_err)?;
                tx.commit().await.map_err(map_err)?;
                Ok(TokenOutcome::Applied(row.user_id))
            }
        }
    };
}

fn insert_token_sql<'q, DB>(
    t: &'q NewToken,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    Vec<u8>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Uuid: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    DateTime<Utc>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    sqlx::query(
        "INSERT INTO user_tokens (token_hash, user_id, purpose, email, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(t.hash.clone())
    .bind(t.user_id)
    .bind(t.purpose.as_str())
    .bind(t.email_normalized.clone())
    .bind(t.created_at)
    .bind(t.expires_at)
}

sql_store!(
    PgUserStore,
    plt_db::PgPool,
    "The identity store on PostgreSQL (schema `identity`)."
);
sql_store!(
    SqliteUserStore,
    plt_db::SqlitePool,
    "The identity store on SQLite (`identity.db`)."
);

/// The store for a connected database.
pub fn for_db(db: &plt_db::Db) -> std::sync::Arc<dyn UserStore> {
    match db {
        plt_db::Db::Postgres(p) => std::sync::Arc::new(PgUserStore::new(p.clone())),
        plt_db::Db::Sqlite(p) => std::sync::Arc::new(SqliteUserStore::new(p.clone())),
    }
}
