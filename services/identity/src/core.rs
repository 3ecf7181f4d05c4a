//! The identity core: the business rules, implementing the identity contract directly. The
//! gRPC and HTTP servers are thin adapters over it.

use crate::{
    config::IdentityConfig,
    password::Passwords,
    store::{NewToken, StoreError, TokenAction, TokenOutcome, TokenPurpose, UserRecord, UserStore},
    tokens, validate,
};
use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, SubsecRound, Utc};
use plt_authn::{ServiceGuard, Verifier};
use plt_contracts::{
    Error, ErrorCode, RequestContext, Result,
    access::Principal,
    audit::Outcome,
    auth::AuthServiceClient,
    events,
    identity::{
        IdentityServiceClient, MAIL_TOKEN_PREFIX, NewUser, PageRequest, User, UserPage, UserStatus,
        UserUpdate,
    },
};
use plt_kernel::{Secret, notify::Notifier};
use plt_outbox::{Message, Outbox, audit::AuditEvent};
use std::{net::IpAddr, sync::Arc};
use uuid::Uuid;

/// The default page size of `list_users`.
pub const DEFAULT_PAGE_SIZE: u32 = 50;

/// The one message for every failed credential check.
const INVALID_CREDENTIALS: &str = "invalid e-mail or password";

pub struct IdentityCore {
    store: Arc<dyn UserStore>,
    passwords: Passwords,
    notifier: Arc<dyn Notifier>,
    cfg: IdentityConfig,
    guard: ServiceGuard,
    sessions: Sessions,
    verifier: Verifier,
    outbox: Outbox,
    events: plt_events::Publisher,
}

/// Ends a user's sessions at auth (`EndUserSessions`).
#[derive(Clone, Default)]
pub struct Sessions {
    auth: Option<Arc<dyn AuthServiceClient>>,
}

impl Sessions {
    pub fn new(auth: Arc<dyn AuthServiceClient>) -> Self {
        Self { auth: Some(auth) }
    }

    /// Ends them now, or fails (auth unreachable: 503).
    async fn end_now(&self, ctx: &RequestContext, user: Uuid, reason: &str) -> Result<()> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        // As this service: the caller's tokens do not travel to auth.
        let ask = RequestContext {
            request_id: ctx.request_id.clone(),
            deadline: ctx.deadline,
            ..Default::default()
        };
        auth.end_user_sessions(&ask, user, reason)
            .await
            .map(drop)
            .map_err(|e| match e.code {
                ErrorCode::Unavailable | ErrorCode::DeadlineExceeded => {
                    Error::dependency_unavailable("auth", "ending the user's sessions", &e)
                }
                _ => e,
            })
    }

    /// The outbox message that ends them once the transaction it is written in commits:
    /// delivered by the relay of [`SESSIONS_TOPIC`] at once after the commit, and retried
    /// with back-off, across restarts, until auth takes it. `None` without auth (tests).
    fn end_later(&self, user: Uuid, reason: &str) -> Option<Message> {
        self.auth.as_ref()?;
        Some(Message::new(
            SESSIONS_TOPIC,
            serde_json::json!({ "user_id": user, "reason": reason }),
        ))
    }
}

/// The outbox topic of "end this user's sessions" (after a password reset, a disable or a
/// delete), delivered to auth's `EndUserSessions` by [`EndSessions`].
pub const SESSIONS_TOPIC: &str = "sessions";

/// Delivers [`SESSIONS_TOPIC`] messages to auth (`EndUserSessions`, as this service).
pub struct EndSessions {
    auth: Arc<dyn AuthServiceClient>,
    timeout: std::time::Duration,
}

impl EndSessions {
    pub fn new(auth: Arc<dyn AuthServiceClient>, timeout: std::time::Duration) -> Self {
        Self { auth, timeout }
    }
}

