//! Sign-in throttling, per account and per source address: in Redis when
//! `auth.throttle.redis_url` is set (every auth instance shares one budget and a restart
//! forgets nothing), otherwise in this instance's memory.
//!
//! An attacker must not be able to lock a user (or every user) out, and must not be able to
//! guess freely. So the budgets depend on whether the source is *known* for the account — a
//! source address from which the account signed in successfully within `known_source_ttl`
//! (OWASP's "device cookie" idea, keyed by the client address the gateway vouches for):
//!
//! - From a known source, only that (account, source) pair's failures count: after
//!   `account_free_failures` failures each further attempt must wait
//!   `base · 2^(n − free)` (capped at `max_delay`). Failures from anywhere else do not slow the
//!   owner down, and the per-source limit does not apply to the pair.
//! - From an unknown source, the account's failures from every unknown source count the same
//!   way, and the source may fail at most `source_max_failures` times in `failure_window`
//!   across all accounts (password spraying).
//!
//! There is no hard lock: back-off ends by itself after at most `max_delay`. Failures older
//! than `failure_window` are forgotten. The maps are bounded: past `MAX_ENTRIES`, forgotten
//! entries are swept first and, if still full, the oldest go.
//!
//! [`RedisThrottle`] keeps the same counters in Redis, each changed atomically by a Lua script
//! on the Redis server's clock, every key expiring when it no longer matters (a failure
//! counter `failure_window` after its last failure, a source counter `failure_window` after
//! its first, a known source after `known_source_ttl`). [`Throttle`] asks Redis when it is
//! configured and answering; while it is not (an error, or no answer within
//! `redis_timeout`), a breaker (`plt_redis::GuardedRedis`) stops asking it and this
//! instance's memory decides, until a `PING` probe finds Redis back. Memory counts every
//! sign-in all along, so the fallback knows what this instance saw.

use crate::config::ThrottleConfig;
use sha2::{Digest, Sha256};
use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    first: Instant,
    last: Instant,
}

impl Entry {
    fn new(now: Instant) -> Self {
        Self {
            failures: 0,
            first: now,
            last: now,
        }
    }
}

/// Failure counters of one kind of key.
struct Counters<K>(Mutex<HashMap<K, Entry>>);

impl<K: Clone + Eq + Hash> Counters<K> {
    fn new() -> Self {
        Self(Mutex::new(HashMap::new()))
    }

    fn get(&self, k: &K) -> Option<Entry> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(k)
            .copied()
    }

    /// Counts one failure; a window restarts when `restart(entry)` says so.
    fn fail(&self, k: K, window: Duration, now: Instant, restart: impl Fn(&Entry) -> bool) {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        bound(&mut map, |e| now.duration_since(e.last) < window);
        let e = map.entry(k).or_insert_with(|| Entry::new(now));
        if restart(e) {
            *e = Entry::new(now);
        }
        e.failures = e.failures.saturating_add(1);
        e.last = now;
    }

    fn clear(&self, k: &K) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(k);
    }
}

/// The in-memory throttle (this instance only).
pub struct MemoryThrottle {
    cfg: ThrottleConfig,
    /// Failures per account from sources not known for it.
    accounts: Counters<String>,
    /// Failures per (account, known source).
    pairs: Counters<(String, IpAddr)>,
    /// Failures per source from accounts it is not known for.
    sources: Counters<IpAddr>,
    /// When each (account, source) last signed in successfully.
    known: Mutex<HashMap<(String, IpAddr), Instant>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused until at least this much time has passed.
    Wait(Duration),
}

impl MemoryThrottle {
    pub fn new(cfg: ThrottleConfig) -> Self {
        Self {
            cfg,
            accounts: Counters::new(),
            pairs: Counters::new(),
            sources: Counters::new(),
            known: Mutex::new(HashMap::new()),
        }
    }

    fn account_delay(&self, failures: u32) -> Duration {
        if failures < self.cfg.account_free_failures {
            return Duration::ZERO;
        }
        let exp = (failures - self.cfg.account_free_failures).min(30);
        self.cfg
            .account_base_delay
            .saturating_mul(1u32 << exp)
            .min(self.cfg.account_max_delay)
    }

