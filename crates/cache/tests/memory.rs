//! The cache in memory: the shared behaviour, and the bound on entries.

mod suite;

use plt_cache::{Cache, CacheConfig};
use std::time::Duration;
use suite::Env;

cases!(|_| Some(Env::memory());
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
async fn holds_at_most_max_entries_dropping_the_first_to_expire() {
    let c = Cache::connect(
        &CacheConfig {
            max_entries: 10,
            jitter: 0.0,
            ..Default::default()
        },
        "test",
        "bounded",
    )
    .expect("cache");
    for i in 0..50u32 {
        c.set(&i.to_string(), &i).await.expect("set");
    }
    let mut kept = Vec::new();
    for i in 0..50u32 {
        if c.get::<u32>(&i.to_string()).await == Some(i) {
            kept.push(i);
        }
    }
    assert_eq!(kept, (40..50).collect::<Vec<_>>(), "the ten newest stay");

    // Expired entries make room before live ones.
    c.set_with_ttl("short", &0u32, Duration::from_millis(50))
        .await
        .expect("set");
    tokio::time::sleep(Duration::from_millis(100)).await;
    c.set("fresh", &1u32).await.expect("set");
    assert_eq!(c.get::<u32>("fresh").await, Some(1));
    for i in 41..50u32 {
        assert_eq!(c.get::<u32>(&i.to_string()).await, Some(i), "{i} kept");
    }
}

#[test]
fn names_that_would_mix_namespaces_are_refused() {
    let cfg = CacheConfig::default();
    assert!(Cache::connect(&cfg, "blog", "posts").is_ok());
    assert_eq!(
        Cache::connect(&cfg, "blog", "posts")
            .map(|c| c.namespace().to_owned())
            .ok()
            .as_deref(),
        Some("plt:blog:posts:")
    );
    for (service, name) in [
        ("", "posts"),
        ("blog", ""),
        ("a:b", "c"),
        ("blog", "my posts"),
    ] {
        assert!(
            Cache::connect(&cfg, service, name).is_err(),
            "{service:?} {name:?}"
        );
    }
    let bad = CacheConfig {
        jitter: 2.0,
        ..Default::default()
    };
    let e = Cache::connect(&bad, "blog", "posts").expect_err("invalid");
    assert!(e.to_string().contains("cache.jitter"), "{e}");
}