#[async_trait]
impl plt_outbox::Destination for EndSessions {
    async fn deliver(
        &self,
        batch: &[plt_outbox::Delivery],
    ) -> Vec<std::result::Result<(), plt_outbox::DeliveryError>> {
        use plt_outbox::DeliveryError;
        let calls = batch.iter().map(|d| async move {
            let user = d.payload["user_id"]
                .as_str()
                .and_then(|u| Uuid::parse_str(u).ok())
                .ok_or_else(|| DeliveryError::Rejected("no user_id".into()))?;
            let reason = d.payload["reason"].as_str().unwrap_or_default();
            let ctx = RequestContext::new().with_timeout(self.timeout);
            match self.auth.end_user_sessions(&ctx, user, reason).await {
                Ok(_) => {
                    tracing::info!(user_id = %user, reason, "sessions ended");
                    Ok(())
                }
                Err(e) if e.code == ErrorCode::InvalidArgument => {
                    Err(DeliveryError::Rejected(e.to_string()))
                }
                Err(e) => Err(DeliveryError::Retry(e.to_string())),
            }
        });
        futures_util::future::join_all(calls).await
    }
}

/// Who did it and from where, for an audit record.
struct Caller<'a> {
    ctx: &'a RequestContext,
    actor: String,
    source: Option<IpAddr>,
}

impl Caller<'_> {
    fn event(&self, action: &str, user: Uuid, outcome: Outcome) -> AuditEvent {
        self.event_by(&self.actor, action, user, outcome)
    }

    /// The same request, with another actor (the user a token proved to be).
    fn event_by(&self, actor: &str, action: &str, user: Uuid, outcome: Outcome) -> AuditEvent {
        AuditEvent::new(actor, action, format!("user/{user}"), outcome)
            .request(self.ctx, self.source)
    }
}

fn store_err(context: &str, e: StoreError) -> Error {
    match e {
        StoreError::Duplicate => {
            Error::already_exists("a user with this e-mail address already exists")
                .with_violation("email", "is already registered")
        }
        StoreError::Db(e) if plt_db::is_unavailable(&e) => {
            Error::dependency_unavailable("the database", context, &e)
        }
        StoreError::Db(e) => Error::internal(context, &e),
    }
}

fn to_user(r: &UserRecord) -> User {
    User {
        id: r.id,
        email: r.email.clone(),
        display_name: r.display_name.clone(),
        status: r.status,
        email_verified: r.email_verified,
        created_at: r.created_at,
        updated_at: r.updated_at,
    }
}

fn invalid_token() -> Error {
    Error::invalid("token", "is invalid, expired or already used")
}

impl IdentityCore {
    /// `verifier` tells who a caller is (for audit records, when the runtime did not);
    /// records go to `outbox`, in the transaction of the change they describe.
    pub fn new(
        store: Arc<dyn UserStore>,
        passwords: Passwords,
        notifier: Arc<dyn Notifier>,
        cfg: IdentityConfig,
        guard: ServiceGuard,
        verifier: Verifier,
        outbox: Outbox,
    ) -> Self {
        Self {
            store,
            passwords,
            notifier,
            cfg,
            guard,
            sessions: Sessions::default(),
            verifier,
            events: plt_events::Publisher::disabled(crate::SERVICE_NAME),
            outbox,
        }
    }