    /// The back-off still to wait after `e`'s last failure, if any.
    fn back_off(&self, e: Option<Entry>, now: Instant) -> Verdict {
        if let Some(e) = e
            && now.duration_since(e.last) < self.cfg.failure_window
        {
            let delay = self.account_delay(e.failures);
            let waited = now.duration_since(e.last);
            if waited < delay {
                return Verdict::Wait(delay - waited);
            }
        }
        Verdict::Allowed
    }

    /// Whether `source` signed in to `account` successfully within `known_source_ttl`.
    pub fn is_known(&self, account: &str, source: Option<IpAddr>, now: Instant) -> bool {
        let Some(ip) = source else { return false };
        self.known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(account.to_owned(), ip))
            .is_some_and(|t| now.duration_since(*t) < self.cfg.known_source_ttl)
    }

    /// Whether a sign-in for `account` from `source` may be tried now.
    pub fn check(&self, account: &str, source: Option<IpAddr>, now: Instant) -> Verdict {
        if let Some(ip) = source
            && self.is_known(account, source, now)
        {
            return self.back_off(self.pairs.get(&(account.to_owned(), ip)), now);
        }
        let window = self.cfg.failure_window;
        if let Some(ip) = source
            && let Some(e) = self.sources.get(&ip)
            && now.duration_since(e.first) < window
            && e.failures >= self.cfg.source_max_failures
        {
            return Verdict::Wait(window - now.duration_since(e.first));
        }
        self.back_off(self.accounts.get(&account.to_owned()), now)
    }

    pub fn failure(&self, account: &str, source: Option<IpAddr>, now: Instant) {
        let window = self.cfg.failure_window;
        let stale = |e: &Entry| now.duration_since(e.last) >= window;
        if let Some(ip) = source
            && self.is_known(account, source, now)
        {
            self.pairs
                .fail((account.to_owned(), ip), window, now, stale);
            return;
        }
        self.accounts.fail(account.to_owned(), window, now, stale);
        if let Some(ip) = source {
            self.sources
                .fail(ip, window, now, |e| now.duration_since(e.first) >= window);
        }
    }

    /// A successful sign-in: the account's failures are cleared (not the source's), and the
    /// source becomes known for the account.
    pub fn success(&self, account: &str, source: Option<IpAddr>, now: Instant) {
        self.accounts.clear(&account.to_owned());
        if let Some(ip) = source {
            let key = (account.to_owned(), ip);
            self.pairs.clear(&key);
            let ttl = self.cfg.known_source_ttl;
            let mut known = self.known.lock().unwrap_or_else(|p| p.into_inner());
            bound(&mut known, |t| now.duration_since(*t) < ttl);
            known.insert(key, now);
        }
    }
}

/// How long a throttle's wait in milliseconds is, as a `Duration` (the memory throttle's
/// precision is finer; Redis counts in milliseconds on its own clock).
fn verdict_ms(wait_ms: i64) -> Verdict {
    if wait_ms <= 0 {
        Verdict::Allowed
    } else {
        Verdict::Wait(Duration::from_millis(wait_ms.unsigned_abs()))
    }
}

/// `now` in ms on the Redis server's clock, shared by the scripts.
const NOW_LUA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// KEYS: account failures [, known marker, pair failures, source failures] (the last three
/// when the source is known). ARGV: free failures, base delay, max delay, window (ms), source
/// max failures. Returns the wait in ms (0: allowed). Reads only.
const CHECK_LUA: &str = r#"
local free, base, maxd = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local window, smax = tonumber(ARGV[4]), tonumber(ARGV[5])
local function backoff(key)
  local v = redis.call('HMGET', key, 'n', 'last')
  local n, last = tonumber(v[1]), tonumber(v[2])
  if not n or not last then return 0 end
  local waited = math.max(now - last, 0)
  if waited >= window or n < free then return 0 end
  local delay = math.min(base * 2 ^ math.min(n - free, 30), maxd)
  if waited < delay then return delay - waited end
  return 0
end
if #KEYS == 4 then
  if redis.call('EXISTS', KEYS[2]) == 1 then return backoff(KEYS[3]) end
  local n = tonumber(redis.call('GET', KEYS[4]) or '0')
  if n >= smax then
    local ttl = redis.call('PTTL', KEYS[4])
    if ttl > 0 then return ttl end
  end
