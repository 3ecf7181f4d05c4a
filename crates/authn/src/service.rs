//! The callee's side of service identity: [`ServiceGuard`] verifies the service token a call
//! carries (`plt_contracts::service_identity`) and names the calling service.

use crate::{AccessClaims, Signer, Verifier, token::now_secs};
use plt_contracts::{Error, RequestContext};
use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// How long a service token issued by auth lives by default.
pub const DEFAULT_SERVICE_TOKEN_TTL: Duration = Duration::from_secs(300);
/// Verified tokens remembered per guard (cleared when full).
const CACHE_CAPACITY: usize = 1024;

/// The claims of a service token from `caller` to `audience`, valid for `ttl`.
pub fn service_claims(issuer: &str, caller: &str, audience: &str, ttl: Duration) -> AccessClaims {
    let now = now_secs();
    let mut jti = [0u8; 16];
    let _ = getrandom::fill(&mut jti);
    AccessClaims {
        iss: issuer.to_owned(),
        sub: caller.to_owned(),
        aud: vec![audience.to_owned()],
        exp: now + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
        nbf: now,
        iat: now,
        jti: jti.iter().map(|b| format!("{b:02x}")).collect(),
        scope: String::new(),
        client_id: String::new(),
        sid: String::new(),
    }
}

/// A service token signed by `signer` (for auth itself, which holds the keys).
pub fn sign_service_token(
    signer: &Signer,
    issuer: &str,
    caller: &str,
    audience: &str,
    ttl: Duration,
) -> String {
    signer.sign_service(&service_claims(issuer, caller, audience, ttl))
}

/// SHA-256 of a verified token → (calling service, expiry).
type VerifiedTokens = HashMap<[u8; 32], (Arc<str>, i64)>;

/// Verifies callers' service tokens for the service named `me`. Cheap to clone.
#[derive(Clone)]
pub struct ServiceGuard {
    verifier: Verifier,
    me: Arc<str>,
    verified: Arc<Mutex<VerifiedTokens>>,
}

impl ServiceGuard {
    /// `verifier` must trust auth's keys and issuer (its own audience is not used: service
    /// tokens must be addressed to `me`).
    pub fn new(verifier: Verifier, me: &str) -> Self {
        Self {
            verifier,
            me: me.into(),
            verified: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The service this guard protects.
    pub fn service(&self) -> &str {
        &self.me
    }

    /// The verified calling service of `ctx`, or `Unauthenticated` when the call carries no
    /// valid service token addressed to this service.
    pub async fn caller(&self, ctx: &RequestContext) -> Result<String, Error> {
        let Some(token) = ctx.service_token.as_ref().map(|t| t.expose().as_str()) else {
            return Err(Error::unauthenticated(
                "this method is for platform services only: a service credential is required",
            ));
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now_secs();
        if let Some((caller, exp)) = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && *exp >= now
        {
            return Ok(caller.to_string());
        }
        let claims = self
            .verifier
            .verify_service(token, &self.me)
            .await
            .map_err(|e| {
                tracing::debug!(reason = %e, "service token refused");
                Error::unauthenticated("invalid or expired service credential")
            })?;
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if verified.len() >= CACHE_CAPACITY {
            verified.retain(|_, (_, exp)| *exp >= now);
            if verified.len() >= CACHE_CAPACITY {
                verified.clear();
            }
        }
        verified.insert(key, (claims.sub.as_str().into(), claims.exp));
        Ok(claims.sub)
    }

    /// Like [`ServiceGuard::caller`], and the caller must be one of `allowed`.
    pub async fn require_one_of(
        &self,
        ctx: &RequestContext,
        allowed: &[&str],
    ) -> Result<String, Error> {
        let caller = self.caller(ctx).await?;
        if allowed.contains(&caller.as_str()) {
            Ok(caller)
        } else {
            Err(Error::new(
                plt_contracts::ErrorCode::PermissionDenied,
                format!("service {caller} may not call this method"),
            ))
        }
    }
}
