//! Rate limiting: per client address and per user, route overrides, 429 with Retry-After and
//! RateLimit-* headers, trusted-proxy X-Forwarded-For, the Redis backend shared by two
//! gateway instances (against real Redis when `PLT_TEST_REDIS_URL` is set), and the local
//! fallback when Redis fails or is slow.

mod common;

use common::{Echo, Keys, Running, Setup, assert_problem, http, register, start};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use uuid::Uuid;

fn routes() -> Value {
    json!([
        {"prefix": "/open", "service": "up", "public": true},
        {"prefix": "/private", "service": "up"},
        {"prefix": "/login", "service": "up", "public": true,
         "rate_limit": {"client": {"requests": 1, "period": "1m", "burst": 1}}},
    ])
}

/// Client limit `burst` per minute (so nothing refills during a test), user limit `user`.
fn limited(keys: &Keys, burst: u32, user: u32) -> Setup {
    Setup::new(keys, &[], routes())
        .var(
            "PLT_GATEWAY__RATE_LIMIT__CLIENT__REQUESTS",
            &burst.to_string(),
        )
        .var("PLT_GATEWAY__RATE_LIMIT__CLIENT__PERIOD", "1m")
        .var("PLT_GATEWAY__RATE_LIMIT__CLIENT__BURST", &burst.to_string())
        .var("PLT_GATEWAY__RATE_LIMIT__USER__REQUESTS", &user.to_string())
        .var("PLT_GATEWAY__RATE_LIMIT__USER__PERIOD", "1m")
        .var("PLT_GATEWAY__RATE_LIMIT__USER__BURST", &user.to_string())
}

fn header(resp: &reqwest::Response, name: &str) -> u64 {
    resp.headers()[name].to_str().unwrap().parse().unwrap()
}

async fn get(
    gw: &Running,
    path: &str,
    xff: Option<&str>,
    token: Option<&str>,
) -> reqwest::Response {
    let mut rb = http().get(gw.url(path));
    if let Some(x) = xff {
        rb = rb.header("x-forwarded-for", x);
    }
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    rb.send().await.unwrap()
}

#[tokio::test]
async fn per_client_limit_with_headers() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let setup = limited(&keys, 3, 100);
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    for expected_remaining in [2, 1, 0] {
        let resp = get(&gw, "/open", None, None).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(header(&resp, "ratelimit-limit"), 3);
        assert_eq!(header(&resp, "ratelimit-remaining"), expected_remaining);
        assert!(header(&resp, "ratelimit-reset") > 0);
    }
    let resp = get(&gw, "/open", None, None).await;
    assert_eq!(resp.status(), 429);
    let retry = header(&resp, "retry-after");
    // One request per 20s refills.
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(header(&resp, "ratelimit-remaining"), 0);
    assert_eq!(header(&resp, "ratelimit-limit"), 3);
    assert!(header(&resp, "ratelimit-reset") >= 40);
    assert_problem(resp, 429, "resource_exhausted").await;
    assert_eq!(up.hits(), 3);
    // Spoofed X-Forwarded-For from an untrusted peer changes nothing.
    let resp = get(&gw, "/open", Some("198.51.100.1"), None).await;
    assert_eq!(resp.status(), 429);

    // A route with its own limit has its own bucket.
    let resp = get(&gw, "/login", None, None).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "ratelimit-limit"), 1);
    let resp = get(&gw, "/login", None, None).await;
    assert_eq!(resp.status(), 429);
    assert!(header(&resp, "retry-after") >= 59);
    gw.stop().await;
}

#[tokio::test]
async fn per_user_limit() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let setup = limited(&keys, 100, 2);
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    let alice_id = Uuid::new_v4().to_string();
    let alice = keys.token(&alice_id);
    let bob = keys.token(&Uuid::new_v4().to_string());
    for _ in 0..2 {
        let resp = get(&gw, "/private", None, Some(&alice)).await;
        assert_eq!(resp.status(), 200);
    }
    let resp = get(&gw, "/private", None, Some(&alice)).await;
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(header(&resp, "ratelimit-limit"), 2);
    assert_problem(resp, 429, "resource_exhausted").await;
    // Same address, another user: its own budget.
    let resp = get(&gw, "/private", None, Some(&bob)).await;
    assert_eq!(resp.status(), 200);
    // The user budget follows the user, not the token.
    let alice_again = keys.token(&alice_id);
    let resp = get(&gw, "/private", None, Some(&alice_again)).await;
    assert_eq!(resp.status(), 429);
    gw.stop().await;
}

