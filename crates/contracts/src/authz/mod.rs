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
    /// The relations on one resource that imply this permission there (for example
    /// `blog.posts.edit` ← `owner`, `editor`): a user granted the relation on `post:<id>`
    /// may do this to that post only. Declared with the permission (the last declaration
    /// wins); empty: only a grant of the permission itself (or a role) gives it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relations: Vec<String>,
}

/// A grant on one object (resource-level permission): `user_id` may do `grant` — a relation
/// (`owner`, `editor`, `viewer`, …, implying the permissions declared with it) or a declared
/// permission — on `resource` (`type:id`, for example `post:0192…`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceGrant {
    pub user_id: Uuid,
    pub resource: String,
    pub grant: String,
    /// Set by authz: who made the grant (a user id, or the service that asked).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub granted_by: String,
}

/// The longest accepted resource name, in bytes.
pub const MAX_RESOURCE_BYTES: usize = 200;

/// Checks a resource name: `type:id`, `type` a segment (`a-z 0-9 _ -`, starting with a
/// letter, at most 64), `id` 1 or more characters of `A-Z a-z 0-9 - _ . ~ : @`; at most
/// [`MAX_RESOURCE_BYTES`] in all.
pub fn validate_resource(field: &str, resource: &str) -> Result<()> {
    let Some((kind, id)) = resource.split_once(':') else {
        return Err(Error::invalid(
            field,
            "must have the form type:id (for example post:0192f…)",
        ));
    };
    if !valid_segment(kind) {
        return Err(Error::invalid(
            field,
            "the type must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter",
        ));
    }
    if resource.len() > MAX_RESOURCE_BYTES {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_RESOURCE_BYTES} bytes"),
        ));
    }
    if id.is_empty()
        || !id.bytes().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'~' | b':' | b'@')
        })
    {
        return Err(Error::invalid(
            field,
            "the id must be 1 or more characters of A-Z, a-z, 0-9, '-', '_', '.', '~', ':' or '@'",
        ));
    }
    Ok(())
}

/// Checks what a resource grant gives: a relation name (a segment, for example `editor`) or
/// a permission name (`service.resource.action`).
pub fn validate_grant(field: &str, grant: &str) -> Result<()> {
    if grant.contains('.') {
        validate_permission_name(field, grant)
    } else if valid_segment(grant) {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be a relation (1-64 characters of a-z, 0-9, '_' or '-', starting with a letter) or a permission (service.resource.action)",
        ))
    }
}

/// Which resource grants to list: a user's, a resource's, or one user's on one resource.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceGrantFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

/// The most resource grants one listing returns.
pub const MAX_RESOURCE_GRANTS_LISTED: usize = 1000;

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
    "Check",
    "ListResourceGrants",
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
pub const INTERNAL_METHODS: &[&str] = &[
    "RegisterPermissions",
    "Authorize",
    "HasPermission",
    "Check",
    "GrantResource",
    "RevokeResource",
    "ListResourceGrants",
];

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
    /// Whether the user may do `permission` (declared) on `resource` (`type:id`): through a
    /// role (anywhere), a grant of the permission on the resource, or a grant on it of a
    /// relation the permission was declared with. Not audited (a question). Cached with
    /// the same staleness bound as role decisions.
    async fn check(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
        resource: &str,
    ) -> Result<bool>;
    /// Internal (the resource's own service decides who may share it): the user holds
    /// `grant` on the resource afterwards. `true` when it changed anything. Audited.
    async fn grant_resource(&self, ctx: &RequestContext, grant: ResourceGrant) -> Result<bool>;
    /// Internal: the user no longer holds `grant` on the resource (`grant` empty: nothing on
    /// it). `true` when it changed anything. Audited.
    async fn revoke_resource(&self, ctx: &RequestContext, grant: ResourceGrant) -> Result<bool>;
    /// Internal: the grants of a user, of a resource, or of a user on a resource (at least
    /// one of the two), sorted by resource, user and grant; at most
    /// [`MAX_RESOURCE_GRANTS_LISTED`].
    async fn list_resource_grants(
        &self,
        ctx: &RequestContext,
        filter: ResourceGrantFilter,
    ) -> Result<Vec<ResourceGrant>>;
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
    fn resources_and_grants() {
        for ok in [
            "post:1",
            "post:0192f3a4-7b1c-7d2e-8f90-123456789abc",
            "org:acme:team-7",
        ] {
            assert!(validate_resource("r", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "post",
            ":1",
            "post:",
            "Post:1",
            "post:a b",
            "post:../x",
            "post:a/b",
        ] {
            assert!(validate_resource("r", bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_resource("r", &format!("post:{}", "a".repeat(200))).is_err());
        assert!(validate_grant("g", "editor").is_ok());
        assert!(validate_grant("g", "blog.posts.edit").is_ok());
        for bad in ["", "Editor", "blog.posts", "a b"] {
            assert!(validate_grant("g", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn role_names() {
        assert!(validate_role_name("name", "blog-editor_2").is_ok());
        for bad in ["", "Admin", "a.b", "2x", "a b", "../x"] {
            assert!(validate_role_name("name", bad).is_err(), "{bad:?} accepted");
        }
    }
}
