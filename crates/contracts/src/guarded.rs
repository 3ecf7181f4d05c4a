//! The core contracts' per-method access rules, and their implementations behind an
//! [`AccessGuard`]: what the runtime serves over gRPC and HTTP, so each core service
//! authorizes every call itself — not only behind the gateway.
//!
//! A `Guarded*` implements the contract trait by asking the guard with the method's rule
//! (and, for an own-resource rule, the id the request names) before the core runs, and
//! hands the core the context with the admitted [`Principal`](crate::access::Principal).
//! The cores keep the checks only they can make (authz's admin methods read
//! `authz.roles.manage` from its own database and audit denials; `VerifyCredentials`
//! admits only auth).

use crate::{
    Error, ErrorCode, RequestContext, Result,
    access::{Access, AccessGuard, MethodAccess},
    audit::{AuditPage, AuditQuery, AuditServiceClient, NewAuditEntry, VerifyReport},
    auth::{AuthServiceClient, Jwks, TokenClaims, TokenResponse},
    authz::{AuthzServiceClient, Permission, ResourceGrant, ResourceGrantFilter, Role},
    identity::{IdentityServiceClient, NewUser, PageRequest, User, UserPage, UserUpdate},
    service_identity::ServiceToken,
};
use async_trait::async_trait;
use plt_kernel::Secret;
use std::sync::Arc;
use uuid::Uuid;

const fn rule(method: &'static str, access: Access) -> MethodAccess {
    MethodAccess { method, access }
}

const ANY_SERVICE: Access = Access::Services(&["*"]);

/// identity's methods and who may call them.
pub const IDENTITY_METHODS: &[MethodAccess] = &[
    rule(
        "GetUser",
        Access::Owner {
            field: "id",
            permission: Some("identity.users.read"),
        },
    ),
    rule("GetUserByEmail", Access::Permission("identity.users.read")),
    rule("ListUsers", Access::Permission("identity.users.read")),
    // Sign-up.
    rule("CreateUser", Access::Public),
    rule(
        "UpdateUser",
        Access::Owner {
            field: "id",
            permission: Some("identity.users.manage"),
        },
    ),
    rule("DeleteUser", Access::Permission("identity.users.manage")),
    rule("VerifyEmail", Access::Public),
    rule("RequestPasswordReset", Access::Public),
    rule("ResetPassword", Access::Public),
    rule("VerifyCredentials", Access::Services(&["auth"])),
];

/// auth's methods: signing in is what gives a caller credentials, so it is public.
pub const AUTH_METHODS: &[MethodAccess] = &[
    rule("Login", Access::Public),
    rule("RefreshToken", Access::Public),
    rule("ValidateToken", ANY_SERVICE),
    rule("Logout", Access::Public),
    rule("GetJwks", Access::Public),
    // Authenticated by the service's own secret.
    rule("IssueServiceToken", Access::Public),
    rule("EndUserSessions", Access::Services(&["identity"])),
];

/// authz's methods. The role administration methods need a signed-in user here; whether
/// that user holds `authz.roles.manage` authz decides from its database (a revoked admin
/// stops at once) and audits a refusal.
pub const AUTHZ_METHODS: &[MethodAccess] = &[
    rule("Authorize", ANY_SERVICE),
    rule("HasPermission", ANY_SERVICE),
    rule(
        "GetUserPermissions",
        Access::Owner {
            field: "user_id",
            permission: Some("authz.roles.read"),
        },
    ),
    rule(
        "GetUserRoles",
        Access::Owner {
            field: "user_id",
            permission: Some("authz.roles.read"),
        },
    ),
    rule("ListRoles", Access::Permission("authz.roles.read")),
    rule("RegisterPermissions", ANY_SERVICE),
    rule("CreateRole", Access::Authenticated),
    rule("DeleteRole", Access::Authenticated),
    rule("SetRolePermissions", Access::Authenticated),
    rule("GrantRole", Access::Authenticated),
    rule("RevokeRole", Access::Authenticated),
    // Resource-level permissions: the resource's own service asks and decides who may share.
    rule("Check", ANY_SERVICE),
    rule("GrantResource", ANY_SERVICE),
    rule("RevokeResource", ANY_SERVICE),
    rule("ListResourceGrants", ANY_SERVICE),
];

/// audit's methods.
pub const AUDIT_METHODS: &[MethodAccess] = &[
    rule("Record", ANY_SERVICE),
    rule("Query", Access::Permission("audit.logs.read")),
    rule("Verify", Access::Permission("audit.logs.verify")),
];

