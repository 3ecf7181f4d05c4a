//! What auth audits: sign-ins that succeed, fail or are throttled, logouts, families revoked
//! on refresh-token reuse, key rotations, service tokens issued and refused — with actor,
//! resource, outcome, source address, user agent and request id, delivered by the outbox
//! relay; never a password or token.

mod common;

use auth_service::{Auth, core::AuthCore};
use plt_contracts::{
    RequestContext,
    audit::{AuditServiceClient, NewAuditEntry, Outcome},
    auth::AuthServiceClient,
    identity::IdentityServiceClient,
    testsuite::fakes::{FakeAudit, FakeIdentity},
};
use plt_kernel::Secret;
use plt_runtime::testing::{Backend, TestOptions, TestService};
use std::{sync::Arc, time::Duration};

const WAIT: Duration = Duration::from_secs(5);

fn ctx(request: &str) -> RequestContext {
    let mut c = RequestContext::new().with_request_id(request);
    c.user_agent = Some("auth-audit-test/1".into());
    c.peer = Some("198.51.100.7:4444".parse().unwrap());
    c
}

async fn one(
    audit: &FakeAudit,
    what: &str,
    pred: impl Fn(&NewAuditEntry) -> bool,
) -> NewAuditEntry {
    audit
        .wait_for(WAIT, pred)
        .await
        .unwrap_or_else(|| panic!("{what} not audited: {:#?}", audit.entries()))
}

#[tokio::test]
async fn security_events_of_auth_are_audited() {
    plt_kernel::telemetry::init_for_tests();
    let identity = FakeIdentity::default();
    let audit = FakeAudit::default();
    let svc = TestService::start_with::<Auth>(
        Backend::Sqlite,
        TestOptions::vars(&[
            ("PLT_AUTH__THROTTLE__ACCOUNT_FREE_FAILURES", "1"),
            ("PLT_AUTH__THROTTLE__ACCOUNT_BASE_DELAY", "60s"),
            ("PLT_AUTH__REFRESH__REUSE_GRACE", "0s"),
            ("PLT_OUTBOX__POLL_INTERVAL", "100ms"),
        ])
        .with(Arc::new(identity.clone()) as Arc<dyn IdentityServiceClient>)
        .with(Arc::new(audit.clone()) as Arc<dyn AuditServiceClient>),
    )
    .await
    .unwrap();
    let core = svc.get::<Arc<AuthCore>>().unwrap();
    identity.add_user("mallory@example.com", "Mallory-Pass-Phrase-1");
    let ada = identity.add_user("ada@example.com", "Ada-Pass-Phrase-Long-2");

    // A failed sign-in, then a throttled one.
    for i in 0..2 {
        let e = core
            .login(
                &ctx(&format!("req-fail-{i}")),
                "Mallory@example.com",
                Secret::new("wrong-password-guess".into()),
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, plt_contracts::ErrorCode::Unauthenticated);
    }
    let failed = one(&audit, "failed sign-in", |e| {
        e.action == "auth.login" && e.outcome == Outcome::Failure
    })
    .await;
    assert_eq!(failed.actor, "anonymous");
    assert_eq!(failed.resource, "account/mallory@example.com");
    assert_eq!(failed.source_ip, "198.51.100.7");
    assert_eq!(failed.user_agent, "auth-audit-test/1");
    assert_eq!(failed.metadata["request_id"], "req-fail-0");
    assert_eq!(failed.metadata["reason"], "invalid_credentials");
    let throttled = one(&audit, "throttled sign-in", |e| {
        e.action == "auth.login" && e.outcome == Outcome::Denied
    })
    .await;
    assert_eq!(throttled.metadata["reason"], "throttled");
    assert_eq!(throttled.metadata["request_id"], "req-fail-1");

    // A successful sign-in: the user is the actor and the resource.
    let tokens = core
        .login(
            &ctx("req-login"),
            "ada@example.com",
            Secret::new("Ada-Pass-Phrase-Long-2".into()),
        )
        .await
        .unwrap();
    let me = format!("user/{}", ada.id);
    let signed_in = one(&audit, "sign-in", |e| {
        e.action == "auth.login" && e.outcome == Outcome::Success
    })
    .await;
    assert_eq!(signed_in.actor, ada.id.to_string());
    assert_eq!(signed_in.resource, me);
    assert!(signed_in.metadata["family_id"].is_string());

    // Refresh-token reuse revokes the family.
    let rotated = core
        .refresh_token(&ctx("req-refresh"), tokens.refresh_token.clone())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    core.refresh_token(&ctx("req-replay"), tokens.refresh_token.clone())
        .await
        .unwrap_err();
    let revoked = one(&audit, "family revocation", |e| {
        e.action == "auth.token_family.revoked"
    })
    .await;
    assert_eq!(revoked.resource, me);
    assert_eq!(revoked.metadata["reason"], "refresh_token_reuse");
    assert_eq!(revoked.metadata["request_id"], "req-replay");

    // Logout with a fresh session's tokens.
    let session = core
        .login(
            &ctx("req-login-2"),
            "ada@example.com",
            Secret::new("Ada-Pass-Phrase-Long-2".into()),
        )
        .await
        .unwrap();
    core.logout(
        &ctx("req-logout"),
        Some(session.refresh_token.clone()),
        Some(session.access_token.clone()),
    )
    .await
    .unwrap();
    let logout = one(&audit, "logout", |e| e.action == "auth.logout").await;
    assert_eq!(logout.actor, ada.id.to_string());
    assert_eq!(logout.metadata["family_revoked"], true);
    assert_eq!(logout.metadata["access_token_revoked"], true);

    // Key rotation.
    let kid = core.keys().rotate().await.unwrap();
    let rotation = one(&audit, "key rotation", |e| e.action == "auth.keys.rotated").await;
    assert_eq!(rotation.resource, format!("key/{kid}"));
    assert_eq!(rotation.actor, "auth-service");
    assert_eq!(rotation.metadata["trigger"], "on_demand");

    // Service tokens issued and refused.
    core.issue_service_token(
        &ctx("req-svc"),
        "gateway",
        Secret::new(plt_client::development_secret("gateway")),
        "identity",
    )
    .await
    .unwrap();
    core.issue_service_token(
        &ctx("req-svc-bad"),
        "gateway",
        Secret::new("not-the-secret".into()),
        "identity",
    )
    .await
    .unwrap_err();
    let issued = one(&audit, "service token issued", |e| {
        e.action == "auth.service_token.issue" && e.outcome == Outcome::Success
    })
    .await;
    assert_eq!(
        (issued.actor.as_str(), issued.resource.as_str()),
        ("gateway", "service/identity")
    );
    let refused = one(&audit, "service token refused", |e| {
        e.action == "auth.service_token.issue" && e.outcome == Outcome::Denied
    })
    .await;
    assert_eq!(refused.metadata["request_id"], "req-svc-bad");

    // No password, secret or token in any record.
    let all = serde_json::to_string(&audit.entries()).unwrap();
    for secret in [
        "wrong-password-guess",
        "Ada-Pass-Phrase-Long-2",
        "not-the-secret",
        tokens.refresh_token.expose().as_str(),
        tokens.access_token.expose().as_str(),
        rotated.refresh_token.expose().as_str(),
        session.access_token.expose().as_str(),
    ] {
        assert!(!all.contains(secret), "a secret in the audit log");
    }
    svc.stop().await;
}
