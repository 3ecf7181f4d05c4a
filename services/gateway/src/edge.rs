//! Authentication and authorisation at the edge.
//!
//! Access tokens are verified locally ([`plt_authn::Verifier`]: cached JWKS, bounded refetch
//! on an unknown `kid`). A verified token is remembered by the SHA-256 of the token until it
//! expires (at most `token_cache.max_ttl`), so the common case costs one hash. Failures are
//! not cached.
//!
//! A route's permission is checked with authz (`authorize(user, permission)`); decisions are
//! cached by (user id, permission) — never by token — for at most `authz.staleness_bound`.
//! Authz unreachable means no decision: the request is refused (fail closed), and nothing is
//! cached.

use crate::{SERVICE_NAME, shard::ShardedMap};
use plt_authn::{Verifier, VerifyError};
use plt_contracts::{Error, ErrorCode, RequestContext, authz::AuthzServiceClient};
use sha2::{Digest, Sha256};
use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use uuid::Uuid;

/// Who a verified access token says the caller is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`: a user id.
    pub user_id: String,
    /// The token's `scope` (space-separated; may be empty).
    pub scope: String,
    /// How long this verification may be reused.
    cache_for: Duration,
    /// The token's session and id: a cached verification is refused once either is revoked.
    sid: String,
    jti: String,
    /// `user_id` and `scope` as the headers sent upstream (`x-user-id`, `x-user-scope`;
    /// none for an empty scope or a value no header may carry).
    pub id_header: Option<http::HeaderValue>,
    pub scope_header: Option<http::HeaderValue>,
}

fn cache_lookup(cache: &'static str, hit: bool) {
    static HANDLES: std::sync::LazyLock<
        plt_kernel::metrics::HandleCache<(&'static str, bool), metrics::Counter>,
    > = std::sync::LazyLock::new(Default::default);
    HANDLES
        .get(&(cache, hit), || {
            metrics::counter!(
                "gateway_cache_lookups_total",
                "service" => SERVICE_NAME,
                "cache" => cache,
                "result" => if hit { "hit" } else { "miss" }
            )
        })
        .increment(1);
}

/// Verifies access tokens, remembering the verified ones until they expire.
pub struct Authenticator {
    verifier: Verifier,
    /// By the token's SHA-256: the caller, and until when it may be reused.
    cache: ShardedMap<[u8; 32], (Arc<Caller>, Instant)>,
    max_ttl: Duration,
}

impl Authenticator {
    pub fn new(verifier: Verifier, max_entries: u64, max_ttl: Duration) -> Self {
        Self {
            verifier,
            cache: ShardedMap::new(usize::try_from(max_entries).unwrap_or(usize::MAX)),
            max_ttl,
        }
    }

    /// The caller of a bearer `token` presented at `now`, or why it is refused.
    pub async fn authenticate(
        &self,
        token: &str,
        now: Instant,
    ) -> Result<Arc<Caller>, VerifyError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        match self.cache.get(&key) {
            Some((c, until)) if now < until => {
                cache_lookup("token", true);
                if self.verifier.is_revoked(&c.sid, &c.jti) {
                    self.cache.remove(&key);
                    return Err(VerifyError::Revoked);
                }
                return Ok(c);
            }
            Some(_) => self.cache.remove(&key),
            None => {}
        }
        cache_lookup("token", false);
        let claims = self.verifier.verify(token).await?;
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let left = Duration::from_secs(u64::try_from(claims.exp - unix_now).unwrap_or(0));
        let header = |v: &str| {
            (!v.is_empty())
                .then(|| http::HeaderValue::from_str(v).ok())
                .flatten()
        };
        let caller = Arc::new(Caller {
            id_header: header(&claims.sub),
            scope_header: header(&claims.scope),
            user_id: claims.sub,
            scope: claims.scope,
            cache_for: left.min(self.max_ttl),
            sid: claims.sid,
            jti: claims.jti,
        });
        if !caller.cache_for.is_zero() {
            let until = now + caller.cache_for;
            self.cache
                .insert(key, (caller.clone(), until), |(_, until)| *until <= now);
        }
        Ok(caller)
    }
}

/// A decision, or the one question to authz that all who need it wait for.
type Pending = Arc<tokio::sync::OnceCell<bool>>;

/// Permission checks through authz, with a short decision cache.
pub struct Authorizer {
    authz: Arc<dyn AuthzServiceClient>,
    /// By `<user id>:<permission>`: the decision (or the question in flight) and when it
    /// was asked. Absent when `staleness_bound` is zero.
    cache: Option<ShardedMap<String, (Pending, Instant)>>,
    staleness_bound: Duration,
}

impl Authorizer {
    /// `staleness_bound` zero: no caching.
    pub fn new(
        authz: Arc<dyn AuthzServiceClient>,
        staleness_bound: Duration,
        max_entries: u64,
    ) -> Self {
        let cache = (!staleness_bound.is_zero())
            .then(|| ShardedMap::new(usize::try_from(max_entries).unwrap_or(usize::MAX)));
        Self {
            authz,
            cache,
            staleness_bound,
        }
    }

    async fn ask(
        &self,
        ctx: impl FnOnce() -> RequestContext,
        user: Uuid,
        permission: &str,
    ) -> Result<bool, Error> {
        match self.authz.authorize(&ctx(), user, permission).await {
            Ok(()) => Ok(true),
            Err(e) if e.code == ErrorCode::PermissionDenied => Ok(false),
            // A permission nobody declared: nobody holds it. A configuration mistake, so
            // say so in the log, and refuse.
            Err(e) if matches!(e.code, ErrorCode::InvalidArgument | ErrorCode::NotFound) => {
                tracing::warn!(permission, error = %e, "authz refused the route's permission; denying");
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether `user` holds `permission`. `Err` when authz gave no decision (unreachable,
    /// timed out, failed): the caller must refuse the request.
    /// `ctx` makes the context of a question to authz (only made when one is asked).
    pub async fn allowed(
        &self,
        ctx: impl FnOnce() -> RequestContext,
        user: Uuid,
        permission: &str,
        now: Instant,
    ) -> Result<bool, Error> {
        let Some(cache) = &self.cache else {
            cache_lookup("authz", false);
            return self.ask(ctx, user, permission).await;
        };
        thread_local! {
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let bound = self.staleness_bound;
        let (pending, asked_here, key) = KEY.with_borrow_mut(|key| {
            key.clear();
            key.push_str(user.simple().encode_lower(&mut Uuid::encode_buffer()));
            key.push(':');
            key.push_str(permission);
            match cache.get(key.as_str()) {
                Some((p, asked)) if now.duration_since(asked) < bound => (p, false, None),
                _ => {
                    let p = Pending::default();
                    cache.insert(key.clone(), (p.clone(), now), |(_, asked)| {
                        now.duration_since(*asked) >= bound
                    });
                    (p, true, Some(key.clone()))
                }
            }
        });
        cache_lookup("authz", !asked_here);
        match pending
            .get_or_try_init(|| self.ask(ctx, user, permission))
            .await
        {
            Ok(allowed) => Ok(*allowed),
            Err(e) => {
                // No decision: nothing is kept, the next request asks again.
                if let Some(key) = key {
                    cache.remove(key.as_str());
                }
                Err(e)
            }
        }
    }
}
