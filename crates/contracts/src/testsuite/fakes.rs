//! Fakes of the contracts, for services whose tests need a peer without running it.

use crate::{
    Error, RequestContext, Result,
    identity::{
        IdentityServiceClient, NewUser, PageRequest, User, UserPage, UserStatus, UserUpdate,
    },
};
use async_trait::async_trait;
use chrono::Utc;
use plt_kernel::Secret;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};
use uuid::Uuid;

/// An in-memory identity: users with plain-text passwords (test data only). Implements only
/// what other services call: user reads and `verify_credentials`.
#[derive(Clone, Default)]
pub struct FakeIdentity {
    users: Arc<Mutex<HashMap<String, (User, String)>>>,
    /// How long each `verify_credentials` takes (as a real password hash check would).
    verify_delay: Arc<Mutex<std::time::Duration>>,
}

impl FakeIdentity {
    /// Makes every `verify_credentials` take `d`.
    pub fn set_verify_delay(&self, d: std::time::Duration) {
        *self.verify_delay.lock().unwrap() = d;
    }

    /// Adds an active user and returns it.
    pub fn add_user(&self, email: &str, password: &str) -> User {
        let now = Utc::now();
        let user = User {
            id: Uuid::now_v7(),
            email: email.to_owned(),
            display_name: email.split('@').next().unwrap_or(email).to_owned(),
            status: UserStatus::Active,
            email_verified: true,
            created_at: now,
            updated_at: now,
        };
        self.users.lock().unwrap().insert(
            email.to_ascii_lowercase(),
            (user.clone(), password.to_owned()),
        );
        user
    }

    pub fn set_status(&self, email: &str, status: UserStatus) {
        if let Some((u, _)) = self
            .users
            .lock()
            .unwrap()
            .get_mut(&email.to_ascii_lowercase())
        {
            u.status = status;
        }
    }
}

fn unsupported() -> Error {
    Error::new(
        crate::ErrorCode::Unimplemented,
        "not supported by FakeIdentity",
    )
}

#[async_trait]
impl IdentityServiceClient for FakeIdentity {
    async fn get_user(&self, _ctx: &RequestContext, id: Uuid) -> Result<User> {
        self.users
            .lock()
            .unwrap()
            .values()
            .find(|(u, _)| u.id == id)
            .map(|(u, _)| u.clone())
            .ok_or_else(|| Error::not_found("user"))
    }

    async fn get_user_by_email(&self, _ctx: &RequestContext, email: &str) -> Result<User> {
        self.users
            .lock()
            .unwrap()
            .get(&email.to_ascii_lowercase())
            .map(|(u, _)| u.clone())
            .ok_or_else(|| Error::not_found("user"))
    }

    async fn list_users(&self, _ctx: &RequestContext, _page: PageRequest) -> Result<UserPage> {
        Err(unsupported())
    }

    async fn create_user(&self, _ctx: &RequestContext, _user: NewUser) -> Result<User> {
        Err(unsupported())
    }

    async fn update_user(
        &self,
        _ctx: &RequestContext,
        _id: Uuid,
        _update: UserUpdate,
    ) -> Result<User> {
        Err(unsupported())
    }

    async fn delete_user(&self, _ctx: &RequestContext, _id: Uuid) -> Result<()> {
        Err(unsupported())
    }

    async fn verify_email(&self, _ctx: &RequestContext, _token: &str) -> Result<()> {
        Err(unsupported())
    }

    async fn request_password_reset(&self, _ctx: &RequestContext, _email: &str) -> Result<()> {
        Err(unsupported())
    }

    async fn reset_password(
        &self,
        _ctx: &RequestContext,
        _token: &str,
        _new: Secret<String>,
    ) -> Result<()> {
        Err(unsupported())
    }

