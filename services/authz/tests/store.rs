//! The store suite: `AuthzStore` semantics the contract suite cannot see from outside — the
//! policy version moves exactly when the policy does, in the same transaction; refused or
//! no-op writes leave no trace; deletes cascade; concurrent changes get distinct versions —
//! on SQLite and, when `PLT_TEST_POSTGRES_URL` is set, PostgreSQL (fresh schema).

mod common;

use authz_service::{
    core::{AuthzCore, PLATFORM_PERMISSIONS, USER_DEFAULT_PERMISSIONS},
    store::{AuthzStore, Change, RoleRow, for_db},
};
use chrono::{SubsecRound, Utc};
use plt_contracts::authz::{ADMIN_ROLE, Permission, USER_ROLE};
use plt_db::Db;
use std::sync::Arc;
use uuid::Uuid;

async fn open(
    backend: common::Backend,
) -> Option<(Arc<dyn AuthzStore>, Db, String, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().to_string();
    let cfg = plt_kernel::testing::config(authz_service::SECTION, backend.vars(&data)?);
    let schema = plt_db::testing::unique_schema("azstore");
    let db = authz_service::connect_db(&cfg, &schema).await.unwrap();
    Some((for_db(&db), db, schema, dir))
}

fn perm(name: &str, description: &str) -> Permission {
    Permission {
        name: name.into(),
        description: description.into(),
        ..Default::default()
    }
}

fn role(name: &str, permissions: &[&str]) -> RoleRow {
    RoleRow {
        name: name.into(),
        description: format!("{name} role"),
        built_in: false,
        all_permissions: false,
        permissions: permissions.iter().map(|s| (*s).to_owned()).collect(),
    }
}

async fn suite(backend: common::Backend) {
    let Some((store, db, schema, _dir)) = open(backend).await else {
        common::skipped("authz store suite on postgres");
        return;
    };
    platform_setup_is_idempotent(store.as_ref()).await;
    registration_bumps_only_on_change(store.as_ref()).await;
    users_get_declared_defaults_once(store.as_ref()).await;
    roles_and_refused_writes(store.as_ref()).await;
    grants_and_versions(store.as_ref()).await;
    deleting_a_role_cascades(store.as_ref()).await;
    concurrent_changes_get_distinct_versions(store.clone()).await;
    db.close().await;
    if backend == common::Backend::Postgres {
        common::drop_schema(&schema).await;
    }
}

#[tokio::test]
async fn store_on_sqlite() {
    suite(common::Backend::Sqlite).await;
}

#[tokio::test]
async fn store_on_postgres() {
    suite(common::Backend::Postgres).await;
}

