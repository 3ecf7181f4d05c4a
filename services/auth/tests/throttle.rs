//! Sign-in throttling through the HTTP API: the answer for a throttled account is the one
//! generic error; back-off ends by itself; X-Forwarded-For from an untrusted peer is ignored.

mod common;

use common::{Backend, start};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

const PW: &str = "correct horse battery staple";

async fn login(
    c: &reqwest::Client,
    base: &str,
    email: &str,
    pw: &str,
    xff: Option<&str>,
) -> (StatusCode, Value) {
    let mut rb = c
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": email, "password": pw}));
    if let Some(x) = xff {
        rb = rb.header("x-forwarded-for", x);
    }
    let r = rb.send().await.unwrap();
    (r.status(), r.json().await.unwrap())
}

#[tokio::test]
async fn account_back_off_answers_like_a_wrong_password_and_ends() {
    let svc = start(
        Backend::Sqlite,
        &[
            ("PLT_AUTH__THROTTLE__ACCOUNT_FREE_FAILURES", "2"),
            ("PLT_AUTH__THROTTLE__ACCOUNT_BASE_DELAY", "400ms"),
            ("PLT_AUTH__THROTTLE__ACCOUNT_MAX_DELAY", "400ms"),
        ],
    )
    .await
    .unwrap();
    svc.identity.add_user("victim@example.com", PW);
    let c = reqwest::Client::new();
    let base = svc.url();
    let (_, wrong) = login(&c, &base, "victim@example.com", "bad guess one", None).await;
    login(&c, &base, "victim@example.com", "bad guess two", None).await;
    // Throttled now: even the right password gets the same generic answer.
    let (status, body) = login(&c, &base, "victim@example.com", PW, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        body, wrong,
        "a throttled answer must look like a wrong password"
    );
    // Other accounts are not affected.
    svc.identity.add_user("bystander@example.com", PW);
    assert_eq!(
        login(&c, &base, "bystander@example.com", PW, None).await.0,
        StatusCode::OK
    );
    // No hard lock: after the back-off, the owner gets in.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(
        login(&c, &base, "victim@example.com", PW, None).await.0,
        StatusCode::OK
    );
    svc.stop().await;
}

#[tokio::test]
async fn source_limit_ignores_forwarded_for_from_untrusted_peers() {
    let svc = start(
        Backend::Sqlite,
        &[
            ("PLT_AUTH__THROTTLE__SOURCE_MAX_FAILURES", "5"),
            ("PLT_AUTH__THROTTLE__ACCOUNT_FREE_FAILURES", "100"),
        ],
    )
    .await
    .unwrap();
    svc.identity.add_user("someone@example.com", PW);
    let c = reqwest::Client::new();
    let base = svc.url();
    // Spraying different accounts and claiming a new address each time does not help: the
    // peer (127.0.0.1) is not a trusted proxy, so its X-Forwarded-For is ignored.
    for i in 0..5 {
        let xff = format!("198.51.100.{i}");
        let (s, _) = login(
            &c,
            &base,
            &format!("spray{i}@example.com"),
            "guess",
            Some(&xff),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, _) = login(&c, &base, "someone@example.com", PW, Some("203.0.113.99")).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the source limit was bypassed with X-Forwarded-For"
    );
    svc.stop().await;
}

#[tokio::test]
async fn trusted_proxies_forwarded_for_is_used() {
    let svc = start(
        Backend::Sqlite,
        &[
            ("PLT_AUTH__THROTTLE__SOURCE_MAX_FAILURES", "3"),
            ("PLT_AUTH__THROTTLE__ACCOUNT_FREE_FAILURES", "100"),
            ("PLT_AUTH__TRUSTED_PROXIES", "[127.0.0.1, \"::1\"]"),
        ],
    )
    .await
    .unwrap();
    svc.identity.add_user("good@example.com", PW);
    let c = reqwest::Client::new();
    let base = svc.url();
    for i in 0..3 {
        login(
            &c,
            &base,
            &format!("x{i}@example.com"),
            "guess",
            Some("198.51.100.1"),
        )
        .await;
    }
    // The attacker's forwarded address is throttled; a different client behind the same
    // proxy is not.
    assert_eq!(
        login(&c, &base, "good@example.com", PW, Some("198.51.100.1"))
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&c, &base, "good@example.com", PW, Some("203.0.113.2"))
            .await
            .0,
        StatusCode::OK
    );
    svc.stop().await;
}