    async fn verify_credentials(
        &self,
        _ctx: &RequestContext,
        email: &str,
        password: Secret<String>,
    ) -> Result<User> {
        let delay = *self.verify_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let users = self.users.lock().unwrap();
        match users.get(&email.trim().to_ascii_lowercase()) {
            Some((u, pw)) if pw == password.expose() && u.status == UserStatus::Active => {
                Ok(u.clone())
            }
            _ => Err(Error::unauthenticated("invalid e-mail or password")),
        }
    }
}

/// An in-memory authz: `grant(user, permission)` and the checks; admin calls unsupported.
#[derive(Clone, Default)]
pub struct FakeAuthz {
    grants: Arc<Mutex<std::collections::HashSet<(Uuid, String)>>>,
    /// When set, every check answers Unavailable (authz down).
    pub down: Arc<std::sync::atomic::AtomicBool>,
    /// The service token each `authorize` call carried (like authz, checks need one).
    service_tokens: Arc<Mutex<Vec<Option<String>>>>,
    /// Registered permissions: name -> owning service.
    registered: Arc<Mutex<std::collections::BTreeMap<String, String>>>,
    /// Resource grants: (resource, user, grant).
    resources: Arc<Mutex<std::collections::BTreeSet<(String, Uuid, String)>>>,
    /// Relations implying a permission, as registered: permission -> relations.
    relations: Arc<Mutex<std::collections::HashMap<String, Vec<String>>>>,
}

impl FakeAuthz {
    /// The permissions registered so far (name -> owning service).
    pub fn registered(&self) -> std::collections::BTreeMap<String, String> {
        self.registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The service token of every `authorize` call so far, in order.
    pub fn service_tokens(&self) -> Vec<Option<String>> {
        self.service_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn grant(&self, user: Uuid, permission: &str) {
        self.grants
            .lock()
            .unwrap()
            .insert((user, permission.to_owned()));
    }

    fn check(&self, user: Uuid, permission: &str) -> Result<bool> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::unavailable("authz down"));
        }
        Ok(self
            .grants
            .lock()
            .unwrap()
            .contains(&(user, permission.to_owned())))
    }
}