/// A contract's rules and the guard that enforces them.
#[derive(Clone)]
struct Gate {
    guard: Arc<dyn AccessGuard>,
    methods: &'static [MethodAccess],
}

impl Gate {
    /// The context the core sees: `ctx` with the admitted principal.
    async fn admit(
        &self,
        ctx: &RequestContext,
        method: &'static str,
        owner: Option<String>,
    ) -> Result<RequestContext> {
        let Some(m) = self.methods.iter().find(|m| m.method == method) else {
            // A method without a rule is never served (fail closed).
            return Err(Error::new(
                ErrorCode::Internal,
                format!("{method} has no access rule"),
            ));
        };
        let principal = self.guard.admit(ctx, m, owner.as_deref()).await?;
        let mut ctx = ctx.clone();
        ctx.principal = principal;
        Ok(ctx)
    }
}

macro_rules! guarded {
    ($(#[$doc:meta])* $name:ident, $trait:path, $methods:expr) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            inner: Arc<dyn $trait>,
            gate: Gate,
        }

        impl $name {
            pub fn new(inner: Arc<dyn $trait>, guard: Arc<dyn AccessGuard>) -> Self {
                Self {
                    inner,
                    gate: Gate {
                        guard,
                        methods: $methods,
                    },
                }
            }
        }
    };
}

guarded!(
    /// identity behind its rules ([`IDENTITY_METHODS`]).
    GuardedIdentity,
    IdentityServiceClient,
    IDENTITY_METHODS
);
guarded!(
    /// auth behind its rules ([`AUTH_METHODS`]).
    GuardedAuth,
    AuthServiceClient,
    AUTH_METHODS
);
guarded!(
    /// authz behind its rules ([`AUTHZ_METHODS`]).
    GuardedAuthz,
    AuthzServiceClient,
    AUTHZ_METHODS
);
guarded!(
    /// audit behind its rules ([`AUDIT_METHODS`]).
    GuardedAudit,
    AuditServiceClient,
    AUDIT_METHODS
);

#[async_trait]
impl IdentityServiceClient for GuardedIdentity {
    async fn get_user(&self, ctx: &RequestContext, id: Uuid) -> Result<User> {
        let ctx = self
            .gate
            .admit(ctx, "GetUser", Some(id.to_string()))
            .await?;
        self.inner.get_user(&ctx, id).await
    }

    async fn get_user_by_email(&self, ctx: &RequestContext, email: &str) -> Result<User> {
        let ctx = self.gate.admit(ctx, "GetUserByEmail", None).await?;
        self.inner.get_user_by_email(&ctx, email).await
    }

    async fn list_users(&self, ctx: &RequestContext, page: PageRequest) -> Result<UserPage> {
        let ctx = self.gate.admit(ctx, "ListUsers", None).await?;
        self.inner.list_users(&ctx, page).await
    }

    async fn create_user(&self, ctx: &RequestContext, user: NewUser) -> Result<User> {
        let ctx = self.gate.admit(ctx, "CreateUser", None).await?;
        self.inner.create_user(&ctx, user).await
    }

    async fn update_user(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        update: UserUpdate,
    ) -> Result<User> {
        let ctx = self
            .gate
            .admit(ctx, "UpdateUser", Some(id.to_string()))
            .await?;
        self.inner.update_user(&ctx, id, update).await
    }

    async fn delete_user(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let ctx = self.gate.admit(ctx, "DeleteUser", None).await?;
        self.inner.delete_user(&ctx, id).await
    }

    async fn verify_email(&self, ctx: &RequestContext, token: &str) -> Result<()> {
        let ctx = self.gate.admit(ctx, "VerifyEmail", None).await?;
        self.inner.verify_email(&ctx, token).await
    }

    async fn request_password_reset(&self, ctx: &RequestContext, email: &str) -> Result<()> {
        let ctx = self.gate.admit(ctx, "RequestPasswordReset", None).await?;
        self.inner.request_password_reset(&ctx, email).await
    }

    async fn reset_password(
        &self,
        ctx: &RequestContext,
        token: &str,
        new_password: Secret<String>,
    ) -> Result<()> {
        let ctx = self.gate.admit(ctx, "ResetPassword", None).await?;
        self.inner.reset_password(&ctx, token, new_password).await
    }

    async fn verify_credentials(
        &self,
        ctx: &RequestContext,
        email: &str,
        password: Secret<String>,
    ) -> Result<User> {
        let ctx = self.gate.admit(ctx, "VerifyCredentials", None).await?;
        self.inner.verify_credentials(&ctx, email, password).await
    }
}

