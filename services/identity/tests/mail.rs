//! identity configured with `notifier.kind: smtp` sends its verification and reset mail to a
//! real SMTP server (aiosmtpd, `plt_kernel::testing::smtp`; runs when `PLT_TEST_SMTP_PYTHON`
//! is set), and a mail server that is down fails the mail, not the sign-up (as with the
//! outbox: the failure is logged and the user can ask again).

use identity_service::Identity;
use plt_contracts::{
    RequestContext,
    identity::{IdentityServiceClient, NewUser, token_in_mail},
};
use plt_kernel::{
    Secret,
    testing::smtp::{SmtpServer, python},
};
use plt_runtime::testing::{Backend, TestService};
use std::sync::Arc;

const PW: &str = "correct horse battery staple 42";

async fn identity_with_smtp(port: u16) -> (TestService, Arc<dyn IdentityServiceClient>) {
    plt_kernel::telemetry::init_for_tests();
    let port = port.to_string();
    let svc = TestService::start::<Identity>(
        Backend::Sqlite,
        &[
            ("PLT_NOTIFIER__KIND", "smtp"),
            ("PLT_NOTIFIER__FROM", "plt <noreply@plt.test>"),
            ("PLT_NOTIFIER__SMTP__HOST", "127.0.0.1"),
            ("PLT_NOTIFIER__SMTP__PORT", &port),
            ("PLT_NOTIFIER__SMTP__TLS", "none"),
            ("PLT_NOTIFIER__SMTP__TIMEOUT", "2s"),
        ],
    )
    .await
    .expect("SQLite always starts");
    let core = svc
        .get::<Arc<dyn IdentityServiceClient>>()
        .expect("core exported");
    (svc, core)
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        email: email.into(),
        password: Secret::new(PW.into()),
        display_name: String::new(),
    }
}

#[tokio::test]
async fn verification_and_reset_mail_arrive_at_the_smtp_server() {
    let Some(python) = python() else { return };
    let server = SmtpServer::start(&python, &["--tls", "none"]).await;
    let (svc, core) = identity_with_smtp(server.port).await;
    let ctx = RequestContext::new();

    let user = core
        .create_user(&ctx, new_user("ada@example.com"))
        .await
        .unwrap();
    assert!(!user.email_verified);
    let got = server.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["rcpt_tos"], serde_json::json!(["ada@example.com"]));
    assert_eq!(got[0]["mail_from"], "noreply@plt.test");
    assert_eq!(got[0]["subject"], "Verify your e-mail address");
    let body = got[0]["body"].as_str().unwrap().replace("\r\n", "\n");
    let token = token_in_mail(&body)
        .expect("a token in the mail")
        .to_owned();
    // The token that crossed SMTP is the real one: it verifies the address.
    core.verify_email(&ctx, &token).await.unwrap();
    let user = core
        .get_user_by_email(&ctx, "ada@example.com")
        .await
        .unwrap();
    assert!(user.email_verified);

    core.request_password_reset(&ctx, "ada@example.com")
        .await
        .unwrap();
    let got = server.received();
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[1]["subject"], "Reset your password");
    svc.stop().await;
}

#[tokio::test]
async fn a_mail_server_that_is_down_fails_the_mail_not_the_sign_up() {
    if python().is_none() {
        return;
    }
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (svc, core) = identity_with_smtp(closed).await;
    let ctx = RequestContext::new();
    let user = core
        .create_user(&ctx, new_user("bob@example.com"))
        .await
        .unwrap();
    assert_eq!(
        core.get_user_by_email(&ctx, "bob@example.com")
            .await
            .unwrap()
            .id,
        user.id
    );
    core.request_password_reset(&ctx, "bob@example.com")
        .await
        .unwrap();
    svc.stop().await;
}