    /// The caller for audit records: the principal the runtime admitted, else the subject
    /// of a verified access token, else `anonymous` (sign-up, password reset); the source
    /// address the gateway states when its service token verifies, else the TCP peer.
    async fn caller<'a>(&self, ctx: &'a RequestContext) -> Caller<'a> {
        let actor = match &ctx.principal {
            Some(Principal::User(id)) | Some(Principal::Service(id)) => id.clone(),
            None => match ctx.bearer_token() {
                Some(t) => match self.verifier.verify(t).await {
                    Ok(claims) => claims.sub,
                    Err(_) => "anonymous".to_owned(),
                },
                None => "anonymous".to_owned(),
            },
        };
        let source = match ctx.client_ip {
            Some(stated) if self.guard.require_one_of(ctx, &["gateway"]).await.is_ok() => {
                Some(stated)
            }
            _ => ctx.peer.map(|p| p.ip()),
        };
        Caller { ctx, actor, source }
    }

    /// A record that describes no change, in a transaction of its own; if even that fails,
    /// it goes to the log at error level (never silently lost).
    async fn record_alone(&self, e: AuditEvent) {
        if let Err(err) = self.outbox.enqueue_alone(&[e.message()]).await {
            tracing::error!(
                event = "identity.audit.unwritten",
                error = %err,
                record = %serde_json::to_string(e.entry()).unwrap_or_default(),
                "audit record not written to the outbox"
            );
        }
    }

    /// This core, ending users' sessions at `sessions` on a password reset, a disable or
    /// a delete.
    pub fn with_sessions(mut self, sessions: Sessions) -> Self {
        self.sessions = sessions;
        self
    }

    /// This core, publishing the users' events (`plt.identity.user.*`) with `events`.
    pub fn with_events(mut self, events: plt_events::Publisher) -> Self {
        self.events = events;
        self
    }

    /// The outbox message of event `t` about `user`, with `data` (none without a bus).
    fn user_event(&self, t: &str, user: Uuid, data: impl serde::Serialize) -> Vec<Message> {
        self.events
            .message(t, &format!("user/{user}"), &user.to_string(), data)
    }

    /// A user event carrying the user as it now is.
    fn user_changed(&self, t: &str, record: &UserRecord, fields: &[&str]) -> Vec<Message> {
        self.user_event(
            t,
            record.id,
            events::UserChanged {
                user: to_user(record),
                changed_fields: fields.iter().map(|f| (*f).to_owned()).collect(),
            },
        )
    }

    fn new_token(&self, user: &UserRecord, purpose: TokenPurpose) -> Result<(String, NewToken)> {
        let (secret, hash) = tokens::generate()?;
        let ttl = match purpose {
            TokenPurpose::VerifyEmail => self.cfg.verification_token_ttl,
            TokenPurpose::ResetPassword => self.cfg.reset_token_ttl,
        };
        let now = now();
        let ttl =
            chrono::Duration::from_std(ttl).map_err(|e| Error::internal("token lifetime", &e))?;
        Ok((
            secret,
            NewToken {
                hash,
                user_id: user.id,
                purpose,
                email_normalized: user.email_normalized.clone(),
                created_at: now,
                expires_at: now + ttl,
            },
        ))
    }

    /// Sends a token mail. A failure is logged, not returned: the state change it follows is
    /// committed, and the user can ask again (a new reset, or a new verification by updating
    /// the address).
    async fn mail_token(&self, to: &str, purpose: TokenPurpose, secret: &str) {
        let (subject, link, ttl) = match purpose {
            TokenPurpose::VerifyEmail => (
                "Verify your e-mail address",
                &self.cfg.verification_link,
                self.cfg.verification_token_ttl,
            ),
            TokenPurpose::ResetPassword => (
                "Reset your password",
                &self.cfg.reset_link,
                self.cfg.reset_token_ttl,
            ),
        };
        let link = link.replace("{token}", secret);
        let body = format!(
            "{subject}: open {link}\n\n{MAIL_TOKEN_PREFIX}{secret}\n\nIt is valid for {} and can be used once. \
             If you did not ask for this, ignore this message.\n",
            humanize(ttl)
        );
        if let Err(e) = self.notifier.send(to, subject, &body).await {
            tracing::error!(error = %e, ?purpose, "could not send mail");
        }
    }

    async fn find_by_email(&self, raw: &str) -> Result<Option<UserRecord>> {
        let (_, normalized) = validate::email("email", raw)?;
        self.store
            .get_user_by_email(&normalized)
            .await
            .map_err(|e| store_err("looking up user by e-mail", e))
    }
}

/// The current time at the precision every store keeps (PostgreSQL: microseconds), so that
/// what `create_user` returns equals what a later read returns.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn humanize(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s.is_multiple_of(3600) {
        format!("{} hour(s)", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{} minute(s)", s / 60)
    } else {
        format!("{s} second(s)")
    }
}

#[async_trait]
impl IdentityServiceClient for IdentityCore {
    async fn get_user(&self, _ctx: &RequestContext, id: Uuid) -> Result<User> {
        let user = self
            .store
            .get_user(id)
            .await
            .map_err(|e| store_err("reading user", e))?
            .ok_or_else(|| Error::not_found("user"))?;
        Ok(to_user(&user))
    }

