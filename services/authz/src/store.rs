//! Authz storage: declared permissions, roles, grants and the policy version. One SQL text
//! for PostgreSQL and SQLite through a macro, as in identity and auth.
//!
//! Every change runs in one transaction whose FIRST statement bumps the policy version (so
//! the version and the change commit together, and on SQLite the write lock is taken at
//! once instead of upgrading a read lock); a call that turns out to change nothing rolls
//! back, so the version moves only when the policy did. A change's audit records (`audit`)
//! are written to the outbox in the same transaction: they commit only with the change.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plt_contracts::authz::{Permission, ResourceGrant, ResourceGrantFilter};
use plt_outbox::Message;
use uuid::Uuid;

/// A stored role. `permissions` is empty for an `all_permissions` role (admin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRow {
    pub name: String,
    pub description: String,
    pub built_in: bool,
    pub all_permissions: bool,
    /// Sorted by name.
    pub permissions: Vec<String>,
}

/// A user's grants as read at `version` (the version was read BEFORE the grants, so they
/// reflect at least that version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grants {
    pub version: u64,
    /// Sorted.
    pub roles: Vec<String>,
    /// Holds a role with `all_permissions` (admin).
    pub all: bool,
    /// Sorted, distinct.
    pub permissions: Vec<String>,
}

