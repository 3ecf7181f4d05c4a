//! Blog storage: [`BlogStore`] and its PostgreSQL and SQLite implementations, one SQL text
//! for both (numbered `$n` parameters work in both dialects) through one macro. Every change
//! commits with its outbox messages (audit records, events) in one transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plt_contracts::Error;
use plt_outbox::Message;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize, serde::Deserialize)]
pub struct PostRecord {
    pub id: Uuid,
    pub author_id: Uuid,
    pub status: String,
    pub slug: String,
    pub title: String,
    pub body: String,
    /// `,a,b,` (empty: `,`).
    pub tags: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub published_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct CommentRecord {
    pub id: Uuid,
    pub post_id: Uuid,
    pub author_id: Uuid,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AttachmentRecord {
    pub post_id: Uuid,
    pub name: String,
    pub content_type: String,
    pub size: i64,
    pub blob_key: String,
    pub created_at: DateTime<Utc>,
}

/// Which published posts to list.
#[derive(Debug, Clone, Default)]
pub struct PostFilter {
    pub tag: Option<String>,
    pub author: Option<Uuid>,
}

#[async_trait]
pub trait BlogStore: Send + Sync + 'static {
    /// `false` when the slug is taken.
    async fn insert_post(&self, post: &PostRecord, outbox: &[Message]) -> Result<bool, Error>;
    async fn get_post(&self, id: Uuid) -> Result<Option<PostRecord>, Error>;
    async fn post_by_slug(&self, slug: &str) -> Result<Option<PostRecord>, Error>;
    /// Published posts, newest first (ids below `before`), at most `limit`.
    async fn list_published(
        &self,
        filter: &PostFilter,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<PostRecord>, Error>;
    /// An author's posts in every state, newest first.
    async fn list_by_author(
        &self,
        author: Uuid,
        before: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<PostRecord>, Error>;
    /// Writes the post if its `updated_at` is still `seen` (no lost update). `Ok(None)`: it
    /// changed or vanished meanwhile; `Ok(Some(false))`: the slug is taken.
    async fn update_post(
        &self,
        post: &PostRecord,
        seen: DateTime<Utc>,
        outbox: &[Message],
    ) -> Result<Option<bool>, Error>;
    /// Deletes the post, its comments and attachment rows; `false` when there was none.
    async fn delete_post(&self, id: Uuid, outbox: &[Message]) -> Result<bool, Error>;
    async fn insert_comment(&self, c: &CommentRecord, outbox: &[Message]) -> Result<(), Error>;
    async fn list_comments(
        &self,
        post: Uuid,
        after: Option<Uuid>,
        limit: u32,
    ) -> Result<Vec<CommentRecord>, Error>;
    /// Records (or replaces) an attachment.
    async fn put_attachment(&self, a: &AttachmentRecord, outbox: &[Message]) -> Result<(), Error>;
    async fn attachments(&self, post: Uuid) -> Result<Vec<AttachmentRecord>, Error>;
    async fn attachment(&self, post: Uuid, name: &str) -> Result<Option<AttachmentRecord>, Error>;
}

/// A database failure as the contract's error: 503 while the database is unreachable,
/// otherwise an internal error (logged, details not sent).
fn db_error(e: sqlx::Error) -> Error {
    if plt_db::is_unavailable(&e) {
        Error::dependency_unavailable("the database", "blog store", &e)
    } else {
        Error::internal("blog store", &e)
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.is_unique_violation())
}

const POST_COLUMNS: &str =
    "id, author_id, status, slug, title, body, tags, created_at, updated_at, published_at";

macro_rules! sql_store {
    ($name:ident, $pool:ty) => {
        pub struct $name(pub $pool);

        #[async_trait]
        impl BlogStore for $name {
            async fn insert_post(&self, p: &PostRecord, outbox: &[Message]) -> Result<bool, Error> {
                let mut tx = self.0.begin().await.map_err(db_error)?;
                let done = sqlx::query(
                    "INSERT INTO posts (id, author_id, status, slug, title, body, tags, created_at, updated_at, published_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(p.id)
                .bind(p.author_id)
                .bind(&p.status)
                .bind(&p.slug)
                .bind(&p.title)
                .bind(&p.body)
                .bind(&p.tags)
                .bind(p.created_at)
                .bind(p.updated_at)
                .bind(p.published_at)
                .execute(&mut *tx)
                .await;
                match done {
                    Err(e) if is_unique_violation(&e) => return Ok(false),
                    Err(e) => return Err(db_error(e)),
                    Ok(_) => {}
                }
                plt_outbox::enqueue(&mut *tx, outbox).await.map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
                Ok(true)
            }

            async fn get_post(&self, id: Uuid) -> Result<Option<PostRecord>, Error> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {POST_COLUMNS} FROM posts WHERE id = $1")))
                    .bind(id)
                    .fetch_optional(&self.0)
                    .await
                    .map_err(db_error)
            }

            async fn post_by_slug(&self, slug: &str) -> Result<Option<PostRecord>, Error> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {POST_COLUMNS} FROM posts WHERE slug = $1")))
                    .bind(slug)
                    .fetch_optional(&self.0)
                    .await
                    .map_err(db_error)
            }

            async fn list_published(&self, f: &PostFilter, before: Option<Uuid>, limit: u32) -> Result<Vec<PostRecord>, Error> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {POST_COLUMNS} FROM posts WHERE status = 'published' \
                     AND ($1 IS NULL OR id < $1) AND ($2 IS NULL OR author_id = $2) \
                     AND ($3 IS NULL OR tags LIKE '%,' || $3 || ',%') ORDER BY id DESC LIMIT $4"
                )))
                .bind(before)
                .bind(f.author)
                .bind(f.tag.as_deref())
                .bind(i64::from(limit))
                .fetch_all(&self.0)
                .await
                .map_err(db_error)
            }

