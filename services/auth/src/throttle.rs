//! Sign-in throttling, per account and per source address, in this instance's memory.
//!
//! Per account: after `account_free_failures` failures, each further attempt must wait
//! `base · 2^(n − free)` (capped at `max_delay`) after the last failure. There is no hard
//! lock: an attacker hammering an account only keeps it slowed, and the owner can sign in
//! again after at most `max_delay`. Per source: at most `source_max_failures` failures in
//! `failure_window`. Failures older than `failure_window` are forgotten. The maps are bounded:
//! past `MAX_ENTRIES`, forgotten entries are swept first and, if still full, the oldest go.

use crate::config::ThrottleConfig;
use std::{
    collections::HashMap,
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

pub struct Throttle {
    cfg: ThrottleConfig,
    accounts: Mutex<HashMap<String, Entry>>,
    sources: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Refused until at least this much time has passed.
    Wait(Duration),
}

impl Throttle {
    pub fn new(cfg: ThrottleConfig) -> Self {
        Self {
            cfg,
            accounts: Mutex::new(HashMap::new()),
            sources: Mutex::new(HashMap::new()),
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

    /// Whether a sign-in for `account` from `source` may be tried now.
    pub fn check(&self, account: &str, source: Option<IpAddr>, now: Instant) -> Verdict {
        let window = self.cfg.failure_window;
        if let Some(ip) = source {
            let sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(e) = sources.get(&ip)
                && now.duration_since(e.first) < window
                && e.failures >= self.cfg.source_max_failures
            {
                return Verdict::Wait(window - now.duration_since(e.first));
            }
        }
        let accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = accounts.get(account)
            && now.duration_since(e.last) < window
        {
            let delay = self.account_delay(e.failures);
            let waited = now.duration_since(e.last);
            if waited < delay {
                return Verdict::Wait(delay - waited);
            }
        }
        Verdict::Allowed
    }

    pub fn failure(&self, account: &str, source: Option<IpAddr>, now: Instant) {
        let window = self.cfg.failure_window;
        {
            let mut accounts = self.accounts.lock().unwrap_or_else(|p| p.into_inner());
            bound(&mut accounts, window, now);
            let e = accounts.entry(account.to_owned()).or_insert(Entry {
                failures: 0,
                first: now,
                last: now,
            });
            if now.duration_since(e.last) >= window {
                *e = Entry {
                    failures: 0,
                    first: now,
                    last: now,
                };
            }
            e.failures = e.failures.saturating_add(1);
            e.last = now;
        }
        if let Some(ip) = source {
            let mut sources = self.sources.lock().unwrap_or_else(|p| p.into_inner());
            bound(&mut sources, window, now);
            let e = sources.entry(ip).or_insert(Entry {
                failures: 0,
                first: now,
                last: now,
            });
            if now.duration_since(e.first) >= window {
                *e = Entry {
                    failures: 0,
                    first: now,
                    last: now,
                };
            }
            e.failures = e.failures.saturating_add(1);
            e.last = now;
        }
    }

    /// A successful sign-in clears the account's failures (not the source's).
    pub fn success(&self, account: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(account);
    }
}

fn bound<K: Clone + Eq + std::hash::Hash>(
    map: &mut HashMap<K, Entry>,
    window: Duration,
    now: Instant,
) {
    if map.len() < MAX_ENTRIES {
        return;
    }
    map.retain(|_, e| now.duration_since(e.last) < window);
    if map.len() >= MAX_ENTRIES {
        let mut by_age: Vec<(K, Instant)> = map.iter().map(|(k, e)| (k.clone(), e.last)).collect();
        by_age.sort_by_key(|(_, t)| *t);
        for (k, _) in by_age.into_iter().take(MAX_ENTRIES / 10) {
            map.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle::new(ThrottleConfig {
            account_free_failures: 3,
            account_base_delay: Duration::from_secs(1),
            account_max_delay: Duration::from_secs(60),
            failure_window: Duration::from_secs(900),
            source_max_failures: 5,
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
        t.success("a");
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
}
