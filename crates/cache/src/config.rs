//! The `cache` configuration section (one per service; every cache of the service uses it).

use plt_kernel::{ConfigError, Secret, config::Validate};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The longest TTL a cache accepts (longer TTLs, also per call, are cut to this).
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Where cached values live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// In this instance's memory, at most `max_entries` per cache.
    Memory,
    /// In Redis (`redis_url`), shared by every instance of the service.
    Redis,
}

/// The `cache` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// `memory` (default) or `redis`.
    pub backend: Backend,
    /// `redis://[:password@]host:port/db` (backend `redis`). A secret: it may hold a password.
    pub redis_url: Secret<String>,
    /// A Redis call slower than this counts as failed: the cache answers "miss" and Redis is
    /// not asked again until a probe answers.
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// While Redis is failing it is not asked; a PING this often finds it back.
    #[serde(with = "humantime_serde")]
    pub redis_probe_interval: Duration,
    /// First part of every Redis key: `<key_prefix>:<service>:<cache name>:<key>`.
    pub key_prefix: String,
    /// How long a value stays cached unless a call says otherwise.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long "the source has no such value" stays cached; `0s`: not cached.
    #[serde(with = "humantime_serde")]
    pub negative_ttl: Duration,
    /// Each TTL is multiplied by a random factor in `[1 - jitter, 1 + jitter]` so that keys
    /// written together do not expire together. Between 0 and 0.5.
    pub jitter: f64,
    /// The most entries one cache keeps in memory (backend `memory`); when full, the entry
    /// that expires first (an expired one, if any) makes room.
    pub max_entries: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Memory,
            redis_url: Secret::default(),
            redis_timeout: Duration::from_millis(100),
            redis_probe_interval: Duration::from_millis(500),
            key_prefix: "plt".into(),
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(30),
            jitter: 0.1,
            max_entries: 10_000,
        }
    }
}

impl Validate for CacheConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{p}.{k}");
        if self.backend == Backend::Redis {
            if self.redis_url.is_empty() {
                return Err(ConfigError::new(
                    key("redis_url"),
                    "must be set when the cache backend is redis",
                ));
            }
            if let Err(e) = plt_redis::check_url(self.redis_url.expose()) {
                return Err(ConfigError::new(key("redis_url"), e));
            }
            if self.redis_timeout.is_zero() || self.redis_timeout > Duration::from_secs(1) {
                return Err(ConfigError::new(
                    key("redis_timeout"),
                    "must be greater than 0 and at most 1s (a request waits for it)",
                ));
            }
            if self.redis_probe_interval.is_zero() {
                return Err(ConfigError::new(
                    key("redis_probe_interval"),
                    "must be greater than 0",
                ));
            }
        }
        let prefix = self.key_prefix.as_str();
        if prefix.is_empty() || prefix.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ConfigError::new(
                key("key_prefix"),
                "must be non-empty, without spaces (keys of other users of the Redis would mix with these)",
            ));
        }
        if self.ttl < Duration::from_millis(1) || self.ttl > MAX_TTL {
            return Err(ConfigError::new(
                key("ttl"),
                "must be between 1ms and 365 days",
            ));
        }
        if self.negative_ttl > self.ttl {
            return Err(ConfigError::new(
                key("negative_ttl"),
                "must be at most the cache's ttl (0s: absent values are not cached)",
            ));
        }
        if !(0.0..=0.5).contains(&self.jitter) {
            return Err(ConfigError::new(
                key("jitter"),
                "must be between 0 and 0.5 (0.1: TTLs vary by ±10 %)",
            ));
        }
        if self.max_entries == 0 || self.max_entries > 100_000_000 {
            return Err(ConfigError::new(
                key("max_entries"),
                "must be between 1 and 100000000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(c: &CacheConfig) -> String {
        match c.validate("blog.cache") {
            Ok(()) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn configuration_errors_name_their_key() {
        assert_eq!(error(&CacheConfig::default()), "");
        let redis = |url: &str| CacheConfig {
            backend: Backend::Redis,
            redis_url: Secret::new(url.into()),
            ..Default::default()
        };
        assert!(error(&redis("")).contains("blog.cache.redis_url"));
        let e = error(&redis("http://x:1"));
        assert!(e.contains("blog.cache.redis_url"), "{e}");
        assert_eq!(error(&redis("redis://127.0.0.1:6379/0")), "");
        // A memory cache does not need a URL.
        assert_eq!(error(&redis("").tap(|c| c.backend = Backend::Memory)), "");
        for (c, k) in [
            (CacheConfig::default().tap(|c| c.jitter = 0.7), "jitter"),
            (
                CacheConfig::default().tap(|c| c.jitter = f64::NAN),
                "jitter",
            ),
            (
                CacheConfig::default().tap(|c| c.ttl = Duration::ZERO),
                "ttl",
            ),
            (
                CacheConfig::default().tap(|c| c.negative_ttl = Duration::from_secs(3600)),
                "negative_ttl",
            ),
            (
                CacheConfig::default().tap(|c| c.max_entries = 0),
                "max_entries",
            ),
            (
                CacheConfig::default().tap(|c| c.key_prefix = "a b".into()),
                "key_prefix",
            ),
        ] {
            let e = error(&c);
            assert!(e.contains(&format!("blog.cache.{k}")), "{k}: {e}");
        }
    }

    #[test]
    fn reads_the_documented_keys_and_refuses_unknown_ones() {
        let c: CacheConfig = serde_json::from_str(
            r#"{"backend":"redis","redis_url":"redis://127.0.0.1:6379","ttl":"10m",
                "negative_ttl":"5s","jitter":0.2,"max_entries":5}"#,
        )
        .expect("valid section");
        assert_eq!(c.backend, Backend::Redis);
        assert_eq!(c.ttl, Duration::from_secs(600));
        assert_eq!(
            c.redis_timeout,
            Duration::from_millis(100),
            "defaults fill the rest"
        );
        assert!(serde_json::from_str::<CacheConfig>(r#"{"tll":"1s"}"#).is_err());
    }

    trait Tap: Sized {
        fn tap(self, f: impl FnOnce(&mut Self)) -> Self;
    }

    impl Tap for CacheConfig {
        fn tap(mut self, f: impl FnOnce(&mut Self)) -> Self {
            f(&mut self);
            self
        }
    }
}
