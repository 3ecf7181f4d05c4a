//! The contract traits over a [`Pool`]: each method goes to one instance under the pool's
//! policy. Idempotency comes from the contract's `IDEMPOTENT_METHODS`, so a mutating method
//! is never retried by accident.

use crate::pool::Pool;
use async_trait::async_trait;
use plt_contracts::{
    RequestContext, Result,
    audit::{self, AuditPage, AuditQuery, AuditServiceClient, NewAuditEntry, VerifyReport},
    auth::{self, AuthServiceClient, Jwks, TokenClaims, TokenResponse},
    authz::{self, AuthzServiceClient, Permission, ResourceGrant, ResourceGrantFilter, Role},
    identity::{self, IdentityServiceClient, NewUser, PageRequest, User, UserPage, UserUpdate},
    service_identity::ServiceToken,
};
use plt_kernel::Secret;
use std::sync::Arc;
use uuid::Uuid;

fn idempotent(list: &[&str], method: &str) -> bool {
    list.contains(&method)
}

/// `IdentityServiceClient` over the healthy identity instances.
#[derive(Clone)]
pub struct BalancedIdentity(pub Arc<Pool<Arc<dyn IdentityServiceClient>>>);

/// One call through the pool; the listed arguments are cloned for each attempt.
macro_rules! via {
    ($self:ident, $list:expr, $method:literal, $ctx:ident, [$($arg:ident),*], |$c:ident, $cx:ident| $body:expr) => {
        $self
            .0
            .call($method, idempotent($list, $method), $ctx, |$c, $cx| {
                $(let $arg = $arg.clone();)*
                async move { $body }
            })
            .await
    };
}

#[async_trait]
impl IdentityServiceClient for BalancedIdentity {
    async fn get_user(&self, ctx: &RequestContext, id: Uuid) -> Result<User> {
        via!(
            self,
            identity::IDEMPOTENT_METHODS,
            "GetUser",
            ctx,
            [],
            |c, cx| c.get_user(&cx, id).await
        )
    }

    async fn get_user_by_email(&self, ctx: &RequestContext, email: &str) -> Result<User> {
        let email = email.to_owned();
        via!(
            self,
            identity::IDEMPOTENT_METHODS,
            "GetUserByEmail",
            ctx,
            [email],
            |c, cx| c.get_user_by_email(&cx, &email).await
        )
    }

    async fn list_users(&self, ctx: &RequestContext, page: PageRequest) -> Result<UserPage> {
        via!(
            self,
            identity::IDEMPOTENT_METHODS,
            "ListUsers",
            ctx,
            [page],
            |c, cx| c.list_users(&cx, page).await
        )
    }

    async fn create_user(&self, ctx: &RequestContext, user: NewUser) -> Result<User> {
        via!(
            self,
            identity::IDEMPOTENT_METHODS,
            "CreateUser",
            ctx,
            [user],
            |c, cx| c.create_user(&cx, user).await
        )
    }

    async fn update_user(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        update: UserUpdate,
    ) -> Result<User> {
        via!(
            self,
            identity::IDEMPOTENT_METHODS,
            "UpdateUser",
            ctx,
            [update],
            |c, cx| c.update_user(&cx, id, update).await
        )
    }

    async fn delete_user(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        via!(
            self,
            identity::IDEMPOTENT_METHODS,
            "DeleteUser",
            ctx,
            [],
            |c, cx| c.delete_user(&cx, id).await
        )
    }

    async fn verify_email(&self, ctx: &RequestContext, token: &str) -> Result<()> {
        let token = token.to_owned();
        via!(
            self,
            identity::IDEMPOTENT_METHODS,
            "VerifyEmail",
            ctx,
            [token],
            |c, cx| c.verify_email(&cx, &token).await
        )
    }

    async fn request_password_reset(&self, ctx: &RequestContext, email: &str) -> Result<()> {
        let email = email.to_owned();
        via!(
            self,
            identity::IDEMPOTENT_METHODS,
            "RequestPasswordReset",
            ctx,
            [email],
            |c, cx| c.request_password_reset(&cx, &email).await
        )
    }

    async fn reset_password(
        &self,
        ctx: &RequestContext,
        token: &str,
        new_password: Secret<String>,
    ) -> Result<()> {
        let token = token.to_owned();
        via!(
            self,
            identity::IDEMPOTENT_METHODS,
            "ResetPassword",
            ctx,
            [token, new_password],
            |c, cx| c.reset_password(&cx, &token, new_password).await
        )
    }

