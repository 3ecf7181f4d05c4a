//! The contract traits over a [`Pool`]: each method goes to one instance under the pool's
//! policy. Idempotency comes from the contract's `IDEMPOTENT_METHODS`, so a mutating method
//! is never retried by accident.

use crate::pool::Pool;
use async_trait::async_trait;
use plt_contracts::{
    RequestContext, Result,
    auth::{self, AuthServiceClient, Jwks, TokenClaims, TokenResponse},
    identity::{self, IdentityServiceClient, NewUser, PageRequest, User, UserPage, UserUpdate},
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
}
