//! plt-cache: the cache of plt feature services (a Blog service keeping its public posts, say).
//!
//! A [`Cache`] holds typed values (serde, stored as JSON bytes) under string keys, in this
//! instance's memory or in Redis, as the service's `cache` section says ([`CacheConfig`]).
//! Build one per cache with [`Cache::connect`]; it is cheap to clone and share.
//!
//! - **TTL with jitter.** Every write expires after its TTL (the section's `ttl` unless the
//!   call says otherwise) multiplied by a random factor in `[1 - jitter, 1 + jitter]`, so
//!   keys written together do not expire together.
//! - **Loading.** [`Cache::get_or_load`] answers from the cache or runs the loader once per
//!   key at a time in this process (single flight): concurrent misses of one key wait for
//!   the one load and share its outcome — a loader error too, which is never cached. A
//!   loader's `None` ("the source has no such value") is cached as absent for the shorter
//!   `negative_ttl`.
//! - **Invalidation wins.** [`Cache::delete`] / [`Cache::invalidate`] and [`Cache::set`]
//!   poison a load of that key in flight in this process: its value is handed to the callers
//!   already waiting for it but never written (or deleted again if its write raced), so a
//!   post updated while a read was loading does not leave its old version cached. (A load in
//!   flight in *another* instance is not reached: there, a stale value can live at most one
//!   TTL. Keep TTLs short where that matters.)
//! - **Namespaces.** Keys live under `<key_prefix>:<service>:<cache name>:` (`plt:blog:posts:`),
//!   so services and caches sharing one Redis do not collide.
//! - **A failing backend is a miss.** Redis is reached through plt-redis's
//!   [`GuardedRedis`](plt_redis::GuardedRedis): every call is bounded by `redis_timeout`, and
//!   after a failure Redis is not asked until a probe answers. Meanwhile reads are misses,
//!   writes are skipped, and [`Cache::get_or_load`] loads from the source: a request never
//!   fails or stalls because of the cache.
//!
//! # Metrics
//!
//! Counters, labelled `cache` (the cache's name):
//!
//! | metric | labels | counts |
//! |---|---|---|
//! | `cache_hits_total` | `cache` | reads answered by the cache (a cached "absent" included) |
//! | `cache_misses_total` | `cache` | reads that found nothing (a failing backend included) |
//! | `cache_loads_total` | `cache`, `outcome` | loader runs: `ok` (a value), `absent` (`None`), `error` |
//! | `cache_errors_total` | `cache` | backend failures (Redis failing or skipped while its breaker is open) and values that could not be encoded or decoded |
//!
//! `cache_misses_total - cache_loads_total` is the loads saved by single flight.
//!
//! # Example
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use plt_cache::{Cache, CacheConfig};
//! #[derive(Clone, serde::Serialize, serde::Deserialize)]
//! struct Post { title: String }
//!
//! let posts = Cache::connect(&CacheConfig::default(), "blog", "posts")?;
//! let post: Option<Post> = posts
//!     .get_or_load("42", || async {
//!         // Read it from the database; `Ok(None)` when there is no post 42.
//!         Ok::<_, String>(Some(Post { title: "Hello".into() }))
//!     })
//!     .await?;
//! // After an update:
//! posts.invalidate("42").await?;
//! # Ok(()) }
//! ```

mod config;
mod flight;
mod memory;
mod redis_store;

pub use config::{Backend, CacheConfig, MAX_TTL};

use bytes::Bytes;
use flight::{Flights, Join, Outcome};
use memory::MemoryStore;
use plt_kernel::config::Validate;
use redis_store::RedisStore;
use serde::{Serialize, de::DeserializeOwned};
use std::{future::Future, sync::Arc, time::Duration};
use tracing::Instrument as _;

/// Why a cache call did not do its work. Reads never fail (a failing backend is a miss);
/// writes and deletes say so, for callers that want to know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CacheError {
    /// The backend failed, was too slow, or is skipped while its breaker is open.
    #[error("cache backend unavailable: {0}")]
    Unavailable(String),
    /// The value could not be serialized.
    #[error("value cannot be cached: {0}")]
    Encode(String),
    /// [`Cache::connect`] was given a configuration or name it cannot use.
    #[error("cache configuration: {0}")]
    Config(String),
}

