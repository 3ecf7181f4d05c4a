//! Audit: denials and every grant, revoke and role change reach audit with actor, action,
//! resource and outcome; when audit fails, decisions are still answered from authz's own
//! data (deny stays deny, allow stays allow) and records are retried until audit takes
//! them; when the bounded queue is full, records are dropped and counted in
//! `authz_audit_dropped_total`; an unreachable real audit endpoint does not slow decisions.

mod common;

use common::{Backend, FakeAudit, Setup, ctx, start_with};
use plt_contracts::{
    ErrorCode,
    audit::{NewAuditEntry, Outcome},
    authz::{ADMIN_ROLE, AuthzServiceClient, Role},
};
use std::time::{Duration, Instant};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(5);

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
    assert!(svc.core.audit().flush(WAIT).await);
    assert!(
        !audit.records().iter().any(|e| e.actor == quiet.to_string()),
        "has_permission was audited"
    );
    assert_eq!(svc.core.audit().dropped(), 0);
    svc.stop().await;
}

#[tokio::test]
async fn decisions_survive_a_failing_audit_and_records_arrive_once_it_recovers() {
    let audit = FakeAudit::failing();
    let svc = start_with(
        Setup::new(Backend::Sqlite)
            .audit(audit.clone())
            .var("PLT_AUTHZ__AUDIT__RETRY_INITIAL_BACKOFF", "20ms")
            .var("PLT_AUTHZ__AUDIT__RETRY_MAX_BACKOFF", "100ms"),
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
    assert!(svc.core.audit().failed_attempts() >= 5);
    assert!(
        svc.core.audit().pending() >= 5,
        "bootstrap, grant and 3 denials wait"
    );
    // …and delivered, in order, once audit recovers.
    audit.set_failing(false);
    assert!(svc.core.audit().flush(WAIT).await, "queue did not drain");
    let records = audit.records();
    let denials: Vec<&NewAuditEntry> = records
        .iter()
        .filter(|e| e.actor == denied.to_string() && e.outcome == Outcome::Denied)
        .collect();
    assert_eq!(denials.len(), 3, "{records:?}");
    let grant_pos = records
        .iter()
        .position(|e| e.action == "authz.role.grant" && e.resource == format!("user/{allowed}"))
        .expect("grant delivered");
    let first_denial = records
        .iter()
        .position(|e| e.actor == denied.to_string())
        .unwrap();
    assert!(grant_pos < first_denial, "delivered out of order");
    assert_eq!(svc.core.audit().dropped(), 0);
    svc.stop().await;
}

fn dropped_in(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("authz_audit_dropped_total{")
                && l.contains("service=\"authz-service\"")
                && l.contains("reason=\"queue_full\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn a_full_queue_drops_the_newest_and_counts_them() {
    let audit = FakeAudit::failing();
    let svc = start_with(
        Setup::new(Backend::Sqlite)
            .audit(audit.clone())
            .var("PLT_AUTHZ__AUDIT__QUEUE_CAPACITY", "2")
            .var("PLT_AUTHZ__AUDIT__RETRY_INITIAL_BACKOFF", "1s")
            .var("PLT_AUTHZ__AUDIT__RETRY_MAX_BACKOFF", "1s"),
    )
    .await
    .unwrap();
    let http = plt_kernel::tls::http_client();
    let metrics_url = format!("{}/metrics", svc.url());
    let before = dropped_in(
        &http
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    let user = Uuid::new_v4();
    for _ in 0..10 {
        let e = svc
            .core
            .authorize(&ctx(), user, "audit.logs.read")
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::PermissionDenied);
    }
    // At most 1 in flight + 2 queued were accepted (the bootstrap record is one of them).
    let dropped = svc.core.audit().dropped();
    assert!(dropped >= 8, "dropped {dropped}");
    assert!(svc.core.audit().pending() <= 3);
    let after = dropped_in(
        &http
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    );
    assert!(
        after - before >= 8.0,
        "authz_audit_dropped_total went from {before} to {after}"
    );
    // Once audit recovers, the accepted records are delivered.
    audit.set_failing(false);
    assert!(svc.core.audit().flush(WAIT).await);
    assert_eq!(audit.records().len() as u64, svc.core.audit().delivered());
    assert!(audit.records().len() <= 3);
    svc.stop().await;
}

#[tokio::test]
async fn an_unreachable_audit_endpoint_does_not_slow_decisions() {
    for protocol in ["grpc", "http"] {
        let mut setup = Setup::new(Backend::Sqlite)
            // Nothing listens where the static registry puts audit (and auth).
            .var("PLT_REGISTRY__STATIC__AUDIT", "[127.0.0.1:1]")
            .var("PLT_REGISTRY__STATIC__AUTH", "[127.0.0.1:1]")
            .var("PLT_CLIENTS__AUDIT__PROTOCOL", protocol)
            .var("PLT_AUTHZ__AUDIT__TIMEOUT", "1s")
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
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{protocol}: {:?}",
            t.elapsed()
        );
        // The records wait in the queue, retried.
        let deadline = Instant::now() + WAIT;
        while svc.core.audit().failed_attempts() < 2 {
            assert!(Instant::now() < deadline, "{protocol}: never attempted");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(svc.core.audit().pending() >= 20);
        assert_eq!(svc.core.audit().delivered(), 0);
        svc.stop().await;
    }
}