async fn platform_setup_is_idempotent(s: &dyn AuthzStore) {
    assert_eq!(s.version().await.unwrap(), 1, "a fresh store starts at 1");
    AuthzCore::ensure_platform(s).await.unwrap();
    let v = s.version().await.unwrap();
    assert!(v > 1);
    AuthzCore::ensure_platform(s).await.unwrap();
    assert_eq!(
        s.version().await.unwrap(),
        v,
        "a second start changed the policy"
    );
    let perms = s.permissions().await.unwrap();
    for (_, name, _) in PLATFORM_PERMISSIONS {
        assert!(perms.iter().any(|p| p.name == *name), "{name}");
    }
    let names: Vec<&str> = perms.iter().map(|p| p.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let admin = s.role(ADMIN_ROLE).await.unwrap().unwrap();
    assert!(admin.built_in && admin.all_permissions && admin.permissions.is_empty());
    let user = s.role(USER_ROLE).await.unwrap().unwrap();
    assert!(user.built_in && !user.all_permissions);
    assert_eq!(user.permissions, USER_DEFAULT_PERMISSIONS);
}

/// A permission declared `granted_to_users` joins role `user` when authz first learns of it,
/// and only then: an operator who took it away keeps it away across restarts.
async fn users_get_declared_defaults_once(s: &dyn AuthzStore) {
    let now = Utc::now().trunc_subsecs(6);
    let mine = Permission {
        name: "notes.notes.write".into(),
        description: "write one's notes".into(),
        granted_to_users: true,
        relations: Vec::new(),
    };
    s.register_permissions("notes", std::slice::from_ref(&mine), now)
        .await
        .unwrap()
        .expect("a new permission changes the policy");
    let user = s.role(USER_ROLE).await.unwrap().unwrap();
    assert!(
        user.permissions.contains(&mine.name),
        "{:?}",
        user.permissions
    );
    let without: Vec<String> = user
        .permissions
        .iter()
        .filter(|p| **p != mine.name)
        .cloned()
        .collect();
    s.set_role_permissions(USER_ROLE, &without, now, &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        s.register_permissions("notes", std::slice::from_ref(&mine), now)
            .await
            .unwrap(),
        None,
        "declaring it again changes nothing"
    );
    let user = s.role(USER_ROLE).await.unwrap().unwrap();
    assert!(!user.permissions.contains(&mine.name));
}

async fn registration_bumps_only_on_change(s: &dyn AuthzStore) {
    let now = Utc::now().trunc_subsecs(6);
    let before = s.version().await.unwrap();
    let v = s
        .register_permissions(
            "blog",
            &[
                perm("blog.posts.read", "read"),
                perm("blog.posts.write", "write"),
            ],
            now,
        )
        .await
        .unwrap()
        .expect("new permissions change the policy");
    assert_eq!(v, before + 1);
    assert_eq!(s.version().await.unwrap(), v);
    assert_eq!(
        s.register_permissions("blog", &[perm("blog.posts.read", "read")], now)
            .await
            .unwrap(),
        None,
        "the same declaration again is not a change"
    );
    assert_eq!(s.version().await.unwrap(), v);
    let v2 = s
        .register_permissions("blog", &[perm("blog.posts.read", "read posts")], now)
        .await
        .unwrap()
        .expect("a new description is a change");
    assert_eq!(v2, v + 1);
    assert!(s.permission_exists("blog.posts.read").await.unwrap());
    assert!(!s.permission_exists("blog.posts.delete").await.unwrap());
    let read = s
        .permissions()
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.name == "blog.posts.read")
        .unwrap();
    assert_eq!(read.description, "read posts");
}

async fn roles_and_refused_writes(s: &dyn AuthzStore) {
    let now = Utc::now().trunc_subsecs(6);
    let v0 = s.version().await.unwrap();
    let v = s
        .create_role(
            &role("editor", &["blog.posts.write", "blog.posts.read"]),
            now,
            &[],
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v, v0 + 1);
    let r = s.role("editor").await.unwrap().unwrap();
    assert_eq!(r.permissions, vec!["blog.posts.read", "blog.posts.write"]);
    assert_eq!(
        s.create_role(&role("editor", &[]), now, &[]).await.unwrap(),
        None,
        "a taken name"
    );
    assert_eq!(
        s.version().await.unwrap(),
        v,
        "a refused create moved the version"
    );
    // The foreign key refuses undeclared permissions: nothing of the role is written.
    assert!(
        s.create_role(
            &role("ghostly", &["blog.posts.read", "ghost.things.haunt"]),
            now,
            &[]
        )
        .await
        .is_err()
    );
    assert!(s.role("ghostly").await.unwrap().is_none());
    assert_eq!(s.version().await.unwrap(), v);
    // Setting permissions: admin (all permissions) cannot be set; unknown roles are None.
    assert_eq!(
        s.set_role_permissions(ADMIN_ROLE, &[], now, &[])
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.set_role_permissions("nobody", &[], now, &[])
            .await
            .unwrap(),
        None
    );
    assert_eq!(s.version().await.unwrap(), v);
    let v2 = s
        .set_role_permissions("editor", &["blog.posts.read".into()], now, &[])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v2, v + 1);
    assert_eq!(
        s.role("editor").await.unwrap().unwrap().permissions,
        vec!["blog.posts.read"]
    );
    // Built-in roles cannot be deleted at the store level either.
    assert_eq!(s.delete_role(ADMIN_ROLE, &[]).await.unwrap(), None);
    assert_eq!(s.delete_role(USER_ROLE, &[]).await.unwrap(), None);
    assert_eq!(s.delete_role("nobody", &[]).await.unwrap(), None);
    assert_eq!(s.version().await.unwrap(), v2);
    let roles = s.roles().await.unwrap();
    let names: Vec<&str> = roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, vec![ADMIN_ROLE, "editor", USER_ROLE]);
}

