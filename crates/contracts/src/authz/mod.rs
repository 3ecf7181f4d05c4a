//! The authz contract (the seeds' `AuthzServiceClient`): role-based access control with
//! permissions named `service.resource.action`, with its gRPC and HTTP adapters.
//!
//! Model: services declare the permissions they define (`register_permissions`); roles hold
//! declared permissions; users hold roles. Two roles are built in: [`ADMIN_ROLE`] holds every
//! declared permission, including ones declared later, and [`USER_ROLE`] holds the
//! self-service defaults. Built-in roles cannot be deleted; `admin`'s permissions cannot be
//! changed.
//!
//! Who may call what: the admin methods ([`ADMIN_METHODS`]) require the caller's access
//! token (`Authorization: Bearer`, carried by [`RequestContext`]) whose subject holds
//! [`MANAGE_PERMISSION`]. The checks and `register_permissions` are open to any caller for
//! now: service identities (mTLS or service tokens) arrive with the gateway issue, and until
//! then authz must not be exposed beyond the platform's own network.

pub mod grpc;
pub mod http;

use crate::{Error, RequestContext, Result};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The built-in role holding every declared permission, including ones declared later.
pub const ADMIN_ROLE: &str = "admin";
/// The built-in role holding the self-service defaults every signed-up user should have.
pub const USER_ROLE: &str = "user";
/// The permission the admin methods require of their caller.
pub const MANAGE_PERMISSION: &str = "authz.roles.manage";

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Permission {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// On registration: granted to the built-in role `user` when authz first learns of it.
    /// Not stored with the permission (the role holds it, or not).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub granted_to_users: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Role {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Sorted. For `admin`: every declared permission.
    pub permissions: Vec<String>,
    /// Set by the service; ignored in `create_role`.
    #[serde(default)]
    pub built_in: bool,
}

/// Checks the `service.resource.action` shape: three dot-separated segments of lower-case
/// letters, digits, `_` and `-`, each 1–64 characters, starting with a letter. There are no
/// wildcards: a role that should hold everything is the built-in `admin`.
pub fn validate_permission_name(field: &str, name: &str) -> Result<()> {
    let mut count = 0;
    for p in name.split('.') {
        count += 1;
        if count > 3 {
            break;
        }
        if !valid_segment(p) {
            return Err(Error::invalid(
                field,
                "each segment must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter",
            ));
        }
    }
    if count != 3 {
        return Err(Error::invalid(
            field,
            "must have the form service.resource.action",
        ));
    }
    Ok(())
}

/// One segment of a permission name, a service name or a role name: 1–64 characters of
/// `a-z 0-9 _ -`, starting with a letter.
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-')
}

/// Checks a role name: 1–64 characters of `a-z 0-9 _ -`, starting with a letter.
pub fn validate_role_name(field: &str, name: &str) -> Result<()> {
    if valid_segment(name) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter",
        ))
    }
}

/// Checks a service name as used by `register_permissions`: the same shape as a segment.
pub fn validate_service_name(field: &str, name: &str) -> Result<()> {
    if valid_segment(name) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter",
        ))
    }
}

/// Methods that may be retried safely (no effect, or the same effect when repeated).
/// `GrantRole`/`RevokeRole` are idempotent in effect too, but they are audited per call.
pub const IDEMPOTENT_METHODS: &[&str] = &[
    "Authorize",
    "HasPermission",
    "GetUserPermissions",
    "GetUserRoles",
    "ListRoles",
    "RegisterPermissions",
];

/// Methods whose caller must hold [`MANAGE_PERMISSION`].
pub const ADMIN_METHODS: &[&str] = &[
    "CreateRole",
    "DeleteRole",
    "SetRolePermissions",
    "GrantRole",
    "RevokeRole",
];

/// Internal methods: meant for other services, not for end users.
pub const INTERNAL_METHODS: &[&str] = &["RegisterPermissions", "Authorize", "HasPermission"];

/// The authz service contract. Errors: a malformed or undeclared permission name is
/// `InvalidArgument` naming the field (and, for role contents, the permission); an unknown
/// role is `NotFound`; a denied `authorize` is `PermissionDenied`; an admin call without a
/// valid access token is `Unauthenticated`, and by a caller lacking `authz.roles.manage`
/// `PermissionDenied`.
#[async_trait]
pub trait AuthzServiceClient: Send + Sync + 'static {
    /// `Ok` when allowed, `PermissionDenied` otherwise (denials are audited).
    async fn authorize(&self, ctx: &RequestContext, user_id: Uuid, permission: &str) -> Result<()>;
    /// Whether the user holds the permission (not audited: a question, not an enforcement).
    async fn has_permission(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
    ) -> Result<bool>;
    /// The user's effective permissions, sorted by name, with their descriptions.
    async fn get_user_permissions(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
    ) -> Result<Vec<Permission>>;
    /// The roles the user holds, sorted.
    async fn get_user_roles(&self, ctx: &RequestContext, user_id: Uuid) -> Result<Vec<String>>;
    /// Every role, sorted by name.
    async fn list_roles(&self, ctx: &RequestContext) -> Result<Vec<Role>>;
    /// Internal: a service declares the permissions it defines (idempotent; a repeated
    /// declaration may update descriptions; nothing is ever undeclared). Every name must
    /// start with `<service>.`.
    async fn register_permissions(
        &self,
        ctx: &RequestContext,
        service: &str,
        permissions: Vec<Permission>,
    ) -> Result<()>;
    /// Admin: a new role holding declared permissions. `AlreadyExists` if the name is taken.
    async fn create_role(&self, ctx: &RequestContext, role: Role) -> Result<Role>;
    /// Admin: deletes a role and every grant of it. Built-in roles: `FailedPrecondition`.
    async fn delete_role(&self, ctx: &RequestContext, name: &str) -> Result<()>;
    /// Admin: replaces the role's permissions. `admin`: `FailedPrecondition`.
    async fn set_role_permissions(
        &self,
        ctx: &RequestContext,
        name: &str,
        permissions: Vec<String>,
    ) -> Result<Role>;
    /// Admin: the user holds the role afterwards (granting it again is not an error).
    async fn grant_role(&self, ctx: &RequestContext, user_id: Uuid, role: &str) -> Result<()>;
    /// Admin: the user no longer holds the role afterwards (nor an error if they did not).
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
            "", "a.b", "a.b.c.d", "A.b.c", "a..c", "a.b.*", "1a.b.c", "a.b.c ", ".a.b", "a.b.",
        ] {
            let e = validate_permission_name("p", bad).expect_err(bad);
            assert_eq!(e.violations[0].field, "p");
        }
        let long = format!("a.b.{}", "c".repeat(65));
        assert!(validate_permission_name("p", &long).is_err());
    }

    #[test]
    fn role_names() {
        assert!(validate_role_name("name", "blog-editor_2").is_ok());
        for bad in ["", "Admin", "a.b", "2x", "a b", "../x"] {
            assert!(validate_role_name("name", bad).is_err(), "{bad:?} accepted");
        }
    }
}
