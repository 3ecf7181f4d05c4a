//! The authz contract suite. Each case declares permissions of its own random service, makes
//! roles with random names and uses random user ids, so cases may share one service instance,
//! in any order.
//!
//! Admin calls go out with the fixture's `admin` context: an `Authorization: Bearer` access
//! token of a user holding the built-in `admin` role (granted through the service's
//! bootstrap configuration), signed by a key the service trusts.

use crate::{
    ErrorCode, RequestContext,
    authz::{
        ADMIN_ROLE, AuthzServiceClient, MANAGE_PERMISSION, Permission, ResourceGrant,
        ResourceGrantFilter, Role, USER_ROLE,
    },
};
use std::sync::Arc;
use uuid::Uuid;

pub struct AuthzFixture {
    pub client: Arc<dyn AuthzServiceClient>,
    /// The context of a calling platform service: carries a service token for the service
    /// under test, or nothing when `client` attaches its own (the client factory's do).
    pub service: RequestContext,
    /// Carries the access token of a user holding `admin`.
    pub admin: RequestContext,
    /// Carries a valid access token of a user holding no role.
    pub unprivileged: RequestContext,
}

impl AuthzFixture {
    /// A fresh context: the fixture's `service` context with a new request id.
    pub fn ctx(&self) -> RequestContext {
        self.service
            .clone()
            .with_request_id(format!("authz-suite-{}", Uuid::new_v4()))
    }
}

/// A fresh service name (a valid permission segment).
fn service() -> String {
    format!("s{}", &Uuid::new_v4().simple().to_string()[..16])
}

fn role_name(tag: &str) -> String {
    format!("{tag}-{}", &Uuid::new_v4().simple().to_string()[..12])
}

fn perm(name: &str) -> Permission {
    Permission {
        name: name.to_owned(),
        description: format!("may {name}"),
        ..Default::default()
    }
}

/// Declares `<svc>.things.read`, `<svc>.things.write`, `<svc>.things.delete`.
async fn declare(fx: &AuthzFixture) -> (String, [String; 3]) {
    let svc = service();
    let names = [
        format!("{svc}.things.read"),
        format!("{svc}.things.write"),
        format!("{svc}.things.delete"),
    ];
    fx.client
        .register_permissions(&fx.ctx(), &svc, names.iter().map(|n| perm(n)).collect())
        .await
        .expect("register_permissions");
    (svc, names)
}

async fn make_role(fx: &AuthzFixture, tag: &str, permissions: &[String]) -> Role {
    fx.client
        .create_role(
            &fx.admin,
            Role {
                name: role_name(tag),
                description: format!("{tag} role"),
                permissions: permissions.to_vec(),
                built_in: false,
            },
        )
        .await
        .expect("create_role")
}

fn assert_invalid(e: &crate::Error, field: &str) {
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
    assert!(
        e.violations.iter().any(|v| v.field == field),
        "expected a violation of {field}: {e}"
    );
}

/// Runs every case; panics naming the first that fails.
pub async fn run_all(fx: &AuthzFixture) {
    register_is_idempotent_and_roles_are_listed(fx).await;
    grant_check_and_revoke(fx).await;
    a_user_without_roles_holds_role_user_only(fx).await;
    admin_holds_every_permission_including_later_ones(fx).await;
    set_role_permissions_changes_what_holders_may_do(fx).await;
    deleting_a_role_removes_its_grants(fx).await;
    built_in_roles_are_protected(fx).await;
    unknown_and_malformed_permissions_are_refused(fx).await;
    undeclared_permissions_cannot_be_put_in_roles(fx).await;
    unknown_roles_and_bad_role_names(fx).await;
    admin_calls_need_a_token_with_authz_roles_manage(fx).await;
    resource_grants_give_one_object_only(fx).await;
    resource_grants_are_validated(fx).await;
}

fn rg(user: Uuid, resource: &str, grant: &str) -> ResourceGrant {
    ResourceGrant {
        user_id: user,
        resource: resource.to_owned(),
        grant: grant.to_owned(),
        granted_by: String::new(),
    }
}

