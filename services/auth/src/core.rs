//! The auth core: sign-in, refresh rotation with reuse detection, validation, logout,
//! implementing the auth contract directly.

use crate::{
    config::AuthConfig,
    keys::{KeyRing, now},
    store::{AuthStore, Family, RefreshRow},
    throttle::{Throttle, Verdict},
};
use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use plt_authn::{AccessClaims, ServiceGuard};
use plt_contracts::{
    Error, ErrorCode, RequestContext, Result,
    audit::Outcome,
    auth::{AuthServiceClient, Jwks, TokenClaims, TokenResponse},
    events,
    identity::IdentityServiceClient,
    service_identity::{ServiceCredentials, ServiceToken, valid_service_name},
};
use plt_kernel::{Secret, net::TrustedProxies};
use plt_outbox::{Message, Outbox, audit::AuditEvent};
use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// The one answer to every failed sign-in: unknown e-mail, wrong password, disabled account,
/// throttled account or source.
const SIGN_IN_FAILED: &str = "invalid e-mail or password";
const INVALID_REFRESH: &str = "invalid or expired refresh token";
const REFRESH_TOKEN_CHARS: usize = 43;

pub struct AuthCore {
    cfg: AuthConfig,
    store: Arc<dyn AuthStore>,
    keys: Arc<KeyRing>,
    identity: Arc<dyn IdentityServiceClient>,
    throttle: Throttle,
    trusted_proxies: TrustedProxies,
    check_time: CheckTime,
    guard: ServiceGuard,
    /// SHA-256 of each service account's secret (compared in constant time).
    service_accounts: HashMap<String, [u8; 32]>,
    revocations_changed: Arc<tokio::sync::Notify>,
    /// Where audit records and events go, in the transaction of the change they describe.
    outbox: Outbox,
    events: plt_events::Publisher,
}

/// The resource of a sign-in attempt for an account that may not exist.
fn account_resource(email: &str) -> String {
    format!("account/{email}")
}

fn chrono(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn new_refresh_token() -> Result<(String, Vec<u8>)> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal("generating refresh token", &e))?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let h = hash(&token);
    Ok((token, h))
}

/// Durations of real credential checks, so a refusal that needs none (throttled) can take as
/// long: an attacker must not learn from the timing that an account is being throttled.
struct CheckTime {
    /// Exponentially weighted mean, in microseconds (0: none measured yet).
    mean_us: AtomicU64,
}

impl CheckTime {
    /// Before any check was measured: about one Argon2id verification at the minimum cost.
    const INITIAL: Duration = Duration::from_millis(25);

    fn record(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .mean_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some(if m == 0 { us } else { m - m / 8 + us / 8 })
            });
    }

    /// The mean, with ±10% jitter (real checks vary too).
    fn typical(&self) -> Duration {
        let us = self.mean_us.load(Ordering::Relaxed);
        let base = if us == 0 {
            Self::INITIAL
        } else {
            Duration::from_micros(us)
        };
        let mut b = [0u8; 1];
        let _ = getrandom::fill(&mut b);
        base.mul_f64(0.9 + f64::from(b[0]) / 255.0 * 0.2)
    }
}

impl AuthCore {
    pub fn new(
        cfg: AuthConfig,
        store: Arc<dyn AuthStore>,
        keys: Arc<KeyRing>,
        identity: Arc<dyn IdentityServiceClient>,
        outbox: Outbox,
    ) -> anyhow::Result<Self> {
        let trusted_proxies = TrustedProxies::new(&cfg.trusted_proxies);
        let service_accounts = cfg
            .service_accounts
            .iter()
            .map(|(name, secret)| {
                (
                    name.clone(),
                    Sha256::digest(secret.expose().as_bytes()).into(),
                )
            })
            .collect();
        Ok(Self {
            throttle: Throttle::new(&cfg.throttle)?,
            guard: ServiceGuard::new(keys.verifier().clone(), crate::SECTION),
            cfg,
            store,
            keys,
            identity,
            trusted_proxies,
            check_time: CheckTime {
                mean_us: AtomicU64::new(0),
            },
            service_accounts,
            revocations_changed: Arc::new(tokio::sync::Notify::new()),
            outbox,
            events: plt_events::Publisher::disabled(crate::SERVICE_NAME),
        })
    }

