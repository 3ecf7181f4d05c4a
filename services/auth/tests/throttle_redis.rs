//! Sign-in throttling in Redis (`auth.throttle.redis_url`), against the real Redis
//! (`PLT_TEST_REDIS_URL`; skipped with a message when unset): the memory throttle's rules on
//! the Redis server's clock, one budget for every instance and across restarts, every key
//! expiring, and — behind a fault proxy — this instance's memory deciding at once while
//! Redis is gone, until a probe finds it back.

mod common;

use auth_service::{
    config::ThrottleConfig,
    throttle::{Throttle, Verdict},
};
use common::{Backend, start};
use plt_kernel::Secret;
use plt_testkit::{FaultProxy, Mode};
use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

fn redis_url() -> Option<String> {
    let url = std::env::var("PLT_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if url.is_none() {
        eprintln!("SKIPPED Redis throttle: PLT_TEST_REDIS_URL is not set");
    }
    url
}

fn unique_prefix() -> String {
    format!("plt:test:throttle:{}:", uuid::Uuid::new_v4().simple())
}

fn cfg(url: &str, prefix: &str) -> ThrottleConfig {
    ThrottleConfig {
        account_free_failures: 2,
        account_base_delay: Duration::from_millis(200),
        account_max_delay: Duration::from_millis(800),
        failure_window: Duration::from_secs(60),
        source_max_failures: 5,
        known_source_ttl: Duration::from_secs(3600),
        redis_url: Secret::new(url.to_owned()),
        redis_timeout: Duration::from_millis(100),
        redis_probe_interval: Duration::from_millis(200),
        key_prefix: prefix.to_owned(),
    }
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

/// The wait of a verdict (zero when allowed).
fn wait(v: Verdict) -> Duration {
    match v {
        Verdict::Allowed => Duration::ZERO,
        Verdict::Wait(d) => d,
    }
}

fn about(v: Verdict, expected_ms: u64) -> bool {
    let w = wait(v).as_millis() as u64;
    // Redis counts from the last failure on its own clock; allow for the calls between.
    w <= expected_ms && w + 100 >= expected_ms
}

#[tokio::test]
async fn instances_share_one_budget_and_a_restart_forgets_nothing() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix();
    let a = Throttle::new(&cfg(&url, &prefix)).unwrap();
    let b = Throttle::new(&cfg(&url, &prefix)).unwrap();
    let src = ip("203.0.113.9");

    // One failure on each instance: together they used the free failures.
    a.failure("victim@example.com", src).await;
    assert_eq!(
        b.check("victim@example.com", src).await,
        Verdict::Allowed,
        "one failure is free"
    );
    b.failure("victim@example.com", src).await;
    for t in [&a, &b] {
        assert!(t.is_shared());
        let v = t.check("victim@example.com", src).await;
        assert!(about(v, 200), "both see the back-off: {v:?}");
    }
    assert_eq!(
        a.check("bystander@example.com", src).await,
        Verdict::Allowed
    );

    // A restarted instance (nothing in its memory) still sees it.
    drop(a);
    let restarted = Throttle::new(&cfg(&url, &prefix)).unwrap();
    assert!(matches!(
        restarted.check("victim@example.com", src).await,
        Verdict::Wait(_)
    ));
    // Another prefix is another budget.
    let other = Throttle::new(&cfg(&url, &unique_prefix())).unwrap();
    assert_eq!(
        other.check("victim@example.com", src).await,
        Verdict::Allowed
    );

    // A success on one instance clears the account everywhere.
    b.success("victim@example.com", src).await;
    assert_eq!(
        restarted.check("victim@example.com", src).await,
        Verdict::Allowed
    );
}