    async fn get_user_by_email(&self, _ctx: &RequestContext, email: &str) -> Result<User> {
        let user = self
            .find_by_email(email)
            .await?
            .ok_or_else(|| Error::not_found("user"))?;
        Ok(to_user(&user))
    }

    async fn list_users(&self, _ctx: &RequestContext, page: PageRequest) -> Result<UserPage> {
        let size = match page.page_size {
            0 => DEFAULT_PAGE_SIZE.min(self.cfg.max_page_size),
            n => n.min(self.cfg.max_page_size),
        };
        let after = match page.page_token.as_deref() {
            None | Some("") => None,
            Some(t) => {
                let bytes = URL_SAFE_NO_PAD
                    .decode(t)
                    .map_err(|_| Error::invalid("page_token", "is malformed"))?;
                Some(
                    Uuid::from_slice(&bytes)
                        .map_err(|_| Error::invalid("page_token", "is malformed"))?,
                )
            }
        };
        // One extra row tells whether another page follows.
        let mut rows = self
            .store
            .list_users(after, size + 1)
            .await
            .map_err(|e| store_err("listing users", e))?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        let next_page_token = if more {
            rows.last().map(|u| URL_SAFE_NO_PAD.encode(u.id.as_bytes()))
        } else {
            None
        };
        Ok(UserPage {
            users: rows.iter().map(to_user).collect(),
            next_page_token,
        })
    }

    async fn create_user(&self, ctx: &RequestContext, new: NewUser) -> Result<User> {
        let (email, email_normalized) = validate::email("email", &new.email)?;
        let display_name = if new.display_name.trim().is_empty() {
            validate::default_display_name(&email)
        } else {
            validate::display_name("display_name", &new.display_name)?
        };
        let local = email_normalized
            .split('@')
            .next()
            .unwrap_or_default()
            .to_owned();
        self.passwords
            .check_policy(&new.password, &[&email_normalized, &local, &display_name])
            .await?;
        // Refuse a taken address before spending a hash on it (the unique index still decides
        // races).
        if self
            .store
            .get_user_by_email(&email_normalized)
            .await
            .map_err(|e| store_err("checking e-mail", e))?
            .is_some()
        {
            return Err(store_err("creating user", StoreError::Duplicate));
        }
        let password_hash = self.passwords.hash(&new.password).await?;
        let now = now();
        let record = UserRecord {
            id: Uuid::now_v7(),
            email,
            email_normalized,
            display_name,
            status: UserStatus::Active,
            email_verified: false,
            password_hash,
            created_at: now,
            updated_at: now,
        };
        let (secret, token) = self.new_token(&record, TokenPurpose::VerifyEmail)?;
        let mut audit = vec![
            self.caller(ctx)
                .await
                .event("identity.user.created", record.id, Outcome::Success)
                .message(),
        ];
        audit.extend(self.user_changed(events::USER_CREATED, &record, &[]));
        self.store
            .insert_user(&record, Some(&token), &audit)
            .await
            .map_err(|e| store_err("creating user", e))?;
        self.outbox.wake();
        tracing::info!(user_id = %record.id, "user created");
        self.mail_token(&record.email, TokenPurpose::VerifyEmail, &secret)
            .await;
        Ok(to_user(&record))
    }