    /// Writes a record that describes no change (a failed or throttled sign-in, a service
    /// token issued or refused) in a transaction of its own; if even that fails, it goes to
    /// the log at error level (never silently lost).
    async fn record_alone(&self, e: AuditEvent) {
        if let Err(err) = self.outbox.enqueue_alone(&[e.message()]).await {
            tracing::error!(
                event = "auth.audit.unwritten",
                error = %err,
                record = %serde_json::to_string(e.entry()).unwrap_or_default(),
                "audit record not written to the outbox"
            );
        }
    }

    /// The sign-in's source address: the one a platform caller listed in
    /// `auth.client_address_from` states (the gateway), when its service token verifies;
    /// otherwise what this service sees itself: the peer, or behind `auth.trusted_proxies`
    /// the client their `X-Forwarded-For` names (the kernel's one rule, as the gateway's).
    async fn source(&self, ctx: &RequestContext) -> Option<IpAddr> {
        if let Some(stated) = ctx.client_ip {
            let allowed: Vec<&str> = self
                .cfg
                .client_address_from
                .iter()
                .map(String::as_str)
                .collect();
            match self.guard.require_one_of(ctx, &allowed).await {
                Ok(_) => return Some(plt_kernel::net::canonical(stated)),
                Err(e) => {
                    tracing::debug!(error = %e, "client address stated without a credential that vouches for it; ignored");
                }
            }
        }
        let peer = ctx.peer?.ip();
        Some(
            self.trusted_proxies
                .client_ip(peer, ctx.forwarded_for.as_deref().into_iter()),
        )
    }

    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    fn access_token(&self, user_id: Uuid, sid: Uuid, now: DateTime<Utc>) -> (Secret<String>, u32) {
        let ttl = self.cfg.access_token_ttl.as_secs();
        let iat = now.timestamp();
        let claims = AccessClaims {
            iss: self.cfg.issuer.clone(),
            sub: user_id.to_string(),
            aud: vec![self.cfg.audience.clone()],
            exp: iat + ttl as i64,
            nbf: iat,
            iat,
            jti: Uuid::new_v4().to_string(),
            scope: String::new(),
            client_id: String::new(),
            sid: sid.to_string(),
        };
        let token = self.keys.signer().sign(&claims);
        (Secret::new(token), ttl as u32)
    }

    fn pair(&self, user_id: Uuid, sid: Uuid, refresh: String, now: DateTime<Utc>) -> TokenResponse {
        let (access, expires_in) = self.access_token(user_id, sid, now);
        TokenResponse {
            access_token: access,
            refresh_token: Secret::new(refresh),
            token_type: "Bearer".into(),
            expires_in,
        }
    }

    fn family_usable(&self, f: &Family, now: DateTime<Utc>) -> bool {
        f.revoked_at.is_none()
            && f.expires_at > now
            && f.last_used_at + chrono(self.cfg.refresh.idle_timeout) > now
    }

    fn sealing_context(family: Uuid) -> Vec<u8> {
        format!("refresh-successor:{family}").into_bytes()
    }

