//! __Name__ storage: [`__Item__Store`] and its PostgreSQL and SQLite implementations, one SQL text
//! for both (numbered `$n` parameters work in both dialects) through one macro.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plt_contracts::Error;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct __Item__Record {
    pub id: Uuid,
    pub owner_id: Uuid,
    pub title: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[async_trait]
pub trait __Item__Store: Send + Sync + 'static {
    async fn insert(&self, __item__: &__Item__Record) -> Result<(), Error>;
    async fn get(&self, id: Uuid) -> Result<Option<__Item__Record>, Error>;
    /// `owner`'s __name__ with ids after `after`, in id (creation) order, at most `limit`.
    async fn list(
        &self,
        owner: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<__Item__Record>, Error>;
    /// Writes title, body and updated_at of the __item__ with `__item__.id` owned by `__item__.owner_id`;
    /// false when there is none.
    async fn update(&self, __item__: &__Item__Record) -> Result<bool, Error>;
    /// False when `owner` has no __item__ `id`.
    async fn delete(&self, id: Uuid, owner: Uuid) -> Result<bool, Error>;
}

/// A database failure as the contract's error: 503 while the database is unreachable,
/// otherwise an internal error (logged, details not sent).
fn db_error(e: sqlx::Error) -> Error {
    if plt_db::is_unavailable(&e) {
        Error::dependency_unavailable("the database", "__name__ store", &e)
    } else {
        Error::internal("__name__ store", &e)
    }
}

const COLUMNS: &str = "id, owner_id, title, body, created_at, updated_at";

macro_rules! sql_store {
    ($name:ident, $pool:ty) => {
        pub struct $name(pub $pool);

        #[async_trait]
        impl __Item__Store for $name {
            async fn insert(&self, n: &__Item__Record) -> Result<(), Error> {
                sqlx::query(
                    "INSERT INTO __name__ (id, owner_id, title, body, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(n.id)
                .bind(n.owner_id)
                .bind(&n.title)
                .bind(&n.body)
                .bind(n.created_at)
                .bind(n.updated_at)
                .execute(&self.0)
                .await
                .map(drop)
                .map_err(db_error)
            }

            async fn get(&self, id: Uuid) -> Result<Option<__Item__Record>, Error> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM __name__ WHERE id = $1")))
                    .bind(id)
                    .fetch_optional(&self.0)
                    .await
                    .map_err(db_error)
            }

            async fn list(&self, owner: Uuid, after: Option<Uuid>, limit: u32) -> Result<Vec<__Item__Record>, Error> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {COLUMNS} FROM __name__ WHERE owner_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
                )))
                .bind(owner)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.0)
                .await
                .map_err(db_error)
            }

            async fn update(&self, n: &__Item__Record) -> Result<bool, Error> {
                sqlx::query("UPDATE __name__ SET title = $1, body = $2, updated_at = $3 WHERE id = $4 AND owner_id = $5")
                    .bind(&n.title)
                    .bind(&n.body)
                    .bind(n.updated_at)
                    .bind(n.id)
                    .bind(n.owner_id)
                    .execute(&self.0)
                    .await
                    .map(|r| r.rows_affected() == 1)
                    .map_err(db_error)
            }

            async fn delete(&self, id: Uuid, owner: Uuid) -> Result<bool, Error> {
                sqlx::query("DELETE FROM __name__ WHERE id = $1 AND owner_id = $2")
                    .bind(id)
                    .bind(owner)
                    .execute(&self.0)
                    .await
                    .map(|r| r.rows_affected() == 1)
                    .map_err(db_error)
            }
        }
    };
}

sql_store!(Pg__Item__Store, plt_db::PgPool);
sql_store!(Sqlite__Item__Store, plt_db::SqlitePool);

/// The store on the configured database.
pub fn for_db(db: &plt_db::Db) -> Arc<dyn __Item__Store> {
    match db {
        plt_db::Db::Postgres(p) => Arc::new(Pg__Item__Store(p.clone())),
        plt_db::Db::Sqlite(p) => Arc::new(Sqlite__Item__Store(p.clone())),
    }
}