            async fn list_by_author(&self, author: Uuid, before: Option<Uuid>, limit: u32) -> Result<Vec<PostRecord>, Error> {
                sqlx::query_as(sqlx::AssertSqlSafe(format!(
                    "SELECT {POST_COLUMNS} FROM posts WHERE author_id = $1 AND ($2 IS NULL OR id < $2) \
                     ORDER BY id DESC LIMIT $3"
                )))
                .bind(author)
                .bind(before)
                .bind(i64::from(limit))
                .fetch_all(&self.0)
                .await
                .map_err(db_error)
            }

            async fn update_post(&self, p: &PostRecord, seen: DateTime<Utc>, outbox: &[Message]) -> Result<Option<bool>, Error> {
                let mut tx = self.0.begin().await.map_err(db_error)?;
                let done = sqlx::query(
                    "UPDATE posts SET status = $1, slug = $2, title = $3, body = $4, tags = $5, \
                     updated_at = $6, published_at = $7 WHERE id = $8 AND updated_at = $9",
                )
                .bind(&p.status)
                .bind(&p.slug)
                .bind(&p.title)
                .bind(&p.body)
                .bind(&p.tags)
                .bind(p.updated_at)
                .bind(p.published_at)
                .bind(p.id)
                .bind(seen)
                .execute(&mut *tx)
                .await;
                match done {
                    Err(e) if is_unique_violation(&e) => return Ok(Some(false)),
                    Err(e) => return Err(db_error(e)),
                    Ok(r) if r.rows_affected() != 1 => return Ok(None),
                    Ok(_) => {}
                }
                plt_outbox::enqueue(&mut *tx, outbox).await.map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
                Ok(Some(true))
            }

            async fn delete_post(&self, id: Uuid, outbox: &[Message]) -> Result<bool, Error> {
                let mut tx = self.0.begin().await.map_err(db_error)?;
                let done = sqlx::query("DELETE FROM posts WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                for table in ["comments", "attachments"] {
                    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE post_id = $1")))
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(db_error)?;
                }
                plt_outbox::enqueue(&mut *tx, outbox).await.map_err(db_error)?;
                tx.commit().await.map_err(db_error)?;
                Ok(true)
            }

            async fn insert_comment(&self, c: &CommentRecord, outbox: &[Message]) -> Result<(), Error> {
                let mut tx = self.0.begin().await.map_err(db_error)?;
                sqlx::query("INSERT INTO comments (id, post_id, author_id, body, created_at) VALUES ($1, $2, $3, $4, $5)")
                    .bind(c.id)
                    .bind(c.post_id)
                    .bind(c.author_id)
                    .bind(&c.body)
                    .bind(c.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_error)?;
                plt_outbox::enqueue(&mut *tx, outbox).await.map_err(db_error)?;
                tx.commit().await.map_err(db_error)
            }

            async fn list_comments(&self, post: Uuid, after: Option<Uuid>, limit: u32) -> Result<Vec<CommentRecord>, Error> {
                sqlx::query_as(
                    "SELECT id, post_id, author_id, body, created_at FROM comments \
                     WHERE post_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
                )
                .bind(post)
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.0)
                .await
                .map_err(db_error)
            }

            async fn put_attachment(&self, a: &AttachmentRecord, outbox: &[Message]) -> Result<(), Error> {
                let mut tx = self.0.begin().await.map_err(db_error)?;
                sqlx::query(
                    "INSERT INTO attachments (post_id, name, content_type, size, blob_key, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (post_id, name) DO UPDATE SET \
                     content_type = excluded.content_type, size = excluded.size, \
                     blob_key = excluded.blob_key, created_at = excluded.created_at",
                )
                .bind(a.post_id)
                .bind(&a.name)
                .bind(&a.content_type)
                .bind(a.size)
                .bind(&a.blob_key)
                .bind(a.created_at)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                plt_outbox::enqueue(&mut *tx, outbox).await.map_err(db_error)?;
                tx.commit().await.map_err(db_error)
            }

            async fn attachments(&self, post: Uuid) -> Result<Vec<AttachmentRecord>, Error> {
                sqlx::query_as(
                    "SELECT post_id, name, content_type, size, blob_key, created_at FROM attachments \
                     WHERE post_id = $1 ORDER BY name",
                )
                .bind(post)
                .fetch_all(&self.0)
                .await
                .map_err(db_error)
            }

            async fn attachment(&self, post: Uuid, name: &str) -> Result<Option<AttachmentRecord>, Error> {
                sqlx::query_as(
                    "SELECT post_id, name, content_type, size, blob_key, created_at FROM attachments \
                     WHERE post_id = $1 AND name = $2",
                )
                .bind(post)
                .bind(name)
                .fetch_optional(&self.0)
                .await
                .map_err(db_error)
            }
        }
    };
}

sql_store!(PgBlogStore, plt_db::PgPool);
sql_store!(SqliteBlogStore, plt_db::SqlitePool);

/// The store on the configured database.
pub fn for_db(db: &plt_db::Db) -> Arc<dyn BlogStore> {
    match db {
        plt_db::Db::Postgres(p) => Arc::new(PgBlogStore(p.clone())),
        plt_db::Db::Sqlite(p) => Arc::new(SqliteBlogStore(p.clone())),
    }
}