    /// Until when a session ended at `now` must stay published: its last access token
    /// expires `access_token_ttl` after it was signed (plus verifiers' clock leeway).
    fn revoked_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now + chrono(self.cfg.access_token_ttl) + chrono::Duration::seconds(10)
    }

    /// Ends every session of `user` (a password reset, the user disabled or deleted): their
    /// refresh tokens stop working and their access tokens are refused everywhere within a
    /// second. Returns how many sessions ended.
    pub async fn end_sessions_of(&self, user: Uuid, reason: &str) -> Result<usize> {
        let now = now();
        let ended = self
            .store
            .revoke_user_families(user, now, reason, self.revoked_until(now), &|family| {
                self.session_event(events::SESSION_ENDED, user, family, reason, now)
            })
            .await
            .map_err(|e| e.into_error("ending sessions"))?;
        self.revocations_changed.notify_one();
        if !ended.is_empty() {
            self.outbox.wake();
        }
        tracing::info!(event = "auth.sessions.ended", user_id = %user, count = ended.len(), reason, "sessions ended");
        Ok(ended.len())
    }

    /// The outbox message of session event `t` (none without a bus).
    fn session_event(
        &self,
        t: &str,
        user: Uuid,
        session: Uuid,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Vec<Message> {
        self.events.message(
            t,
            &format!("user/{user}"),
            &user.to_string(),
            events::SessionEvent {
                user_id: user,
                session_id: session.to_string(),
                reason: reason.to_owned(),
                at,
            },
        )
    }

    /// This core, publishing session events (`plt.auth.session.*`) with `events`.
    pub fn with_events(mut self, events: plt_events::Publisher) -> Self {
        self.events = events;
        self
    }

    /// Wakes the task that publishes this instance's revocations (after a local change).
    pub fn revocations_changed(&self) -> &Arc<tokio::sync::Notify> {
        &self.revocations_changed
    }

    /// Revokes the family, committing `audit` with it; `true` when it was not revoked yet
    /// (only then is `audit` written).
    async fn revoke(
        &self,
        family: &Family,
        now: DateTime<Utc>,
        reason: &str,
        audit: &[Message],
    ) -> Result<bool> {
        let mut audit = audit.to_vec();
        let (event_type, reason_code) = if reason == "refresh token reuse" {
            (events::FAMILY_REVOKED, "refresh_token_reuse")
        } else {
            (events::SESSION_ENDED, reason)
        };
        audit.extend(self.session_event(event_type, family.user_id, family.id, reason_code, now));
        let first = self
            .store
            .revoke_family(family.id, now, reason, self.revoked_until(now), &audit)
            .await
            .map_err(|e| e.into_error("revoking token family"))?;
        self.revocations_changed.notify_one();
        if first {
            self.outbox.wake();
            tracing::warn!(
                event = "auth.token_family.revoked",
                family_id = %family.id,
                user_id = %family.user_id,
                reason,
                "refresh-token family revoked"
            );
        }
        Ok(first)
    }

    /// A spent token presented again: within the grace window, while its successor is
    /// unspent, the same successor (the client lost our answer); otherwise reuse.
    async fn replay(
        &self,
        ctx: &RequestContext,
        row: &RefreshRow,
        family: &Family,
        now: DateTime<Utc>,
    ) -> Result<TokenResponse> {
        let spent_at = row.spent_at.unwrap_or(now);
        let in_grace = now - spent_at <= chrono(self.cfg.refresh.reuse_grace);
        if in_grace
            && let (Some(succ_hash), Some(sealed)) = (&row.successor_hash, &row.successor_sealed)
            && let Some((succ, _)) = self
                .store
                .refresh_token(succ_hash)
                .await
                .map_err(|e| e.into_error("reading refresh token"))?
            && succ.spent_at.is_none()
            && let Ok(plain) = self
                .keys
                .sealer()
                .open(&Self::sealing_context(family.id), sealed)
            && let Ok(successor) = String::from_utf8(plain)
        {
            tracing::info!(family_id = %family.id, "refresh retried within the grace window; same successor returned");
            return Ok(self.pair(family.user_id, family.id, successor, now));
        }
        let audit = [AuditEvent::new(
            crate::SERVICE_NAME,
            "auth.token_family.revoked",
            format!("user/{}", family.user_id),
            Outcome::Success,
        )
        .request(ctx, self.source(ctx).await)
        .meta("reason", "refresh_token_reuse")
        .meta("family_id", family.id.to_string())
        .message()];
        self.revoke(family, now, "refresh token reuse", &audit)
            .await?;
        Err(Error::unauthenticated(INVALID_REFRESH))
    }
}