async fn grants_and_versions(s: &dyn AuthzStore) {
    let now = Utc::now().trunc_subsecs(6);
    let u = Uuid::new_v4();
    // A user nobody granted anything holds the built-in role `user`, implicitly.
    let mut defaults = s.role(USER_ROLE).await.unwrap().unwrap().permissions;
    defaults.sort();
    assert!(!defaults.is_empty());
    let g = s.grants(u).await.unwrap();
    assert_eq!(g.roles, vec![USER_ROLE]);
    assert_eq!(g.permissions, defaults);
    assert!(!g.all);
    assert_eq!(g.version, s.version().await.unwrap());
    let Change::Changed(v) = s.grant(u, "editor", "tester", now, &[]).await.unwrap() else {
        panic!("first grant must change");
    };
    assert_eq!(s.version().await.unwrap(), v);
    assert_eq!(
        s.grant(u, "editor", "tester", now, &[]).await.unwrap(),
        Change::Unchanged
    );
    assert_eq!(
        s.grant(u, "nobody", "tester", now, &[]).await.unwrap(),
        Change::NoRole
    );
    assert_eq!(
        s.version().await.unwrap(),
        v,
        "no-op grants moved the version"
    );
    let g = s.grants(u).await.unwrap();
    assert_eq!(g.version, v);
    assert_eq!(g.roles, vec!["editor", USER_ROLE]);
    let mut expected = defaults.clone();
    expected.push("blog.posts.read".into());
    expected.sort();
    expected.dedup();
    assert_eq!(g.permissions, expected);
    assert!(!g.all);
    // Two roles with overlapping permissions: each permission once.
    s.grant(u, USER_ROLE, "tester", now, &[]).await.unwrap();
    s.set_role_permissions(
        USER_ROLE,
        &[
            "authz.permissions.read_self".into(),
            "blog.posts.read".into(),
        ],
        now,
        &[],
    )
    .await
    .unwrap();
    let g = s.grants(u).await.unwrap();
    assert_eq!(g.roles, vec!["editor", USER_ROLE]);
    assert_eq!(
        g.permissions,
        vec!["authz.permissions.read_self", "blog.posts.read"]
    );
    // admin: all permissions, without rows.
    s.grant(u, ADMIN_ROLE, "tester", now, &[]).await.unwrap();
    assert!(s.grants(u).await.unwrap().all);
    let Change::Changed(v2) = s.revoke(u, ADMIN_ROLE, &[]).await.unwrap() else {
        panic!("revoke must change");
    };
    assert!(!s.grants(u).await.unwrap().all);
    assert_eq!(
        s.revoke(u, ADMIN_ROLE, &[]).await.unwrap(),
        Change::Unchanged
    );
    assert_eq!(s.revoke(u, "nobody", &[]).await.unwrap(), Change::NoRole);
    assert_eq!(s.version().await.unwrap(), v2);
}

async fn deleting_a_role_cascades(s: &dyn AuthzStore) {
    let now = Utc::now().trunc_subsecs(6);
    s.create_role(&role("temp", &["blog.posts.write"]), now, &[])
        .await
        .unwrap()
        .unwrap();
    let users: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for u in &users {
        s.grant(*u, "temp", "tester", now, &[]).await.unwrap();
    }
    let v = s.delete_role("temp", &[]).await.unwrap().unwrap();
    assert_eq!(s.version().await.unwrap(), v);
    for u in &users {
        let g = s.grants(*u).await.unwrap();
        assert_eq!(g.roles, vec![USER_ROLE], "{g:?}");
        assert!(
            !g.permissions.iter().any(|p| p == "blog.posts.write"),
            "{g:?}"
        );
    }
    // Re-created under the same name, it has neither the old grants nor the old permissions.
    s.create_role(&role("temp", &[]), now, &[])
        .await
        .unwrap()
        .unwrap();
    assert!(
        s.role("temp")
            .await
            .unwrap()
            .unwrap()
            .permissions
            .is_empty()
    );
    assert_eq!(s.grants(users[0]).await.unwrap().roles, vec![USER_ROLE]);
}

async fn concurrent_changes_get_distinct_versions(s: Arc<dyn AuthzStore>) {
    let start = s.version().await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let now = Utc::now().trunc_subsecs(6);
            s.grant(Uuid::new_v4(), "editor", "tester", now, &[])
                .await
                .unwrap()
        }));
    }
    let mut versions = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Change::Changed(v) => versions.push(v),
            other => panic!("{other:?}"),
        }
    }
    versions.sort();
    let expected: Vec<u64> = (start + 1..=start + 16).collect();
    assert_eq!(versions, expected, "each change its own version, none lost");
    assert_eq!(s.version().await.unwrap(), start + 16);
}
