//! The cache in the real Redis (`PLT_TEST_REDIS_URL`; skipped when unset): the shared
//! behaviour, keys and expiry as Redis holds them, and an unreachable Redis (always run).

mod suite;

use plt_cache::{Backend, Cache, CacheConfig};
use plt_kernel::Secret;
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use suite::Env;

cases!(Env::redis;
    set_get_delete,
    ttl_expiry,
    jitter_bounds,
    negative_caching,
    single_flight,
    loader_error_is_shared_and_not_cached,
    invalidate_during_load,
    cancelled_leader_hands_over,
);

#[tokio::test]
async fn keys_live_in_the_namespace_with_a_jittered_px_expiry() {
    let Some(env) = Env::redis("keys_live_in_the_namespace_with_a_jittered_px_expiry") else {
        return;
    };
    let c = env.cache(&CacheConfig {
        ttl: Duration::from_secs(100),
        jitter: 0.1,
        ..env.config()
    });
    c.set("post:1", &"hello").await.expect("set");
    let url = std::env::var("PLT_TEST_REDIS_URL").unwrap_or_default();
    let client = redis::Client::open(url).expect("url");
    let mut con = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let key = format!("{}post:1", c.namespace());
    assert!(key.starts_with("plt:test:t"), "{key}");
    let raw: Option<Vec<u8>> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut con)
        .await
        .expect("GET");
    assert_eq!(raw.as_deref(), Some(&b"v\"hello\""[..]));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut con)
        .await
        .expect("PTTL");
    assert!((89_000..=110_000).contains(&pttl), "PTTL {pttl}");
    c.delete("post:1").await.expect("delete");
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut con)
        .await
        .expect("EXISTS");
    assert_eq!(exists, 0);
}

#[tokio::test]
async fn an_unreachable_redis_is_a_miss_and_the_source_answers() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let cfg = CacheConfig {
        backend: Backend::Redis,
        redis_url: Secret::new(format!("redis://127.0.0.1:{port}")),
        ..Default::default()
    };
    let c = Cache::connect(&cfg, "test", "down").expect("connects lazily");
    let calls = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    for i in 0..20u32 {
        let calls = calls.clone();
        let got = c
            .get_or_load("k", || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>(Some(i))
            })
            .await;
        assert_eq!(got, Ok(Some(i)), "loaded from the source");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 20, "every call a miss");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(c.is_down(), "the breaker is open");
    assert_eq!(c.get::<u32>("k").await, None);
    assert!(c.set("k", &1u32).await.is_err(), "a write says it failed");
    assert!(c.delete("k").await.is_err());
}