#[async_trait]
impl AuthServiceClient for AuthCore {
    async fn login(
        &self,
        ctx: &RequestContext,
        email: &str,
        password: Secret<String>,
    ) -> Result<TokenResponse> {
        let account = email.trim().to_ascii_lowercase();
        let source = self.source(ctx).await;
        if let Verdict::Wait(wait) = self.throttle.check(&account, source).await {
            tracing::info!(
                event = "auth.login.throttled",
                ?source,
                wait_secs = wait.as_secs(),
                "sign-in throttled"
            );
            self.record_alone(
                AuditEvent::new(
                    "anonymous",
                    "auth.login",
                    account_resource(&account),
                    Outcome::Denied,
                )
                .request(ctx, source)
                .meta("reason", "throttled")
                .meta("retry_after_secs", wait.as_secs()),
            )
            .await;
            // As long as a real check would take: the timing must not tell that it was not.
            tokio::time::sleep(self.check_time.typical()).await;
            return Err(Error::unauthenticated(SIGN_IN_FAILED));
        }
        // Only the request id travels on; the end user's credentials go in the message.
        let upstream = RequestContext {
            request_id: ctx.request_id.clone(),
            deadline: ctx.deadline,
            ..Default::default()
        };
        // The identity client enforces its configured deadline (clients.identity.timeout).
        let started = Instant::now();
        let verified = self
            .identity
            .verify_credentials(&upstream, email, password)
            .await;
        if matches!(
            &verified,
            Ok(_)
                | Err(Error {
                    code: ErrorCode::Unauthenticated,
                    ..
                })
        ) {
            self.check_time.record(started.elapsed());
        }
        let user = match verified {
            Ok(user) => user,
            Err(e)
                if matches!(
                    e.code,
                    ErrorCode::Unauthenticated | ErrorCode::InvalidArgument
                ) =>
            {
                self.throttle.failure(&account, source).await;
                tracing::info!(event = "auth.login.failed", ?source, "sign-in failed");
                self.record_alone(
                    AuditEvent::new(
                        "anonymous",
                        "auth.login",
                        account_resource(&account),
                        Outcome::Failure,
                    )
                    .request(ctx, source)
                    .meta("reason", "invalid_credentials"),
                )
                .await;
                return Err(Error::unauthenticated(SIGN_IN_FAILED));
            }
            Err(e) => {
                tracing::warn!(error = %e, "identity unavailable for sign-in");
                return Err(Error::unavailable("sign-in is temporarily unavailable"));
            }
        };
        self.throttle.success(&account, source).await;
        let now = now();
        let family = Family {
            id: Uuid::now_v7(),
            user_id: user.id,
            created_at: now,
            expires_at: now + chrono(self.cfg.refresh.absolute_lifetime),
            last_used_at: now,
            revoked_at: None,
        };
        let (refresh, refresh_hash) = new_refresh_token()?;
        let first = RefreshRow {
            token_hash: refresh_hash,
            family_id: family.id,
            created_at: now,
            spent_at: None,
            successor_hash: None,
            successor_sealed: None,
        };
        let mut audit = vec![
            AuditEvent::new(
                user.id.to_string(),
                "auth.login",
                format!("user/{}", user.id),
                Outcome::Success,
            )
            .request(ctx, source)
            .meta("family_id", family.id.to_string())
            .message(),
        ];
        audit.extend(self.session_event(events::SESSION_STARTED, user.id, family.id, "", now));
        self.store
            .create_family(&family, &first, &audit)
            .await
            .map_err(|e| e.into_error("creating sign-in"))?;
        self.outbox.wake();
        tracing::info!(event = "auth.login.succeeded", user_id = %user.id, family_id = %family.id, "signed in");
        Ok(self.pair(user.id, family.id, refresh, now))
    }

    async fn refresh_token(
        &self,
        ctx: &RequestContext,
        refresh_token: Secret<String>,
    ) -> Result<TokenResponse> {
        let token = refresh_token.expose().trim();
        if token.len() != REFRESH_TOKEN_CHARS || URL_SAFE_NO_PAD.decode(token).is_err() {
            return Err(Error::unauthenticated(INVALID_REFRESH));
        }
        let presented = hash(token);
        // Two rounds at most: a lost race for the same token is answered like a replay.
        for _ in 0..2 {
            let now = now();
            let Some((row, family)) = self
                .store
                .refresh_token(&presented)
                .await
                .map_err(|e| e.into_error("reading refresh token"))?
            else {
                return Err(Error::unauthenticated(INVALID_REFRESH));
            };
            if !self.family_usable(&family, now) {
                return Err(Error::unauthenticated(INVALID_REFRESH));
            }
            if row.spent_at.is_some() {
                return self.replay(ctx, &row, &family, now).await;
            }
            let (next, next_hash) = new_refresh_token()?;
            let sealed = self
                .keys
                .sealer()
                .seal(&Self::sealing_context(family.id), next.as_bytes())
                .map_err(|e| Error::internal("sealing refresh token", &e))?;
            let new_row = RefreshRow {
                token_hash: next_hash,
                family_id: family.id,
                created_at: now,
                spent_at: None,
                successor_hash: None,
                successor_sealed: None,
            };
            if self
                .store
                .spend_refresh_token(&presented, &new_row, &sealed, now)
                .await
                .map_err(|e| e.into_error("rotating refresh token"))?
            {
                return Ok(self.pair(family.user_id, family.id, next, now));
            }
        }
        Err(Error::unauthenticated(INVALID_REFRESH))
    }

