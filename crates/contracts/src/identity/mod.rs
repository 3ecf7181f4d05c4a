//! The identity contract: the trait every identity implementation (the service's core, the
//! gRPC client, the HTTP client, test fakes) provides, and its domain types.

pub mod grpc;
pub mod http;

use crate::{RequestContext, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use plt_kernel::Secret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum UserStatus {
    Active,
    Disabled,
}

impl UserStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(UserStatus::Active),
            "disabled" => Some(UserStatus::Disabled),
            _ => None,
        }
    }
}

/// A user as every other service sees it. It has no password hash, by construction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub status: UserStatus,
    pub email_verified: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Input of `create_user`.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub email: String,
    pub password: Secret<String>,
    /// Empty means: derived from the e-mail address.
    pub display_name: String,
}

/// Input of `update_user`: only the fields that are `Some` change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserUpdate {
    pub email: Option<String>,
    pub display_name: Option<String>,
    pub status: Option<UserStatus>,
}

/// A page request: `page_size` 0 means the server default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub page_size: u32,
    pub page_token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserPage {
    pub users: Vec<User>,
    /// Absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// Methods that may be retried safely (no effect, or the same effect when repeated).
pub const IDEMPOTENT_METHODS: &[&str] = &["GetUser", "GetUserByEmail", "ListUsers"];

/// How identity's verification and reset mails carry their token: on a line of its own
/// after this prefix.
pub const MAIL_TOKEN_PREFIX: &str = "Or use this token: ";

/// The token in the body of a verification or reset mail, if it has one.
pub fn token_in_mail(body: &str) -> Option<&str> {
    body.lines()
        .find_map(|l| l.strip_prefix(MAIL_TOKEN_PREFIX))
        .map(str::trim)
}

/// Internal methods: meant for other services, not for end users.
pub const INTERNAL_METHODS: &[&str] = &["VerifyCredentials"];

/// The identity service contract (the seeds' `IdentityServiceClient`).
#[async_trait]
pub trait IdentityServiceClient: Send + Sync + 'static {
    async fn get_user(&self, ctx: &RequestContext, id: Uuid) -> Result<User>;
    /// Case-insensitive.
    async fn get_user_by_email(&self, ctx: &RequestContext, email: &str) -> Result<User>;
    /// Oldest first; pass `next_page_token` back for the next page.
    async fn list_users(&self, ctx: &RequestContext, page: PageRequest) -> Result<UserPage>;
    /// Creates an active, unverified user and sends a verification mail.
    async fn create_user(&self, ctx: &RequestContext, user: NewUser) -> Result<User>;
    async fn update_user(&self, ctx: &RequestContext, id: Uuid, update: UserUpdate)
    -> Result<User>;
    async fn delete_user(&self, ctx: &RequestContext, id: Uuid) -> Result<()>;
    /// Consumes a verification token from the verification mail.
    async fn verify_email(&self, ctx: &RequestContext, token: &str) -> Result<()>;
    /// Always succeeds for a well-formed address, whether or not a user has it.
    async fn request_password_reset(&self, ctx: &RequestContext, email: &str) -> Result<()>;
    async fn reset_password(
        &self,
        ctx: &RequestContext,
        token: &str,
        new_password: Secret<String>,
    ) -> Result<()>;
    /// Internal (auth): the user whose e-mail and password these are. Unauthenticated with
    /// one generic message otherwise, whatever the reason.
    async fn verify_credentials(
        &self,
        ctx: &RequestContext,
        email: &str,
        password: Secret<String>,
    ) -> Result<User>;
}
