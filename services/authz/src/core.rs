//! The authz core: the business rules, implementing the authz contract directly. The gRPC
//! server and the HTTP routes are thin adapters over it.

use crate::{
    cache::{Policy, unavailable},
    store::{AuthzStore, Change, RoleRow},
};
use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use plt_authn::{ServiceGuard, Verifier};
use plt_contracts::{
    Error, ErrorCode, RequestContext, Result,
    audit::Outcome,
    authz::{
        ADMIN_ROLE, AuthzServiceClient, MANAGE_PERMISSION, MAX_RESOURCE_GRANTS_LISTED, Permission,
        ResourceGrant, ResourceGrantFilter, Role, USER_ROLE, valid_segment, validate_grant,
        validate_permission_name, validate_resource, validate_role_name, validate_service_name,
    },
};
use plt_outbox::{Outbox, audit::AuditEvent};
use serde_json::{Value, json};
use std::{collections::HashSet, net::IpAddr, sync::Arc};
use uuid::Uuid;

/// The actor of changes authz makes itself (bootstrap admins at start).
pub const SYSTEM_ACTOR: &str = "authz-service";
/// The actor of changes made with `authz-service grant|revoke` on the command line.
pub const CLI_ACTOR: &str = "authz-service-cli";

/// The longest accepted description of a role or permission, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 500;
/// The most permissions one registration or one role may list.
pub const MAX_LIST: usize = 1000;

/// Permissions authz declares at every start: its own. Every other service declares its
/// own when it starts (RegisterPermissions, through the runtime).
pub const PLATFORM_PERMISSIONS: &[(&str, &str, &str)] = &[
    (
        "authz",
        "authz.roles.manage",
        "Create, change and delete roles; grant and revoke them",
    ),
    (
        "authz",
        "authz.roles.read",
        "List roles and read any user's roles and permissions",
    ),
    (
        "authz",
        "authz.permissions.read_self",
        "Read one's own roles and permissions",
    ),
];

/// The permissions the built-in `user` role starts with (an operator may change them; they
/// are set only when the role is first created). Other services add theirs as they declare
/// them (`granted_to_users`).
pub const USER_DEFAULT_PERMISSIONS: &[&str] = &["authz.permissions.read_self"];

