//! The behaviour every backend shares, run against memory (`tests/memory.rs`) and the real
//! Redis (`tests/redis.rs`, when `PLT_TEST_REDIS_URL` is set), one test each through
//! [`cases!`].

#![allow(dead_code)]

use plt_cache::{Backend, Cache, CacheConfig};
use plt_kernel::Secret;
use serde::{Deserialize, Serialize};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::sync::{Notify, oneshot};

/// A loader's future.
type Load<T> = std::pin::Pin<Box<dyn Future<Output = Result<Option<T>, String>> + Send>>;

/// Where the caches of a test live.
#[derive(Clone)]
pub struct Env {
    redis_url: Option<String>,
}

impl Env {
    pub fn memory() -> Self {
        Self { redis_url: None }
    }

    /// The real Redis of `PLT_TEST_REDIS_URL`; `None` (and a skip line) when unset.
    pub fn redis(test: &str) -> Option<Self> {
        match std::env::var("PLT_TEST_REDIS_URL") {
            Ok(url) if !url.is_empty() => Some(Self {
                redis_url: Some(url),
            }),
            _ => {
                eprintln!("SKIPPED {test}: PLT_TEST_REDIS_URL is not set");
                None
            }
        }
    }

    /// The section for this backend: no jitter (exact expiry), generous Redis timeout.
    pub fn config(&self) -> CacheConfig {
        let mut c = CacheConfig {
            jitter: 0.0,
            ..Default::default()
        };
        if let Some(url) = &self.redis_url {
            c.backend = Backend::Redis;
            c.redis_url = Secret::new(url.clone());
            c.redis_timeout = Duration::from_millis(500);
        }
        c
    }

