//! Rate limiting with GCRA (the generic cell rate algorithm): each key has a theoretical
//! arrival time (TAT). A limit of `requests` per `period` with bursts of `burst` has the
//! emission interval `T = period / requests` and the tolerance `τ = burst · T`; a request at
//! `now` is allowed when `max(TAT, now) + T − now ≤ τ`, and then moves the TAT by `T`.
//!
//! Two stores with the same arithmetic: in process (one atomic TAT per key in a bounded
//! cache), and Redis (one key per bucket, updated atomically by a Lua script on the Redis
//! server's clock, so several gateway instances share one budget). When Redis fails or is
//! slower than `redis_timeout`, the request is decided by the local limiter instead and the
//! fallback is counted in `gateway_ratelimit_fallback_total`. A failure also opens a
//! breaker (`plt_redis::GuardedRedis`): until a background probe (`PING` every
//! `redis_probe_interval`) gets an answer, Redis is not asked at all, so requests pay nothing
//! extra while it is down.

use crate::{
    config::{Limit, RateLimitBackend, RateLimitConfig},
    shard::ShardedMap,
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::{Duration, Instant},
};

/// The outcome of one check, with what the `RateLimit-*` headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The burst size: the most requests that may arrive at once.
    pub limit: u32,
    /// Requests that may still arrive at once after this one.
    pub remaining: u32,
    /// Until the budget is full again.
    pub reset: Duration,
    /// When refused: until the next request would be allowed.
    pub retry_after: Duration,
}

/// `(T, τ)` in microseconds.
fn params(limit: &Limit) -> (i64, i64) {
    let t = (limit.period.as_micros() / u128::from(limit.requests.max(1))).max(1);
    let t = i64::try_from(t).unwrap_or(i64::MAX / 4);
    (t, t.saturating_mul(i64::from(limit.burst.max(1))))
}

/// The decision from whether the request was allowed and `d`, the TAT after the decision
/// minus now (µs). Shared by both stores, so they report alike.
pub fn decide(allowed: bool, d: i64, limit: &Limit) -> Decision {
    let (t, tau) = params(limit);
    let d = d.max(0);
    let micros = |v: i64| Duration::from_micros(u64::try_from(v.max(0)).unwrap_or(0));
    if allowed {
        let remaining = ((tau - d).max(0) / t).min(i64::from(limit.burst));
        Decision {
            allowed,
            limit: limit.burst,
            remaining: u32::try_from(remaining).unwrap_or(0),
            reset: micros(d),
            retry_after: Duration::ZERO,
        }
    } else {
        Decision {
            allowed,
            limit: limit.burst,
            remaining: 0,
            reset: micros(d),
            retry_after: micros(d + t - tau),
        }
    }
}

/// The in-process store: one TAT per key, kept while it matters.
pub struct LocalLimiter {
    start: Instant,
    cells: ShardedMap<String, Arc<AtomicI64>>,
}

impl LocalLimiter {
    /// At most about `max_keys` keys. A key whose TAT is in the past is as good as absent,
    /// so such keys are the first dropped when room is needed.
    pub fn new(max_keys: u64) -> Self {
        Self {
            start: Instant::now(),
            cells: ShardedMap::new(usize::try_from(max_keys).unwrap_or(usize::MAX)),
        }
    }

    /// One request of `key` arriving now.
    pub fn check(&self, key: &str, limit: &Limit) -> Decision {
        self.check_at(key, limit, Instant::now())
    }

    /// One request of `key` that arrived at `at` (not before this limiter was made).
    pub fn check_at(&self, key: &str, limit: &Limit, at: Instant) -> Decision {
        let (t, tau) = params(limit);
        let now = i64::try_from(at.saturating_duration_since(self.start).as_micros())
            .unwrap_or(i64::MAX / 2);
        let cell = self.cells.get_or_insert_with(
            key,
            || (key.to_owned(), Arc::new(AtomicI64::new(i64::MIN))),
            |c| c.load(Ordering::Relaxed) <= now,
        );
        let mut stored = cell.load(Ordering::Acquire);
        loop {
            let tat = stored.max(now);
            let new_tat = tat + t;
            if new_tat - now > tau {
                return decide(false, tat - now, limit);
            }
            match cell.compare_exchange_weak(stored, new_tat, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return decide(true, new_tat - now, limit),
                Err(actual) => stored = actual,
            }
        }
    }
}