/// The first byte of a stored entry: a value (JSON follows) or a cached absence.
const VALUE: u8 = b'v';
const ABSENT: u8 = b'-';

enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

struct Inner {
    name: String,
    /// `<key_prefix>:<service>:<name>:`: the start of every Redis key.
    namespace: String,
    store: Store,
    ttl: Duration,
    negative_ttl: Duration,
    jitter: f64,
    flights: Flights,
}

/// A named, typed cache (see the crate documentation). Clones share the same entries.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.inner.store {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        };
        f.debug_struct("Cache")
            .field("name", &self.inner.name)
            .field("namespace", &self.inner.namespace)
            .field("backend", &backend)
            .finish_non_exhaustive()
    }
}

/// What the backend holds for a key, decoded.
enum Lookup<T> {
    Value(T),
    Absent,
    Missing,
}

/// Whether a service or cache name can be part of a key namespace.
fn check_name(what: &str, name: &str) -> Result<(), CacheError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(CacheError::Config(format!(
            "the {what} name {name:?} must be non-empty, without ':' or spaces"
        )));
    }
    Ok(())
}

impl Cache {
    /// The cache `name` of `service` as `config` says: in memory, or in Redis under
    /// `<key_prefix>:<service>:<name>:`. Redis is connected lazily (a service starts while
    /// Redis is down and uses it once it is up); call this within a tokio runtime. `Err` for
    /// a configuration that does not validate or a name with `:` or spaces.
    pub fn connect(config: &CacheConfig, service: &str, name: &str) -> Result<Self, CacheError> {
        config
            .validate("cache")
            .map_err(|e| CacheError::Config(e.to_string()))?;
        check_name("service", service)?;
        check_name("cache", name)?;
        let store = match config.backend {
            Backend::Memory => Store::Memory(MemoryStore::new(config.max_entries)),
            Backend::Redis => {
                let redis = plt_redis::GuardedRedis::new(
                    config.redis_url.expose(),
                    config.redis_timeout,
                    config.redis_probe_interval,
                    "cache",
                )
                .map_err(|e| CacheError::Config(format!("cache.redis_url: {e}")))?;
                Store::Redis(RedisStore::new(redis))
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                name: name.to_owned(),
                namespace: format!("{}:{service}:{name}:", config.key_prefix),
                store,
                ttl: config.ttl,
                negative_ttl: config.negative_ttl,
                jitter: config.jitter,
                flights: Flights::default(),
            }),
        })
    }

    /// The cache's name (the `cache` label of its metrics).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The start of every key in Redis: `<key_prefix>:<service>:<name>:`.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// Whether the backend is skipped for now (Redis failing, its breaker open): every read
    /// is a miss until a probe finds Redis back. Always `false` in memory.
    pub fn is_down(&self) -> bool {
        match &self.inner.store {
            Store::Memory(_) => false,
            Store::Redis(r) => r.is_down(),
        }
    }

    /// `ttl` with this cache's jitter applied: a random duration in
    /// `[ttl * (1 - jitter), ttl * (1 + jitter)]`, cut to between 1ms and [`MAX_TTL`].
    pub fn jittered_ttl(&self, ttl: Duration) -> Duration {
        let ttl = ttl.clamp(Duration::from_millis(1), MAX_TTL);
        let j = self.inner.jitter;
        if j <= 0.0 {
            return ttl;
        }
        // A uniform number in [0, 1) (no jitter if the system has no randomness to give).
        let unit = getrandom::u64().map_or(0.5, |r| (r >> 11) as f64 / (1u64 << 53) as f64);
        ttl.mul_f64(1.0 + j * (2.0 * unit - 1.0))
            .clamp(Duration::from_millis(1), MAX_TTL)
    }

    /// The value cached under `key`; `None` when there is none, when the cache holds
    /// "absent" for it, or when the backend fails (counted in `cache_errors_total`).
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        match self.lookup(key).await {
            Lookup::Value(v) => {
                self.count("cache_hits_total");
                Some(v)
            }
            Lookup::Absent => {
                self.count("cache_hits_total");
                None
            }
            Lookup::Missing => {
                self.count("cache_misses_total");
                None
            }
        }
    }

    /// Caches `value` under `key` for the configured TTL (jittered). Poisons a load of `key`
    /// in flight (see [`Cache::get_or_load`]).
    pub async fn set<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<(), CacheError> {
        self.set_with_ttl(key, value, self.inner.ttl).await
    }

    /// Caches `value` under `key` for `ttl` (jittered, at least 1ms, at most [`MAX_TTL`]).
    /// Poisons a load of `key` in flight (see [`Cache::get_or_load`]).
    pub async fn set_with_ttl<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        self.inner.flights.poison(key);
        let bytes = self.encode(value)?;
        self.write(key, bytes, ttl).await
    }

    /// Removes `key` from the cache, and poisons a load of `key` in flight in this process:
    /// its value is not cached. `Err` when the backend could not be reached — the entry may
    /// then live until its TTL ends.
    pub async fn delete(&self, key: &str) -> Result<(), CacheError> {
        self.inner.flights.poison(key);
        self.remove(key).await
    }

    /// The same as [`Cache::delete`]: what a service calls after changing the source.
    pub async fn invalidate(&self, key: &str) -> Result<(), CacheError> {
        self.delete(key).await
    }

    /// The value of `key`: from the cache, or from `loader` on a miss (then cached: a value
    /// for the TTL, `None` as absent for the negative TTL, both jittered; an error not at
    /// all).
    ///
    /// Concurrent misses of one key in this process run the loader once; the other callers
    /// wait for it and get a clone of its outcome, an error included. If the leading call is
    /// cancelled (or its loader panics), a waiting caller takes over. A [`Cache::delete`],
    /// [`Cache::invalidate`] or [`Cache::set`] of the key while the loader runs keeps its
    /// value out of the cache (the callers of that load still get it).
    ///
    /// The cache never makes this fail: with the backend down it is a plain call of `loader`.
    pub async fn get_or_load<T, E, F, Fut>(&self, key: &str, loader: F) -> Result<Option<T>, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        E: Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Option<T>, E>>,
    {
        match self.lookup::<T>(key).await {
            Lookup::Value(v) => {
                self.count("cache_hits_total");
                return Ok(Some(v));
            }
            Lookup::Absent => {
                self.count("cache_hits_total");
                return Ok(None);
            }
            Lookup::Missing => self.count("cache_misses_total"),
        }
        let leader = loop {
            match self.inner.flights.join(key) {
                Join::Leader(leader) => break Some(leader),
                Join::Waiter(mut done) => {
                    let outcome: Option<Outcome> = match done.wait_for(Option::is_some).await {
                        Ok(outcome) => outcome.clone(),
                        // The leader went away without an outcome: try again.
                        Err(_) => continue,
                    };
                    match outcome
                        .as_deref()
                        .and_then(|o| o.downcast_ref::<Result<Option<T>, E>>())
                    {
                        Some(result) => return result.clone(),
                        // The key is loaded as another type elsewhere: load alone.
                        None => break None,
                    }
                }
            }
        };
        let Some(leader) = leader else {
            let result = loader().await;
            self.count_load(&result);
            return result;
        };
        // A flight that ended since our lookup may have filled the cache. (While Redis is
        // skipped, neither this read nor the write below would reach it.)
        let up = !self.is_down();
        let cached = if up {
            match self.lookup::<T>(key).await {
                Lookup::Value(v) => Some(Some(v)),
                Lookup::Absent => Some(None),
                Lookup::Missing => None,
            }
        } else {
            None
        };
        if let Some(value) = cached {
            leader.finish(Arc::new(Ok::<Option<T>, E>(value.clone())));
            return Ok(value);
        }
        let result = loader().await;
        self.count_load(&result);
        if let Ok(value) = &result
            && up
            && !leader.is_poisoned()
        {
            let entry = match value {
                Some(v) => self.encode(v).ok().map(|b| (b, self.inner.ttl)),
                None if !self.inner.negative_ttl.is_zero() => {
                    Some((Bytes::from_static(&[ABSENT]), self.inner.negative_ttl))
                }
                None => None,
            };
            if let Some((bytes, ttl)) = entry {
                // Failures are counted; the caller has its value anyway.
                let _ = self.write(key, bytes, ttl).await;
                if leader.is_poisoned() {
                    // Invalidated while we wrote: our write may have landed after its delete.
                    let _ = self.remove(key).await;
                }
            }
        }
        leader.finish(Arc::new(result.clone()));
        result
    }

    fn count(&self, name: &'static str) {
        metrics::counter!(name, "cache" => self.inner.name.clone()).increment(1);
    }

    fn count_load<T, E>(&self, result: &Result<Option<T>, E>) {
        let outcome = match result {
            Ok(Some(_)) => "ok",
            Ok(None) => "absent",
            Err(_) => "error",
        };
        metrics::counter!("cache_loads_total", "cache" => self.inner.name.clone(), "outcome" => outcome)
            .increment(1);
    }

    fn failed(&self, what: &str, key: &str, error: &str) {
        self.count("cache_errors_total");
        tracing::debug!(cache = %self.inner.name, key, error, "cache {what} failed");
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Bytes, CacheError> {
        let mut buf = vec![VALUE];
        match serde_json::to_writer(&mut buf, value) {
            Ok(()) => Ok(Bytes::from(buf)),
            Err(e) => {
                self.count("cache_errors_total");
                tracing::warn!(cache = %self.inner.name, error = %e, "value cannot be cached");
                Err(CacheError::Encode(e.to_string()))
            }
        }
    }

    async fn lookup<T: DeserializeOwned>(&self, key: &str) -> Lookup<T> {
        // A span per lookup (a client span when the cache is Redis), marked hit or miss.
        let span = tracing::info_span!(
            "cache get",
            otel.kind = match &self.inner.store {
                Store::Memory(_) => "internal",
                Store::Redis(_) => "client",
            },
            cache = %self.inner.name,
        );
        let found = self.lookup_in(key).instrument(span.clone()).await;
        plt_kernel::trace::set_attribute(&span, "cache.hit", !matches!(found, Lookup::Missing));
        found
    }

    async fn lookup_in<T: DeserializeOwned>(&self, key: &str) -> Lookup<T> {
        let found = match &self.inner.store {
            Store::Memory(m) => Ok(m.get(key)),
            Store::Redis(r) => {
                plt_kernel::trace::set_attribute(
                    &tracing::Span::current(),
                    "db.system.name",
                    "redis",
                );
                r.get(&self.redis_key(key)).await.map_err(|e| e.0)
            }
        };
        let bytes = match found {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Lookup::Missing,
            Err(e) => {
                self.failed("read", key, &e);
                return Lookup::Missing;
            }
        };
        match bytes.split_first() {
            Some((&VALUE, json)) => match serde_json::from_slice(json) {
                Ok(v) => Lookup::Value(v),
                Err(e) => {
                    // An entry of another shape (the type changed): a miss, overwritten soon.
                    self.failed("decode", key, &e.to_string());
                    Lookup::Missing
                }
            },
            Some((&ABSENT, [])) => Lookup::Absent,
            _ => {
                self.failed("decode", key, "not an entry of plt-cache");
                Lookup::Missing
            }
        }
    }

    async fn write(&self, key: &str, bytes: Bytes, ttl: Duration) -> Result<(), CacheError> {
        let ttl = self.jittered_ttl(ttl);
        let result = match &self.inner.store {
            Store::Memory(m) => {
                m.set(key, bytes, ttl);
                Ok(())
            }
            Store::Redis(r) => r.set(&self.redis_key(key), &bytes, ttl).await,
        };
        result.map_err(|e| {
            self.failed("write", key, &e.0);
            CacheError::Unavailable(e.0)
        })
    }

    async fn remove(&self, key: &str) -> Result<(), CacheError> {
        let result = match &self.inner.store {
            Store::Memory(m) => {
                m.delete(key);
                Ok(())
            }
            Store::Redis(r) => r.delete(&self.redis_key(key)).await,
        };
        result.map_err(|e| {
            self.failed("delete", key, &e.0);
            CacheError::Unavailable(e.0)
        })
    }

    fn redis_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.inner.namespace.len() + key.len());
        k.push_str(&self.inner.namespace);
        k.push_str(key);
        k
    }

    /// Loads of this cache in flight in this process (for tests and diagnostics).
    #[doc(hidden)]
    pub fn loads_in_flight(&self) -> usize {
        self.inner.flights.len()
    }
}