#[async_trait]
impl crate::authz::AuthzServiceClient for FakeAuthz {
    async fn authorize(&self, ctx: &RequestContext, user_id: Uuid, permission: &str) -> Result<()> {
        self.service_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ctx.service_token.as_ref().map(|t| t.expose().clone()));
        if self.check(user_id, permission)? {
            Ok(())
        } else {
            Err(Error::new(
                crate::ErrorCode::PermissionDenied,
                "permission denied",
            ))
        }
    }

    async fn has_permission(
        &self,
        _ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
    ) -> Result<bool> {
        self.check(user_id, permission)
    }

    async fn get_user_permissions(
        &self,
        _ctx: &RequestContext,
        _user_id: Uuid,
    ) -> Result<Vec<crate::authz::Permission>> {
        Err(unsupported())
    }

    async fn get_user_roles(&self, _ctx: &RequestContext, _user_id: Uuid) -> Result<Vec<String>> {
        Err(unsupported())
    }

    async fn list_roles(&self, _ctx: &RequestContext) -> Result<Vec<crate::authz::Role>> {
        Err(unsupported())
    }

    async fn register_permissions(
        &self,
        _ctx: &RequestContext,
        service: &str,
        permissions: Vec<crate::authz::Permission>,
    ) -> Result<()> {
        let mut registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        let mut relations = self.relations.lock().unwrap_or_else(|p| p.into_inner());
        for p in permissions {
            relations.insert(p.name.clone(), p.relations);
            registered.insert(p.name, service.to_owned());
        }
        Ok(())
    }

    async fn create_role(
        &self,
        _ctx: &RequestContext,
        _role: crate::authz::Role,
    ) -> Result<crate::authz::Role> {
        Err(unsupported())
    }

    async fn delete_role(&self, _ctx: &RequestContext, _name: &str) -> Result<()> {
        Err(unsupported())
    }

    async fn set_role_permissions(
        &self,
        _ctx: &RequestContext,
        _name: &str,
        _permissions: Vec<String>,
    ) -> Result<crate::authz::Role> {
        Err(unsupported())
    }

    async fn grant_role(&self, _ctx: &RequestContext, _user_id: Uuid, _role: &str) -> Result<()> {
        Err(unsupported())
    }

    async fn revoke_role(&self, _ctx: &RequestContext, _user_id: Uuid, _role: &str) -> Result<()> {
        Err(unsupported())
    }

    async fn check(
        &self,
        _ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
        resource: &str,
    ) -> Result<bool> {
        crate::authz::validate_resource("resource", resource)?;
        if self.check(user_id, permission)? {
            return Ok(true);
        }
        let implied = self
            .relations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(permission)
            .cloned()
            .unwrap_or_default();
        let grants = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        Ok(grants.iter().any(|(r, u, g)| {
            r == resource && *u == user_id && (g == permission || implied.contains(g))
        }))
    }

    async fn grant_resource(
        &self,
        _ctx: &RequestContext,
        grant: crate::authz::ResourceGrant,
    ) -> Result<bool> {
        crate::authz::validate_resource("resource", &grant.resource)?;
        crate::authz::validate_grant("grant", &grant.grant)?;
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::unavailable("authz down"));
        }
        Ok(self
            .resources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((grant.resource, grant.user_id, grant.grant)))
    }

    async fn revoke_resource(
        &self,
        _ctx: &RequestContext,
        grant: crate::authz::ResourceGrant,
    ) -> Result<bool> {
        crate::authz::validate_resource("resource", &grant.resource)?;
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::unavailable("authz down"));
        }
        let mut all = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        let before = all.len();
        all.retain(|(r, u, g)| {
            !(*r == grant.resource
                && *u == grant.user_id
                && (grant.grant.is_empty() || *g == grant.grant))
        });
        Ok(all.len() != before)
    }

    async fn list_resource_grants(
        &self,
        _ctx: &RequestContext,
        filter: crate::authz::ResourceGrantFilter,
    ) -> Result<Vec<crate::authz::ResourceGrant>> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::unavailable("authz down"));
        }
        let all = self.resources.lock().unwrap_or_else(|p| p.into_inner());
        Ok(all
            .iter()
            .filter(|(r, u, _)| {
                filter.user_id.is_none_or(|f| f == *u)
                    && filter.resource.as_ref().is_none_or(|f| f == r)
            })
            .map(|(r, u, g)| crate::authz::ResourceGrant {
                user_id: *u,
                resource: r.clone(),
                grant: g.clone(),
                granted_by: String::new(),
            })
            .collect())
    }
}

