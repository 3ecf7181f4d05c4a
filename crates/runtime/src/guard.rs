//! The runtime's [`AccessGuard`]: what every service enforces on each call, before its own
//! code runs, whatever the caller's network.
//!
//! - users: the `Authorization: Bearer` access token, verified locally against auth's keys;
//! - services: the `x-plt-service-token`, verified and addressed to this service;
//! - permissions: asked of authz (`HasPermission`, as this service); a grant is remembered
//!   for a moment (1 s) so a burst of calls costs one question, a refusal is not.

use async_trait::async_trait;
use moka::future::Cache;
use plt_authn::{ServiceGuard, Verifier};
use plt_contracts::{
    Error, ErrorCode, RequestContext, Result,
    access::{Access, AccessGuard, MethodAccess, Principal},
    authz::AuthzServiceClient,
};
use sha2::{Digest, Sha256};
use std::{sync::Arc, time::Duration};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// Where the guard gets authz from: built once, on first need (a service with no
/// permission rules never calls authz).
pub type AuthzSource = Arc<
    dyn Fn() -> futures_util::future::BoxFuture<'static, Result<Arc<dyn AuthzServiceClient>>>
        + Send
        + Sync,
>;

/// Who decides whether a user holds a permission: authz, asked over the network by every
/// service — except authz itself, which decides from its own policy cache.
#[async_trait]
pub trait Decide: Send + Sync + 'static {
    async fn holds(
        &self,
        ctx: &RequestContext,
        user: Uuid,
        permission: &'static str,
    ) -> Result<bool>;
}

/// [`Decide`] by asking authz (`Authorize`, as this service; refusals are audited by authz).
pub struct AskAuthz {
    source: AuthzSource,
    authz: OnceCell<Arc<dyn AuthzServiceClient>>,
}

impl AskAuthz {
    pub fn new(source: AuthzSource) -> Self {
        Self {
            source,
            authz: OnceCell::new(),
        }
    }
}

#[async_trait]
impl Decide for AskAuthz {
    async fn holds(
        &self,
        ctx: &RequestContext,
        user: Uuid,
        permission: &'static str,
    ) -> Result<bool> {
        let authz = self
            .authz
            .get_or_try_init(|| (self.source)())
            .await?
            .clone();
        // Asked as this service: only the request id travels on, never the caller's tokens.
        let ask = RequestContext {
            request_id: ctx.request_id.clone(),
            deadline: ctx.deadline,
            ..Default::default()
        };
        // `Authorize` rather than `HasPermission`: authz records every refusal in the audit
        // log, whichever service asked.
        match authz.authorize(&ask, user, permission).await {
            Ok(()) => Ok(true),
            Err(e) if e.code == ErrorCode::PermissionDenied => Ok(false),
            Err(e) => Err(match e.code {
                ErrorCode::Unavailable | ErrorCode::DeadlineExceeded => {
                    Error::dependency_unavailable("authorization", "checking a permission", &e)
                }
                _ => e,
            }),
        }
    }
}

/// A verified access token, remembered by its SHA-256.
struct Verified {
    sub: String,
    sid: String,
    jti: String,
    exp: i64,
}

pub struct RuntimeGuard {
    users: Verifier,
    verified: Cache<[u8; 32], Arc<Verified>>,
    services: ServiceGuard,
    decide: Arc<dyn Decide>,
    decisions: Cache<(Uuid, &'static str), bool>,
    cache: bool,
}

impl RuntimeGuard {
    /// `service`: this service's registry name (service tokens must be addressed to it).
    pub fn new(
        verifier: Verifier,
        service: &str,
        decide: Arc<dyn Decide>,
        cache_ttl: Duration,
    ) -> Self {
        Self {
            services: ServiceGuard::new(verifier.clone(), service),
            users: verifier,
            verified: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(Duration::from_secs(300))
                .build(),
            decide,
            decisions: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(cache_ttl.max(Duration::from_millis(1)))
                .build(),
            cache: !cache_ttl.is_zero(),
        }
    }

    /// The signed-in user, also recorded in the request's scope (error reports name them).
    async fn user(&self, ctx: &RequestContext) -> Result<String> {
        let user = self.verify_user(ctx).await?;
        plt_kernel::report::set_user(&user);
        Ok(user)
    }

