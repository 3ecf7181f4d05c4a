//! plt-redis: Redis for shared state that a request consults on its way (the gateway's rate
//! limiter, auth's sign-in throttle), which must never stall that request.
//!
//! [`GuardedRedis`] holds one lazily connected, auto-reconnecting multiplexed connection.
//! Every call is bounded by `timeout`. A call that fails or gets no answer in time opens a
//! breaker: from then on calls fail at once without asking Redis — the caller decides
//! locally — until a background probe (`PING` every `probe_interval`) gets an answer and
//! closes it. So while Redis is gone requests pay nothing extra, and when it is back it is
//! used again without a restart.

use redis::{FromRedisValue, RedisResult, ScriptInvocation, aio::ConnectionManager};
use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

/// Why Redis gave no answer: the breaker is open, the call failed or was too slow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable(pub String);

impl std::fmt::Display for Unavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unavailable {}

/// Whether `url` is a Redis URL this build can use (`redis://[:password@]host:port/db`; no
/// TLS). The reason, without the URL (it may hold a password), when not.
pub fn check_url(url: &str) -> Result<(), String> {
    if !url.starts_with("redis://") {
        return Err("must be a redis:// URL (rediss:// is not supported)".into());
    }
    redis::Client::open(url)
        .map(drop)
        .map_err(|_| "not a valid Redis URL (redis://[:password@]host:port/db)".into())
}

/// A Redis connection behind a breaker (see the crate documentation).
pub struct GuardedRedis {
    con: ConnectionManager,
    timeout: Duration,
    probe_interval: Duration,
    /// What this connection serves, in log lines ("rate limiter", "sign-in throttle").
    purpose: &'static str,
    /// The breaker: open while Redis is known to be failing.
    down: Arc<AtomicBool>,
}

impl GuardedRedis {
    /// A connection to `url` (`redis://[:password@]host:port/db`); connects lazily and
    /// reconnects by itself, so a service starts while Redis is down and uses it once it is
    /// up. `Err` only for a URL that cannot be used.
    pub fn new(
        url: &str,
        timeout: Duration,
        probe_interval: Duration,
        purpose: &'static str,
    ) -> RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let con = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            con,
            timeout,
            probe_interval,
            purpose,
            down: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Whether the breaker is open (Redis is not asked).
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// Runs a Lua script invocation; see [`GuardedRedis::call`].
    pub async fn script<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, Unavailable> {
        self.call(|mut con| async move { invocation.invoke_async(&mut con).await })
            .await
    }

    /// Runs `f` on the connection within `timeout`. While the breaker is open, fails at once
    /// without asking Redis; an error or no answer in time opens it.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, Unavailable>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        if self.is_down() {
            return Err(Unavailable(
                "Redis is failing; not asked until a probe answers".into(),
            ));
        }
        let result = match tokio::time::timeout(self.timeout, f(self.con.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Unavailable(e.to_string())),
            Err(_) => Err(Unavailable(format!("no answer within {:?}", self.timeout))),
        };
        if let Err(e) = &result {
            self.trip(&e.0);
        }
        result
    }

    /// Opens the breaker (once) and starts the probe that closes it. For callers that find
    /// an answer unusable, too.
    pub fn trip(&self, error: &str) {
        if self.down.swap(true, Ordering::AcqRel) {
            return;
        }
        let purpose = self.purpose;
        tracing::warn!(
            error,
            "Redis ({purpose}) failing; deciding locally until Redis answers again"
        );
        // The probe ends with the breaker's owner, too.
        let (mut con, down) = (self.con.clone(), Arc::downgrade(&self.down));
        let (every, timeout) = (
            self.probe_interval,
            self.timeout.max(Duration::from_millis(250)),
        );
        tokio::spawn(async move {
            let opened = Instant::now();
            loop {
                tokio::time::sleep(every).await;
                let Some(down) = down.upgrade() else { return };
                let cmd = redis::cmd("PING");
                let ping = cmd.query_async::<String>(&mut con);
                if let Ok(Ok(_)) = tokio::time::timeout(timeout, ping).await {
                    down.store(false, Ordering::Release);
                    tracing::info!(after = ?opened.elapsed(), "Redis ({purpose}) answering again");
                    return;
                }
            }
        });
    }
}