#[async_trait]
impl AuthServiceClient for GuardedAuth {
    async fn login(
        &self,
        ctx: &RequestContext,
        email: &str,
        password: Secret<String>,
    ) -> Result<TokenResponse> {
        let ctx = self.gate.admit(ctx, "Login", None).await?;
        self.inner.login(&ctx, email, password).await
    }

    async fn refresh_token(
        &self,
        ctx: &RequestContext,
        refresh_token: Secret<String>,
    ) -> Result<TokenResponse> {
        let ctx = self.gate.admit(ctx, "RefreshToken", None).await?;
        self.inner.refresh_token(&ctx, refresh_token).await
    }

    async fn validate_token(&self, ctx: &RequestContext, token: &str) -> Result<TokenClaims> {
        let ctx = self.gate.admit(ctx, "ValidateToken", None).await?;
        self.inner.validate_token(&ctx, token).await
    }

    async fn logout(
        &self,
        ctx: &RequestContext,
        refresh_token: Option<Secret<String>>,
        access_token: Option<Secret<String>>,
    ) -> Result<()> {
        let ctx = self.gate.admit(ctx, "Logout", None).await?;
        self.inner.logout(&ctx, refresh_token, access_token).await
    }

    async fn get_jwks(&self, ctx: &RequestContext) -> Result<Jwks> {
        let ctx = self.gate.admit(ctx, "GetJwks", None).await?;
        self.inner.get_jwks(&ctx).await
    }

    async fn issue_service_token(
        &self,
        ctx: &RequestContext,
        service: &str,
        secret: Secret<String>,
        audience: &str,
    ) -> Result<ServiceToken> {
        let ctx = self.gate.admit(ctx, "IssueServiceToken", None).await?;
        self.inner
            .issue_service_token(&ctx, service, secret, audience)
            .await
    }

    async fn end_user_sessions(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        reason: &str,
    ) -> Result<u32> {
        let ctx = self.gate.admit(ctx, "EndUserSessions", None).await?;
        self.inner.end_user_sessions(&ctx, user_id, reason).await
    }
}

#[async_trait]
impl AuthzServiceClient for GuardedAuthz {
    async fn authorize(&self, ctx: &RequestContext, user_id: Uuid, permission: &str) -> Result<()> {
        let ctx = self.gate.admit(ctx, "Authorize", None).await?;
        self.inner.authorize(&ctx, user_id, permission).await
    }

    async fn has_permission(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
    ) -> Result<bool> {
        let ctx = self.gate.admit(ctx, "HasPermission", None).await?;
        self.inner.has_permission(&ctx, user_id, permission).await
    }

    async fn get_user_permissions(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
    ) -> Result<Vec<Permission>> {
        let ctx = self
            .gate
            .admit(ctx, "GetUserPermissions", Some(user_id.to_string()))
            .await?;
        self.inner.get_user_permissions(&ctx, user_id).await
    }

    async fn get_user_roles(&self, ctx: &RequestContext, user_id: Uuid) -> Result<Vec<String>> {
        let ctx = self
            .gate
            .admit(ctx, "GetUserRoles", Some(user_id.to_string()))
            .await?;
        self.inner.get_user_roles(&ctx, user_id).await
    }

    async fn list_roles(&self, ctx: &RequestContext) -> Result<Vec<Role>> {
        let ctx = self.gate.admit(ctx, "ListRoles", None).await?;
        self.inner.list_roles(&ctx).await
    }

    async fn register_permissions(
        &self,
        ctx: &RequestContext,
        service: &str,
        permissions: Vec<Permission>,
    ) -> Result<()> {
        let ctx = self.gate.admit(ctx, "RegisterPermissions", None).await?;
        self.inner
            .register_permissions(&ctx, service, permissions)
            .await
    }

    async fn create_role(&self, ctx: &RequestContext, role: Role) -> Result<Role> {
        let ctx = self.gate.admit(ctx, "CreateRole", None).await?;
        self.inner.create_role(&ctx, role).await
    }

    async fn delete_role(&self, ctx: &RequestContext, name: &str) -> Result<()> {
        let ctx = self.gate.admit(ctx, "DeleteRole", None).await?;
        self.inner.delete_role(&ctx, name).await
    }

    async fn set_role_permissions(
        &self,
        ctx: &RequestContext,
        name: &str,
        permissions: Vec<String>,
    ) -> Result<Role> {
        let ctx = self.gate.admit(ctx, "SetRolePermissions", None).await?;
        self.inner
            .set_role_permissions(&ctx, name, permissions)
            .await
    }