#[tokio::test]
async fn back_off_doubles_up_to_the_cap_and_ends_by_itself() {
    let Some(url) = redis_url() else { return };
    let t = Throttle::new(&cfg(&url, &unique_prefix())).unwrap();
    let account = "ada@example.com";
    t.failure(account, None).await;
    assert_eq!(t.check(account, None).await, Verdict::Allowed);
    t.failure(account, None).await;
    let v = t.check(account, None).await;
    assert!(about(v, 200), "{v:?}");
    t.failure(account, None).await;
    let v = t.check(account, None).await;
    assert!(about(v, 400), "doubled: {v:?}");
    for _ in 0..5 {
        t.failure(account, None).await;
    }
    let v = t.check(account, None).await;
    assert!(about(v, 800), "capped at max_delay: {v:?}");
    tokio::time::sleep(wait(v) + Duration::from_millis(20)).await;
    assert_eq!(
        t.check(account, None).await,
        Verdict::Allowed,
        "no hard lock"
    );
}

#[tokio::test]
async fn the_source_limit_spans_accounts_and_known_sources_keep_the_owner_in() {
    let Some(url) = redis_url() else { return };
    let t = Throttle::new(&cfg(&url, &unique_prefix())).unwrap();
    let (owner, attacker) = (ip("198.51.100.10"), ip("203.0.113.66"));
    t.success("ada@example.com", owner).await;

    // The attacker hammers Ada's account and sprays others from its address.
    for i in 0..5 {
        t.failure("ada@example.com", attacker).await;
        t.failure(&format!("x{i}@example.com"), attacker).await;
    }
    let v = t.check("bob@example.com", attacker).await;
    assert!(
        wait(v) > Duration::from_secs(55) && wait(v) <= Duration::from_secs(60),
        "spraying: the source waits out the window: {v:?}"
    );
    assert!(matches!(
        t.check("ada@example.com", attacker).await,
        Verdict::Wait(_)
    ));
    assert_eq!(
        t.check("bob@example.com", ip("203.0.113.67")).await,
        Verdict::Allowed,
        "another address is not limited"
    );
    // Ada, from where she signed in before, is not slowed at all...
    assert_eq!(t.check("ada@example.com", owner).await, Verdict::Allowed);
    // ...her own mistakes there back off (the pair's counter), and end.
    t.failure("ada@example.com", owner).await;
    t.failure("ada@example.com", owner).await;
    let v = t.check("ada@example.com", owner).await;
    assert!(about(v, 200), "{v:?}");
    // A source known for Ada is no exemption for other accounts.
    for i in 0..5 {
        t.failure(&format!("y{i}@example.com"), owner).await;
    }
    assert!(matches!(
        t.check("carol@example.com", owner).await,
        Verdict::Wait(_)
    ));
}

#[tokio::test]
async fn every_key_expires() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix();
    let t = Throttle::new(&cfg(&url, &prefix)).unwrap();
    t.success("ada@example.com", ip("198.51.100.10")).await;
    t.failure("ada@example.com", ip("198.51.100.10")).await;
    t.failure("bob@example.com", ip("203.0.113.1")).await;
    t.failure("bob@example.com", None).await;

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut con)
        .await
        .unwrap();
    // a:ada cleared by the success; k:ada+ip, p:ada+ip, a:bob, s:203.0.113.1.
    assert_eq!(keys.len(), 4, "{keys:?}");
    assert!(
        keys.iter().all(|k| !k.contains("@")),
        "no e-mail addresses in Redis: {keys:?}"
    );
    for k in &keys {
        let ttl: i64 = redis::cmd("PTTL")
            .arg(k)
            .query_async(&mut con)
            .await
            .unwrap();
        let max = if k.contains(":k:") { 3_600_000 } else { 60_000 };
        assert!(ttl > 0 && ttl <= max, "{k}: PTTL {ttl}");
    }
}

async fn proxy(url: &str) -> FaultProxy {
    let upstream: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(
        url.trim_start_matches("redis://").trim_end_matches('/'),
    )
    .unwrap()
    .next()
    .unwrap();
    FaultProxy::start("redis", upstream).await.unwrap()
}