/// GCRA on one key, atomically, on the Redis server's clock. ARGV: T and τ in µs.
/// Returns `{allowed, TAT after the decision − now}`; the key expires when the bucket is
/// full again.
const GCRA_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = tonumber(ARGV[2])
local tat = now
local v = redis.call('GET', KEYS[1])
if v then
  local stored = tonumber(v)
  if stored and stored > now then tat = stored end
end
local new_tat = tat + interval
if new_tat - now > tau then
  return {0, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
return {1, new_tat - now}
"#;

pub struct RedisLimiter {
    redis: plt_redis::GuardedRedis,
    script: redis::Script,
    prefix: String,
}

impl RedisLimiter {
    /// A limiter on `url`; connects lazily (and reconnects by itself), so the gateway starts
    /// while Redis is down and uses it once it is up.
    pub fn new(
        url: &str,
        timeout: Duration,
        probe_interval: Duration,
        prefix: &str,
    ) -> anyhow::Result<Self> {
        let redis = plt_redis::GuardedRedis::new(url, timeout, probe_interval, "rate limiter")
            .map_err(|e| anyhow::anyhow!("gateway.rate_limit.redis_url: {e}"))?;
        Ok(Self {
            redis,
            script: redis::Script::new(GCRA_LUA),
            prefix: prefix.to_owned(),
        })
    }

    /// Whether the breaker is open (Redis is not asked).
    pub fn is_down(&self) -> bool {
        self.redis.is_down()
    }

    /// The decision from Redis, or why there is none. While the breaker is open, answers at
    /// once without asking Redis.
    pub async fn check(&self, key: &str, limit: &Limit) -> Result<Decision, String> {
        let (t, tau) = params(limit);
        let full_key = format!("{}{key}", self.prefix);
        let mut invocation = self.script.key(full_key);
        invocation.arg(t).arg(tau);
        match self.redis.script::<Vec<i64>>(&invocation).await {
            Ok(v) if v.len() == 2 => Ok(decide(v[0] == 1, v[1], limit)),
            Ok(v) => {
                let e = format!("unexpected answer {v:?}");
                self.redis.trip(&e);
                Err(e)
            }
            Err(e) => Err(e.0),
        }
    }
}

/// Which budget a check draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Client,
    User,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Client => "client",
            Scope::User => "user",
        }
    }
}

/// The configured limiter.
pub struct RateLimiter {
    enabled: bool,
    local: LocalLimiter,
    redis: Option<RedisLimiter>,
    pub client: Limit,
    pub user: Limit,
}

