//! Service identity: every call between services carries a short-lived service token that
//! names the calling service and is addressed to the called one. Auth signs them (with the
//! key ring it signs access tokens with, under a different `typ`), every service verifies
//! them locally from auth's JWKS, and internal-only methods refuse a call without one —
//! over gRPC and HTTP alike, whatever route the call took.
//!
//! The token travels in its own header, [`SERVICE_TOKEN_HEADER`], so the originating user's
//! `Authorization` travels beside it unchanged and decisions stay that user's.

use crate::Result;
use async_trait::async_trait;
use plt_kernel::Secret;

/// The header (HTTP) and metadata key (gRPC) carrying the caller's service token.
pub const SERVICE_TOKEN_HEADER: &str = "x-plt-service-token";

/// How a service gets the credential it presents to another service. The client factory
/// asks for one per call (implementations cache); auth signs its own, every other service
/// gets them from auth with its service secret.
#[async_trait]
pub trait ServiceCredentials: Send + Sync + 'static {
    /// The name of the calling service (the token's `sub`).
    fn service(&self) -> &str;
    /// A service token addressed to `audience` (the called service's name).
    async fn token(&self, audience: &str) -> Result<Secret<String>>;
}

/// A service token issued by auth.
#[derive(Debug, Clone)]
pub struct ServiceToken {
    pub token: Secret<String>,
    /// Seconds until it expires.
    pub expires_in: u32,
}

/// A service name as used in the registry, in permissions and as a token audience:
/// 1–64 characters of `a-z 0-9 -`, starting with a letter.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
