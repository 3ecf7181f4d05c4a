//! What identity audits: users created, updated, disabled, enabled and deleted, e-mail
//! verified, password resets requested (also for unknown addresses) and completed — with the
//! actor, the user as resource, the source address, user agent and request id; delivered by
//! the outbox relay with a record id each; never a password, token or hash.

mod common;

use identity_service::Identity;
use plt_contracts::{
    RequestContext,
    audit::{AuditServiceClient, NewAuditEntry, Outcome},
    identity::{IdentityServiceClient, NewUser, UserStatus, UserUpdate, token_in_mail},
    testsuite::fakes::FakeAudit,
};
use plt_kernel::{
    Secret,
    notify::{MailReader, MemoryNotifier, Notifier},
};
use plt_runtime::testing::{Backend, TestOptions, TestService};
use std::{sync::Arc, time::Duration};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(5);
const PASSWORD: &str = "Correct-Horse-Battery-Staple-8431";
const NEW_PASSWORD: &str = "Another-Long-Passphrase-to-Remember-2207";

fn ctx(request: &str) -> RequestContext {
    let mut c = RequestContext::new().with_request_id(request);
    c.user_agent = Some("identity-audit-test/1".into());
    c.peer = Some("192.0.2.44:5555".parse().unwrap());
    c
}

async fn one(audit: &FakeAudit, action: &str, resource: &str) -> NewAuditEntry {
    audit
        .wait_for(WAIT, |e| e.action == action && e.resource == resource)
        .await
        .unwrap_or_else(|| panic!("{action} on {resource} not audited: {:#?}", audit.entries()))
}