    async fn verify_credentials(
        &self,
        ctx: &RequestContext,
        email: &str,
        password: Secret<String>,
    ) -> Result<User> {
        let email = email.to_owned();
        via!(
            self,
            identity::IDEMPOTENT_METHODS,
            "VerifyCredentials",
            ctx,
            [email, password],
            |c, cx| c.verify_credentials(&cx, &email, password).await
        )
    }
}

/// `AuthServiceClient` over the healthy auth instances.
#[derive(Clone)]
pub struct BalancedAuth(pub Arc<Pool<Arc<dyn AuthServiceClient>>>);

#[async_trait]
impl AuthServiceClient for BalancedAuth {
    async fn login(
        &self,
        ctx: &RequestContext,
        email: &str,
        password: Secret<String>,
    ) -> Result<TokenResponse> {
        let email = email.to_owned();
        via!(
            self,
            auth::IDEMPOTENT_METHODS,
            "Login",
            ctx,
            [email, password],
            |c, cx| c.login(&cx, &email, password).await
        )
    }

    async fn refresh_token(
        &self,
        ctx: &RequestContext,
        refresh_token: Secret<String>,
    ) -> Result<TokenResponse> {
        via!(
            self,
            auth::IDEMPOTENT_METHODS,
            "RefreshToken",
            ctx,
            [refresh_token],
            |c, cx| c.refresh_token(&cx, refresh_token).await
        )
    }

    async fn validate_token(&self, ctx: &RequestContext, token: &str) -> Result<TokenClaims> {
        let token = token.to_owned();
        via!(
            self,
            auth::IDEMPOTENT_METHODS,
            "ValidateToken",
            ctx,
            [token],
            |c, cx| c.validate_token(&cx, &token).await
        )
    }

    async fn logout(
        &self,
        ctx: &RequestContext,
        refresh_token: Option<Secret<String>>,
        access_token: Option<Secret<String>>,
    ) -> Result<()> {
        via!(
            self,
            auth::IDEMPOTENT_METHODS,
            "Logout",
            ctx,
            [refresh_token, access_token],
            |c, cx| c.logout(&cx, refresh_token, access_token).await
        )
    }

    async fn end_user_sessions(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        reason: &str,
    ) -> Result<u32> {
        let reason = reason.to_owned();
        via!(
            self,
            auth::IDEMPOTENT_METHODS,
            "EndUserSessions",
            ctx,
            [reason],
            |c, cx| c.end_user_sessions(&cx, user_id, &reason).await
        )
    }

    async fn get_jwks(&self, ctx: &RequestContext) -> Result<Jwks> {
        via!(
            self,
            auth::IDEMPOTENT_METHODS,
            "GetJwks",
            ctx,
            [],
            |c, cx| c.get_jwks(&cx).await
        )
    }

    async fn issue_service_token(
        &self,
        ctx: &RequestContext,
        service: &str,
        secret: Secret<String>,
        audience: &str,
    ) -> Result<ServiceToken> {
        let (service, audience) = (service.to_owned(), audience.to_owned());
        via!(
            self,
            auth::IDEMPOTENT_METHODS,
            "IssueServiceToken",
            ctx,
            [service, secret, audience],
            |c, cx| c
                .issue_service_token(&cx, &service, secret, &audience)
                .await
        )
    }
}

/// `AuthzServiceClient` over the healthy authz instances.
#[derive(Clone)]
pub struct BalancedAuthz(pub Arc<Pool<Arc<dyn AuthzServiceClient>>>);