end
return backoff(KEYS[1])
"#;

/// KEYS as for CHECK_LUA. ARGV: window (ms). Counts one failure: the pair's when the source
/// is known for the account, else the account's and the source's.
const FAILURE_LUA: &str = r#"
local window = tonumber(ARGV[1])
local function fail(key)
  redis.call('HINCRBY', key, 'n', 1)
  redis.call('HSET', key, 'last', now)
  redis.call('PEXPIRE', key, window)
end
if #KEYS == 4 and redis.call('EXISTS', KEYS[2]) == 1 then
  fail(KEYS[3])
  return 1
end
fail(KEYS[1])
if #KEYS == 4 then
  local n = redis.call('INCR', KEYS[4])
  if n == 1 or redis.call('PTTL', KEYS[4]) < 0 then
    redis.call('PEXPIRE', KEYS[4], window)
  end
end
return 0
"#;

/// KEYS: account failures [, known marker, pair failures]. ARGV: known_source_ttl (ms).
/// Clears the account's (and pair's) failures, not the source's; the source becomes known.
const SUCCESS_LUA: &str = r#"
redis.call('DEL', KEYS[1])
if #KEYS == 3 then
  redis.call('DEL', KEYS[3])
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[1])
end
return 1
"#;

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4).max(1)
}

/// The throttle's counters in Redis (see the module documentation). Keys under
/// `key_prefix`: `a:<account>`, `p:<account>:<ip>`, `k:<account>:<ip>`, `s:<ip>`, where
/// `<account>` is the hex SHA-256 of the normalized e-mail (no addresses in Redis, and no
/// separator inside a key part). The scripts touch several keys: a single Redis server (or
/// primary), not a Cluster.
pub struct RedisThrottle {
    redis: plt_redis::GuardedRedis,
    cfg: ThrottleConfig,
    check: redis::Script,
    failure: redis::Script,
    success: redis::Script,
}

impl RedisThrottle {
    /// Connects lazily to `cfg.redis_url` (a service starts while Redis is down).
    pub fn new(cfg: &ThrottleConfig) -> anyhow::Result<Self> {
        let redis = plt_redis::GuardedRedis::new(
            cfg.redis_url.expose(),
            cfg.redis_timeout,
            cfg.redis_probe_interval,
            "sign-in throttle",
        )
        .map_err(|e| anyhow::anyhow!("auth.throttle.redis_url: {e}"))?;
        let script = |body: &str| redis::Script::new(&format!("{NOW_LUA}{body}"));
        Ok(Self {
            redis,
            cfg: cfg.clone(),
            check: script(CHECK_LUA),
            failure: script(FAILURE_LUA),
            success: script(SUCCESS_LUA),
        })
    }

    /// Whether the breaker is open (Redis is not asked).
    pub fn is_down(&self) -> bool {
        self.redis.is_down()
    }

    /// The keys of (`account`, `source`), in the scripts' order.
    fn keys(&self, account: &str, source: Option<IpAddr>) -> Vec<String> {
        let p = &self.cfg.key_prefix;
        let h = Sha256::digest(account.as_bytes()).iter().fold(
            String::with_capacity(64),
            |mut s, b| {
                use std::fmt::Write;
                let _ = write!(s, "{b:02x}");
                s
            },
        );
        let mut keys = vec![format!("{p}a:{h}")];
        if let Some(ip) = source {
            keys.push(format!("{p}k:{h}:{ip}"));
            keys.push(format!("{p}p:{h}:{ip}"));
            keys.push(format!("{p}s:{ip}"));
        }
        keys
    }

    pub async fn check(
        &self,
        account: &str,
        source: Option<IpAddr>,
    ) -> Result<Verdict, plt_redis::Unavailable> {
        let c = &self.cfg;
        let mut inv = self.check.prepare_invoke();
        for k in self.keys(account, source) {
            inv.key(k);
        }
        inv.arg(c.account_free_failures)
            .arg(ms(c.account_base_delay))
            .arg(ms(c.account_max_delay))
            .arg(ms(c.failure_window))
            .arg(c.source_max_failures);
        self.redis.script::<i64>(&inv).await.map(verdict_ms)
    }