    async fn validate_token(&self, ctx: &RequestContext, token: &str) -> Result<TokenClaims> {
        self.guard.caller(ctx).await?;
        let claims = self.keys.verifier().verify(token).await?;
        if self
            .store
            .is_access_token_denied(&claims.jti)
            .await
            .map_err(|e| e.into_error("checking revoked tokens"))?
        {
            return Err(Error::unauthenticated("invalid or expired token"));
        }
        Ok(claims)
    }

    async fn logout(
        &self,
        ctx: &RequestContext,
        refresh_token: Option<Secret<String>>,
        access_token: Option<Secret<String>>,
    ) -> Result<()> {
        // The caller's own access token (Authorization: Bearer) is the one signing out
        // when the body names none.
        let access_token =
            access_token.or_else(|| ctx.bearer_token().map(|t| Secret::new(t.to_owned())));
        if refresh_token.is_none() && access_token.is_none() {
            return Err(Error::invalid(
                "refresh_token",
                "give a refresh token, an access token, or both",
            ));
        }
        let now = now();
        let family = match refresh_token {
            Some(rt) => self
                .store
                .refresh_token(&hash(rt.expose().trim()))
                .await
                .map_err(|e| e.into_error("reading refresh token"))?
                .map(|(_, family)| family),
            None => None,
        };
        // An invalid or expired access token needs no revocation; logout still succeeds, and
        // says nothing about which tokens were valid.
        let claims = match access_token {
            Some(at) => self.keys.verifier().verify(at.expose()).await.ok(),
            None => None,
        };
        let user = family
            .as_ref()
            .map(|f| f.user_id.to_string())
            .or_else(|| claims.as_ref().map(|c| c.sub.clone()));
        // One record, committed with the first change the logout makes (or alone).
        let mut record = Some(
            AuditEvent::new(
                user.clone().unwrap_or_else(|| "anonymous".to_owned()),
                "auth.logout",
                user.map(|u| format!("user/{u}")).unwrap_or_default(),
                Outcome::Success,
            )
            .request(ctx, self.source(ctx).await)
            .meta("family_revoked", family.is_some())
            .meta("access_token_revoked", claims.is_some()),
        );
        if let Some(family) = &family {
            let audit = [record.as_ref().map(AuditEvent::message)];
            let audit: Vec<Message> = audit.into_iter().flatten().collect();
            if self.revoke(family, now, "logout", &audit).await? {
                record = None;
            }
        }
        if let Some(claims) = claims {
            let exp = DateTime::from_timestamp(claims.exp, 0).unwrap_or(now);
            let audit: Vec<Message> = record.take().map(|r| r.message()).into_iter().collect();
            self.store
                .deny_access_token(&claims.jti, exp, &audit)
                .await
                .map_err(|e| e.into_error("revoking access token"))?;
            // The token's whole session ends with it: its refresh token and every other
            // access token it was given.
            if let Ok(sid) = Uuid::parse_str(&claims.sid) {
                self.store
                    .revoke_family(sid, now, "logout", self.revoked_until(now), &[])
                    .await
                    .map_err(|e| e.into_error("ending the session"))?;
            }
            self.revocations_changed.notify_one();
            self.outbox.wake();
            tracing::info!(event = "auth.access_token.revoked", user_id = %claims.sub, "access token revoked");
        }
        if let Some(r) = record {
            self.record_alone(r).await;
        }
        Ok(())
    }

