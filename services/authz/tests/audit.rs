//! Audit: denials and every grant, revoke and role change reach audit with actor, action,
//! resource, outcome and a record id, through the outbox; when audit fails, decisions are
//! still answered from authz's own data (deny stays deny, allow stays allow) and the records
//! wait in the database, retried until audit takes them — also across a restart; an
//! unreachable real audit endpoint does not slow decisions.

mod common;

use common::{Backend, FakeAudit, Running, Setup, ctx, start_with};
use plt_contracts::{
    ErrorCode,
    audit::{NewAuditEntry, Outcome},
    authz::{ADMIN_ROLE, AuthzServiceClient, Role},
};
use std::time::{Duration, Instant};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(5);

/// Audit records of authz still in its outbox.
async fn pending(svc: &Running) -> u64 {
    svc.core
        .outbox()
        .pending(plt_outbox::audit::TOPIC)
        .await
        .unwrap()
        .0
}

/// Waits until the outbox is empty (every record delivered).
async fn drained(svc: &Running) {
    let deadline = Instant::now() + WAIT;
    while pending(svc).await > 0 {
        assert!(Instant::now() < deadline, "the outbox did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is(e: &NewAuditEntry, actor: &str, action: &str, resource: &str, outcome: Outcome) -> bool {
    e.actor == actor && e.action == action && e.resource == resource && e.outcome == outcome
}

#[tokio::test]
async fn denials_grants_revokes_and_role_changes_are_recorded() {
    let audit = FakeAudit::default();
    let svc = start_with(Setup::new(Backend::Sqlite).audit(audit.clone()))
        .await
        .unwrap();
    let admin = svc.admin_id.to_string();
    let c = &svc.core;

    // The bootstrap grant itself.
    let boot = audit
        .wait_for(WAIT, |e| {
            is(
                e,
                "authz-service",
                "authz.role.grant",
                &format!("user/{admin}"),
                Outcome::Success,
            )
        })
        .await
        .expect("bootstrap grant recorded");
    assert_eq!(boot.metadata["role"], "admin");
    assert_eq!(boot.metadata["source"], "bootstrap");

    // A denial: actor is the user, the permission is the resource.
    let user = Uuid::new_v4();
    let ctx = ctx();
    let e = c
        .authorize(&ctx, user, "audit.logs.read")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    let denial = audit
        .wait_for(WAIT, |e| {
            is(
                e,
                &user.to_string(),
                "authz.authorize",
                "permission/audit.logs.read",
                Outcome::Denied,
            )
        })
        .await
        .expect("denial recorded");
    assert_eq!(denial.metadata["permission"], "audit.logs.read");
    assert_eq!(
        denial.metadata["request_id"].as_str(),
        ctx.request_id.as_deref(),
        "the request id travels with the record"
    );
    // HasPermission is a question, not an enforcement: not recorded.
    let quiet = Uuid::new_v4();
    assert!(
        !c.has_permission(&common::ctx(), quiet, "audit.logs.read")
            .await
            .unwrap()
    );

    // Role changes, grants and revokes: actor is the admin who made them.
    let role = c
        .create_role(
            &svc.admin,
            Role {
                name: "auditors".into(),
                description: String::new(),
                permissions: vec!["audit.logs.read".into()],
                built_in: false,
            },
        )
        .await
        .unwrap();
    c.grant_role(&svc.admin, user, &role.name).await.unwrap();
    c.authorize(&common::ctx(), user, "audit.logs.read")
        .await
        .unwrap();
    c.set_role_permissions(&svc.admin, &role.name, vec!["audit.logs.verify".into()])
        .await
        .unwrap();
    c.revoke_role(&svc.admin, user, &role.name).await.unwrap();
    c.delete_role(&svc.admin, &role.name).await.unwrap();
    let resource_user = format!("user/{user}");
    for (action, resource) in [
        ("authz.role.create", "role/auditors"),
        ("authz.role.grant", resource_user.as_str()),
        ("authz.role.set_permissions", "role/auditors"),
        ("authz.role.revoke", resource_user.as_str()),
        ("authz.role.delete", "role/auditors"),
    ] {
        let r = audit
            .wait_for(WAIT, |e| is(e, &admin, action, resource, Outcome::Success))
            .await
            .unwrap_or_else(|| {
                panic!("{action} on {resource} not recorded: {:?}", audit.records())
            });
        if action.ends_with("grant") || action.ends_with("revoke") {
            assert_eq!(r.metadata["role"], "auditors");
            assert_eq!(r.metadata["changed"], true);
        }
    }
    let set = audit
        .wait_for(WAIT, |e| e.action == "authz.role.set_permissions")
        .await
        .unwrap();
    assert_eq!(set.metadata["permissions"][0], "audit.logs.verify");
    assert_eq!(set.metadata["previous"][0], "audit.logs.read");

    // A refused admin call is a denial too, by the caller.
    let e = c
        .grant_role(&svc.unprivileged, user, ADMIN_ROLE)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PermissionDenied);
    audit
        .wait_for(WAIT, |e| {
            is(
                e,
                &svc.unprivileged_id.to_string(),
                "authz.role.grant",
                &resource_user,
                Outcome::Denied,
            )
        })
        .await
        .expect("refused admin call recorded");
    drained(&svc).await;
    assert!(
        !audit.records().iter().any(|e| e.actor == quiet.to_string()),
        "has_permission was audited"
    );
    // Every record carries its own id (the outbox message id).
    let ids: std::collections::HashSet<_> = audit.records().iter().map(|e| e.id).collect();
    assert!(ids.iter().all(Option::is_some));
    assert_eq!(ids.len(), audit.records().len());
    svc.stop().await;
}

#[tokio::test]
async fn decisions_survive_a_failing_audit_and_records_arrive_once_it_recovers() {
    let audit = FakeAudit::failing();
    let svc = start_with(
        Setup::new(Backend::Sqlite)
            .audit(audit.clone())
            .var("PLT_OUTBOX__RETRY_INITIAL_BACKOFF", "20ms")
            .var("PLT_OUTBOX__RETRY_MAX_BACKOFF", "100ms"),
    )
    .await
    .unwrap();
    let c = &svc.core;
    let denied = Uuid::new_v4();
    let allowed = Uuid::new_v4();
    c.grant_role(&svc.admin, allowed, ADMIN_ROLE).await.unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let e = c
            .authorize(&ctx(), denied, "audit.logs.read")
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied, "deny stays deny: {e}");
        c.authorize(&ctx(), allowed, "audit.logs.read")
            .await
            .expect("allow stays allow");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "decisions waited for audit"
        );
    }
    // Retried while failing…
    let deadline = Instant::now() + WAIT;
    while audit.attempts() < 5 {
        assert!(
            Instant::now() < deadline,
            "no retries: {}",
            audit.attempts()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(audit.records().is_empty());
    assert!(
        pending(&svc).await >= 5,
        "bootstrap, grant and 3 denials wait in the outbox"
    );
    // …and delivered once audit recovers.
    audit.set_failing(false);
    drained(&svc).await;
    let records = audit.records();
    let denials: Vec<&NewAuditEntry> = records
        .iter()
        .filter(|e| e.actor == denied.to_string() && e.outcome == Outcome::Denied)
        .collect();
    assert_eq!(denials.len(), 3, "{records:?}");
    assert!(
        records
            .iter()
            .any(|e| e.action == "authz.role.grant" && e.resource == format!("user/{allowed}")),
        "grant delivered: {records:?}"
    );
    svc.stop().await;
}

/// The records wait in authz's database, not in its memory: after a restart on the same
/// database, the new process delivers what the stopped one could not.
#[tokio::test]
async fn undelivered_records_are_delivered_after_a_restart() {
    let data = tempfile::tempdir().unwrap();
    let down = FakeAudit::failing();
    let mut setup = Setup::new(Backend::Sqlite)
        .audit(down.clone())
        .var("PLT_OUTBOX__RETRY_INITIAL_BACKOFF", "20ms")
        .var("PLT_OUTBOX__RETRY_MAX_BACKOFF", "50ms");
    setup.data_dir = Some(data.path().to_path_buf());
    let first = start_with(setup).await.unwrap();
    let (admin, admin_id) = (first.admin.clone(), first.admin_id);
    let user = Uuid::new_v4();
    first
        .core
        .grant_role(&admin, user, ADMIN_ROLE)
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while down.attempts() < 2 {
        assert!(Instant::now() < deadline, "never attempted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(pending(&first).await >= 2, "bootstrap and grant wait");
    first.stop().await;

    let up = FakeAudit::default();
    let mut setup = Setup::new(Backend::Sqlite)
        .audit(up.clone())
        .var("PLT_AUTHZ__BOOTSTRAP_ADMINS", &format!("[{admin_id}]"));
    setup.data_dir = Some(data.path().to_path_buf());
    let second = start_with(setup).await.unwrap();
    up.wait_for(WAIT, |e| {
        is(
            e,
            &admin_id.to_string(),
            "authz.role.grant",
            &format!("user/{user}"),
            Outcome::Success,
        )
    })
    .await
    .expect("the first process's grant delivered by the second");
    drained(&second).await;
    assert!(down.records().is_empty());
    second.stop().await;
}

#[tokio::test]
async fn an_unreachable_audit_endpoint_does_not_slow_decisions() {
    for protocol in ["grpc", "http"] {
        let mut setup = Setup::new(Backend::Sqlite)
            // Nothing listens where the static registry puts audit (and auth).
            .var("PLT_REGISTRY__STATIC__AUDIT", "[127.0.0.1:1]")
            .var("PLT_REGISTRY__STATIC__AUTH", "[127.0.0.1:1]")
            .var("PLT_CLIENTS__AUDIT__PROTOCOL", protocol)
            .var("PLT_OUTBOX__TIMEOUT", "1s")
            .var("PLT_OUTBOX__LEASE", "2s")
            .var("PLT_SERVER__SHUTDOWN_TIMEOUT", "1s");
        setup.real_audit = true;
        let svc = start_with(setup).await.unwrap();
        let user = Uuid::new_v4();
        let t = Instant::now();
        for _ in 0..20 {
            let e = svc
                .core
                .authorize(&ctx(), user, "identity.users.read")
                .await
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::PermissionDenied);
        }
        // Waiting on audit would take 20 × the 1 s outbox timeout; the bound is generous for
        // a loaded machine, not a performance target.
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{protocol}: {:?}",
            t.elapsed()
        );
        // The records wait in the outbox.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(pending(&svc).await >= 20, "{protocol}");
        svc.stop().await;
    }
}