impl RateLimiter {
    /// `extra` are the route overrides, so idle keys are kept as long as any limit needs.
    pub fn new(cfg: &RateLimitConfig) -> anyhow::Result<Self> {
        let redis = match (cfg.enabled, cfg.backend) {
            (true, RateLimitBackend::Redis) => Some(RedisLimiter::new(
                cfg.redis_url.expose(),
                cfg.redis_timeout,
                cfg.redis_probe_interval,
                &cfg.key_prefix,
            )?),
            _ => None,
        };
        Ok(Self {
            enabled: cfg.enabled,
            local: LocalLimiter::new(cfg.max_keys),
            redis,
            client: cfg.client,
            user: cfg.user,
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Checks and counts one request of `subject` (a client address or a user id) against
    /// `limit` in `bucket` (`default`, or a route with limits of its own).
    pub async fn check(
        &self,
        scope: Scope,
        bucket: &str,
        subject: &(dyn std::fmt::Display + Sync),
        limit: &Limit,
        at: Instant,
    ) -> Decision {
        thread_local! {
            static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        if let Some(redis) = &self.redis {
            let key = format!("{}:{bucket}:{subject}", scope.as_str());
            match redis.check(&key, limit).await {
                Ok(d) => return d,
                Err(e) => {
                    tracing::debug!(error = %e, "Redis rate limiter failed; local fallback");
                    metrics::counter!("gateway_ratelimit_fallback_total", "service" => crate::SERVICE_NAME)
                        .increment(1);
                }
            }
        }
        // The key is built in a reused buffer: no allocation unless the key is new.
        KEY.with_borrow_mut(|key| {
            key.clear();
            key.push_str(scope.as_str());
            key.push(':');
            key.push_str(bucket);
            key.push(':');
            let _ = std::fmt::Write::write_fmt(key, format_args!("{subject}"));
            self.local.check_at(key, limit, at)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u32, period_ms: u64, burst: u32) -> Limit {
        Limit {
            requests,
            period: Duration::from_millis(period_ms),
            burst,
        }
    }

    #[test]
    fn burst_then_refusal_then_recovery() {
        let l = limit(10, 1000, 3);
        let lim = LocalLimiter::new(100);
        let a = lim.check("k", &l);
        assert!(a.allowed);
        assert_eq!((a.limit, a.remaining), (3, 2));
        assert!(lim.check("k", &l).allowed);
        let c = lim.check("k", &l);
        assert!(c.allowed);
        assert_eq!(c.remaining, 0);
        let d = lim.check("k", &l);
        assert!(!d.allowed);
        assert_eq!(d.remaining, 0);
        // One emission interval (100ms) until the next request fits.
        assert!(
            d.retry_after > Duration::from_millis(80)
                && d.retry_after <= Duration::from_millis(100)
        );
        assert!(d.reset > Duration::from_millis(250) && d.reset <= Duration::from_millis(300));
        // Other keys are independent.
        assert!(lim.check("other", &l).allowed);
        std::thread::sleep(d.retry_after + Duration::from_millis(5));
        assert!(lim.check("k", &l).allowed);
        assert!(!lim.check("k", &l).allowed);
    }

    #[test]
    fn concurrent_checks_never_exceed_the_burst() {
        let l = limit(1, 60_000, 50);
        let lim = Arc::new(LocalLimiter::new(100));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let lim = lim.clone();
                std::thread::spawn(move || (0..20).filter(|_| lim.check("k", &l).allowed).count())
            })
            .collect();
        let allowed: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(allowed, 50);
    }

    #[test]
    fn decisions_report_like_headers_need() {
        let l = limit(2, 1000, 2);
        // Allowed, TAT 500ms ahead: one more fits, full in 500ms.
        let d = decide(true, 500_000, &l);
        assert_eq!((d.remaining, d.reset), (1, Duration::from_millis(500)));
        // Refused with TAT 1s ahead: next fits in 500ms.
        let d = decide(false, 1_000_000, &l);
        assert_eq!(d.retry_after, Duration::from_millis(500));
    }

    #[tokio::test]
    async fn redis_breaker_stops_asking_while_redis_is_silent_and_recovers() {
        let Some(url) = std::env::var("PLT_TEST_REDIS_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            eprintln!("SKIPPED Redis breaker: PLT_TEST_REDIS_URL is not set");
            return;
        };
        let upstream = std::net::ToSocketAddrs::to_socket_addrs(
            url.trim_start_matches("redis://").trim_end_matches('/'),
        )
        .unwrap()
        .next()
        .unwrap();
        let proxy = plt_testkit::FaultProxy::start("redis", upstream)
            .await
            .unwrap();
        let prefix = format!("plt:test:{}:", uuid::Uuid::new_v4().simple());
        // A probe interval long beside the checks below, so only they could reach Redis.
        let lim = RedisLimiter::new(
            &format!("redis://{}", proxy.addr()),
            Duration::from_millis(100),
            Duration::from_secs(1),
            &prefix,
        )
        .unwrap();
        let l = limit(1000, 1000, 1000);
        assert!(lim.check("k", &l).await.is_ok(), "Redis answers");
        assert!(!lim.is_down());

        proxy.set(plt_testkit::Mode::Silent);
        assert!(
            lim.check("k", &l).await.is_err(),
            "no answer within the timeout"
        );
        assert!(lim.is_down(), "the failure opened the breaker");
        let asked = proxy.received();
        for _ in 0..50 {
            assert!(lim.check("k", &l).await.is_err());
        }
        assert_eq!(
            proxy.received(),
            asked,
            "Redis is not asked while the breaker is open"
        );

        proxy.set(plt_testkit::Mode::Pass);
        let deadline = Instant::now() + Duration::from_secs(5);
        while lim.is_down() {
            assert!(Instant::now() < deadline, "the probe closes the breaker");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(lim.check("k", &l).await.is_ok(), "Redis decides again");
        assert!(proxy.received() > asked);
    }
}