    async fn update_user(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        update: UserUpdate,
    ) -> Result<User> {
        let mut record = self
            .store
            .get_user(id)
            .await
            .map_err(|e| store_err("reading user", e))?
            .ok_or_else(|| Error::not_found("user"))?;
        let mut changed = false;
        let mut email_changed = false;
        // Names of the changed fields (never their values: the log keeps no profile data).
        let mut fields: Vec<&str> = Vec::new();
        if let Some(raw) = &update.email {
            let (email, normalized) = validate::email("email", raw)?;
            if normalized != record.email_normalized {
                record.email_normalized = normalized;
                record.email_verified = false;
                email_changed = true;
            }
            if email != record.email {
                record.email = email;
                changed = true;
                fields.push("email");
            }
        }
        if let Some(name) = &update.display_name {
            let name = validate::display_name("display_name", name)?;
            if name != record.display_name {
                record.display_name = name;
                changed = true;
                fields.push("display_name");
            }
        }
        if let Some(status) = update.status
            && status != record.status
        {
            record.status = status;
            changed = true;
            fields.push("status");
        }
        if !changed {
            return Ok(to_user(&record));
        }
        let disabling = update.status == Some(UserStatus::Disabled);
        if disabling {
            // As for deletion: sessions end before the change and again after it.
            self.sessions
                .end_now(ctx, record.id, "user_disabled")
                .await?;
        }
        record.updated_at = now();
        let token = if email_changed {
            Some(self.new_token(&record, TokenPurpose::VerifyEmail)?)
        } else {
            None
        };
        // A status change is its own event (disabling ends the user's access).
        let action = match (update.status, fields.contains(&"status")) {
            (Some(UserStatus::Disabled), true) => "identity.user.disabled",
            (Some(UserStatus::Active), true) => "identity.user.enabled",
            _ => "identity.user.updated",
        };
        let mut audit = vec![
            self.caller(ctx)
                .await
                .event(action, record.id, Outcome::Success)
                .meta("fields", fields.clone())
                .message(),
        ];
        let event_type = match action {
            "identity.user.disabled" => events::USER_DISABLED,
            "identity.user.enabled" => events::USER_ENABLED,
            _ => events::USER_UPDATED,
        };
        audit.extend(self.user_changed(event_type, &record, &fields));
        if disabling {
            // Again after the change (a sign-in that raced it), durably: with the change.
            audit.extend(self.sessions.end_later(record.id, "user_disabled"));
        }
        let found = self
            .store
            .update_user(&record, token.as_ref().map(|(_, t)| t), &audit)
            .await
            .map_err(|e| store_err("updating user", e))?;
        if !found {
            return Err(Error::not_found("user"));
        }
        self.outbox.wake();
        if let Some((secret, _)) = token {
            self.mail_token(&record.email, TokenPurpose::VerifyEmail, &secret)
                .await;
        }
        Ok(to_user(&record))
    }

    async fn delete_user(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        // Sessions end first (auth unreachable: 503 and nothing deleted), and again after
        // the change for a sign-in that raced it.
        self.store
            .get_user(id)
            .await
            .map_err(|e| store_err("reading user", e))?
            .ok_or_else(|| Error::not_found("user"))?;
        self.sessions.end_now(ctx, id, "user_deleted").await?;
        let mut audit = vec![
            self.caller(ctx)
                .await
                .event("identity.user.deleted", id, Outcome::Success)
                .message(),
        ];
        audit.extend(self.user_event(
            events::USER_DELETED,
            id,
            events::UserDeleted {
                user_id: id,
                deleted_at: now(),
            },
        ));
        audit.extend(self.sessions.end_later(id, "user_deleted"));
        let found = self
            .store
            .delete_user(id, &audit)
            .await
            .map_err(|e| store_err("deleting user", e))?;
        if !found {
            return Err(Error::not_found("user"));
        }
        self.outbox.wake();
        tracing::info!(user_id = %id, "user deleted");
        Ok(())
    }

    async fn verify_email(&self, ctx: &RequestContext, token: &str) -> Result<()> {
        let hash = tokens::parse("token", token)?;
        let caller = self.caller(ctx).await;
        // The token proves who the user is: the record's actor.
        let audit = |user: Uuid| -> Vec<Message> {
            let mut m = vec![
                caller
                    .event_by(
                        &user.to_string(),
                        "identity.email.verified",
                        user,
                        Outcome::Success,
                    )
                    .message(),
            ];
            m.extend(self.user_event(
                events::USER_EMAIL_VERIFIED,
                user,
                events::UserEmailVerified {
                    user_id: user,
                    at: now(),
                },
            ));
            m
        };
        match self
            .store
            .apply_token(
                &hash,
                TokenPurpose::VerifyEmail,
                now(),
                TokenAction::VerifyEmail,
                &audit,
            )
            .await
            .map_err(|e| store_err("verifying e-mail", e))?
        {
            TokenOutcome::Applied(_) => {
                self.outbox.wake();
                Ok(())
            }
            TokenOutcome::Rejected => Err(invalid_token()),
        }
    }

