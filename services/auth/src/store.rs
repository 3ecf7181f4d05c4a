//! Auth storage: signing keys, refresh-token families, the access-token denylist. One SQL
//! text for PostgreSQL and SQLite through a macro, as in identity. A change's audit records
//! (`audit`) are written to the outbox in the change's own transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plt_outbox::Message;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    Next,
    Active,
    Retiring,
}

impl KeyState {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyState::Next => "next",
            KeyState::Active => "active",
            KeyState::Retiring => "retiring",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "next" => Some(KeyState::Next),
            "active" => Some(KeyState::Active),
            "retiring" => Some(KeyState::Retiring),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct KeyRow {
    pub kid: String,
    pub state: KeyState,
    pub public_x: String,
    pub encrypted_seed: Vec<u8>,
    pub created_at: DateTime<Utc>,
    pub activated_at: Option<DateTime<Utc>>,
    pub retired_at: Option<DateTime<Utc>>,
    pub remove_after: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("kid", &self.kid)
            .field("state", &self.state)
            .field("activated_at", &self.activated_at)
            .field("remove_after", &self.remove_after)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    pub id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRow {
    pub token_hash: Vec<u8>,
    pub family_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub spent_at: Option<DateTime<Utc>>,
    pub successor_hash: Option<Vec<u8>>,
    pub successor_sealed: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StoreError(#[from] pub sqlx::Error);

impl StoreError {
    /// The contract error for a failed store call: 503 while the database is unreachable
    /// (the database gate reports the outage once), an internal error otherwise.
    pub fn into_error(self, context: &str) -> plt_contracts::Error {
        if plt_db::is_unavailable(&self.0) {
            return plt_contracts::Error::dependency_unavailable("the database", context, &self.0);
        }
        plt_contracts::Error::internal(context, &self)
    }
}

type R<T> = Result<T, StoreError>;

#[async_trait]
pub trait AuthStore: Send + Sync {
    async fn keys(&self) -> R<Vec<KeyRow>>;
    async fn insert_key(&self, key: &KeyRow) -> R<()>;
    /// Promotes `next` to active and `active` to retiring (removable after `remove_after`),
    /// and inserts `new_next` — all or nothing. `false` when another instance rotated first.
    async fn rotate_keys(
        &self,
        active: &str,
        next: &str,
        new_next: &KeyRow,
        now: DateTime<Utc>,
        remove_after: DateTime<Utc>,
        audit: &[Message],
    ) -> R<bool>;
    async fn delete_key(&self, kid: &str) -> R<()>;

    /// Inserts a sign-in's family and its first refresh token.
    async fn create_family(&self, family: &Family, first: &RefreshRow, audit: &[Message]) -> R<()>;
    async fn refresh_token(&self, hash: &[u8]) -> R<Option<(RefreshRow, Family)>>;
    /// Spends `old` (if still unspent) for `new`, keeping `sealed` (the new token, encrypted)
    /// for the reuse grace window, and marks the family used. `false` when already spent.
    async fn spend_refresh_token(
        &self,
        old: &[u8],
        new: &RefreshRow,
        sealed: &[u8],
        now: DateTime<Utc>,
    ) -> R<bool>;
    /// Revokes the family and publishes the session as revoked until `until` (the last
    /// access token it could have signed expires); `false` when it was already revoked.
    async fn revoke_family(
        &self,
        family: Uuid,
        now: DateTime<Utc>,
        reason: &str,
        until: DateTime<Utc>,
        audit: &[Message],
    ) -> R<bool>;
    /// Revokes every unrevoked family of `user` (publishing each session until `until`);
    /// returns their ids.
    async fn revoke_user_families(
        &self,
        user: Uuid,
        now: DateTime<Utc>,
        reason: &str,
        until: DateTime<Utc>,
        events: &(dyn Fn(Uuid) -> Vec<Message> + Send + Sync),
    ) -> R<Vec<Uuid>>;

    /// Publishes one access token (`jti`) as revoked until it expires.
    async fn deny_access_token(
        &self,
        jti: &str,
        expires_at: DateTime<Utc>,
        audit: &[Message],
    ) -> R<()>;
    async fn is_access_token_denied(&self, jti: &str) -> R<bool>;
    /// Revocations recorded at or after `since` and not yet expired at `now`.
    async fn revocations_since(
        &self,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> R<Vec<plt_authn::revocation::Revoked>>;
    /// Deletes denylist entries and families past their expiry.
    async fn purge_expired(&self, now: DateTime<Utc>) -> R<()>;
}

#[derive(sqlx::FromRow)]
struct KeyDbRow {
    kid: String,
    state: String,
    public_x: String,
    encrypted_seed: Vec<u8>,
    created_at: DateTime<Utc>,
    activated_at: Option<DateTime<Utc>>,
    retired_at: Option<DateTime<Utc>>,
    remove_after: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct RefreshDbRow {
    token_hash: Vec<u8>,
    family_id: Uuid,
    created_at: DateTime<Utc>,
    spent_at: Option<DateTime<Utc>>,
    successor_hash: Option<Vec<u8>>,
    successor_sealed: Option<Vec<u8>>,
    user_id: Uuid,
    f_created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    last_used_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

fn key_row(r: KeyDbRow) -> R<KeyRow> {
    Ok(KeyRow {
        state: KeyState::parse(&r.state).ok_or_else(|| {
            StoreError(sqlx::Error::Decode(
                format!("key state {:?}", r.state).into(),
            ))
        })?,
        kid: r.kid,
        public_x: r.public_x,
        encrypted_seed: r.encrypted_seed,
        created_at: r.created_at,
        activated_at: r.activated_at,
        retired_at: r.retired_at,
        remove_after: r.remove_after,
    })
}

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
        impl AuthStore for $name {
            async fn keys(&self) -> R<Vec<KeyRow>> {
                let rows: Vec<KeyDbRow> = sqlx::query_as(
                    "SELECT kid, state, public_x, encrypted_seed, created_at, activated_at, retired_at, remove_after \
                     FROM signing_keys ORDER BY created_at",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(key_row).collect()
            }

            async fn insert_key(&self, k: &KeyRow) -> R<()> {
                sqlx::query(
                    "INSERT INTO signing_keys (kid, state, public_x, encrypted_seed, created_at, activated_at, retired_at, remove_after) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&k.kid)
                .bind(k.state.as_str())
                .bind(&k.public_x)
                .bind(&k.encrypted_seed)
                .bind(k.created_at)
                .bind(k.activated_at)
                .bind(k.retired_at)
                .bind(k.remove_after)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn rotate_keys(
                &self,
                active: &str,
                next: &str,
                new_next: &KeyRow,
                now: DateTime<Utc>,
                remove_after: DateTime<Utc>,
                audit: &[Message],
            ) -> R<bool> {
                let mut tx = self.pool.begin().await?;
                let retired = sqlx::query(
                    "UPDATE signing_keys SET state = 'retiring', retired_at = $2, remove_after = $3 \
                     WHERE kid = $1 AND state = 'active'",
                )
                .bind(active)
                .bind(now)
                .bind(remove_after)
                .execute(&mut *tx)
                .await?;
                if retired.rows_affected() != 1 {
                    return Ok(false);
                }
                let promoted = sqlx::query(
                    "UPDATE signing_keys SET state = 'active', activated_at = $2 WHERE kid = $1 AND state = 'next'",
                )
                .bind(next)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if promoted.rows_affected() != 1 {
                    return Ok(false);
                }
                sqlx::query(
                    "INSERT INTO signing_keys (kid, state, public_x, encrypted_seed, created_at) VALUES ($1, 'next', $2, $3, $4)",
                )
                .bind(&new_next.kid)
                .bind(&new_next.public_x)
                .bind(&new_next.encrypted_seed)
                .bind(new_next.created_at)
                .execute(&mut *tx)
                .await?;
                plt_outbox::enqueue(&mut *tx, audit).await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn delete_key(&self, kid: &str) -> R<()> {
                sqlx::query("DELETE FROM signing_keys WHERE kid = $1 AND state = 'retiring'")
                    .bind(kid)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn create_family(&self, f: &Family, first: &RefreshRow, audit: &[Message]) -> R<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO token_families (id, user_id, created_at, expires_at, last_used_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(f.id)
                .bind(f.user_id)
                .bind(f.created_at)
                .bind(f.expires_at)
                .bind(f.last_used_at)
                .execute(&mut *tx)
                .await?;
                sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, created_at) VALUES ($1, $2, $3)")
                    .bind(&first.token_hash)
                    .bind(first.family_id)
                    .bind(first.created_at)
                    .execute(&mut *tx)
                    .await?;
                plt_outbox::enqueue(&mut *tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn refresh_token(&self, hash: &[u8]) -> R<Option<(RefreshRow, Family)>> {
                let row: Option<RefreshDbRow> = sqlx::query_as(
                    "SELECT t.token_hash, t.family_id, t.created_at, t.spent_at, t.successor_hash, t.successor_sealed, \
                     f.user_id, f.created_at AS f_created_at, f.expires_at, f.last_used_at, f.revoked_at \
                     FROM refresh_tokens t JOIN token_families f ON f.id = t.family_id WHERE t.token_hash = $1",
                )
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|r| {
                    (
                        RefreshRow {
                            token_hash: r.token_hash,
                            family_id: r.family_id,
                            created_at: r.created_at,
                            spent_at: r.spent_at,
                            successor_hash: r.successor_hash,
                            successor_sealed: r.successor_sealed,
                        },
                        Family {
                            id: r.family_id,
                            user_id: r.user_id,
                            created_at: r.f_created_at,
                            expires_at: r.expires_at,
                            last_used_at: r.last_used_at,
                            revoked_at: r.revoked_at,
                        },
                    )
                }))
            }

            async fn spend_refresh_token(
                &self,
                old: &[u8],
                new: &RefreshRow,
                sealed: &[u8],
                now: DateTime<Utc>,
            ) -> R<bool> {
                let mut tx = self.pool.begin().await?;
                let spent = sqlx::query(
                    "UPDATE refresh_tokens SET spent_at = $2, successor_hash = $3, successor_sealed = $4 \
                     WHERE token_hash = $1 AND spent_at IS NULL",
                )
                .bind(old)
                .bind(now)
                .bind(&new.token_hash)
                .bind(sealed)
                .execute(&mut *tx)
                .await?;
                if spent.rows_affected() != 1 {
                    return Ok(false);
                }
                sqlx::query("INSERT INTO refresh_tokens (token_hash, family_id, created_at) VALUES ($1, $2, $3)")
                    .bind(&new.token_hash)
                    .bind(new.family_id)
                    .bind(new.created_at)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE token_families SET last_used_at = $2 WHERE id = $1")
                    .bind(new.family_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(true)
            }

            async fn revoke_family(
                &self,
                family: Uuid,
                now: DateTime<Utc>,
                reason: &str,
                until: DateTime<Utc>,
                audit: &[Message],
            ) -> R<bool> {
                let mut tx = self.pool.begin().await?;
                let done = sqlx::query(
                    "UPDATE token_families SET revoked_at = $2, revoke_reason = $3 WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(family)
                .bind(now)
                .bind(reason)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO revocations (kind, id, revoked_at, expires_at) VALUES ('session', $1, $2, $3) \
                     ON CONFLICT (kind, id) DO NOTHING",
                )
                .bind(family.to_string())
                .bind(now)
                .bind(until)
                .execute(&mut *tx)
                .await?;
                let first = done.rows_affected() == 1;
                if first {
                    plt_outbox::enqueue(&mut *tx, audit).await?;
                }
                tx.commit().await?;
                Ok(first)
            }

            async fn revoke_user_families(
                &self,
                user: Uuid,
                now: DateTime<Utc>,
                reason: &str,
                until: DateTime<Utc>,
                events: &(dyn Fn(Uuid) -> Vec<Message> + Send + Sync),
            ) -> R<Vec<Uuid>> {
                let mut tx = self.pool.begin().await?;
                let ids: Vec<Uuid> = sqlx::query_scalar(
                    "UPDATE token_families SET revoked_at = $2, revoke_reason = $3 \
                     WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 RETURNING id",
                )
                .bind(user)
                .bind(now)
                .bind(reason)
                .fetch_all(&mut *tx)
                .await?;
                for id in &ids {
                    sqlx::query(
                        "INSERT INTO revocations (kind, id, revoked_at, expires_at) VALUES ('session', $1, $2, $3) \
                         ON CONFLICT (kind, id) DO NOTHING",
                    )
                    .bind(id.to_string())
                    .bind(now)
                    .bind(until)
                    .execute(&mut *tx)
                    .await?;
                    plt_outbox::enqueue(&mut *tx, &events(*id)).await?;
                }
                tx.commit().await?;
                Ok(ids)
            }

            async fn deny_access_token(
                &self,
                jti: &str,
                expires_at: DateTime<Utc>,
                audit: &[Message],
            ) -> R<()> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO revocations (kind, id, revoked_at, expires_at) VALUES ('token', $1, $2, $3) \
                     ON CONFLICT (kind, id) DO NOTHING",
                )
                .bind(jti)
                .bind(Utc::now())
                .bind(expires_at)
                .execute(&mut *tx)
                .await?;
                plt_outbox::enqueue(&mut *tx, audit).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn is_access_token_denied(&self, jti: &str) -> R<bool> {
                let found: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM revocations WHERE kind = 'token' AND id = $1",
                )
                .bind(jti)
                .fetch_optional(&self.pool)
                .await?;
                Ok(found.is_some())
            }

            async fn revocations_since(
                &self,
                since: DateTime<Utc>,
                now: DateTime<Utc>,
            ) -> R<Vec<plt_authn::revocation::Revoked>> {
                let rows: Vec<(String, String, DateTime<Utc>)> = sqlx::query_as(
                    "SELECT kind, id, expires_at FROM revocations WHERE revoked_at >= $1 AND expires_at > $2",
                )
                .bind(since)
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                use plt_authn::revocation::{Revoked, RevokedKind};
                Ok(rows
                    .into_iter()
                    .map(|(kind, id, expires_at)| Revoked {
                        kind: if kind == "token" {
                            RevokedKind::Token
                        } else {
                            RevokedKind::Session
                        },
                        id,
                        expires_at: expires_at.timestamp(),
                    })
                    .collect())
            }

            async fn purge_expired(&self, now: DateTime<Utc>) -> R<()> {
                sqlx::query("DELETE FROM revocations WHERE expires_at < $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                sqlx::query("DELETE FROM revoked_access_tokens WHERE expires_at < $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                sqlx::query("DELETE FROM token_families WHERE expires_at < $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    };
}

sql_store!(
    PgAuthStore,
    plt_db::PgPool,
    "The auth store on PostgreSQL (schema `auth`)."
);
sql_store!(
    SqliteAuthStore,
    plt_db::SqlitePool,
    "The auth store on SQLite (`auth.db`)."
);

pub fn for_db(db: &plt_db::Db) -> std::sync::Arc<dyn AuthStore> {
    match db {
        plt_db::Db::Postgres(p) => std::sync::Arc::new(PgAuthStore::new(p.clone())),
        plt_db::Db::Sqlite(p) => std::sync::Arc::new(SqliteAuthStore::new(p.clone())),
    }
}