    pub async fn failure(
        &self,
        account: &str,
        source: Option<IpAddr>,
    ) -> Result<(), plt_redis::Unavailable> {
        let mut inv = self.failure.prepare_invoke();
        for k in self.keys(account, source) {
            inv.key(k);
        }
        inv.arg(ms(self.cfg.failure_window));
        self.redis.script::<i64>(&inv).await.map(drop)
    }

    pub async fn success(
        &self,
        account: &str,
        source: Option<IpAddr>,
    ) -> Result<(), plt_redis::Unavailable> {
        let mut inv = self.success.prepare_invoke();
        let mut keys = self.keys(account, source);
        keys.truncate(3);
        for k in keys {
            inv.key(k);
        }
        inv.arg(ms(self.cfg.known_source_ttl));
        self.redis.script::<i64>(&inv).await.map(drop)
    }
}

/// The configured throttle: Redis when `redis_url` is set and Redis answers, this instance's
/// memory otherwise (which counts every sign-in all along, so that it can take over).
pub struct Throttle {
    memory: MemoryThrottle,
    redis: Option<RedisThrottle>,
}

impl Throttle {
    /// In Redis when `cfg.redis_url` is set, in memory otherwise.
    pub fn new(cfg: &ThrottleConfig) -> anyhow::Result<Self> {
        let redis = if cfg.redis_url.is_empty() {
            None
        } else {
            Some(RedisThrottle::new(cfg)?)
        };
        Ok(Self {
            memory: MemoryThrottle::new(cfg.clone()),
            redis,
        })
    }

    /// Whether Redis decides now (configured, and its breaker closed).
    pub fn is_shared(&self) -> bool {
        self.redis.as_ref().is_some_and(|r| !r.is_down())
    }

    fn fell_back(e: &plt_redis::Unavailable) {
        tracing::debug!(error = %e, "sign-in throttle: Redis unavailable; this instance decides");
        metrics::counter!("auth_throttle_fallback_total", "service" => crate::SERVICE_NAME)
            .increment(1);
    }

    /// Whether a sign-in for `account` from `source` may be tried now.
    pub async fn check(&self, account: &str, source: Option<IpAddr>) -> Verdict {
        if let Some(redis) = &self.redis {
            match redis.check(account, source).await {
                Ok(v) => return v,
                Err(e) => Self::fell_back(&e),
            }
        }
        self.memory.check(account, source, Instant::now())
    }

    /// A failed sign-in.
    pub async fn failure(&self, account: &str, source: Option<IpAddr>) {
        self.memory.failure(account, source, Instant::now());
        if let Some(redis) = &self.redis
            && let Err(e) = redis.failure(account, source).await
        {
            Self::fell_back(&e);
        }
    }

    /// A successful sign-in: the account's failures are cleared (not the source's), and the
    /// source becomes known for the account.
    pub async fn success(&self, account: &str, source: Option<IpAddr>) {
        self.memory.success(account, source, Instant::now());
        if let Some(redis) = &self.redis
            && let Err(e) = redis.success(account, source).await
        {
            Self::fell_back(&e);
        }
    }
}

/// Keeps `map` under `MAX_ENTRIES`: drops entries `live` says are over, then the oldest
/// tenth if still full.
fn bound<K: Clone + Eq + Hash, V: Copy + HasTime>(
    map: &mut HashMap<K, V>,
    live: impl Fn(&V) -> bool,
) {
    if map.len() < MAX_ENTRIES {
        return;
    }
    map.retain(|_, v| live(v));
    if map.len() >= MAX_ENTRIES {
        let mut by_age: Vec<(K, Instant)> =
            map.iter().map(|(k, v)| (k.clone(), v.time())).collect();
        by_age.sort_by_key(|(_, t)| *t);
        for (k, _) in by_age.into_iter().take(MAX_ENTRIES / 10) {
            map.remove(&k);
        }
    }
}

/// The time an entry was last touched (for eviction).
trait HasTime {
    fn time(&self) -> Instant;
}

impl HasTime for Instant {
    fn time(&self) -> Instant {
        *self
    }
}