/// An auth service that only issues service tokens: to every service whose secret is its
/// development secret (`dev-<service>-service-secret`), as the opaque token
/// `svc:<service>:<audience>`. Records what it issued.
#[derive(Clone, Default)]
pub struct FakeAuth {
    issued: Arc<Mutex<Vec<(String, String)>>>,
    ended: Arc<Mutex<Vec<(uuid::Uuid, String)>>>,
    /// EndUserSessions answers `unavailable` while set (auth down).
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl FakeAuth {
    /// Makes EndUserSessions fail as unavailable (`true`) or work again.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }

    /// `(user, reason)` of every EndUserSessions call, in order.
    pub fn sessions_ended(&self) -> Vec<(uuid::Uuid, String)> {
        self.ended.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `(service, audience)` of every token issued, in order.
    pub fn issued(&self) -> Vec<(String, String)> {
        self.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

fn fake_unimplemented<T>() -> Result<T> {
    Err(Error::new(
        crate::ErrorCode::Unimplemented,
        "FakeAuth issues service tokens only",
    ))
}

#[async_trait]
impl crate::auth::AuthServiceClient for FakeAuth {
    async fn login(
        &self,
        _ctx: &RequestContext,
        _email: &str,
        _password: Secret<String>,
    ) -> Result<crate::auth::TokenResponse> {
        fake_unimplemented()
    }

    async fn refresh_token(
        &self,
        _ctx: &RequestContext,
        _refresh_token: Secret<String>,
    ) -> Result<crate::auth::TokenResponse> {
        fake_unimplemented()
    }

    async fn validate_token(
        &self,
        _ctx: &RequestContext,
        _token: &str,
    ) -> Result<crate::auth::TokenClaims> {
        fake_unimplemented()
    }

    async fn logout(
        &self,
        _ctx: &RequestContext,
        _refresh_token: Option<Secret<String>>,
        _access_token: Option<Secret<String>>,
    ) -> Result<()> {
        fake_unimplemented()
    }

    async fn get_jwks(&self, _ctx: &RequestContext) -> Result<crate::auth::Jwks> {
        fake_unimplemented()
    }

    async fn end_user_sessions(
        &self,
        _ctx: &RequestContext,
        user_id: uuid::Uuid,
        reason: &str,
    ) -> Result<u32> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::unavailable("auth is down (FakeAuth)"));
        }
        self.ended
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((user_id, reason.to_owned()));
        Ok(1)
    }

    async fn issue_service_token(
        &self,
        _ctx: &RequestContext,
        service: &str,
        secret: Secret<String>,
        audience: &str,
    ) -> Result<crate::service_identity::ServiceToken> {
        if secret.expose() != &format!("dev-{service}-service-secret") {
            return Err(Error::unauthenticated("invalid service credentials"));
        }
        self.issued
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((service.to_owned(), audience.to_owned()));
        Ok(crate::service_identity::ServiceToken {
            token: Secret::new(format!("svc:{service}:{audience}")),
            expires_in: 300,
        })
    }
}

/// An in-memory audit log: keeps every recorded entry (an id it holds is not kept twice, as
/// the real service does) and can be made to fail (as if audit were down); `query` and
/// `verify` are not supported (read `entries`). For services whose tests check what they
/// audit.
#[derive(Clone, Default)]
pub struct FakeAudit {
    entries: Arc<Mutex<Vec<crate::audit::NewAuditEntry>>>,
    failing: Arc<std::sync::atomic::AtomicBool>,
    attempts: Arc<std::sync::atomic::AtomicU64>,
}

impl FakeAudit {
    /// Makes every `record` fail as unavailable (`true`) or succeed again.
    pub fn set_failing(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every entry kept, in the order recorded.
    pub fn entries(&self) -> Vec<crate::audit::NewAuditEntry> {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `record` calls so far, failed ones included.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits up to `within` for an entry matching `pred`.
    pub async fn wait_for(
        &self,
        within: std::time::Duration,
        pred: impl Fn(&crate::audit::NewAuditEntry) -> bool,
    ) -> Option<crate::audit::NewAuditEntry> {
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(e) = self.entries().into_iter().find(|e| pred(e)) {
                return Some(e);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
}

#[async_trait]
impl crate::audit::AuditServiceClient for FakeAudit {
    async fn record(
        &self,
        _ctx: &RequestContext,
        entry: crate::audit::NewAuditEntry,
    ) -> Result<u64> {
        self.attempts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Error::unavailable("audit unreachable (fake)"));
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(id) = entry.id
            && let Some(i) = entries.iter().position(|e| e.id == Some(id))
        {
            return Ok(i as u64 + 1);
        }
        entries.push(entry);
        Ok(entries.len() as u64)
    }

    async fn query(
        &self,
        _ctx: &RequestContext,
        _filters: crate::audit::AuditQuery,
    ) -> Result<crate::audit::AuditPage> {
        Err(Error::new(
            crate::ErrorCode::Unimplemented,
            "not supported by FakeAudit",
        ))
    }

    async fn verify(&self, _ctx: &RequestContext) -> Result<crate::audit::VerifyReport> {
        Err(Error::new(
            crate::ErrorCode::Unimplemented,
            "not supported by FakeAudit",
        ))
    }
}