/// Object-level authorization: a relation or a permission granted on `post:<a>` gives that
/// post only; relations imply what the permission was declared with; a role gives it
/// everywhere; revoking takes it away; grants are listed per user and per object.
pub async fn resource_grants_give_one_object_only(fx: &AuthzFixture) {
    let c = &fx.client;
    let svc = service();
    let edit = format!("{svc}.posts.edit");
    let read = format!("{svc}.posts.read");
    let delete = format!("{svc}.posts.delete");
    c.register_permissions(
        &fx.ctx(),
        &svc,
        vec![
            Permission {
                relations: vec!["owner".into(), "editor".into()],
                ..perm(&edit)
            },
            Permission {
                relations: vec!["owner".into(), "editor".into(), "viewer".into()],
                ..perm(&read)
            },
            Permission {
                relations: vec!["owner".into()],
                ..perm(&delete)
            },
        ],
    )
    .await
    .expect("register with relations");
    let (a, b) = (
        format!("post:{}", Uuid::new_v4()),
        format!("post:{}", Uuid::new_v4()),
    );
    let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
    for p in [&edit, &read, &delete] {
        assert!(
            !c.check(&fx.ctx(), bob, p, &a).await.unwrap(),
            "{p} before any grant"
        );
    }
    assert!(
        c.grant_resource(&fx.ctx(), rg(ada, &a, "owner"))
            .await
            .unwrap()
    );
    assert!(
        c.grant_resource(&fx.ctx(), rg(bob, &a, "editor"))
            .await
            .unwrap()
    );
    assert!(
        !c.grant_resource(&fx.ctx(), rg(bob, &a, "editor"))
            .await
            .unwrap(),
        "granting again changes nothing"
    );
    for p in [&edit, &read, &delete] {
        assert!(c.check(&fx.ctx(), ada, p, &a).await.unwrap(), "owner: {p}");
        assert!(
            !c.check(&fx.ctx(), ada, p, &b).await.unwrap(),
            "owner of a, not b: {p}"
        );
    }
    assert!(c.check(&fx.ctx(), bob, &edit, &a).await.unwrap());
    assert!(c.check(&fx.ctx(), bob, &read, &a).await.unwrap());
    assert!(
        !c.check(&fx.ctx(), bob, &delete, &a).await.unwrap(),
        "editor may not delete"
    );
    assert!(
        !c.check(&fx.ctx(), bob, &edit, &b).await.unwrap(),
        "nor edit another post"
    );
    // Not a global permission either.
    assert!(!c.has_permission(&fx.ctx(), bob, &edit).await.unwrap());
    // A permission granted on one object directly.
    assert!(
        c.grant_resource(&fx.ctx(), rg(bob, &b, &delete))
            .await
            .unwrap()
    );
    assert!(c.check(&fx.ctx(), bob, &delete, &b).await.unwrap());
    assert!(!c.check(&fx.ctx(), bob, &edit, &b).await.unwrap());
    // A role gives it on every object.
    let role = make_role(fx, "post-editor", std::slice::from_ref(&edit)).await;
    let carol = Uuid::new_v4();
    c.grant_role(&fx.admin, carol, &role.name).await.unwrap();
    assert!(c.check(&fx.ctx(), carol, &edit, &a).await.unwrap());
    assert!(c.check(&fx.ctx(), carol, &edit, &b).await.unwrap());
    // Listed per object and per user.
    let on_a = c
        .list_resource_grants(
            &fx.ctx(),
            ResourceGrantFilter {
                resource: Some(a.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut got: Vec<(Uuid, String)> = on_a.iter().map(|g| (g.user_id, g.grant.clone())).collect();
    got.sort();
    let mut want = vec![(ada, "owner".to_owned()), (bob, "editor".to_owned())];
    want.sort();
    assert_eq!(got, want);
    let of_bob = c
        .list_resource_grants(
            &fx.ctx(),
            ResourceGrantFilter {
                user_id: Some(bob),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut got: Vec<(String, String)> = of_bob
        .iter()
        .map(|g| (g.resource.clone(), g.grant.clone()))
        .collect();
    got.sort();
    let mut want = vec![
        (a.clone(), "editor".to_owned()),
        (b.clone(), delete.clone()),
    ];
    want.sort();
    assert_eq!(got, want);
    // Revoked: gone at once for the instance asked.
    assert!(
        c.revoke_resource(&fx.ctx(), rg(bob, &a, "editor"))
            .await
            .unwrap()
    );
    assert!(
        !c.revoke_resource(&fx.ctx(), rg(bob, &a, "editor"))
            .await
            .unwrap()
    );
    assert!(!c.check(&fx.ctx(), bob, &edit, &a).await.unwrap());
    // An empty grant revokes everything the user holds on the object.
    assert!(c.revoke_resource(&fx.ctx(), rg(bob, &b, "")).await.unwrap());
    assert!(!c.check(&fx.ctx(), bob, &delete, &b).await.unwrap());
}

pub async fn resource_grants_are_validated(fx: &AuthzFixture) {
    let c = &fx.client;
    let (_, names) = declare(fx).await;
    let u = Uuid::new_v4();
    for bad in ["", "post", "post:", "Post:1", "post:a b", "post:../x"] {
        let e = c.check(&fx.ctx(), u, &names[0], bad).await.unwrap_err();
        assert_invalid(&e, "resource");
        let e = c
            .grant_resource(&fx.ctx(), rg(u, bad, "editor"))
            .await
            .unwrap_err();
        assert_invalid(&e, "resource");
    }
    for bad in ["", "Editor", "a b", "x.y"] {
        let e = c
            .grant_resource(&fx.ctx(), rg(u, "post:1", bad))
            .await
            .unwrap_err();
        assert_invalid(&e, "grant");
    }
    // An undeclared permission cannot be granted, nor checked.
    let undeclared = format!("{}.things.nope", service());
    let e = c
        .grant_resource(&fx.ctx(), rg(u, "post:1", &undeclared))
        .await
        .unwrap_err();
    assert_invalid(&e, "grant");
    let e = c
        .check(&fx.ctx(), u, &undeclared, "post:1")
        .await
        .unwrap_err();
    assert_invalid(&e, "permission");
    let e = c
        .list_resource_grants(&fx.ctx(), ResourceGrantFilter::default())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
}

pub async fn register_is_idempotent_and_roles_are_listed(fx: &AuthzFixture) {
    let c = &fx.client;
    let (svc, names) = declare(fx).await;
    // Again, and with a changed description: still fine.
    c.register_permissions(
        &fx.ctx(),
        &svc,
        vec![Permission {
            name: names[0].clone(),
            description: "read things (v2)".into(),
            ..Default::default()
        }],
    )
    .await
    .expect("registering again is idempotent");
    let role = make_role(fx, "reader", &[names[1].clone(), names[0].clone()]).await;
    let mut sorted = vec![names[0].clone(), names[1].clone()];
    sorted.sort();
    assert_eq!(
        role.permissions, sorted,
        "role permissions come back sorted"
    );
    assert!(!role.built_in);
    let roles = c.list_roles(&fx.ctx()).await.expect("list_roles");
    let listed = roles
        .iter()
        .find(|r| r.name == role.name)
        .expect("new role listed");
    assert_eq!(listed, &role);
    let names_listed: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    let mut s = names_listed.clone();
    s.sort();
    assert_eq!(names_listed, s, "roles are sorted by name");
    let admin = roles
        .iter()
        .find(|r| r.name == ADMIN_ROLE)
        .expect("admin role");
    assert!(admin.built_in);
    assert!(admin.permissions.contains(&MANAGE_PERMISSION.to_owned()));
    assert!(names.iter().all(|n| admin.permissions.contains(n)));
    let user = roles
        .iter()
        .find(|r| r.name == USER_ROLE)
        .expect("user role");
    assert!(user.built_in);
    assert!(
        user.permissions
            .contains(&"identity.users.read_self".to_owned()),
        "{user:?}"
    );
    // The description update is visible through a holder's permissions.
    let u = Uuid::new_v4();
    c.grant_role(&fx.admin, u, &role.name).await.unwrap();
    let perms = c.get_user_permissions(&fx.ctx(), u).await.unwrap();
    let read = perms.iter().find(|p| p.name == names[0]).unwrap();
    assert_eq!(read.description, "read things (v2)");
}

pub async fn grant_check_and_revoke(fx: &AuthzFixture) {
    let c = &fx.client;
    let (_, names) = declare(fx).await;
    let role = make_role(fx, "writer", &names[..2]).await;
    let u = Uuid::new_v4();
    assert!(!c.has_permission(&fx.ctx(), u, &names[0]).await.unwrap());
    let denied = c.authorize(&fx.ctx(), u, &names[0]).await.unwrap_err();
    assert_eq!(denied.code, ErrorCode::PermissionDenied, "{denied}");

    c.grant_role(&fx.admin, u, &role.name).await.expect("grant");
    c.grant_role(&fx.admin, u, &role.name)
        .await
        .expect("granting again is not an error");
    assert!(c.has_permission(&fx.ctx(), u, &names[0]).await.unwrap());
    assert!(c.has_permission(&fx.ctx(), u, &names[1]).await.unwrap());
    assert!(!c.has_permission(&fx.ctx(), u, &names[2]).await.unwrap());
    c.authorize(&fx.ctx(), u, &names[1]).await.expect("allowed");
    assert_eq!(
        c.authorize(&fx.ctx(), u, &names[2]).await.unwrap_err().code,
        ErrorCode::PermissionDenied
    );
    assert_eq!(granted_roles(fx, u).await, vec![role.name.clone()]);
    let perms = granted_permissions(fx, u).await;
    let mut expected: Vec<Permission> = names[..2].iter().map(|n| perm(n)).collect();
    expected.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(perms, expected);
    // Another user is unaffected.
    assert!(
        !c.has_permission(&fx.ctx(), Uuid::new_v4(), &names[0])
            .await
            .unwrap()
    );

    c.revoke_role(&fx.admin, u, &role.name)
        .await
        .expect("revoke");
    c.revoke_role(&fx.admin, u, &role.name)
        .await
        .expect("revoking again is not an error");
    assert!(!c.has_permission(&fx.ctx(), u, &names[0]).await.unwrap());
    assert_eq!(
        c.authorize(&fx.ctx(), u, &names[0]).await.unwrap_err().code,
        ErrorCode::PermissionDenied
    );
    assert!(granted_roles(fx, u).await.is_empty());
    assert!(granted_permissions(fx, u).await.is_empty());
}

/// The roles granted to `u`, without the role `user` every user holds implicitly.
async fn granted_roles(fx: &AuthzFixture, u: Uuid) -> Vec<String> {
    let mut roles = fx.client.get_user_roles(&fx.ctx(), u).await.unwrap();
    assert!(roles.iter().any(|r| r == USER_ROLE), "{roles:?}");
    roles.retain(|r| r != USER_ROLE);
    roles
}

/// The permissions of `u` beyond those of the role `user` every user holds implicitly.
async fn granted_permissions(fx: &AuthzFixture, u: Uuid) -> Vec<Permission> {
    let roles = fx.client.list_roles(&fx.ctx()).await.unwrap();
    let defaults = &roles
        .iter()
        .find(|r| r.name == USER_ROLE)
        .expect("built-in role user")
        .permissions;
    let mut perms = fx.client.get_user_permissions(&fx.ctx(), u).await.unwrap();
    perms.retain(|p| !defaults.contains(&p.name));
    perms
}

pub async fn a_user_without_roles_holds_role_user_only(fx: &AuthzFixture) {
    let c = &fx.client;
    let u = Uuid::new_v4();
    // ...but role user, which every user holds implicitly.
    assert_eq!(
        c.get_user_roles(&fx.ctx(), u).await.unwrap(),
        vec![USER_ROLE.to_owned()]
    );
    let roles = c.list_roles(&fx.ctx()).await.unwrap();
    let user = roles.iter().find(|r| r.name == USER_ROLE).unwrap();
    for p in &user.permissions {
        assert!(c.has_permission(&fx.ctx(), u, p).await.unwrap(), "{p}");
    }
    assert!(granted_roles(fx, u).await.is_empty());
    assert!(granted_permissions(fx, u).await.is_empty());
    assert!(
        !c.has_permission(&fx.ctx(), u, MANAGE_PERMISSION)
            .await
            .unwrap()
    );
}

pub async fn admin_holds_every_permission_including_later_ones(fx: &AuthzFixture) {
    let c = &fx.client;
    let u = Uuid::new_v4();
    c.grant_role(&fx.admin, u, ADMIN_ROLE).await.unwrap();
    assert!(
        c.has_permission(&fx.ctx(), u, MANAGE_PERMISSION)
            .await
            .unwrap()
    );
    c.authorize(&fx.ctx(), u, "audit.logs.read").await.unwrap();
    // Declared after the grant (and after the admin's permissions were cached).
    let (_, names) = declare(fx).await;
    for n in &names {
        assert!(c.has_permission(&fx.ctx(), u, n).await.unwrap(), "{n}");
    }
    let perms = c.get_user_permissions(&fx.ctx(), u).await.unwrap();
    assert!(names.iter().all(|n| perms.iter().any(|p| &p.name == n)));
    assert_eq!(granted_roles(fx, u).await, vec![ADMIN_ROLE.to_owned()]);
    c.revoke_role(&fx.admin, u, ADMIN_ROLE).await.unwrap();
    assert!(!c.has_permission(&fx.ctx(), u, &names[0]).await.unwrap());
}

pub async fn set_role_permissions_changes_what_holders_may_do(fx: &AuthzFixture) {
    let c = &fx.client;
    let (_, names) = declare(fx).await;
    let role = make_role(fx, "editor", &names[..1]).await;
    let u = Uuid::new_v4();
    c.grant_role(&fx.admin, u, &role.name).await.unwrap();
    assert!(c.has_permission(&fx.ctx(), u, &names[0]).await.unwrap());
    assert!(!c.has_permission(&fx.ctx(), u, &names[2]).await.unwrap());
    let updated = c
        .set_role_permissions(&fx.admin, &role.name, vec![names[2].clone()])
        .await
        .expect("set_role_permissions");
    assert_eq!(updated.permissions, vec![names[2].clone()]);
    assert_eq!(updated.description, role.description);
    assert!(!c.has_permission(&fx.ctx(), u, &names[0]).await.unwrap());
    assert!(c.has_permission(&fx.ctx(), u, &names[2]).await.unwrap());
    let emptied = c
        .set_role_permissions(&fx.admin, &role.name, vec![])
        .await
        .unwrap();
    assert!(emptied.permissions.is_empty());
    assert!(!c.has_permission(&fx.ctx(), u, &names[2]).await.unwrap());
    assert_eq!(granted_roles(fx, u).await, vec![role.name]);
}

pub async fn deleting_a_role_removes_its_grants(fx: &AuthzFixture) {
    let c = &fx.client;
    let (_, names) = declare(fx).await;
    let doomed = make_role(fx, "doomed", &names[..1]).await;
    let kept = make_role(fx, "kept", &names[1..2]).await;
    let u = Uuid::new_v4();
    c.grant_role(&fx.admin, u, &doomed.name).await.unwrap();
    c.grant_role(&fx.admin, u, &kept.name).await.unwrap();
    assert!(c.has_permission(&fx.ctx(), u, &names[0]).await.unwrap());
    c.delete_role(&fx.admin, &doomed.name)
        .await
        .expect("delete_role");
    assert!(!c.has_permission(&fx.ctx(), u, &names[0]).await.unwrap());
    assert!(c.has_permission(&fx.ctx(), u, &names[1]).await.unwrap());
    assert_eq!(granted_roles(fx, u).await, vec![kept.name]);
    assert!(
        !c.list_roles(&fx.ctx())
            .await
            .unwrap()
            .iter()
            .any(|r| r.name == doomed.name)
    );
    let again = c.delete_role(&fx.admin, &doomed.name).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::NotFound, "{again}");
    // The name can be used again, and the new role starts without the old grants.
    let reborn = c
        .create_role(
            &fx.admin,
            Role {
                name: doomed.name.clone(),
                description: String::new(),
                permissions: names[..1].to_vec(),
                built_in: false,
            },
        )
        .await
        .unwrap();
    assert_eq!(reborn.name, doomed.name);
    assert!(!c.has_permission(&fx.ctx(), u, &names[0]).await.unwrap());
}

pub async fn built_in_roles_are_protected(fx: &AuthzFixture) {
    let c = &fx.client;
    for name in [ADMIN_ROLE, USER_ROLE] {
        let e = c.delete_role(&fx.admin, name).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::FailedPrecondition, "{name}: {e}");
    }
    let e = c
        .set_role_permissions(&fx.admin, ADMIN_ROLE, vec![])
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::FailedPrecondition, "{e}");
    let e = c
        .create_role(
            &fx.admin,
            Role {
                name: ADMIN_ROLE.into(),
                description: String::new(),
                permissions: vec![],
                built_in: false,
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::AlreadyExists, "{e}");
    let roles = c.list_roles(&fx.ctx()).await.unwrap();
    assert!(roles.iter().any(|r| r.name == ADMIN_ROLE && r.built_in));
    assert!(roles.iter().any(|r| r.name == USER_ROLE && r.built_in));
    // The user role can be granted like any other.
    let u = Uuid::new_v4();
    c.grant_role(&fx.admin, u, USER_ROLE).await.unwrap();
    assert!(
        c.has_permission(&fx.ctx(), u, "identity.users.read_self")
            .await
            .unwrap()
    );
    assert!(
        !c.has_permission(&fx.ctx(), u, MANAGE_PERMISSION)
            .await
            .unwrap()
    );
}

pub async fn unknown_and_malformed_permissions_are_refused(fx: &AuthzFixture) {
    let c = &fx.client;
    let u = Uuid::new_v4();
    let unknown = format!("{}.things.read", service());
    for p in [
        unknown.as_str(),
        "not-a-permission",
        "a.b.*",
        "Blog.posts.read",
        "",
    ] {
        let e = c.authorize(&fx.ctx(), u, p).await.unwrap_err();
        assert_invalid(&e, "permission");
        let e = c.has_permission(&fx.ctx(), u, p).await.unwrap_err();
        assert_invalid(&e, "permission");
    }
    let e = c.authorize(&fx.ctx(), u, &unknown).await.unwrap_err();
    assert!(
        e.to_string().contains(&unknown),
        "the error names the permission: {e}"
    );
    // Registration: bad service name, malformed names, names outside the service.
    let svc = service();
    let e = c
        .register_permissions(&fx.ctx(), "Bad Service", vec![perm("x.y.z")])
        .await
        .unwrap_err();
    assert_invalid(&e, "service");
    let e = c
        .register_permissions(
            &fx.ctx(),
            &svc,
            vec![perm(&format!("{svc}.things.read")), perm("nope")],
        )
        .await
        .unwrap_err();
    assert_invalid(&e, "permissions[1].name");
    let e = c
        .register_permissions(&fx.ctx(), &svc, vec![perm("other.things.read")])
        .await
        .unwrap_err();
    assert_invalid(&e, "permissions[0].name");
    // Nothing of a refused registration was written.
    let e = c
        .has_permission(&fx.ctx(), u, &format!("{svc}.things.read"))
        .await
        .unwrap_err();
    assert_invalid(&e, "permission");
}

pub async fn undeclared_permissions_cannot_be_put_in_roles(fx: &AuthzFixture) {
    let c = &fx.client;
    let (_, names) = declare(fx).await;
    let undeclared = format!("{}.ghosts.haunt", service());
    let name = role_name("ghostly");
    let e = c
        .create_role(
            &fx.admin,
            Role {
                name: name.clone(),
                description: String::new(),
                permissions: vec![names[0].clone(), undeclared.clone()],
                built_in: false,
            },
        )
        .await
        .unwrap_err();
    assert_invalid(&e, "permissions[1]");
    assert!(e.to_string().contains(&undeclared), "{e}");
    assert!(
        !c.list_roles(&fx.ctx())
            .await
            .unwrap()
            .iter()
            .any(|r| r.name == name),
        "a refused role was created"
    );
    let e = c
        .create_role(
            &fx.admin,
            Role {
                name: role_name("malformed"),
                description: String::new(),
                permissions: vec!["things.read".into()],
                built_in: false,
            },
        )
        .await
        .unwrap_err();
    assert_invalid(&e, "permissions[0]");
    let role = make_role(fx, "settable", &names[..1]).await;
    let e = c
        .set_role_permissions(&fx.admin, &role.name, vec![undeclared.clone()])
        .await
        .unwrap_err();
    assert_invalid(&e, "permissions[0]");
    assert!(e.to_string().contains(&undeclared), "{e}");
    let listed = c.list_roles(&fx.ctx()).await.unwrap();
    let r = listed.iter().find(|r| r.name == role.name).unwrap();
    assert_eq!(
        r.permissions,
        vec![names[0].clone()],
        "refused set changed the role"
    );
}

pub async fn unknown_roles_and_bad_role_names(fx: &AuthzFixture) {
    let c = &fx.client;
    let u = Uuid::new_v4();
    let ghost = role_name("ghost");
    for e in [
        c.grant_role(&fx.admin, u, &ghost).await.unwrap_err(),
        c.revoke_role(&fx.admin, u, &ghost).await.unwrap_err(),
        c.delete_role(&fx.admin, &ghost).await.unwrap_err(),
        c.set_role_permissions(&fx.admin, &ghost, vec![])
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e.code, ErrorCode::NotFound, "{e}");
    }
    assert_invalid(
        &c.grant_role(&fx.admin, u, "Not A Role").await.unwrap_err(),
        "role",
    );
    assert_invalid(
        &c.revoke_role(&fx.admin, u, "../admin").await.unwrap_err(),
        "role",
    );
    assert_invalid(&c.delete_role(&fx.admin, "x/y").await.unwrap_err(), "name");
    let e = c
        .create_role(
            &fx.admin,
            Role {
                name: "Has Spaces".into(),
                description: String::new(),
                permissions: vec![],
                built_in: false,
            },
        )
        .await
        .unwrap_err();
    assert_invalid(&e, "name");
    let (_, names) = declare(fx).await;
    let taken = make_role(fx, "taken", &names[..1]).await;
    let e = c
        .create_role(
            &fx.admin,
            Role {
                permissions: vec![],
                ..taken.clone()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::AlreadyExists, "{e}");
}

pub async fn admin_calls_need_a_token_with_authz_roles_manage(fx: &AuthzFixture) {
    let c = &fx.client;
    let (_, names) = declare(fx).await;
    let role = make_role(fx, "guarded", &names[..1]).await;
    let u = Uuid::new_v4();
    for (who, call_ctx, code) in [
        (
            "no token",
            RequestContext {
                authorization: None,
                ..fx.ctx()
            },
            ErrorCode::Unauthenticated,
        ),
        (
            "unprivileged",
            fx.unprivileged.clone(),
            ErrorCode::PermissionDenied,
        ),
    ] {
        let errors = [
            (
                "create_role",
                c.create_role(
                    &call_ctx,
                    Role {
                        name: role_name("sneaky"),
                        description: String::new(),
                        permissions: names[..1].to_vec(),
                        built_in: false,
                    },
                )
                .await
                .map(drop),
            ),
            ("delete_role", c.delete_role(&call_ctx, &role.name).await),
            (
                "set_role_permissions",
                c.set_role_permissions(&call_ctx, &role.name, names.to_vec())
                    .await
                    .map(drop),
            ),
            ("grant_role", c.grant_role(&call_ctx, u, &role.name).await),
            (
                "grant_role admin",
                c.grant_role(&call_ctx, u, ADMIN_ROLE).await,
            ),
            ("revoke_role", c.revoke_role(&call_ctx, u, &role.name).await),
        ];
        for (method, result) in errors {
            let e = result.expect_err(&format!("{method} with {who} succeeded"));
            assert_eq!(e.code, code, "{method} with {who}: {e}");
        }
    }
    // Nothing changed.
    let roles = c.list_roles(&fx.ctx()).await.unwrap();
    let r = roles
        .iter()
        .find(|r| r.name == role.name)
        .expect("role kept");
    assert_eq!(r.permissions, role.permissions);
    assert!(granted_roles(fx, u).await.is_empty());
    // The check methods need no token (service identities arrive later).
    assert!(!c.has_permission(&fx.ctx(), u, &names[0]).await.unwrap());
}