    async fn grant_role(&self, ctx: &RequestContext, user_id: Uuid, role: &str) -> Result<()> {
        let ctx = self.gate.admit(ctx, "GrantRole", None).await?;
        self.inner.grant_role(&ctx, user_id, role).await
    }

    async fn revoke_role(&self, ctx: &RequestContext, user_id: Uuid, role: &str) -> Result<()> {
        let ctx = self.gate.admit(ctx, "RevokeRole", None).await?;
        self.inner.revoke_role(&ctx, user_id, role).await
    }

    async fn check(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
        resource: &str,
    ) -> Result<bool> {
        let ctx = self.gate.admit(ctx, "Check", None).await?;
        self.inner.check(&ctx, user_id, permission, resource).await
    }

    async fn grant_resource(&self, ctx: &RequestContext, grant: ResourceGrant) -> Result<bool> {
        let ctx = self.gate.admit(ctx, "GrantResource", None).await?;
        self.inner.grant_resource(&ctx, grant).await
    }

    async fn revoke_resource(&self, ctx: &RequestContext, grant: ResourceGrant) -> Result<bool> {
        let ctx = self.gate.admit(ctx, "RevokeResource", None).await?;
        self.inner.revoke_resource(&ctx, grant).await
    }

    async fn list_resource_grants(
        &self,
        ctx: &RequestContext,
        filter: ResourceGrantFilter,
    ) -> Result<Vec<ResourceGrant>> {
        let ctx = self.gate.admit(ctx, "ListResourceGrants", None).await?;
        self.inner.list_resource_grants(&ctx, filter).await
    }
}

#[async_trait]
impl AuditServiceClient for GuardedAudit {
    async fn record(&self, ctx: &RequestContext, entry: NewAuditEntry) -> Result<u64> {
        let ctx = self.gate.admit(ctx, "Record", None).await?;
        self.inner.record(&ctx, entry).await
    }

    async fn query(&self, ctx: &RequestContext, filters: AuditQuery) -> Result<AuditPage> {
        let ctx = self.gate.admit(ctx, "Query", None).await?;
        self.inner.query(&ctx, filters).await
    }

    async fn verify(&self, ctx: &RequestContext) -> Result<VerifyReport> {
        let ctx = self.gate.admit(ctx, "Verify", None).await?;
        self.inner.verify(&ctx).await
    }
}

/// Every method of every core contract consults the guard under its own name, and every
/// method of the wire contracts (the `.proto`s) has a rule: no method is served unchecked.
#[cfg(all(test, feature = "testsuite"))]
mod tests {
    use super::*;
    use crate::{
        access::Principal,
        audit::{AuditQuery, NewAuditEntry, Outcome},
        testsuite::fakes::{FakeAudit, FakeAuth, FakeAuthz, FakeIdentity},
    };
    use std::{collections::BTreeSet, sync::Mutex};

    /// Refuses everything, remembering what it was asked.
    #[derive(Default)]
    struct Refuse(Mutex<Vec<&'static str>>);

    #[async_trait]
    impl AccessGuard for Refuse {
        async fn admit(
            &self,
            _ctx: &RequestContext,
            method: &MethodAccess,
            _owner: Option<&str>,
        ) -> Result<Option<Principal>> {
            self.0.lock().unwrap().push(method.method);
            Err(Error::new(ErrorCode::PermissionDenied, "refused"))
        }
    }

    fn names(methods: &[MethodAccess]) -> BTreeSet<&'static str> {
        methods.iter().map(|m| m.method).collect()
    }