    /// A cache with its own namespace (`plt:test:<unique>:`).
    pub fn cache(&self, config: &CacheConfig) -> Cache {
        let name = format!("t{}", uuid::Uuid::new_v4().simple());
        Cache::connect(config, "test", &name).expect("test cache")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Post {
    pub id: u64,
    pub title: String,
    pub tags: Vec<String>,
}

fn post(id: u64, title: &str) -> Post {
    Post {
        id,
        title: title.into(),
        tags: vec!["rust".into()],
    }
}

/// A loader that counts its runs and returns `value` after `delay`.
fn counting<T: Clone + Send + 'static>(
    calls: &Arc<AtomicUsize>,
    delay: Duration,
    value: Result<Option<T>, String>,
) -> impl FnOnce() -> Load<T> + use<T> {
    let calls = calls.clone();
    move || {
        Box::pin(async move {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(delay).await;
            value
        })
    }
}

pub async fn set_get_delete(env: Env) {
    let c = env.cache(&env.config());
    assert_eq!(c.get::<Post>("1").await, None);
    c.set("1", &post(1, "Hello")).await.expect("set");
    assert_eq!(c.get::<Post>("1").await, Some(post(1, "Hello")));
    c.set("1", &post(1, "Hello again"))
        .await
        .expect("overwrite");
    assert_eq!(c.get::<Post>("1").await, Some(post(1, "Hello again")));
    // Typed: an entry read as another shape is a miss, not an error or a panic.
    assert_eq!(c.get::<u64>("1").await, None);
    c.delete("1").await.expect("delete");
    assert_eq!(c.get::<Post>("1").await, None);
    c.set("2", "text").await.expect("set str");
    c.invalidate("2").await.expect("invalidate");
    assert_eq!(c.get::<String>("2").await, None);
    // Deleting what is not there is fine.
    c.delete("never").await.expect("delete missing");
}

pub async fn ttl_expiry(env: Env) {
    let c = env.cache(&CacheConfig {
        ttl: Duration::from_millis(300),
        negative_ttl: Duration::from_millis(100),
        ..env.config()
    });
    c.set("a", &1u32).await.expect("set");
    c.set_with_ttl("b", &2u32, Duration::from_secs(10))
        .await
        .expect("set b");
    assert_eq!(c.get::<u32>("a").await, Some(1));
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(c.get::<u32>("a").await, None, "expired after its TTL");
    assert_eq!(c.get::<u32>("b").await, Some(2), "its own TTL");
}

pub async fn jitter_bounds(env: Env) {
    let c = env.cache(&CacheConfig {
        jitter: 0.1,
        ..env.config()
    });
    let ttl = Duration::from_secs(100);
    let (lo, hi) = (Duration::from_secs(90), Duration::from_secs(110));
    let samples: Vec<Duration> = (0..2000).map(|_| c.jittered_ttl(ttl)).collect();
    for s in &samples {
        assert!(*s >= lo && *s <= hi, "{s:?} outside ±10 % of {ttl:?}");
    }
    let (min, max) = (
        samples.iter().min().copied().unwrap_or_default(),
        samples.iter().max().copied().unwrap_or_default(),
    );
    assert!(min < Duration::from_secs(93), "spread low: {min:?}");
    assert!(max > Duration::from_secs(107), "spread high: {max:?}");
    // Without jitter, the TTL itself; tiny TTLs stay positive.
    let exact = env.cache(&env.config());
    assert_eq!(exact.jittered_ttl(ttl), ttl);
    let tiny = c.jittered_ttl(Duration::ZERO);
    assert!(
        tiny >= Duration::from_millis(1) && tiny <= Duration::from_micros(1100),
        "{tiny:?}"
    );
}

pub async fn negative_caching(env: Env) {
    let c = env.cache(&CacheConfig {
        ttl: Duration::from_secs(10),
        negative_ttl: Duration::from_millis(300),
        ..env.config()
    });
    let calls = Arc::new(AtomicUsize::new(0));
    let none = || counting::<Post>(&calls, Duration::ZERO, Ok(None));
    assert_eq!(c.get_or_load("404", none()).await, Ok(None));
    assert_eq!(c.get_or_load("404", none()).await, Ok(None));
    assert_eq!(calls.load(Ordering::SeqCst), 1, "absent is cached");
    assert_eq!(c.get::<Post>("404").await, None, "get sees absent as None");
    tokio::time::sleep(Duration::from_millis(450)).await;
    let found = counting(&calls, Duration::ZERO, Ok(Some(post(404, "Now here"))));
    assert_eq!(
        c.get_or_load("404", found).await,
        Ok(Some(post(404, "Now here")))
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "absent expired after negative_ttl"
    );

    // negative_ttl 0: absent is not cached.
    let c = env.cache(&CacheConfig {
        negative_ttl: Duration::ZERO,
        ..env.config()
    });
    let calls = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let none = counting::<Post>(&calls, Duration::ZERO, Ok(None));
        assert_eq!(c.get_or_load("x", none).await, Ok(None));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

pub async fn single_flight(env: Env) {
    let c = env.cache(&env.config());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let (c, load) = (
            c.clone(),
            counting(
                &calls,
                Duration::from_millis(200),
                Ok(Some(post(7, "Seven"))),
            ),
        );
        tasks.push(tokio::spawn(async move { c.get_or_load("7", load).await }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), Ok(Some(post(7, "Seven"))));
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "loader ran exactly once");
    assert_eq!(c.loads_in_flight(), 0);
    // Cached now.
    let again = counting(&calls, Duration::ZERO, Ok(Some(post(7, "other"))));
    assert_eq!(c.get_or_load("7", again).await, Ok(Some(post(7, "Seven"))));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

pub async fn loader_error_is_shared_and_not_cached(env: Env) {
    let c = env.cache(&env.config());
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let (c, load) = (
            c.clone(),
            counting::<Post>(&calls, Duration::from_millis(150), Err("db down".into())),
        );
        tasks.push(tokio::spawn(async move { c.get_or_load("e", load).await }));
    }
    for t in tasks {
        assert_eq!(t.await.expect("task"), Err("db down".to_owned()));
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "one load, its error to all"
    );
    let ok = counting(&calls, Duration::ZERO, Ok(Some(post(1, "back"))));
    assert_eq!(c.get_or_load("e", ok).await, Ok(Some(post(1, "back"))));
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the error was not cached");
}

/// A load that runs until told to return `value`; `started` is notified when it runs.
fn gated(
    value: Post,
    started: Arc<Notify>,
    release: oneshot::Receiver<()>,
) -> impl FnOnce() -> Load<Post> {
    move || {
        Box::pin(async move {
            started.notify_one();
            let _ = release.await;
            Ok(Some(value))
        })
    }
}

pub async fn invalidate_during_load(env: Env) {
    let c = env.cache(&env.config());
    let started = Arc::new(Notify::new());
    let (release, gate) = oneshot::channel();
    let old = tokio::spawn({
        let (c, load) = (c.clone(), gated(post(1, "old"), started.clone(), gate));
        async move { c.get_or_load("p", load).await }
    });
    started.notified().await;
    // The post is updated in the source, then the cache invalidated, while the read loads.
    c.invalidate("p").await.expect("invalidate");
    let _ = release.send(());
    assert_eq!(
        old.await.expect("task"),
        Ok(Some(post(1, "old"))),
        "the read that loaded still gets its value"
    );
    assert_eq!(c.get::<Post>("p").await, None, "but it was not cached");
    let calls = Arc::new(AtomicUsize::new(0));
    let new = counting(&calls, Duration::ZERO, Ok(Some(post(1, "new"))));
    assert_eq!(c.get_or_load("p", new).await, Ok(Some(post(1, "new"))));
    assert_eq!(c.get::<Post>("p").await, Some(post(1, "new")));

    // The same with a write of the new version while the old one loads.
    let started = Arc::new(Notify::new());
    let (release, gate) = oneshot::channel();
    let old = tokio::spawn({
        let (c, load) = (c.clone(), gated(post(2, "old"), started.clone(), gate));
        async move { c.get_or_load("q", load).await }
    });
    started.notified().await;
    c.set("q", &post(2, "new")).await.expect("set");
    let _ = release.send(());
    assert_eq!(old.await.expect("task"), Ok(Some(post(2, "old"))));
    assert_eq!(
        c.get::<Post>("q").await,
        Some(post(2, "new")),
        "the write wins"
    );
    assert_eq!(c.loads_in_flight(), 0);
}

pub async fn cancelled_leader_hands_over(env: Env) {
    let c = env.cache(&env.config());
    let calls = Arc::new(AtomicUsize::new(0));
    // The leader's caller gives up while its loader runs.
    let leader = counting(&calls, Duration::from_secs(30), Ok(Some(post(1, "slow"))));
    let leading = tokio::spawn({
        let c = c.clone();
        async move { c.get_or_load("k", leader).await }
    });
    while calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let waiter = tokio::spawn({
        let (c, load) = (
            c.clone(),
            counting(&calls, Duration::from_millis(20), Ok(Some(post(1, "fast")))),
        );
        async move { c.get_or_load("k", load).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    leading.abort();
    let got = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter does not hang")
        .expect("task");
    assert_eq!(got, Ok(Some(post(1, "fast"))));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(c.loads_in_flight(), 0);
}

/// One `#[tokio::test]` per shared case, each against the `Option<Env>` that `$env` makes
/// from the case's name (`None`: skipped).
#[macro_export]
macro_rules! cases {
    ($env:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some(env) = ($env)(stringify!($case)) else { return };
                suite::$case(env).await;
            }
        )*
    };
}