#[tokio::test]
async fn every_change_to_a_user_is_audited() {
    plt_kernel::telemetry::init_for_tests();
    let audit = FakeAudit::default();
    let mail = MemoryNotifier::default();
    let svc = TestService::start_with::<Identity>(
        Backend::Sqlite,
        TestOptions::vars(&[("PLT_OUTBOX__POLL_INTERVAL", "100ms")])
            .with(Arc::new(mail.clone()) as Arc<dyn Notifier>)
            .with(Arc::new(audit.clone()) as Arc<dyn AuditServiceClient>)
            .with(
                Arc::new(plt_contracts::testsuite::fakes::FakeAuth::default())
                    as Arc<dyn plt_contracts::auth::AuthServiceClient>,
            ),
    )
    .await
    .unwrap();
    let core = svc.get::<Arc<dyn IdentityServiceClient>>().unwrap();
    let email = format!("lin-{}@example.com", Uuid::new_v4().simple());

    // Sign-up: anonymous, from the peer's address.
    let user = core
        .create_user(
            &ctx("req-create"),
            NewUser {
                email: email.clone(),
                password: Secret::new(PASSWORD.into()),
                display_name: "Lin".into(),
            },
        )
        .await
        .unwrap();
    let me = format!("user/{}", user.id);
    let created = one(&audit, "identity.user.created", &me).await;
    assert_eq!(created.actor, "anonymous");
    assert_eq!(created.outcome, Outcome::Success);
    assert_eq!(created.source_ip, "192.0.2.44");
    assert_eq!(created.user_agent, "identity-audit-test/1");
    assert_eq!(created.metadata["request_id"], "req-create");

    // Changes by an administrator (the verified token's subject is the actor).
    let admin = Uuid::new_v4();
    let mut as_admin = ctx("req-admin");
    as_admin.authorization = Some(Secret::new(format!("Bearer {}", svc.user_token(admin))));
    let rename = UserUpdate {
        display_name: Some("Lin Y.".into()),
        ..Default::default()
    };
    core.update_user(&as_admin, user.id, rename).await.unwrap();
    let updated = one(&audit, "identity.user.updated", &me).await;
    assert_eq!(updated.actor, admin.to_string());
    assert_eq!(
        updated.metadata["fields"],
        serde_json::json!(["display_name"])
    );
    let status = |s| UserUpdate {
        status: Some(s),
        ..Default::default()
    };
    core.update_user(&as_admin, user.id, status(UserStatus::Disabled))
        .await
        .unwrap();
    one(&audit, "identity.user.disabled", &me).await;
    core.update_user(&as_admin, user.id, status(UserStatus::Active))
        .await
        .unwrap();
    one(&audit, "identity.user.enabled", &me).await;

    // The verification token proves the user: the actor.
    let verify = mail.latest_to(&email).unwrap().unwrap();
    let verify_token = token_in_mail(&verify.body).unwrap().to_owned();
    core.verify_email(&ctx("req-verify"), &verify_token)
        .await
        .unwrap();
    let verified = one(&audit, "identity.email.verified", &me).await;
    assert_eq!(verified.actor, user.id.to_string());

    // Resets: requested (also for an unknown address, as a failure) and completed.
    core.request_password_reset(&ctx("req-reset"), &email)
        .await
        .unwrap();
    let requested = one(&audit, "identity.password_reset.requested", &me).await;
    assert_eq!(requested.outcome, Outcome::Success);
    core.request_password_reset(&ctx("req-nobody"), "nobody@example.com")
        .await
        .unwrap();
    let unknown = one(&audit, "identity.password_reset.requested", "").await;
    assert_eq!(unknown.outcome, Outcome::Failure);
    assert_eq!(unknown.metadata["reason"], "unknown_address");
    let reset = mail.latest_to(&email).unwrap().unwrap();
    let reset_token = token_in_mail(&reset.body).unwrap().to_owned();
    core.reset_password(
        &ctx("req-complete"),
        &reset_token,
        Secret::new(NEW_PASSWORD.into()),
    )
    .await
    .unwrap();
    let completed = one(&audit, "identity.password_reset.completed", &me).await;
    assert_eq!(completed.actor, user.id.to_string());

    core.delete_user(&as_admin, user.id).await.unwrap();
    let deleted = one(&audit, "identity.user.deleted", &me).await;
    assert_eq!(deleted.actor, admin.to_string());

    // Nothing secret in any record; every record its own id.
    let all = serde_json::to_string(&audit.entries()).unwrap();
    for secret in [PASSWORD, NEW_PASSWORD, &verify_token, &reset_token] {
        assert!(!all.contains(secret), "a secret in the audit log: {all}");
    }
    let mut ids: Vec<Uuid> = audit.entries().iter().map(|e| e.id.unwrap()).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n);
    svc.stop().await;
}

/// A change that fails writes no record: the record commits with the change or not at all.
#[tokio::test]
async fn a_refused_change_writes_no_record() {
    plt_kernel::telemetry::init_for_tests();
    let audit = FakeAudit::default();
    let svc = TestService::start_with::<Identity>(
        Backend::Sqlite,
        TestOptions::default()
            .with(Arc::new(MemoryNotifier::default()) as Arc<dyn Notifier>)
            .with(Arc::new(audit.clone()) as Arc<dyn AuditServiceClient>)
            .with(
                Arc::new(plt_contracts::testsuite::fakes::FakeAuth::default())
                    as Arc<dyn plt_contracts::auth::AuthServiceClient>,
            ),
    )
    .await
    .unwrap();
    let core = svc.get::<Arc<dyn IdentityServiceClient>>().unwrap();
    let outbox = svc.get::<plt_outbox::Outbox>().unwrap();
    // Deleting a user that does not exist: nothing changed, nothing recorded.
    let e = core
        .delete_user(&ctx("req-ghost"), Uuid::new_v4())
        .await
        .unwrap_err();
    assert_eq!(e.code, plt_contracts::ErrorCode::NotFound);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(outbox.pending(plt_outbox::audit::TOPIC).await.unwrap().0, 0);
    assert!(
        !audit
            .entries()
            .iter()
            .any(|e| e.action == "identity.user.deleted"),
        "{:?}",
        audit.entries()
    );
    svc.stop().await;
}