#[tokio::test]
async fn trusted_proxies_forward_the_client_address() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let setup =
        limited(&keys, 1, 100).var("PLT_GATEWAY__TRUSTED_PROXIES", "[127.0.0.1, 10.0.0.0/8]");
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    // The right-most untrusted address is the client; left of it may be spoofed.
    let resp = get(&gw, "/open", Some("6.6.6.6, 198.51.100.1, 10.1.2.3"), None).await;
    assert_eq!(resp.status(), 200);
    let resp = get(&gw, "/open", Some("7.7.7.7, 198.51.100.1"), None).await;
    assert_eq!(resp.status(), 429, "same client behind the proxy");
    let resp = get(&gw, "/open", Some("198.51.100.2"), None).await;
    assert_eq!(resp.status(), 200, "another client");
    // A trusted proxy's X-Forwarded-Proto is kept.
    let body: Value = http()
        .get(gw.url("/open"))
        .header("x-forwarded-for", "198.51.100.3")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["headers"]["x-forwarded-proto"], "https");
    assert_eq!(
        body["headers"]["x-forwarded-for"],
        "198.51.100.3, 127.0.0.1"
    );
    gw.stop().await;
}

#[tokio::test]
async fn redis_backend_is_shared_by_instances() {
    let Ok(url) = std::env::var("PLT_TEST_REDIS_URL") else {
        eprintln!("skipped: PLT_TEST_REDIS_URL is not set");
        return;
    };
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let prefix = format!("plt-test:{}:", Uuid::new_v4().simple());
    let setup = |registry: Option<plt_registry::memory::MemoryRegistry>| {
        let s = limited(&keys, 4, 100)
            .var("PLT_GATEWAY__RATE_LIMIT__BACKEND", "redis")
            .var("PLT_GATEWAY__RATE_LIMIT__REDIS_URL", &url)
            // Generous: a slow CI machine must not fall back silently.
            .var("PLT_GATEWAY__RATE_LIMIT__REDIS_TIMEOUT", "2s")
            .var("PLT_GATEWAY__RATE_LIMIT__KEY_PREFIX", &prefix);
        match registry {
            Some(r) => s.registry(r),
            None => s,
        }
    };
    let first = setup(None);
    let registry = first.registry.clone();
    let _r = register(&registry, "up", up.addr, "").await;
    let a = start(first).await;
    let b = start(setup(Some(registry))).await;
    // Four requests alternating between the instances use one budget of four.
    let mut remaining = Vec::new();
    for i in 0..4 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let resp = get(gw, "/open", None, None).await;
        assert_eq!(resp.status(), 200, "request {i}");
        remaining.push(header(&resp, "ratelimit-remaining"));
    }
    assert_eq!(remaining, vec![3, 2, 1, 0]);
    for gw in [&a, &b] {
        let resp = get(gw, "/open", None, None).await;
        assert!(header(&resp, "retry-after") >= 1);
        assert_problem(resp, 429, "resource_exhausted").await;
    }
    // The state lives in Redis under the configured prefix.
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let keys_found: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(keys_found.len(), 1, "{keys_found:?}");
    assert!(
        keys_found[0].contains(":client:default:127.0.0.1"),
        "{keys_found:?}"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg(&keys_found[0])
        .query_async(&mut con)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "{ttl}");
    let _: () = redis::cmd("DEL")
        .arg(&keys_found[0])
        .query_async(&mut con)
        .await
        .unwrap();
    a.stop().await;
    b.stop().await;
}

async fn metric(gw: &Running, name: &str) -> f64 {
    let text = http()
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn redis_failures_fall_back_to_the_local_limiter() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    // One Redis that refuses connections, one that accepts and never answers.
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    for addr in [refused, silent_addr] {
        let setup = limited(&keys, 2, 100)
            .var("PLT_GATEWAY__RATE_LIMIT__BACKEND", "redis")
            .var(
                "PLT_GATEWAY__RATE_LIMIT__REDIS_URL",
                &format!("redis://{addr}"),
            )
            .var("PLT_GATEWAY__RATE_LIMIT__REDIS_TIMEOUT", "50ms");
        let _r = register(&setup.registry, "up", up.addr, "").await;
        let gw = start(setup).await;
        let before = metric(&gw, "gateway_ratelimit_fallback_total").await;
        let started = Instant::now();
        for _ in 0..2 {
            let resp = get(&gw, "/open", None, None).await;
            assert_eq!(resp.status(), 200, "{addr}");
        }
        let resp = get(&gw, "/open", None, None).await;
        assert_eq!(resp.status(), 429, "{addr}: the local limiter decides");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{addr}: {:?}",
            started.elapsed()
        );
        let after = metric(&gw, "gateway_ratelimit_fallback_total").await;
        assert!(after - before >= 3.0, "{addr}: {before} -> {after}");
        gw.stop().await;
    }
}