    fn rpcs(service: &str) -> BTreeSet<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../proto/plt/");
        let mut out = BTreeSet::new();
        for entry in std::fs::read_dir(format!("{dir}{service}/v1")).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            for line in text.lines() {
                if let Some(rest) = line.trim().strip_prefix("rpc ") {
                    out.insert(rest.split('(').next().unwrap().trim().to_owned());
                }
            }
        }
        out
    }

    #[test]
    fn every_rpc_of_the_protos_has_a_rule() {
        for (svc, methods) in [
            ("identity", IDENTITY_METHODS),
            ("auth", AUTH_METHODS),
            ("authz", AUTHZ_METHODS),
            ("audit", AUDIT_METHODS),
        ] {
            let ruled: BTreeSet<String> = names(methods).iter().map(|s| (*s).to_owned()).collect();
            assert_eq!(ruled, rpcs(svc), "{svc}: methods and rules differ");
        }
    }

    #[tokio::test]
    async fn every_method_asks_the_guard_under_its_own_name_and_stops_when_refused() {
        let ctx = RequestContext::new();
        let id = Uuid::now_v7();
        let s = || Secret::new(String::from("x"));

        let guard = Arc::new(Refuse::default());
        let c = GuardedIdentity::new(Arc::new(FakeIdentity::default()), guard.clone());
        let results = [
            c.get_user(&ctx, id).await.map(drop),
            c.get_user_by_email(&ctx, "a@b.c").await.map(drop),
            c.list_users(&ctx, Default::default()).await.map(drop),
            c.create_user(
                &ctx,
                NewUser {
                    email: "a@b.c".into(),
                    password: s(),
                    display_name: String::new(),
                },
            )
            .await
            .map(drop),
            c.update_user(&ctx, id, Default::default()).await.map(drop),
            c.delete_user(&ctx, id).await,
            c.verify_email(&ctx, "t").await,
            c.request_password_reset(&ctx, "a@b.c").await,
            c.reset_password(&ctx, "t", s()).await,
            c.verify_credentials(&ctx, "a@b.c", s()).await.map(drop),
        ];
        assert!(results.iter().all(|r| r.is_err()));
        let asked: BTreeSet<_> = guard.0.lock().unwrap().iter().copied().collect();
        assert_eq!(asked, names(IDENTITY_METHODS));
        assert_eq!(guard.0.lock().unwrap().len(), IDENTITY_METHODS.len());

        let guard = Arc::new(Refuse::default());
        let c = GuardedAuth::new(Arc::new(FakeAuth::default()), guard.clone());
        let results = [
            c.login(&ctx, "a@b.c", s()).await.map(drop),
            c.refresh_token(&ctx, s()).await.map(drop),
            c.validate_token(&ctx, "t").await.map(drop),
            c.logout(&ctx, Some(s()), None).await,
            c.get_jwks(&ctx).await.map(drop),
            c.issue_service_token(&ctx, "gateway", s(), "audit")
                .await
                .map(drop),
            c.end_user_sessions(&ctx, id, "user_deleted")
                .await
                .map(drop),
        ];
        assert!(results.iter().all(|r| r.is_err()));
        let asked: BTreeSet<_> = guard.0.lock().unwrap().iter().copied().collect();
        assert_eq!(asked, names(AUTH_METHODS));

        let guard = Arc::new(Refuse::default());
        let c = GuardedAuthz::new(Arc::new(FakeAuthz::default()), guard.clone());
        let results = [
            c.authorize(&ctx, id, "a.b.c").await,
            c.has_permission(&ctx, id, "a.b.c").await.map(drop),
            c.get_user_permissions(&ctx, id).await.map(drop),
            c.get_user_roles(&ctx, id).await.map(drop),
            c.list_roles(&ctx).await.map(drop),
            c.register_permissions(&ctx, "x", vec![]).await,
            c.create_role(
                &ctx,
                Role {
                    name: "r".into(),
                    description: String::new(),
                    permissions: vec![],
                    built_in: false,
                },
            )
            .await
            .map(drop),
            c.delete_role(&ctx, "r").await,
            c.set_role_permissions(&ctx, "r", vec![]).await.map(drop),
            c.grant_role(&ctx, id, "r").await,
            c.revoke_role(&ctx, id, "r").await,
            c.check(&ctx, id, "a.b.c", "post:1").await.map(drop),
            c.grant_resource(&ctx, Default::default()).await.map(drop),
            c.revoke_resource(&ctx, Default::default()).await.map(drop),
            c.list_resource_grants(&ctx, Default::default())
                .await
                .map(drop),
        ];
        assert!(results.iter().all(|r| r.is_err()));
        let asked: BTreeSet<_> = guard.0.lock().unwrap().iter().copied().collect();
        assert_eq!(asked, names(AUTHZ_METHODS));

        let guard = Arc::new(Refuse::default());
        let c = GuardedAudit::new(Arc::new(FakeAudit::default()), guard.clone());
        let entry = NewAuditEntry {
            id: None,
            actor: "a".into(),
            action: "a.b".into(),
            resource: "r".into(),
            outcome: Outcome::Success,
            metadata: Default::default(),
            source_ip: String::new(),
            user_agent: String::new(),
            trace_id: String::new(),
        };
        let results = [
            c.record(&ctx, entry).await.map(drop),
            c.query(&ctx, AuditQuery::default()).await.map(drop),
            c.verify(&ctx).await.map(drop),
        ];
        assert!(results.iter().all(|r| r.is_err()));
        let asked: BTreeSet<_> = guard.0.lock().unwrap().iter().copied().collect();
        assert_eq!(asked, names(AUDIT_METHODS));
    }
}