#[async_trait]
impl AuthzServiceClient for BalancedAuthz {
    async fn authorize(&self, ctx: &RequestContext, user_id: Uuid, permission: &str) -> Result<()> {
        let permission = permission.to_owned();
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "Authorize",
            ctx,
            [permission],
            |c, cx| c.authorize(&cx, user_id, &permission).await
        )
    }

    async fn has_permission(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
    ) -> Result<bool> {
        let permission = permission.to_owned();
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "HasPermission",
            ctx,
            [permission],
            |c, cx| c.has_permission(&cx, user_id, &permission).await
        )
    }

    async fn get_user_permissions(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
    ) -> Result<Vec<Permission>> {
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "GetUserPermissions",
            ctx,
            [],
            |c, cx| c.get_user_permissions(&cx, user_id).await
        )
    }

    async fn get_user_roles(&self, ctx: &RequestContext, user_id: Uuid) -> Result<Vec<String>> {
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "GetUserRoles",
            ctx,
            [],
            |c, cx| c.get_user_roles(&cx, user_id).await
        )
    }

    async fn list_roles(&self, ctx: &RequestContext) -> Result<Vec<Role>> {
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "ListRoles",
            ctx,
            [],
            |c, cx| c.list_roles(&cx).await
        )
    }

    async fn register_permissions(
        &self,
        ctx: &RequestContext,
        service: &str,
        permissions: Vec<Permission>,
    ) -> Result<()> {
        let service = service.to_owned();
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "RegisterPermissions",
            ctx,
            [service, permissions],
            |c, cx| c.register_permissions(&cx, &service, permissions).await
        )
    }

    async fn create_role(&self, ctx: &RequestContext, role: Role) -> Result<Role> {
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "CreateRole",
            ctx,
            [role],
            |c, cx| c.create_role(&cx, role).await
        )
    }

    async fn delete_role(&self, ctx: &RequestContext, name: &str) -> Result<()> {
        let name = name.to_owned();
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "DeleteRole",
            ctx,
            [name],
            |c, cx| c.delete_role(&cx, &name).await
        )
    }

    async fn set_role_permissions(
        &self,
        ctx: &RequestContext,
        name: &str,
        permissions: Vec<String>,
    ) -> Result<Role> {
        let name = name.to_owned();
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "SetRolePermissions",
            ctx,
            [name, permissions],
            |c, cx| c.set_role_permissions(&cx, &name, permissions).await
        )
    }

    async fn grant_role(&self, ctx: &RequestContext, user_id: Uuid, role: &str) -> Result<()> {
        let role = role.to_owned();
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "GrantRole",
            ctx,
            [role],
            |c, cx| c.grant_role(&cx, user_id, &role).await
        )
    }

    async fn revoke_role(&self, ctx: &RequestContext, user_id: Uuid, role: &str) -> Result<()> {
        let role = role.to_owned();
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "RevokeRole",
            ctx,
            [role],
            |c, cx| c.revoke_role(&cx, user_id, &role).await
        )
    }

    async fn check(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
        resource: &str,
    ) -> Result<bool> {
        let permission = permission.to_owned();
        let resource = resource.to_owned();
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "Check",
            ctx,
            [permission, resource],
            |c, cx| c.check(&cx, user_id, &permission, &resource).await
        )
    }

    async fn grant_resource(&self, ctx: &RequestContext, grant: ResourceGrant) -> Result<bool> {
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "GrantResource",
            ctx,
            [grant],
            |c, cx| c.grant_resource(&cx, grant).await
        )
    }

    async fn revoke_resource(&self, ctx: &RequestContext, grant: ResourceGrant) -> Result<bool> {
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "RevokeResource",
            ctx,
            [grant],
            |c, cx| c.revoke_resource(&cx, grant).await
        )
    }

    async fn list_resource_grants(
        &self,
        ctx: &RequestContext,
        filter: ResourceGrantFilter,
    ) -> Result<Vec<ResourceGrant>> {
        via!(
            self,
            authz::IDEMPOTENT_METHODS,
            "ListResourceGrants",
            ctx,
            [filter],
            |c, cx| c.list_resource_grants(&cx, filter).await
        )
    }
}

/// `AuditServiceClient` over the healthy audit instances.
#[derive(Clone)]
pub struct BalancedAudit(pub Arc<Pool<Arc<dyn AuditServiceClient>>>);

#[async_trait]
impl AuditServiceClient for BalancedAudit {
    async fn record(&self, ctx: &RequestContext, entry: NewAuditEntry) -> Result<u64> {
        via!(
            self,
            audit::IDEMPOTENT_METHODS,
            "Record",
            ctx,
            [entry],
            |c, cx| c.record(&cx, entry).await
        )
    }

    async fn query(&self, ctx: &RequestContext, filters: AuditQuery) -> Result<AuditPage> {
        via!(
            self,
            audit::IDEMPOTENT_METHODS,
            "Query",
            ctx,
            [filters],
            |c, cx| c.query(&cx, filters).await
        )
    }

    async fn verify(&self, ctx: &RequestContext) -> Result<VerifyReport> {
        via!(
            self,
            audit::IDEMPOTENT_METHODS,
            "Verify",
            ctx,
            [],
            |c, cx| c.verify(&cx).await
        )
    }
}
