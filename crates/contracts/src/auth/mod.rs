//! The auth contract (the seeds' `AuthServiceClient`): sign-in, token refresh, validation
//! and revocation, with its gRPC and HTTP adapters.

pub mod grpc;
pub mod http;

use crate::{RequestContext, Result, service_identity::ServiceToken};
use async_trait::async_trait;
use plt_kernel::Secret;
use serde::{Deserialize, Serialize};

/// A token pair. Its secrets are `Secret`s: it has no `Serialize`, the HTTP adapter writes
/// its own wire form.
#[derive(Debug, Clone)]
pub struct TokenResponse {
    pub access_token: Secret<String>,
    pub refresh_token: Secret<String>,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u32,
}

/// The verified claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    pub sub: String,
    pub iss: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    pub jti: String,
    #[serde(default)]
    pub scope: String,
    /// The session the token belongs to (empty for tokens without one).
    #[serde(default)]
    pub sid: String,
}

/// One public key of the JWKS document (RFC 7517).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub crv: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub x: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub y: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

pub const IDEMPOTENT_METHODS: &[&str] = &[
    "ValidateToken",
    "GetJwks",
    "IssueServiceToken",
    "EndUserSessions",
];

/// Internal methods: meant for other services, not for end users.
pub const INTERNAL_METHODS: &[&str] = &["ValidateToken", "EndUserSessions"];

#[async_trait]
pub trait AuthServiceClient: Send + Sync + 'static {
    async fn login(
        &self,
        ctx: &RequestContext,
        email: &str,
        password: Secret<String>,
    ) -> Result<TokenResponse>;
    /// Rotates the refresh token: the presented one is spent, a new pair is returned.
    async fn refresh_token(
        &self,
        ctx: &RequestContext,
        refresh_token: Secret<String>,
    ) -> Result<TokenResponse>;
    async fn validate_token(&self, ctx: &RequestContext, token: &str) -> Result<TokenClaims>;
    /// Revokes the refresh-token family and denylists the access token until it expires.
    async fn logout(
        &self,
        ctx: &RequestContext,
        refresh_token: Option<Secret<String>>,
        access_token: Option<Secret<String>>,
    ) -> Result<()>;
    async fn get_jwks(&self, ctx: &RequestContext) -> Result<Jwks>;
    /// A service token for `service` (authenticated by its `secret`) addressed to
    /// `audience`. A wrong secret and an unknown service get the same `Unauthenticated`.
    async fn issue_service_token(
        &self,
        ctx: &RequestContext,
        service: &str,
        secret: Secret<String>,
        audience: &str,
    ) -> Result<ServiceToken>;
    /// Internal (identity): ends every session of `user_id` (`reason`: `password_reset`,
    /// `user_disabled`, `user_deleted`): its refresh tokens stop working and its access tokens
    /// are refused everywhere within a second. Returns how many sessions ended now.
    async fn end_user_sessions(
        &self,
        ctx: &RequestContext,
        user_id: uuid::Uuid,
        reason: &str,
    ) -> Result<u32>;
}