/// The result of a grant or revoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// No such role.
    NoRole,
    /// Already so: nothing written, version unchanged.
    Unchanged,
    /// Written at this policy version.
    Changed(u64),
}

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct StoreError(#[from] pub sqlx::Error);

type R<T> = Result<T, StoreError>;

#[async_trait]
pub trait AuthzStore: Send + Sync {
    /// The current policy version (one cheap query; polled by every instance).
    async fn version(&self) -> R<u64>;
    /// Every declared permission, sorted by name.
    async fn permissions(&self) -> R<Vec<Permission>>;
    async fn permission_exists(&self, name: &str) -> R<bool>;
    /// Declares `permissions` of `service` (inserting new ones, updating changed
    /// descriptions). `Some(version)` when anything changed.
    async fn register_permissions(
        &self,
        service: &str,
        permissions: &[Permission],
        now: DateTime<Utc>,
    ) -> R<Option<u64>>;
    /// Every role, sorted by name.
    async fn roles(&self) -> R<Vec<RoleRow>>;
    async fn role(&self, name: &str) -> R<Option<RoleRow>>;
    /// Creates the role with its permissions (all declared: the caller checked, the foreign
    /// key guards). `None` when the name is taken.
    async fn create_role(
        &self,
        role: &RoleRow,
        now: DateTime<Utc>,
        audit: &[Message],
    ) -> R<Option<u64>>;
    /// Deletes a role that is not built in, and every grant of it. `None` when there is no
    /// such role (or it is built in).
    async fn delete_role(&self, name: &str, audit: &[Message]) -> R<Option<u64>>;
    /// Replaces the permissions of a role that does not hold all permissions. `None` when
    /// there is no such role (or it is admin).
    async fn set_role_permissions(
        &self,
        name: &str,
        permissions: &[String],
        now: DateTime<Utc>,
        audit: &[Message],
    ) -> R<Option<u64>>;
    async fn grant(
        &self,
        user: Uuid,
        role: &str,
        granted_by: &str,
        now: DateTime<Utc>,
        audit: &[Message],
    ) -> R<Change>;
    async fn revoke(&self, user: Uuid, role: &str, audit: &[Message]) -> R<Change>;
    /// The user's roles and effective permissions, tagged with the version read first.
    async fn grants(&self, user: Uuid) -> R<Grants>;
    /// Records a resource grant (`granted_by` set). `Some(version)` when it was new.
    async fn grant_resource(
        &self,
        grant: &ResourceGrant,
        now: DateTime<Utc>,
        audit: &[Message],
    ) -> R<Option<u64>>;
    /// Removes the user's grant on the resource (`grant.grant` empty: every one of them).
    /// `Some(version)` when anything was removed.
    async fn revoke_resource(&self, grant: &ResourceGrant, audit: &[Message]) -> R<Option<u64>>;
    /// What the user holds on the resource (relations and permissions, sorted), tagged with
    /// the version read first.
    async fn resource_grants(&self, user: Uuid, resource: &str) -> R<ResourceGrants>;
    /// Grants matching the filter (at least one field set), sorted, at most `limit`.
    async fn list_resource_grants(
        &self,
        filter: &ResourceGrantFilter,
        limit: usize,
    ) -> R<Vec<ResourceGrant>>;
}

/// What one user holds on one resource, read at `version` (read first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceGrants {
    pub version: u64,
    /// Sorted relation and permission names.
    pub grants: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct RoleDbRow {
    name: String,
    description: String,
    built_in: bool,
    all_permissions: bool,
}

#[derive(sqlx::FromRow)]
struct RolePermDbRow {
    role: String,
    permission: String,
}

fn version_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn assemble(rows: Vec<RoleDbRow>, perms: Vec<RolePermDbRow>) -> Vec<RoleRow> {
    let mut by_role: std::collections::HashMap<String, Vec<String>> =
        std::collections::HashMap::new();
    for p in perms {
        by_role.entry(p.role).or_default().push(p.permission);
    }
    let mut roles: Vec<RoleRow> = rows
        .into_iter()
        .map(|r| {
            let mut permissions = by_role.remove(&r.name).unwrap_or_default();
            permissions.sort();
            RoleRow {
                name: r.name,
                description: r.description,
                built_in: r.built_in,
                all_permissions: r.all_permissions,
                permissions,
            }
        })
        .collect();
    // Sorted here, not by ORDER BY: PostgreSQL collations and SQLite order '-' and '_'
    // differently.
    roles.sort_by(|a, b| a.name.cmp(&b.name));
    roles
}

const BUMP: &str = "UPDATE policy_version SET version = version + 1 WHERE id = 1 RETURNING version";

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
        impl AuthzStore for $name {
            async fn version(&self) -> R<u64> {
                let v: i64 = sqlx::query_scalar("SELECT version FROM policy_version WHERE id = 1")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(version_of(v))
            }

            async fn permissions(&self) -> R<Vec<Permission>> {
                let rows: Vec<(String, String)> =
                    sqlx::query_as("SELECT name, description FROM permissions")
                        .fetch_all(&self.pool)
                        .await?;
                let rels: Vec<(String, String)> = sqlx::query_as(
                    "SELECT permission, relation FROM permission_relations ORDER BY permission, relation",
                )
                .fetch_all(&self.pool)
                .await?;
                let mut by_perm: std::collections::HashMap<String, Vec<String>> =
                    std::collections::HashMap::new();
                for (p, r) in rels {
                    by_perm.entry(p).or_default().push(r);
                }
                let mut out: Vec<Permission> = rows
                    .into_iter()
                    .map(|(name, description)| Permission {
                        relations: by_perm.remove(&name).unwrap_or_default(),
                        name,
                        description,
                        ..Default::default()
                    })
                    .collect();
                out.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(out)
            }

            async fn permission_exists(&self, name: &str) -> R<bool> {
                let found: Option<String> =
                    sqlx::query_scalar("SELECT name FROM permissions WHERE name = $1")
                        .bind(name)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(found.is_some())
            }

            async fn register_permissions(
                &self,
                service: &str,
                permissions: &[Permission],
                now: DateTime<Utc>,
            ) -> R<Option<u64>> {
                let mut tx = self.pool.begin().await?;
                let v: i64 = sqlx::query_scalar(BUMP).fetch_one(&mut *tx).await?;
                let mut changed = 0;
                for p in permissions {
                    let known: bool =
                        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM permissions WHERE name = $1)")
                            .bind(&p.name)
                            .fetch_one(&mut *tx)
                            .await?;
                    let done = sqlx::query(
                        "INSERT INTO permissions (name, service, description, created_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (name) DO UPDATE SET description = excluded.description \
                         WHERE permissions.description <> excluded.description",
                    )
                    .bind(&p.name)
                    .bind(service)
                    .bind(&p.description)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    changed += done.rows_affected();
                    // The relations implying it: the last declaration wins.
                    let mut want = p.relations.clone();
                    want.sort();
                    want.dedup();
                    let have: Vec<String> = sqlx::query_scalar(
                        "SELECT relation FROM permission_relations WHERE permission = $1 ORDER BY relation",
                    )
                    .bind(&p.name)
                    .fetch_all(&mut *tx)
                    .await?;
                    if have != want {
                        sqlx::query("DELETE FROM permission_relations WHERE permission = $1")
                            .bind(&p.name)
                            .execute(&mut *tx)
                            .await?;
                        for r in &want {
                            sqlx::query(
                                "INSERT INTO permission_relations (permission, relation) VALUES ($1, $2)",
                            )
                            .bind(&p.name)
                            .bind(r)
                            .execute(&mut *tx)
                            .await?;
                        }
                        changed += 1;
                    }
                    // Granted to role `user` when first learned of, never again: an operator
                    // who took it away from the role keeps it that way.
                    if p.granted_to_users && !known {
                        let done = sqlx::query(
                            "INSERT INTO role_permissions (role, permission) \
                             SELECT $1, $2 WHERE EXISTS (SELECT 1 FROM roles WHERE name = $1) \
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(plt_contracts::authz::USER_ROLE)
                        .bind(&p.name)
                        .execute(&mut *tx)
                        .await?;
                        changed += done.rows_affected();
                    }
                }
                if changed == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                tx.commit().await?;
                Ok(Some(version_of(v)))
            }

            async fn roles(&self) -> R<Vec<RoleRow>> {
                let rows: Vec<RoleDbRow> = sqlx::query_as(
                    "SELECT name, description, built_in, all_permissions FROM roles",
                )
                .fetch_all(&self.pool)
                .await?;
                let perms: Vec<RolePermDbRow> =
                    sqlx::query_as("SELECT role, permission FROM role_permissions")
                        .fetch_all(&self.pool)
                        .await?;
                Ok(assemble(rows, perms))
            }

            async fn role(&self, name: &str) -> R<Option<RoleRow>> {
                let rows: Vec<RoleDbRow> = sqlx::query_as(
                    "SELECT name, description, built_in, all_permissions FROM roles WHERE name = $1",
                )
                .bind(name)
                .fetch_all(&self.pool)
                .await?;
                if rows.is_empty() {
                    return Ok(None);
                }
                let perms: Vec<RolePermDbRow> = sqlx::query_as(
                    "SELECT role, permission FROM role_permissions WHERE role = $1",
                )
                .bind(name)
                .fetch_all(&self.pool)
                .await?;
                Ok(assemble(rows, perms).into_iter().next())
            }

            async fn create_role(&self, role: &RoleRow, now: DateTime<Utc>, audit: &[Message]) -> R<Option<u64>> {
                let mut tx = self.pool.begin().await?;
                let v: i64 = sqlx::query_scalar(BUMP).fetch_one(&mut *tx).await?;
                let inserted = sqlx::query(
                    "INSERT INTO roles (name, description, built_in, all_permissions, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (name) DO NOTHING",
                )
                .bind(&role.name)
                .bind(&role.description)
                .bind(role.built_in)
                .bind(role.all_permissions)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                for p in &role.permissions {
                    sqlx::query("INSERT INTO role_permissions (role, permission) VALUES ($1, $2)")
                        .bind(&role.name)
                        .bind(p)
                        .execute(&mut *tx)
                        .await?;
                }
                plt_outbox::enqueue(&mut *tx, audit).await?;
                tx.commit().await?;
                Ok(Some(version_of(v)))
            }

            async fn delete_role(&self, name: &str, audit: &[Message]) -> R<Option<u64>> {
                let mut tx = self.pool.begin().await?;
                let v: i64 = sqlx::query_scalar(BUMP).fetch_one(&mut *tx).await?;
                let deleted = sqlx::query("DELETE FROM roles WHERE name = $1 AND built_in = FALSE")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                if deleted.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                plt_outbox::enqueue(&mut *tx, audit).await?;
                tx.commit().await?;
                Ok(Some(version_of(v)))
            }

            async fn set_role_permissions(
                &self,
                name: &str,
                permissions: &[String],
                now: DateTime<Utc>,
                audit: &[Message],
            ) -> R<Option<u64>> {
                let mut tx = self.pool.begin().await?;
                let v: i64 = sqlx::query_scalar(BUMP).fetch_one(&mut *tx).await?;
                let found = sqlx::query(
                    "UPDATE roles SET updated_at = $2 WHERE name = $1 AND all_permissions = FALSE",
                )
                .bind(name)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                if found.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                sqlx::query("DELETE FROM role_permissions WHERE role = $1")
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                for p in permissions {
                    sqlx::query("INSERT INTO role_permissions (role, permission) VALUES ($1, $2)")
                        .bind(name)
                        .bind(p)
                        .execute(&mut *tx)
                        .await?;
                }
                plt_outbox::enqueue(&mut *tx, audit).await?;
                tx.commit().await?;
                Ok(Some(version_of(v)))
            }

            async fn grant(
                &self,
                user: Uuid,
                role: &str,
                granted_by: &str,
                now: DateTime<Utc>,
                audit: &[Message],
            ) -> R<Change> {
                let mut tx = self.pool.begin().await?;
                let v: i64 = sqlx::query_scalar(BUMP).fetch_one(&mut *tx).await?;
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT name FROM roles WHERE name = $1")
                        .bind(role)
                        .fetch_optional(&mut *tx)
                        .await?;
                if exists.is_none() {
                    tx.rollback().await?;
                    return Ok(Change::NoRole);
                }
                let inserted = sqlx::query(
                    "INSERT INTO user_roles (user_id, role, granted_at, granted_by) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (user_id, role) DO NOTHING",
                )
                .bind(user)
                .bind(role)
                .bind(now)
                .bind(granted_by)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(Change::Unchanged);
                }
                plt_outbox::enqueue(&mut *tx, audit).await?;
                tx.commit().await?;
                Ok(Change::Changed(version_of(v)))
            }

            async fn revoke(&self, user: Uuid, role: &str, audit: &[Message]) -> R<Change> {
                let mut tx = self.pool.begin().await?;
                let v: i64 = sqlx::query_scalar(BUMP).fetch_one(&mut *tx).await?;
                let exists: Option<String> =
                    sqlx::query_scalar("SELECT name FROM roles WHERE name = $1")
                        .bind(role)
                        .fetch_optional(&mut *tx)
                        .await?;
                if exists.is_none() {
                    tx.rollback().await?;
                    return Ok(Change::NoRole);
                }
                let deleted = sqlx::query("DELETE FROM user_roles WHERE user_id = $1 AND role = $2")
                    .bind(user)
                    .bind(role)
                    .execute(&mut *tx)
                    .await?;
                if deleted.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(Change::Unchanged);
                }
                plt_outbox::enqueue(&mut *tx, audit).await?;
                tx.commit().await?;
                Ok(Change::Changed(version_of(v)))
            }

            /// Every user holds the built-in role `user` implicitly (a new user can read
            /// itself at once; nobody has to grant it), besides the roles granted to them.
            async fn grants(&self, user: Uuid) -> R<Grants> {
                // The version first: the grants read after it reflect at least this version,
                // so a cache entry tagged with it is never fresher than it claims.
                let version = self.version().await?;
                let roles: Vec<(String, bool)> = sqlx::query_as(
                    "SELECT r.name, r.all_permissions FROM roles r \
                     WHERE r.name = $2 OR r.name IN (SELECT role FROM user_roles WHERE user_id = $1)",
                )
                .bind(user)
                .bind(plt_contracts::authz::USER_ROLE)
                .fetch_all(&self.pool)
                .await?;
                let mut permissions: Vec<String> = sqlx::query_scalar(
                    "SELECT DISTINCT rp.permission FROM role_permissions rp \
                     WHERE rp.role = $2 OR rp.role IN (SELECT role FROM user_roles WHERE user_id = $1)",
                )
                .bind(user)
                .bind(plt_contracts::authz::USER_ROLE)
                .fetch_all(&self.pool)
                .await?;
                permissions.sort();
                let all = roles.iter().any(|(_, all)| *all);
                let mut roles: Vec<String> = roles.into_iter().map(|(n, _)| n).collect();
                roles.sort();
                Ok(Grants {
                    version,
                    roles,
                    all,
                    permissions,
                })
            }

            async fn grant_resource(
                &self,
                grant: &ResourceGrant,
                now: DateTime<Utc>,
                audit: &[Message],
            ) -> R<Option<u64>> {
                let mut tx = self.pool.begin().await?;
                let v: i64 = sqlx::query_scalar(BUMP).fetch_one(&mut *tx).await?;
                let inserted = sqlx::query(
                    "INSERT INTO resource_grants (resource, user_id, grant_name, granted_at, granted_by) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (resource, user_id, grant_name) DO NOTHING",
                )
                .bind(&grant.resource)
                .bind(grant.user_id)
                .bind(&grant.grant)
                .bind(now)
                .bind(&grant.granted_by)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                plt_outbox::enqueue(&mut *tx, audit).await?;
                tx.commit().await?;
                Ok(Some(version_of(v)))
            }

            async fn revoke_resource(&self, grant: &ResourceGrant, audit: &[Message]) -> R<Option<u64>> {
                let mut tx = self.pool.begin().await?;
                let v: i64 = sqlx::query_scalar(BUMP).fetch_one(&mut *tx).await?;
                let deleted = sqlx::query(
                    "DELETE FROM resource_grants WHERE resource = $1 AND user_id = $2 \
                     AND ($3 = '' OR grant_name = $3)",
                )
                .bind(&grant.resource)
                .bind(grant.user_id)
                .bind(&grant.grant)
                .execute(&mut *tx)
                .await?;
                if deleted.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(None);
                }
                plt_outbox::enqueue(&mut *tx, audit).await?;
                tx.commit().await?;
                Ok(Some(version_of(v)))
            }

            async fn resource_grants(&self, user: Uuid, resource: &str) -> R<ResourceGrants> {
                let version = self.version().await?;
                let grants: Vec<String> = sqlx::query_scalar(
                    "SELECT grant_name FROM resource_grants WHERE user_id = $1 AND resource = $2 \
                     ORDER BY grant_name",
                )
                .bind(user)
                .bind(resource)
                .fetch_all(&self.pool)
                .await?;
                Ok(ResourceGrants { version, grants })
            }

            async fn list_resource_grants(
                &self,
                filter: &ResourceGrantFilter,
                limit: usize,
            ) -> R<Vec<ResourceGrant>> {
                let limit = i64::try_from(limit).unwrap_or(i64::MAX);
                let rows: Vec<(String, Uuid, String, String)> = match (&filter.user_id, &filter.resource) {
                    (Some(u), Some(r)) => sqlx::query_as(
                        "SELECT resource, user_id, grant_name, granted_by FROM resource_grants \
                         WHERE user_id = $1 AND resource = $2 ORDER BY resource, user_id, grant_name LIMIT $3",
                    )
                    .bind(u)
                    .bind(r)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?,
                    (Some(u), None) => sqlx::query_as(
                        "SELECT resource, user_id, grant_name, granted_by FROM resource_grants \
                         WHERE user_id = $1 ORDER BY resource, user_id, grant_name LIMIT $2",
                    )
                    .bind(u)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?,
                    (None, Some(r)) => sqlx::query_as(
                        "SELECT resource, user_id, grant_name, granted_by FROM resource_grants \
                         WHERE resource = $1 ORDER BY resource, user_id, grant_name LIMIT $2",
                    )
                    .bind(r)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?,
                    (None, None) => Vec::new(),
                };
                Ok(rows
                    .into_iter()
                    .map(|(resource, user_id, grant, granted_by)| ResourceGrant {
                        user_id,
                        resource,
                        grant,
                        granted_by,
                    })
                    .collect())
            }
        }
    };
}

sql_store!(
    PgAuthzStore,
    plt_db::PgPool,
    "The authz store on PostgreSQL (schema `authz`)."
);
sql_store!(
    SqliteAuthzStore,
    plt_db::SqlitePool,
    "The authz store on SQLite (`authz.db`)."
);

pub fn for_db(db: &plt_db::Db) -> std::sync::Arc<dyn AuthzStore> {
    match db {
        plt_db::Db::Postgres(p) => std::sync::Arc::new(PgAuthzStore::new(p.clone())),
        plt_db::Db::Sqlite(p) => std::sync::Arc::new(SqliteAuthzStore::new(p.clone())),
    }
}