    async fn verify_user(&self, ctx: &RequestContext) -> Result<String> {
        let Some(token) = ctx.bearer_token() else {
            return Err(Error::unauthenticated(
                "sign in first: an access token (Authorization: Bearer) is required",
            ));
        };
        // A token verified before is not verified again (a signature check costs more than
        // the rest of a small request) until it expires; its session is re-checked each time.
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        if let Some(v) = self.verified.get(&key).await
            && v.exp > now
        {
            if self.users.is_revoked(&v.sid, &v.jti) {
                self.verified.invalidate(&key).await;
                return Err(Error::unauthenticated("invalid or expired access token"));
            }
            return Ok(v.sub.clone());
        }
        let claims = self.users.verify(token).await.map_err(|e| {
            tracing::debug!(reason = %e, "access token refused");
            Error::unauthenticated("invalid or expired access token")
        })?;
        self.verified
            .insert(
                key,
                Arc::new(Verified {
                    sub: claims.sub.clone(),
                    sid: claims.sid,
                    jti: claims.jti,
                    exp: claims.exp,
                }),
            )
            .await;
        Ok(claims.sub)
    }

    async fn holds(
        &self,
        ctx: &RequestContext,
        user: &str,
        permission: &'static str,
    ) -> Result<bool> {
        let Ok(id) = Uuid::parse_str(user) else {
            return Ok(false);
        };
        if let Some(d) = self.decisions.get(&(id, permission)).await {
            return Ok(d);
        }
        let held = self.decide.holds(ctx, id, permission).await?;
        // Only grants are reused: a permission granted a moment ago works at once, and one
        // revoked stops within the cache's lifetime.
        if self.cache && held {
            self.decisions.insert((id, permission), held).await;
        }
        Ok(held)
    }
}

fn denied(what: String) -> Error {
    Error::new(ErrorCode::PermissionDenied, what)
}

#[async_trait]
impl AccessGuard for RuntimeGuard {
    async fn admit(
        &self,
        ctx: &RequestContext,
        method: &MethodAccess,
        owner: Option<&str>,
    ) -> Result<Option<Principal>> {
        match method.access {
            Access::Public => {
                // A valid token still identifies the caller; an invalid one is ignored.
                if ctx.bearer_token().is_some()
                    && let Ok(user) = self.user(ctx).await
                {
                    return Ok(Some(Principal::User(user)));
                }
                Ok(None)
            }
            Access::Authenticated => Ok(Some(Principal::User(self.user(ctx).await?))),
            Access::Permission(p) => {
                let user = self.user(ctx).await?;
                if self.holds(ctx, &user, p).await? {
                    Ok(Some(Principal::User(user)))
                } else {
                    Err(denied(format!("requires permission {p}")))
                }
            }
            Access::Owner { field, permission } => {
                let user = self.user(ctx).await?;
                if owner == Some(user.as_str()) {
                    return Ok(Some(Principal::User(user)));
                }
                match permission {
                    Some(p) if self.holds(ctx, &user, p).await? => Ok(Some(Principal::User(user))),
                    Some(p) => Err(denied(format!(
                        "{field} must be your own user id, or you need permission {p}"
                    ))),
                    None => Err(denied(format!("{field} must be your own user id"))),
                }
            }
            Access::Services(allowed) => {
                let caller = if allowed.contains(&"*") {
                    self.services.caller(ctx).await?
                } else {
                    self.services.require_one_of(ctx, allowed).await?
                };
                Ok(Some(Principal::Service(caller)))
            }
        }
    }
}

/// The guard of a service without a token verifier (auth itself): public methods only.
pub struct PublicOnly;

#[async_trait]
impl AccessGuard for PublicOnly {
    async fn admit(
        &self,
        _ctx: &RequestContext,
        method: &MethodAccess,
        _owner: Option<&str>,
    ) -> Result<Option<Principal>> {
        match method.access {
            Access::Public => Ok(None),
            _ => Err(Error::new(
                ErrorCode::Unimplemented,
                format!("{} cannot be checked by this service", method.method),
            )),
        }
    }
}