    async fn issue_service_token(
        &self,
        ctx: &RequestContext,
        service: &str,
        secret: Secret<String>,
        audience: &str,
    ) -> Result<ServiceToken> {
        if !valid_service_name(audience) {
            return Err(Error::invalid(
                "audience",
                "must be a service name: 1-64 characters of a-z, 0-9 and '-', starting with a letter",
            ));
        }
        let presented: [u8; 32] = Sha256::digest(secret.expose().as_bytes()).into();
        // Compare against a dummy when the service is unknown, so both refusals cost the same.
        let (known, expected) = match self.service_accounts.get(service) {
            Some(h) => (true, *h),
            None => (false, [0u8; 32]),
        };
        let matches: bool = presented[..].ct_eq(&expected[..]).into();
        let record = |outcome: Outcome| {
            AuditEvent::new(
                service.chars().take(64).collect::<String>(),
                "auth.service_token.issue",
                format!("service/{audience}"),
                outcome,
            )
        };
        if !(known && matches) {
            tracing::warn!(event = "auth.service_token.refused", service = %service.chars().take(64).collect::<String>(), "service token refused: unknown service or wrong secret");
            self.record_alone(
                record(Outcome::Denied)
                    .request(ctx, self.source(ctx).await)
                    .meta("reason", "invalid_credentials"),
            )
            .await;
            return Err(Error::unauthenticated("invalid service credentials"));
        }
        let ttl = self.cfg.service_token_ttl;
        let token = plt_authn::sign_service_token(
            &self.keys.signer(),
            &self.cfg.issuer,
            service,
            audience,
            ttl,
        );
        self.record_alone(
            record(Outcome::Success)
                .request(ctx, self.source(ctx).await)
                .meta("ttl_secs", ttl.as_secs()),
        )
        .await;
        Ok(ServiceToken {
            token: Secret::new(token),
            expires_in: u32::try_from(ttl.as_secs()).unwrap_or(u32::MAX),
        })
    }

    async fn end_user_sessions(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        reason: &str,
    ) -> Result<u32> {
        // Identity only (also enforced by the runtime's guard; kept for in-process callers).
        self.guard.require_one_of(ctx, &["identity"]).await?;
        let reason = match reason {
            "password_reset" | "user_disabled" | "user_deleted" => reason,
            "" => "ended by identity",
            _ => {
                return Err(Error::invalid(
                    "reason",
                    "must be password_reset, user_disabled or user_deleted",
                ));
            }
        };
        let ended = self.end_sessions_of(user_id, reason).await?;
        Ok(u32::try_from(ended).unwrap_or(u32::MAX))
    }

    async fn get_jwks(&self, _ctx: &RequestContext) -> Result<Jwks> {
        self.keys.verifier().config();
        let jwks = Jwks {
            keys: self
                .keys
                .keys()
                .iter()
                .filter(|r| r.remove_after.is_none_or(|t| t > now()))
                .map(|r| plt_contracts::auth::Jwk {
                    kty: "OKP".into(),
                    crv: "Ed25519".into(),
                    x: r.public_x.clone(),
                    y: String::new(),
                    kid: r.kid.clone(),
                    alg: plt_authn::ALGORITHM.into(),
                    use_: "sig".into(),
                })
                .collect(),
        };
        Ok(jwks)
    }
}

/// Auth's own service credentials: it signs its service tokens itself (for its calls to
/// identity), reusing each until half its lifetime has passed.
pub struct LocalCredentials {
    keys: Arc<KeyRing>,
    issuer: String,
    ttl: std::time::Duration,
    cache: Mutex<HashMap<String, (Secret<String>, Instant)>>,
}

impl LocalCredentials {
    pub fn new(keys: Arc<KeyRing>, cfg: &AuthConfig) -> Self {
        Self {
            keys,
            issuer: cfg.issuer.clone(),
            ttl: cfg.service_token_ttl,
            cache: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl ServiceCredentials for LocalCredentials {
    fn service(&self) -> &str {
        crate::SECTION
    }

    async fn token(&self, audience: &str) -> Result<Secret<String>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, renew_at)) = cache.get(audience)
            && Instant::now() < *renew_at
        {
            return Ok(t.clone());
        }
        let token = Secret::new(plt_authn::sign_service_token(
            &self.keys.signer(),
            &self.issuer,
            crate::SECTION,
            audience,
            self.ttl,
        ));
        cache.insert(
            audience.to_owned(),
            (token.clone(), Instant::now() + self.ttl / 2),
        );
        Ok(token)
    }
}
