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
    let c = plt_kernel::tls::http_client();
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
    let c = plt_kernel::tls::http_client();
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
    let c = plt_kernel::tls::http_client();
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

/// A sign-in with `X-Forwarded-For` on several lines, as a client's own line and the line its
/// proxy appended arrive.
async fn login_lines(
    c: &reqwest::Client,
    base: &str,
    email: &str,
    pw: &str,
    lines: &[&str],
) -> StatusCode {
    let mut rb = c
        .post(format!("{base}/v1/auth/login"))
        .json(&json!({"email": email, "password": pw}));
    for l in lines {
        rb = rb.header("x-forwarded-for", *l);
    }
    rb.send().await.unwrap().status()
}

/// Behind a trusted proxy that appends its own `X-Forwarded-For` line, the client's address
/// is the proxy's word: a line the client sent itself (first) cannot hide it, so spraying
/// with a new forged address each time still counts against the real one.
#[tokio::test]
async fn every_forwarded_for_line_counts_so_a_clients_own_line_cannot_hide_the_proxys() {
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
    let c = plt_kernel::tls::http_client();
    let base = svc.url();
    for i in 0..3 {
        let forged = format!("192.0.2.{i}");
        let s = login_lines(
            &c,
            &base,
            &format!("spray{i}@example.com"),
            "guess",
            &[&forged, "198.51.100.1"],
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // The real client (198.51.100.1) is throttled now, whatever it puts first.
    assert_eq!(
        login_lines(
            &c,
            &base,
            "good@example.com",
            PW,
            &["192.0.2.77", "198.51.100.1"]
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "the source limit was bypassed with a forged X-Forwarded-For line"
    );
    // Another client behind the same proxy is not.
    assert_eq!(
        login_lines(
            &c,
            &base,
            "good@example.com",
            PW,
            &["192.0.2.1", "203.0.113.2"]
        )
        .await,
        StatusCode::OK
    );
    svc.stop().await;
}

/// A sign-in as the gateway sends it: its service token and the client address it vouches
/// for (`None`: a direct caller, or a forged header without a token).
async fn login_via(
    c: &reqwest::Client,
    base: &str,
    email: &str,
    pw: &str,
    token: Option<&str>,
    client_ip: &str,
) -> StatusCode {
    let mut rb = c
        .post(format!("{base}/v1/auth/login"))
        .header("x-plt-client-ip", client_ip)
        .json(&json!({"email": email, "password": pw}));
    if let Some(t) = token {
        rb = rb.header("x-plt-service-token", t);
    }
    rb.send().await.unwrap().status()
}

#[tokio::test]
async fn the_gateways_client_address_counts_only_with_its_token() {
    let svc = start(
        Backend::Sqlite,
        &[
            ("PLT_AUTH__THROTTLE__SOURCE_MAX_FAILURES", "3"),
            ("PLT_AUTH__THROTTLE__ACCOUNT_FREE_FAILURES", "100"),
        ],
    )
    .await
    .unwrap();
    svc.identity.add_user("user@example.com", PW);
    let gateway = svc.service_ctx().await.service_token.unwrap();
    let token = Some(gateway.expose().as_str());
    let c = plt_kernel::tls::http_client();
    let base = svc.url();
    // Spraying through the gateway from one client: that client is limited...
    for i in 0..3 {
        let s = login_via(
            &c,
            &base,
            &format!("s{i}@example.com"),
            "guess",
            token,
            "198.51.100.1",
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        login_via(&c, &base, "user@example.com", PW, token, "198.51.100.1").await,
        StatusCode::UNAUTHORIZED,
        "the spraying client is limited"
    );
    // ...every other client behind the same gateway is not.
    assert_eq!(
        login_via(&c, &base, "user@example.com", PW, token, "203.0.113.5").await,
        StatusCode::OK
    );
    // Without the gateway's token the stated address is not believed: a direct caller
    // (127.0.0.1 here) cannot dodge its own limit by claiming another address each time.
    for i in 0..3 {
        let claimed = format!("192.0.2.{i}");
        login_via(
            &c,
            &base,
            &format!("d{i}@example.com"),
            "guess",
            None,
            &claimed,
        )
        .await;
    }
    assert_eq!(
        login_via(&c, &base, "user@example.com", PW, None, "192.0.2.77").await,
        StatusCode::UNAUTHORIZED,
        "a forged x-plt-client-ip was believed"
    );
    svc.stop().await;
}

#[tokio::test]
async fn spraying_and_hammering_cannot_lock_the_owner_out() {
    let svc = start(
        Backend::Sqlite,
        &[
            ("PLT_AUTH__THROTTLE__SOURCE_MAX_FAILURES", "5"),
            ("PLT_AUTH__THROTTLE__ACCOUNT_FREE_FAILURES", "3"),
            ("PLT_AUTH__THROTTLE__ACCOUNT_BASE_DELAY", "5m"),
        ],
    )
    .await
    .unwrap();
    svc.identity.add_user("admin@example.com", PW);
    let gateway = svc.service_ctx().await.service_token.unwrap();
    let token = Some(gateway.expose().as_str());
    let c = plt_kernel::tls::http_client();
    let base = svc.url();
    let owner = "198.51.100.10";
    // The owner signed in before from her address.
    assert_eq!(
        login_via(&c, &base, "admin@example.com", PW, token, owner).await,
        StatusCode::OK
    );
    // An attacker elsewhere hammers her account and sprays unknown ones...
    for i in 0..20 {
        let attacker = format!("203.0.113.{i}");
        login_via(&c, &base, "admin@example.com", "guess", token, &attacker).await;
        login_via(
            &c,
            &base,
            &format!("n{i}@example.com"),
            "guess",
            token,
            &attacker,
        )
        .await;
    }
    // ...and sprays from the owner's own address (same NAT) with unknown accounts.
    for i in 0..10 {
        login_via(
            &c,
            &base,
            &format!("m{i}@example.com"),
            "guess",
            token,
            owner,
        )
        .await;
    }
    // A new attacker address is throttled on her account (5 minutes of back-off)...
    assert_eq!(
        login_via(&c, &base, "admin@example.com", PW, token, "203.0.113.200").await,
        StatusCode::UNAUTHORIZED
    );
    // ...while she signs in at once from where she did before.
    assert_eq!(
        login_via(&c, &base, "admin@example.com", PW, token, owner).await,
        StatusCode::OK
    );
    svc.stop().await;
}

#[tokio::test]
async fn a_throttled_refusal_takes_as_long_as_a_real_check() {
    let svc = start(
        Backend::Sqlite,
        &[
            ("PLT_AUTH__THROTTLE__ACCOUNT_FREE_FAILURES", "1"),
            ("PLT_AUTH__THROTTLE__ACCOUNT_BASE_DELAY", "5m"),
        ],
    )
    .await
    .unwrap();
    // A real check that takes a known time: the fake identity waits 60 ms per verification.
    svc.identity.add_user("victim@example.com", PW);
    svc.identity.set_verify_delay(Duration::from_millis(60));
    let c = plt_kernel::tls::http_client();
    let base = svc.url();
    let timed = async |pw: &str| {
        let t = std::time::Instant::now();
        let (s, _) = login(&c, &base, "victim@example.com", pw, None).await;
        (s, t.elapsed())
    };
    let (s, real) = timed("wrong guess").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(real >= Duration::from_millis(60), "{real:?}");
    // Now throttled: refused without asking identity, yet not measurably faster.
    let (s, throttled) = timed("another guess").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        throttled >= Duration::from_millis(50),
        "a throttled refusal answered in {throttled:?}, a real check in {real:?}"
    );
    svc.stop().await;
}
