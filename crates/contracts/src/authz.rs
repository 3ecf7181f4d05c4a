//! The authz contract (the seeds' `AuthzServiceClient`): role-based access control with
//! permissions named `service.resource.action`. Adapters arrive with the authz service.

use crate::{Error, RequestContext, Result};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Permission {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub permissions: Vec<String>,
    #[serde(default)]
    pub built_in: bool,
}

/// Checks the `service.resource.action` shape: three dot-separated segments of lower-case
/// letters, digits, `_` and `-`, each 1–64 characters, starting with a letter. `*` is
/// allowed as a whole segment only in role grants, not here.
pub fn validate_permission_name(field: &str, name: &str) -> Result<()> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() != 3 {
        return Err(Error::invalid(
            field,
            "must have the form service.resource.action",
        ));
    }
    for p in parts {
        let ok = !p.is_empty()
            && p.len() <= 64
            && p.starts_with(|c: char| c.is_ascii_lowercase())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !ok {
            return Err(Error::invalid(
                field,
                "each segment must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter",
            ));
        }
    }
    Ok(())
}

pub const IDEMPOTENT_METHODS: &[&str] = &[
    "Authorize",
    "HasPermission",
    "GetUserPermissions",
    "GetUserRoles",
    "ListRoles",
    "RegisterPermissions",
];

#[async_trait]
pub trait AuthzServiceClient: Send + Sync + 'static {
    /// `Ok` when allowed, `PermissionDenied` otherwise.
    async fn authorize(&self, ctx: &RequestContext, user_id: Uuid, permission: &str) -> Result<()>;
    async fn has_permission(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
    ) -> Result<bool>;
    async fn get_user_permissions(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
    ) -> Result<Vec<Permission>>;
    async fn get_user_roles(&self, ctx: &RequestContext, user_id: Uuid) -> Result<Vec<String>>;
    async fn list_roles(&self, ctx: &RequestContext) -> Result<Vec<Role>>;
    /// Internal: a service declares the permissions it defines (idempotent).
    async fn register_permissions(
        &self,
        ctx: &RequestContext,
        service: &str,
        permissions: Vec<Permission>,
    ) -> Result<()>;
    async fn create_role(&self, ctx: &RequestContext, role: Role) -> Result<Role>;
    async fn delete_role(&self, ctx: &RequestContext, name: &str) -> Result<()>;
    async fn set_role_permissions(
        &self,
        ctx: &RequestContext,
        name: &str,
        permissions: Vec<String>,
    ) -> Result<Role>;
    async fn grant_role(&self, ctx: &RequestContext, user_id: Uuid, role: &str) -> Result<()>;
    async fn revoke_role(&self, ctx: &RequestContext, user_id: Uuid, role: &str) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_names() {
        assert!(validate_permission_name("p", "identity.users.read").is_ok());
        assert!(validate_permission_name("p", "blog.post-drafts.publish_2").is_ok());
        for bad in [
            "", "a.b", "a.b.c.d", "A.b.c", "a..c", "a.b.*", "1a.b.c", "a.b.c ",
        ] {
            assert!(
                validate_permission_name("p", bad).is_err(),
                "{bad:?} accepted"
            );
        }
    }
}