#[tokio::test]
async fn while_redis_is_gone_this_instance_decides_at_once_and_redis_takes_over_again() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix();
    let proxy = proxy(&url).await;
    // Back-offs that outlast the test.
    let long = |url: &str| ThrottleConfig {
        account_base_delay: Duration::from_secs(30),
        account_max_delay: Duration::from_secs(30),
        ..cfg(url, &prefix)
    };
    let t = Throttle::new(&long(&format!("redis://{}", proxy.addr()))).unwrap();
    // Another instance, straight to Redis, fails "victim" twice: only Redis knows that.
    let other = Throttle::new(&long(&url)).unwrap();
    other.failure("victim@example.com", None).await;
    other.failure("victim@example.com", None).await;
    assert!(matches!(
        t.check("victim@example.com", None).await,
        Verdict::Wait(_)
    ));
    // What this instance sees itself, its memory counts too.
    t.failure("local@example.com", None).await;
    t.failure("local@example.com", None).await;

    for mode in [Mode::Silent, Mode::Refuse] {
        proxy.set(mode);
        let started = Instant::now();
        let v = t.check("victim@example.com", None).await;
        assert!(
            started.elapsed() < Duration::from_millis(400),
            "{mode:?}: within redis_timeout, took {:?}",
            started.elapsed()
        );
        assert_eq!(v, Verdict::Allowed, "{mode:?}: memory decided");
        assert!(!t.is_shared(), "{mode:?}: the breaker is open");
        let asked = proxy.received();
        let started = Instant::now();
        for _ in 0..50 {
            assert_eq!(t.check("victim@example.com", None).await, Verdict::Allowed);
            t.failure("spray@example.com", None).await;
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "{mode:?}: no sign-in waits for Redis: {:?}",
            started.elapsed()
        );
        // Only the probe (a 14-byte PING every 200 ms) may have reached the proxy.
        assert!(proxy.received() - asked <= 14, "{mode:?}: Redis not asked");
        // Memory keeps throttling what it saw.
        assert!(matches!(
            t.check("local@example.com", None).await,
            Verdict::Wait(_)
        ));
        assert!(matches!(
            t.check("spray@example.com", None).await,
            Verdict::Wait(_)
        ));

        proxy.set(Mode::Pass);
        let deadline = Instant::now() + Duration::from_secs(5);
        while !t.is_shared() {
            assert!(
                Instant::now() < deadline,
                "{mode:?}: the probe closes the breaker"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            matches!(t.check("victim@example.com", None).await, Verdict::Wait(_)),
            "{mode:?}: Redis decides again"
        );
    }
}