impl HasTime for Entry {
    fn time(&self) -> Instant {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> MemoryThrottle {
        MemoryThrottle::new(ThrottleConfig {
            account_free_failures: 3,
            account_base_delay: Duration::from_secs(1),
            account_max_delay: Duration::from_secs(60),
            failure_window: Duration::from_secs(900),
            source_max_failures: 5,
            known_source_ttl: Duration::from_secs(30 * 86400),
            ..ThrottleConfig::default()
        })
    }

    #[test]
    fn account_backs_off_exponentially_and_is_capped() {
        let t = throttle();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.check("a", None, t0), Verdict::Allowed);
            t.failure("a", None, t0);
        }
        // 3 failures: 1 s back-off.
        assert_eq!(
            t.check("a", None, t0),
            Verdict::Wait(Duration::from_secs(1))
        );
        assert_eq!(
            t.check("a", None, t0 + Duration::from_secs(1)),
            Verdict::Allowed
        );
        t.failure("a", None, t0 + Duration::from_secs(1));
        assert_eq!(
            t.check("a", None, t0 + Duration::from_secs(1)),
            Verdict::Wait(Duration::from_secs(2))
        );
        for i in 0..20 {
            t.failure("a", None, t0 + Duration::from_secs(2 + i));
        }
        let at = t0 + Duration::from_secs(21);
        assert_eq!(
            t.check("a", None, at),
            Verdict::Wait(Duration::from_secs(60)),
            "capped"
        );
        assert_eq!(
            t.check("a", None, at + Duration::from_secs(60)),
            Verdict::Allowed,
            "no hard lock"
        );
        // Other accounts are unaffected; success clears.
        assert_eq!(t.check("b", None, at), Verdict::Allowed);
        t.success("a", None, at);
        assert_eq!(t.check("a", None, at), Verdict::Allowed);
    }

    #[test]
    fn source_limit_applies_across_accounts_and_expires() {
        let t = throttle();
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..5 {
            t.failure(&format!("user{i}"), Some(ip), t0);
        }
        assert!(matches!(t.check("fresh", Some(ip), t0), Verdict::Wait(_)));
        assert_eq!(
            t.check("fresh", Some("203.0.113.8".parse().unwrap()), t0),
            Verdict::Allowed
        );
        assert_eq!(
            t.check("fresh", Some(ip), t0 + Duration::from_secs(901)),
            Verdict::Allowed
        );
    }

    #[test]
    fn an_attacker_elsewhere_cannot_lock_the_owner_out() {
        let t = throttle();
        let owner: IpAddr = "198.51.100.10".parse().unwrap();
        let attacker: IpAddr = "203.0.113.66".parse().unwrap();
        let t0 = Instant::now();
        t.success("ada", Some(owner), t0);
        // The attacker hammers Ada's account and sprays others from its address.
        for i in 0..50 {
            t.failure("ada", Some(attacker), t0);
            t.failure(&format!("x{i}"), Some(attacker), t0);
        }
        assert!(matches!(
            t.check("ada", Some(attacker), t0),
            Verdict::Wait(_)
        ));
        assert!(matches!(
            t.check("bob", Some(attacker), t0),
            Verdict::Wait(_)
        ));
        // Ada, from where she signed in before, is not slowed at all.
        assert_eq!(t.check("ada", Some(owner), t0), Verdict::Allowed);
        // Her own mistakes there still back off (per pair), and end.
        for _ in 0..3 {
            t.failure("ada", Some(owner), t0);
        }
        assert_eq!(
            t.check("ada", Some(owner), t0),
            Verdict::Wait(Duration::from_secs(1))
        );
        assert_eq!(
            t.check("ada", Some(owner), t0 + Duration::from_secs(1)),
            Verdict::Allowed
        );
        // A source known for Ada is not exempt for other accounts.
        for i in 0..5 {
            t.failure(&format!("y{i}"), Some(owner), t0);
        }
        assert!(matches!(
            t.check("carol", Some(owner), t0),
            Verdict::Wait(_)
        ));
        assert_eq!(
            t.check("ada", Some(owner), t0 + Duration::from_secs(1)),
            Verdict::Allowed
        );
        // Known sources are forgotten after known_source_ttl.
        assert!(!t.is_known("ada", Some(owner), t0 + Duration::from_secs(31 * 86400)));
    }
}
