//! Bounded staleness across instances: two authz instances A and B on one database (the same
//! PostgreSQL schema; the same SQLite file). B caches a user's decision; a grant, a role
//! change and a revoke made on A must change B's answer within `staleness_bound` — polled
//! with a deadline of `staleness_bound + 1s`, and the test fails if it ever takes longer.
//! Also: an instance that cannot confirm its cache (database gone) never answers from a
//! cache older than the bound — it fails closed.

mod common;

use common::{Backend, Running, Setup, ctx, start_with};
use plt_contracts::{
    ErrorCode,
    authz::{AuthzServiceClient, Permission, Role},
};
use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};
use uuid::Uuid;

/// Polls B until `has_permission` answers `want`; returns how long it took. Panics past
/// the deadline.
async fn wait_until(b: &Running, user: Uuid, perm: &str, want: bool, bound: Duration) -> Duration {
    let start = Instant::now();
    let deadline = bound + Duration::from_secs(1);
    loop {
        let got = b.core.has_permission(&ctx(), user, perm).await.unwrap();
        let elapsed = start.elapsed();
        if got == want {
            return elapsed;
        }
        assert!(
            elapsed <= deadline,
            "B still answers {got} for {perm} after {elapsed:?} (bound {bound:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn two_instances(backend: Backend, bound: &str) {
    let Some(a) = start_with(Setup::new(backend).var("PLT_AUTHZ__STALENESS_BOUND", bound)).await
    else {
        common::skipped("authz staleness on postgres");
        return;
    };
    let b = start_with(
        Setup::new(backend)
            .beside(&a)
            .var("PLT_AUTHZ__STALENESS_BOUND", bound),
    )
    .await
    .unwrap();
    let bound = a.cfg.service.staleness_bound;

    // Declared and put in a role on A.
    let perm = "stale.things.read".to_owned();
    a.core
        .register_permissions(
            &ctx(),
            "stale",
            vec![Permission {
                name: perm.clone(),
                description: String::new(),
                ..Default::default()
            }],
        )
        .await
        .unwrap();
    let role = a
        .core
        .create_role(
            &a.admin,
            Role {
                name: "stale-readers".into(),
                description: String::new(),
                permissions: vec![perm.clone()],
                built_in: false,
            },
        )
        .await
        .unwrap();
    let user = Uuid::new_v4();

    // B knows the new permission at once (an unknown name is looked up before refusing)
    // and caches the user's (empty) grants.
    assert!(!b.core.has_permission(&ctx(), user, &perm).await.unwrap());
    let hits = b.core.policy().stats.hits.load(Ordering::Relaxed);
    assert!(!b.core.has_permission(&ctx(), user, &perm).await.unwrap());
    assert!(
        b.core.policy().stats.hits.load(Ordering::Relaxed) > hits,
        "B answered the repeat from its cache"
    );

    // Grant on A → B says yes within the bound.
    a.core.grant_role(&a.admin, user, &role.name).await.unwrap();
    let took = wait_until(&b, user, &perm, true, bound).await;
    eprintln!("{backend:?}: grant visible on B after {took:?} (bound {bound:?})");
    assert!(took <= bound, "grant took {took:?} > {bound:?}");
    // And B now caches the positive answer.
    let hits = b.core.policy().stats.hits.load(Ordering::Relaxed);
    assert!(b.core.has_permission(&ctx(), user, &perm).await.unwrap());
    assert!(b.core.policy().stats.hits.load(Ordering::Relaxed) > hits);

    // A role change on A (the role loses the permission) → B says no within the bound.
    a.core
        .set_role_permissions(&a.admin, &role.name, vec![])
        .await
        .unwrap();
    let took = wait_until(&b, user, &perm, false, bound).await;
    eprintln!("{backend:?}: role change visible on B after {took:?}");
    assert!(took <= bound, "role change took {took:?} > {bound:?}");
    a.core
        .set_role_permissions(&a.admin, &role.name, vec![perm.clone()])
        .await
        .unwrap();
    wait_until(&b, user, &perm, true, bound).await;

    // Revoke on A → B says no within the bound.
    a.core
        .revoke_role(&a.admin, user, &role.name)
        .await
        .unwrap();
    let took = wait_until(&b, user, &perm, false, bound).await;
    eprintln!("{backend:?}: revoke visible on B after {took:?}");
    assert!(took <= bound, "revoke took {took:?} > {bound:?}");
    b.core
        .authorize(&ctx(), user, &perm)
        .await
        .expect_err("denied after revoke");

    b.stop().await;
    a.stop().await;
}

#[tokio::test]
async fn grant_and_revoke_reach_the_other_instance_on_postgres() {
    // The default bound, as configured in config/default.yaml.
    two_instances(Backend::Postgres, "5s").await;
}

#[tokio::test]
async fn grant_and_revoke_reach_the_other_instance_on_sqlite() {
    two_instances(Backend::Sqlite, "1s").await;
}

#[tokio::test]
async fn an_unconfirmable_cache_fails_closed() {
    let a = start_with(Setup::new(Backend::Sqlite).var("PLT_AUTHZ__STALENESS_BOUND", "400ms"))
        .await
        .unwrap();
    let user = Uuid::new_v4();
    a.core
        .grant_role(&a.admin, user, plt_contracts::authz::ADMIN_ROLE)
        .await
        .unwrap();
    assert!(
        a.core
            .has_permission(&ctx(), user, "audit.logs.read")
            .await
            .unwrap()
    );
    // The database goes away: polls fail, and after the bound the cached "yes" must not be
    // used any more.
    a.db().close().await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let e = a
        .core
        .has_permission(&ctx(), user, "audit.logs.read")
        .await
        .expect_err("answered from a cache older than the bound");
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    let e = a
        .core
        .authorize(&ctx(), user, "audit.logs.read")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    assert!(a.core.policy().stats.bypassed.load(Ordering::Relaxed) >= 2);
}