/// Through the HTTP API: two auth instances on one Redis refuse a sign-in together.
#[tokio::test]
async fn two_auth_services_on_one_redis_throttle_together() {
    let Some(url) = redis_url() else { return };
    let prefix = unique_prefix();
    let vars = [
        ("PLT_AUTH__THROTTLE__REDIS_URL", url.as_str()),
        ("PLT_AUTH__THROTTLE__KEY_PREFIX", prefix.as_str()),
        ("PLT_AUTH__THROTTLE__ACCOUNT_FREE_FAILURES", "2"),
        ("PLT_AUTH__THROTTLE__ACCOUNT_BASE_DELAY", "30s"),
        ("PLT_AUTH__THROTTLE__ACCOUNT_MAX_DELAY", "30s"),
    ];
    let one = start(Backend::Sqlite, &vars).await.unwrap();
    let two = start(Backend::Sqlite, &vars).await.unwrap();
    const PW: &str = "correct horse battery staple";
    for svc in [&one, &two] {
        svc.identity.add_user("victim@example.com", PW);
    }
    let c = plt_kernel::tls::http_client();
    let login = |base: String, pw: &'static str| {
        let c = c.clone();
        async move {
            c.post(format!("{base}/v1/auth/login"))
                .json(&serde_json::json!({"email": "victim@example.com", "password": pw}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(login(one.url(), "wrong guess one").await, 401);
    assert_eq!(login(two.url(), "wrong guess two").await, 401);
    // Two failures, one on each: both instances now refuse even the right password.
    assert_eq!(login(one.url(), PW).await, 401);
    assert_eq!(login(two.url(), PW).await, 401);
    one.stop().await;
    two.stop().await;
}

#[test]
fn redis_settings_are_checked_naming_their_keys() {
    let load = |vars: &[(&str, &str)]| {
        plt_kernel::config::ConfigSource {
            dir: plt_kernel::testing::config_dir(),
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            sections: Vec::new(),
        }
        .load::<auth_service::config::AuthConfig>("auth")
    };
    const URL: &str = "PLT_AUTH__THROTTLE__REDIS_URL";
    for (vars, key) in [
        (vec![(URL, "http://cache:6379")], "auth.throttle.redis_url"),
        (
            vec![(URL, "rediss://cache:6379")],
            "auth.throttle.redis_url",
        ),
        (
            vec![
                (URL, "redis://cache:6379"),
                ("PLT_AUTH__THROTTLE__REDIS_TIMEOUT", "5s"),
            ],
            "auth.throttle.redis_timeout",
        ),
        (
            vec![
                (URL, "redis://cache:6379"),
                ("PLT_AUTH__THROTTLE__KEY_PREFIX", ""),
            ],
            "auth.throttle.key_prefix",
        ),
    ] {
        let err = load(&vars).expect_err("refused");
        assert_eq!(err.key, key, "{vars:?}: {err}");
    }
    let err = load(&[(URL, "http://:hunter2@cache:6379")]).err().unwrap();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    // Empty: memory, and the Redis settings are not needed.
    let cfg = load(&[("PLT_AUTH__THROTTLE__REDIS_TIMEOUT", "0s")]).unwrap();
    assert!(cfg.service.throttle.redis_url.is_empty());
    assert!(!Throttle::new(&cfg.service.throttle).unwrap().is_shared());
}

/// Through the HTTP API with Redis silent: a sign-in never waits for it (at most
/// `redis_timeout`, once, then not at all), and throttling goes on in memory.
#[tokio::test]
async fn sign_in_does_not_wait_for_a_silent_redis() {
    let Some(url) = redis_url() else { return };
    let proxy = proxy(&url).await;
    let redis = format!("redis://{}", proxy.addr());
    let prefix = unique_prefix();
    let svc = start(
        Backend::Sqlite,
        &[
            ("PLT_AUTH__THROTTLE__REDIS_URL", redis.as_str()),
            ("PLT_AUTH__THROTTLE__KEY_PREFIX", prefix.as_str()),
            ("PLT_AUTH__THROTTLE__REDIS_TIMEOUT", "100ms"),
            ("PLT_AUTH__THROTTLE__ACCOUNT_FREE_FAILURES", "2"),
            ("PLT_AUTH__THROTTLE__ACCOUNT_BASE_DELAY", "30s"),
            ("PLT_AUTH__THROTTLE__ACCOUNT_MAX_DELAY", "30s"),
        ],
    )
    .await
    .unwrap();
    const PW: &str = "correct horse battery staple";
    svc.identity.add_user("ada@example.com", PW);
    svc.identity.add_user("bob@example.com", PW);
    let c = plt_kernel::tls::http_client();
    let login = |email: &'static str, pw: &'static str| {
        let (c, base) = (c.clone(), svc.url());
        async move {
            let started = Instant::now();
            let status = c
                .post(format!("{base}/v1/auth/login"))
                .json(&serde_json::json!({"email": email, "password": pw}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            (status, started.elapsed())
        }
    };
    assert_eq!(login("ada@example.com", PW).await.0, 200);

    proxy.set(Mode::Silent);
    // The first sign-in pays redis_timeout at most; then the breaker is open.
    let (status, took) = login("ada@example.com", PW).await;
    assert_eq!(status, 200);
    assert!(took < Duration::from_millis(1500), "{took:?}");
    for _ in 0..5 {
        let (status, took) = login("ada@example.com", PW).await;
        assert_eq!(status, 200);
        assert!(took < Duration::from_millis(500), "{took:?}");
    }
    // Memory throttles meanwhile.
    login("bob@example.com", "wrong one").await;
    login("bob@example.com", "wrong two").await;
    assert_eq!(login("bob@example.com", PW).await.0, 401);
    svc.stop().await;
}