pub struct AuthzCore {
    policy: Arc<Policy>,
    store: Arc<dyn AuthzStore>,
    verifier: Verifier,
    outbox: Outbox,
    guard: ServiceGuard,
    events: plt_events::Publisher,
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn internal(context: &str, e: crate::store::StoreError) -> Error {
    unavailable(context, &e)
}

fn check_description(field: &str, d: &str) -> Result<()> {
    if d.chars().count() > MAX_DESCRIPTION_CHARS {
        return Err(Error::invalid(
            field,
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    Ok(())
}

/// The built-in role `user` is held by every user implicitly: revoking it would change
/// nothing, so it is refused rather than answered as if it did. (Granting it is accepted
/// and recorded, and changes nothing either.)
fn implicit_role(role: &str) -> Result<()> {
    if role == USER_ROLE {
        return Err(Error::invalid(
            "role",
            format!("every user holds role {USER_ROLE} implicitly; it cannot be revoked"),
        ));
    }
    Ok(())
}

/// Checks the shape of a role's permission list (`permissions[i]`, `i` indexing the caller's
/// list).
fn check_permission_list(permissions: &[String]) -> Result<()> {
    if permissions.len() > MAX_LIST {
        return Err(Error::invalid(
            "permissions",
            format!("must list at most {MAX_LIST} permissions"),
        ));
    }
    for (i, p) in permissions.iter().enumerate() {
        validate_permission_name(&format!("permissions[{i}]"), p)?;
    }
    Ok(())
}

/// The list sorted, without duplicates (as stored).
fn normalized(permissions: &[String]) -> Vec<String> {
    let mut out = permissions.to_vec();
    out.sort();
    out.dedup();
    out
}

fn role_to_contract(r: RoleRow, all: &[Permission]) -> Role {
    let permissions = if r.all_permissions {
        all.iter().map(|p| p.name.clone()).collect()
    } else {
        r.permissions
    };
    Role {
        name: r.name,
        description: r.description,
        permissions,
        built_in: r.built_in,
    }
}

/// An audit record of authz: `v` (an object) as metadata, and the request it happened in.
fn event(
    actor: &str,
    action: &str,
    resource: String,
    outcome: Outcome,
    request: Option<(&RequestContext, Option<IpAddr>)>,
    v: Value,
) -> AuditEvent {
    let mut e = AuditEvent::new(actor, action, resource, outcome);
    if let Value::Object(m) = v {
        for (k, v) in m {
            e = e.meta(&k, v);
        }
    }
    match request {
        Some((ctx, source)) => e.request(ctx, source),
        None => e,
    }
}

impl AuthzCore {
    /// The core over `store`, deciding through `policy`, verifying admin callers' tokens
    /// with `verifier` and writing audit records to `outbox` (in the transaction of the
    /// change they describe).
    /// This core, publishing role and policy events (`plt.authz.*`) with `events`.
    pub fn with_events(mut self, events: plt_events::Publisher) -> Self {
        self.events = events;
        self
    }

    /// The outbox message of `plt.authz.policy.changed.v1` (none without a bus). One key for
    /// all: every instance sees policy changes in commit order.
    fn policy_changed(&self, change: &str, user: Option<Uuid>) -> Vec<plt_outbox::Message> {
        self.events.message(
            plt_contracts::events::POLICY_CHANGED,
            "policy",
            "policy",
            plt_contracts::events::PolicyChanged {
                change: change.to_owned(),
                user_id: user,
                at: now(),
            },
        )
    }

    pub fn new(
        store: Arc<dyn AuthzStore>,
        policy: Arc<Policy>,
        verifier: Verifier,
        outbox: Outbox,
    ) -> Self {
        Self {
            guard: ServiceGuard::new(verifier.clone(), crate::SECTION),
            policy,
            store,
            verifier,
            outbox,
            events: plt_events::Publisher::disabled(crate::SERVICE_NAME),
        }
    }

    /// Declares the platform permissions and creates the built-in roles if missing
    /// (idempotent, safe when several instances start at once).
    pub async fn ensure_platform(store: &dyn AuthzStore) -> Result<(), crate::store::StoreError> {
        let t = now();
        let mut services: Vec<&str> = PLATFORM_PERMISSIONS.iter().map(|p| p.0).collect();
        services.dedup();
        for svc in services {
            let perms: Vec<Permission> = PLATFORM_PERMISSIONS
                .iter()
                .filter(|p| p.0 == svc)
                .map(|p| Permission {
                    name: p.1.to_owned(),
                    description: p.2.to_owned(),
                    ..Default::default()
                })
                .collect();
            store.register_permissions(svc, &perms, t).await?;
        }
        store
            .create_role(
                &RoleRow {
                    name: ADMIN_ROLE.into(),
                    description: "Every permission, including ones declared later".into(),
                    built_in: true,
                    all_permissions: true,
                    permissions: vec![],
                },
                t,
                &[],
            )
            .await?;
        store
            .create_role(
                &RoleRow {
                    name: USER_ROLE.into(),
                    description: "Self-service defaults for signed-up users".into(),
                    built_in: true,
                    all_permissions: false,
                    permissions: USER_DEFAULT_PERMISSIONS
                        .iter()
                        .map(|s| (*s).to_owned())
                        .collect(),
                },
                t,
                &[],
            )
            .await?;
        Ok(())
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The end user's address: the one the gateway states (`x-plt-client-ip`) when its
    /// service token verifies, else the TCP peer.
    async fn source(&self, ctx: &RequestContext) -> Option<IpAddr> {
        if let Some(stated) = ctx.client_ip
            && self.guard.require_one_of(ctx, &["gateway"]).await.is_ok()
        {
            return Some(stated);
        }
        ctx.peer.map(|p| p.ip())
    }

    /// The request part of a record: the context and its source address.
    async fn request<'c>(
        &self,
        ctx: Option<&'c RequestContext>,
    ) -> Option<(&'c RequestContext, Option<IpAddr>)> {
        match ctx {
            Some(c) => Some((c, self.source(c).await)),
            None => None,
        }
    }

    /// Writes a record that describes no change (a denial, an unchanged grant) in a
    /// transaction of its own. When even that fails (the database is down) the record goes
    /// to the log at error level: never silently lost, and the decision is not held up.
    async fn record_alone(&self, e: AuditEvent) {
        if let Err(err) = self.outbox.enqueue_alone(&[e.message()]).await {
            metrics::counter!("authz_audit_unwritten_total", "service" => crate::SERVICE_NAME)
                .increment(1);
            tracing::error!(
                event = "authz.audit.unwritten",
                error = %err,
                record = %serde_json::to_string(e.entry()).unwrap_or_default(),
                "audit record not written to the outbox"
            );
        }
    }

    /// Grants `role` without a caller check: for the bootstrap configuration and the
    /// command line, whose authority is access to the configuration or the database.
    /// Returns whether anything changed.
    pub async fn grant_as(
        &self,
        actor: &str,
        user: Uuid,
        role: &str,
        source: &str,
    ) -> Result<bool> {
        self.change_grant(actor, None, user, role, true, source)
            .await
    }

    /// Revokes `role` without a caller check (command line).
    pub async fn revoke_as(
        &self,
        actor: &str,
        user: Uuid,
        role: &str,
        source: &str,
    ) -> Result<bool> {
        self.change_grant(actor, None, user, role, false, source)
            .await
    }

    /// Grants or revokes; the record commits with the change, or (nothing changed) on its
    /// own, except for the bootstrap grant every start repeats.
    async fn change_grant(
        &self,
        actor: &str,
        ctx: Option<&RequestContext>,
        user: Uuid,
        role: &str,
        grant: bool,
        source: &str,
    ) -> Result<bool> {
        validate_role_name("role", role)?;
        let action = if grant {
            "authz.role.grant"
        } else {
            "authz.role.revoke"
        };
        let request = self.request(ctx).await;
        let record = |changed: bool| {
            event(
                actor,
                action,
                format!("user/{user}"),
                Outcome::Success,
                request,
                json!({"role": role, "changed": changed, "source": source}),
            )
        };
        let mut msg = vec![record(true).message()];
        let (event_type, change_kind) = if grant {
            (plt_contracts::events::ROLE_GRANTED, "grant")
        } else {
            (plt_contracts::events::ROLE_REVOKED, "revoke")
        };
        msg.extend(self.events.message(
            event_type,
            &format!("user/{user}"),
            &user.to_string(),
            plt_contracts::events::RoleEvent {
                user_id: user,
                role: role.to_owned(),
                by: actor.to_owned(),
                at: now(),
            },
        ));
        msg.extend(self.policy_changed(change_kind, Some(user)));
        let change = if grant {
            self.store.grant(user, role, actor, now(), &msg).await
        } else {
            self.store.revoke(user, role, &msg).await
        }
        .map_err(|e| {
            internal(
                if grant {
                    "granting role"
                } else {
                    "revoking role"
                },
                e,
            )
        })?;
        let changed = match change {
            Change::NoRole => return Err(Error::not_found(format!("role {role}"))),
            Change::Unchanged => false,
            Change::Changed(v) => {
                self.policy.advance(v);
                self.outbox.wake();
                true
            }
        };
        if !changed && source == "bootstrap" {
            // Every start repeats the bootstrap grant; only the first one is an event.
            return Ok(false);
        }
        tracing::info!(
            event = action,
            actor,
            user_id = %user,
            role,
            changed,
            "role assignment"
        );
        if !changed {
            self.record_alone(record(false)).await;
        }
        Ok(changed)
    }

    /// The verified caller of an admin method, who must hold `authz.roles.manage` (read from
    /// the database, not the cache: admin calls are rare and a revoked admin stops at once).
    async fn admin(&self, ctx: &RequestContext, action: &str, resource: &str) -> Result<String> {
        let token = ctx
            .bearer_token()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Error::unauthenticated("a bearer access token is required"))?;
        let claims = self.verifier.verify(token).await.map_err(Error::from)?;
        let allowed = match Uuid::parse_str(&claims.sub) {
            Ok(user) => {
                let g = self
                    .store
                    .grants(user)
                    .await
                    .map_err(|e| internal("reading caller grants", e))?;
                g.all || g.permissions.iter().any(|p| p == MANAGE_PERMISSION)
            }
            Err(_) => false,
        };
        if !allowed {
            let request = self.request(Some(ctx)).await;
            self.record_alone(event(
                &claims.sub,
                action,
                resource.to_owned(),
                Outcome::Denied,
                request,
                json!({"required_permission": MANAGE_PERMISSION}),
            ))
            .await;
            return Err(Error::new(
                ErrorCode::PermissionDenied,
                format!("{MANAGE_PERMISSION} is required"),
            ));
        }
        Ok(claims.sub)
    }

    /// Checks that every permission is declared (`permissions[i]`, naming it).
    async fn check_all_declared(&self, permissions: &[String]) -> Result<Vec<Permission>> {
        let declared = self
            .store
            .permissions()
            .await
            .map_err(|e| internal("reading permissions", e))?;
        let names: HashSet<&str> = declared.iter().map(|p| p.name.as_str()).collect();
        for (i, p) in permissions.iter().enumerate() {
            if !names.contains(p.as_str()) {
                return Err(Error::invalid(
                    format!("permissions[{i}]"),
                    format!("{p} is not a declared permission"),
                ));
            }
        }
        Ok(declared)
    }

    /// The record of a role change by `actor`, to commit with it.
    async fn role_event(
        &self,
        ctx: &RequestContext,
        actor: &str,
        action: &str,
        role: &str,
        v: Value,
    ) -> plt_outbox::Message {
        let request = self.request(Some(ctx)).await;
        event(
            actor,
            action,
            format!("role/{role}"),
            Outcome::Success,
            request,
            v,
        )
        .message()
    }

    /// After a role change committed.
    fn role_changed(&self, actor: &str, action: &str, role: &str, version: u64) {
        self.policy.advance(version);
        self.outbox.wake();
        tracing::info!(event = action, actor, role, "role changed");
    }
}

#[async_trait]
impl AuthzServiceClient for AuthzCore {
    async fn authorize(&self, ctx: &RequestContext, user_id: Uuid, permission: &str) -> Result<()> {
        // Internal: services and the gateway ask on behalf of a user; users do not probe
        // each other's permissions.
        self.guard.caller(ctx).await?;
        if self.policy.has_permission(user_id, permission).await? {
            return Ok(());
        }
        let request = self.request(Some(ctx)).await;
        self.record_alone(event(
            &user_id.to_string(),
            "authz.authorize",
            format!("permission/{permission}"),
            Outcome::Denied,
            request,
            json!({"permission": permission}),
        ))
        .await;
        Err(Error::new(
            ErrorCode::PermissionDenied,
            format!("permission denied: {permission}"),
        ))
    }

    async fn has_permission(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
    ) -> Result<bool> {
        self.guard.caller(ctx).await?;
        self.policy.has_permission(user_id, permission).await
    }

    async fn get_user_permissions(
        &self,
        _ctx: &RequestContext,
        user_id: Uuid,
    ) -> Result<Vec<Permission>> {
        self.policy.user_permissions(user_id).await
    }

    async fn get_user_roles(&self, _ctx: &RequestContext, user_id: Uuid) -> Result<Vec<String>> {
        Ok(self.policy.grants(user_id).await?.roles.clone())
    }

    async fn list_roles(&self, _ctx: &RequestContext) -> Result<Vec<Role>> {
        let roles = self
            .store
            .roles()
            .await
            .map_err(|e| internal("listing roles", e))?;
        let all = self
            .store
            .permissions()
            .await
            .map_err(|e| internal("reading permissions", e))?;
        Ok(roles
            .into_iter()
            .map(|r| role_to_contract(r, &all))
            .collect())
    }

    async fn register_permissions(
        &self,
        ctx: &RequestContext,
        service: &str,
        permissions: Vec<Permission>,
    ) -> Result<()> {
        self.guard.caller(ctx).await?;
        validate_service_name("service", service)?;
        if permissions.len() > MAX_LIST {
            return Err(Error::invalid(
                "permissions",
                format!("must list at most {MAX_LIST} permissions"),
            ));
        }
        let prefix = format!("{service}.");
        let mut seen = HashSet::new();
        for (i, p) in permissions.iter().enumerate() {
            let field = format!("permissions[{i}].name");
            validate_permission_name(&field, &p.name)?;
            if !p.name.starts_with(&prefix) {
                return Err(Error::invalid(
                    field,
                    format!("must start with {prefix:?} (a service declares its own permissions)"),
                ));
            }
            if !seen.insert(p.name.as_str()) {
                return Err(Error::invalid(field, "is listed twice"));
            }
            check_description(&format!("permissions[{i}].description"), &p.description)?;
            if p.relations.len() > 16 {
                return Err(Error::invalid(
                    format!("permissions[{i}].relations"),
                    "must list at most 16 relations",
                ));
            }
            for (j, r) in p.relations.iter().enumerate() {
                if !valid_segment(r) {
                    return Err(Error::invalid(
                        format!("permissions[{i}].relations[{j}]"),
                        "must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter",
                    ));
                }
            }
        }
        if permissions.is_empty() {
            return Ok(());
        }
        let changed = self
            .store
            .register_permissions(service, &permissions, now())
            .await
            .map_err(|e| internal("registering permissions", e))?;
        if let Some(v) = changed {
            self.policy.advance(v);
            tracing::info!(service, count = permissions.len(), "permissions declared");
        }
        Ok(())
    }

    async fn create_role(&self, ctx: &RequestContext, role: Role) -> Result<Role> {
        validate_role_name("name", &role.name)?;
        check_description("description", &role.description)?;
        check_permission_list(&role.permissions)?;
        let actor = self
            .admin(ctx, "authz.role.create", &format!("role/{}", role.name))
            .await?;
        self.check_all_declared(&role.permissions).await?;
        let row = RoleRow {
            permissions: normalized(&role.permissions),
            name: role.name,
            description: role.description.trim().to_owned(),
            built_in: false,
            all_permissions: false,
        };
        let record = self
            .role_event(
                ctx,
                &actor,
                "authz.role.create",
                &row.name,
                json!({"permissions": row.permissions}),
            )
            .await;
        let v = self
            .store
            .create_role(&row, now(), &[record])
            .await
            .map_err(|e| internal("creating role", e))?
            .ok_or_else(|| Error::already_exists(format!("role {} already exists", row.name)))?;
        self.role_changed(&actor, "authz.role.create", &row.name, v);
        Ok(role_to_contract(row, &[]))
    }

    async fn delete_role(&self, ctx: &RequestContext, name: &str) -> Result<()> {
        validate_role_name("name", name)?;
        let actor = self
            .admin(ctx, "authz.role.delete", &format!("role/{name}"))
            .await?;
        let role = self
            .store
            .role(name)
            .await
            .map_err(|e| internal("reading role", e))?
            .ok_or_else(|| Error::not_found(format!("role {name}")))?;
        if role.built_in {
            return Err(Error::new(
                ErrorCode::FailedPrecondition,
                format!("{name} is a built-in role and cannot be deleted"),
            ));
        }
        let record = self
            .role_event(
                ctx,
                &actor,
                "authz.role.delete",
                name,
                json!({"permissions": role.permissions}),
            )
            .await;
        let v = self
            .store
            .delete_role(name, &[record])
            .await
            .map_err(|e| internal("deleting role", e))?
            .ok_or_else(|| Error::not_found(format!("role {name}")))?;
        self.role_changed(&actor, "authz.role.delete", name, v);
        Ok(())
    }

    async fn set_role_permissions(
        &self,
        ctx: &RequestContext,
        name: &str,
        permissions: Vec<String>,
    ) -> Result<Role> {
        validate_role_name("name", name)?;
        check_permission_list(&permissions)?;
        let actor = self
            .admin(ctx, "authz.role.set_permissions", &format!("role/{name}"))
            .await?;
        let role = self
            .store
            .role(name)
            .await
            .map_err(|e| internal("reading role", e))?
            .ok_or_else(|| Error::not_found(format!("role {name}")))?;
        if role.all_permissions {
            return Err(Error::new(
                ErrorCode::FailedPrecondition,
                format!("{name} holds every permission; its permissions cannot be set"),
            ));
        }
        self.check_all_declared(&permissions).await?;
        let permissions = normalized(&permissions);
        let record = self
            .role_event(
                ctx,
                &actor,
                "authz.role.set_permissions",
                name,
                json!({"permissions": permissions, "previous": role.permissions}),
            )
            .await;
        let v = self
            .store
            .set_role_permissions(name, &permissions, now(), &{
                let mut m = vec![record];
                m.extend(self.policy_changed("role_permissions", None));
                m
            })
            .await
            .map_err(|e| internal("setting role permissions", e))?
            .ok_or_else(|| Error::not_found(format!("role {name}")))?;
        self.role_changed(&actor, "authz.role.set_permissions", name, v);
        Ok(Role {
            name: role.name,
            description: role.description,
            permissions,
            built_in: role.built_in,
        })
    }

    async fn grant_role(&self, ctx: &RequestContext, user_id: Uuid, role: &str) -> Result<()> {
        validate_role_name("role", role)?;
        let actor = self
            .admin(ctx, "authz.role.grant", &format!("user/{user_id}"))
            .await?;
        self.change_grant(&actor, Some(ctx), user_id, role, true, "api")
            .await
            .map(drop)
    }

    async fn revoke_role(&self, ctx: &RequestContext, user_id: Uuid, role: &str) -> Result<()> {
        validate_role_name("role", role)?;
        let actor = self
            .admin(ctx, "authz.role.revoke", &format!("user/{user_id}"))
            .await?;
        implicit_role(role)?;
        self.change_grant(&actor, Some(ctx), user_id, role, false, "api")
            .await
            .map(drop)
    }

    async fn check(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
        resource: &str,
    ) -> Result<bool> {
        self.guard.caller(ctx).await?;
        validate_resource("resource", resource)?;
        self.policy.check(user_id, permission, resource).await
    }

    async fn grant_resource(&self, ctx: &RequestContext, grant: ResourceGrant) -> Result<bool> {
        let caller = self.guard.caller(ctx).await?;
        self.change_resource(ctx, caller, grant, true).await
    }

    async fn revoke_resource(&self, ctx: &RequestContext, grant: ResourceGrant) -> Result<bool> {
        let caller = self.guard.caller(ctx).await?;
        self.change_resource(ctx, caller, grant, false).await
    }

    async fn list_resource_grants(
        &self,
        ctx: &RequestContext,
        filter: ResourceGrantFilter,
    ) -> Result<Vec<ResourceGrant>> {
        self.guard.caller(ctx).await?;
        if filter.user_id.is_none() && filter.resource.is_none() {
            return Err(Error::invalid(
                "user_id",
                "name a user, a resource, or both",
            ));
        }
        if let Some(r) = &filter.resource {
            validate_resource("resource", r)?;
        }
        self.policy
            .store()
            .list_resource_grants(&filter, MAX_RESOURCE_GRANTS_LISTED)
            .await
            .map_err(|e| internal("listing resource grants", e))
    }
}

impl AuthzCore {
    /// Grants or revokes on one resource, for the service `caller`; the audit record and
    /// the policy event commit with the change.
    async fn change_resource(
        &self,
        ctx: &RequestContext,
        caller: String,
        mut grant: ResourceGrant,
        give: bool,
    ) -> Result<bool> {
        validate_resource("resource", &grant.resource)?;
        if give || !grant.grant.is_empty() {
            validate_grant("grant", &grant.grant)?;
        }
        if give && grant.grant.contains('.') {
            self.policy.check_declared("grant", &grant.grant).await?;
        }
        grant.granted_by = caller.clone();
        let action = if give {
            "authz.resource.grant"
        } else {
            "authz.resource.revoke"
        };
        let request = self.request(Some(ctx)).await;
        let record = event(
            &caller,
            action,
            format!("resource/{}", grant.resource),
            Outcome::Success,
            request,
            json!({"user_id": grant.user_id, "grant": grant.grant}),
        );
        let mut msg = vec![record.message()];
        msg.extend(self.policy_changed(
            if give {
                "resource_grant"
            } else {
                "resource_revoke"
            },
            Some(grant.user_id),
        ));
        let changed = if give {
            self.store.grant_resource(&grant, now(), &msg).await
        } else {
            self.store.revoke_resource(&grant, &msg).await
        }
        .map_err(|e| internal(action, e))?;
        match changed {
            Some(v) => {
                self.policy.advance(v);
                self.outbox.wake();
                tracing::info!(
                    event = action,
                    caller,
                    user_id = %grant.user_id,
                    resource = %grant.resource,
                    grant = %grant.grant,
                    "resource grant changed"
                );
                Ok(true)
            }
            None => Ok(false),
        }
    }
}