    async fn request_password_reset(&self, ctx: &RequestContext, email: &str) -> Result<()> {
        // The answer is the same whether or not the address is registered; only the mail
        // differs, and only its recipient sees it.
        const ACTION: &str = "identity.password_reset.requested";
        let caller = self.caller(ctx).await;
        let Some(user) = self.find_by_email(email).await? else {
            tracing::info!("password reset requested for an unknown address");
            self.record_alone(
                AuditEvent::new(&caller.actor, ACTION, "", Outcome::Failure)
                    .request(ctx, caller.source)
                    .meta("reason", "unknown_address"),
            )
            .await;
            return Ok(());
        };
        if user.status != UserStatus::Active {
            tracing::info!(user_id = %user.id, "password reset requested for a disabled user");
            self.record_alone(
                caller
                    .event(ACTION, user.id, Outcome::Failure)
                    .meta("reason", "user_disabled"),
            )
            .await;
            return Ok(());
        }
        let (secret, token) = self.new_token(&user, TokenPurpose::ResetPassword)?;
        let audit = [caller.event(ACTION, user.id, Outcome::Success).message()];
        self.store
            .insert_token(&token, &audit)
            .await
            .map_err(|e| store_err("storing reset token", e))?;
        self.outbox.wake();
        self.mail_token(&user.email, TokenPurpose::ResetPassword, &secret)
            .await;
        Ok(())
    }

    async fn reset_password(
        &self,
        ctx: &RequestContext,
        token: &str,
        new_password: Secret<String>,
    ) -> Result<()> {
        let hash = tokens::parse("token", token)?;
        self.passwords.check_policy(&new_password, &[]).await?;
        let password_hash = self.passwords.hash(&new_password).await?;
        let caller = self.caller(ctx).await;
        // A reset ends every session (whoever knew the old password is signed out): the
        // request to auth commits with the new password and is delivered until auth takes it.
        let audit = |user: Uuid| -> Vec<Message> {
            let mut m = vec![
                caller
                    .event_by(
                        &user.to_string(),
                        "identity.password_reset.completed",
                        user,
                        Outcome::Success,
                    )
                    .message(),
            ];
            m.extend(self.sessions.end_later(user, "password_reset"));
            m
        };
        match self
            .store
            .apply_token(
                &hash,
                TokenPurpose::ResetPassword,
                now(),
                TokenAction::SetPassword(password_hash),
                &audit,
            )
            .await
            .map_err(|e| store_err("resetting password", e))?
        {
            TokenOutcome::Applied(_) => {
                self.outbox.wake();
                Ok(())
            }
            TokenOutcome::Rejected => Err(invalid_token()),
        }
    }

    async fn verify_credentials(
        &self,
        ctx: &RequestContext,
        email: &str,
        password: Secret<String>,
    ) -> Result<User> {
        // Internal, and only auth checks passwords (least privilege: a compromised gateway
        // or feature service cannot turn identity into a password oracle).
        self.guard.require_one_of(ctx, &["auth"]).await?;
        let fail = || Error::unauthenticated(INVALID_CREDENTIALS);
        let Ok((_, normalized)) = validate::email("email", email) else {
            self.passwords.verify_dummy(&password).await?;
            return Err(fail());
        };
        if password.expose().chars().count() > 4096 {
            return Err(fail());
        }
        let user = self
            .store
            .get_user_by_email(&normalized)
            .await
            .map_err(|e| store_err("looking up user", e))?;
        let Some(user) = user else {
            self.passwords.verify_dummy(&password).await?;
            return Err(fail());
        };
        let ok = self
            .passwords
            .verify(&password, &user.password_hash)
            .await?;
        if !ok || user.status != UserStatus::Active {
            return Err(fail());
        }
        Ok(to_user(&user))
    }
}
