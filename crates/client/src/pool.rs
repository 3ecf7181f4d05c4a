//! The per-service pool: current instances from a registry watch, per-instance clients
//! (connections reused: one HTTP/2 channel per instance for gRPC, a shared pooled HTTP
//! client), breakers and in-flight counts, and the call policy.

use crate::{breaker::Breaker, budget::RetryBudget};
use plt_contracts::{
    Error, ErrorCode, RequestContext, Result, service_identity::ServiceCredentials,
};
use plt_kernel::metrics::HandleCache;
use plt_registry::{Instance, Watch};
use std::{
    future::Future,
    sync::{
        Arc, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tracing::Instrument as _;

/// How calls to one service behave.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Deadline of a call when the caller has none (a caller's earlier deadline wins).
    pub timeout: Duration,
    /// Attempts per idempotent call, the first included.
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Retries may add at most this fraction of extra load.
    pub retry_budget_ratio: f64,
    pub breaker_failures: u32,
    pub breaker_open_for: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            max_attempts: 3,
            backoff_base: Duration::from_millis(20),
            backoff_max: Duration::from_millis(500),
            retry_budget_ratio: 0.2,
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(5),
        }
    }
}

pub(crate) struct Endpoint<C> {
    pub instance: Instance,
    pub client: C,
    pub inflight: AtomicUsize,
    pub breaker: Breaker,
}

pub struct Pool<C> {
    service: String,
    endpoints: RwLock<Vec<Arc<Endpoint<C>>>>,
    policy: Policy,
    budget: RetryBudget,
    credentials: Option<Arc<dyn ServiceCredentials>>,
    /// `rpc_client_requests_total` by method and outcome (`None`: ok).
    requests: HandleCache<(&'static str, Option<ErrorCode>), metrics::Counter>,
    /// `rpc_client_duration_seconds` by method.
    durations: HandleCache<&'static str, metrics::Histogram>,
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b)
}

/// Errors that say the instance, not the request, failed.
fn instance_failure(e: &Error) -> bool {
    matches!(e.code, ErrorCode::Unavailable)
}

impl<C: Clone + Send + Sync + 'static> Pool<C> {
    /// A pool following `watch`, building each instance's client with `make`. Its calls
    /// carry no service credential (see [`Pool::with_credentials`]).
    pub fn new(
        service: &str,
        watch: Watch,
        make: impl Fn(&Instance) -> Option<C> + Send + Sync + 'static,
        policy: Policy,
    ) -> Arc<Self> {
        Self::with_credentials(service, watch, make, policy, None)
    }

    /// A pool whose every call carries a service token from `credentials` addressed to
    /// `service`, replacing whatever token the context held (a received token is never
    /// passed on). Without credentials the context's token is removed.
    pub fn with_credentials(
        service: &str,
        mut watch: Watch,
        make: impl Fn(&Instance) -> Option<C> + Send + Sync + 'static,
        policy: Policy,
        credentials: Option<Arc<dyn ServiceCredentials>>,
    ) -> Arc<Self> {
        let pool = Arc::new(Self {
            service: service.to_owned(),
            endpoints: RwLock::new(Vec::new()),
            budget: RetryBudget::new(policy.retry_budget_ratio, 3.0),
            policy,
            credentials,
            requests: HandleCache::default(),
            durations: HandleCache::default(),
        });
        let initial = watch.borrow_and_update().clone();
        pool.update(&initial, &make);
        let weak = Arc::downgrade(&pool);
        tokio::spawn(async move {
            while watch.changed().await.is_ok() {
                let Some(pool) = weak.upgrade() else { return };
                let set = watch.borrow_and_update().clone();
                pool.update(&set, &make);
            }
        });
        pool
    }

    /// Replaces the endpoint set, keeping the client, breaker and counters of instances that
    /// stay (same id and address).
    fn update(&self, set: &[Instance], make: &(impl Fn(&Instance) -> Option<C> + Send + Sync)) {
        let mut eps = self.endpoints.write().unwrap_or_else(|p| p.into_inner());
        let mut next = Vec::with_capacity(set.len());
        for inst in set {
            if let Some(e) = eps
                .iter()
                .find(|e| e.instance.id == inst.id && e.instance.address == inst.address)
            {
                next.push(e.clone());
            } else if let Some(client) = make(inst) {
                next.push(Arc::new(Endpoint {
                    instance: inst.clone(),
                    client,
                    inflight: AtomicUsize::new(0),
                    breaker: Breaker::new(
                        self.policy.breaker_failures,
                        self.policy.breaker_open_for,
                    ),
                }));
            }
        }
        tracing::debug!(service = %self.service, instances = next.len(), "instances updated");
        *eps = next;
    }

    /// The instance ids currently in the pool.
    pub fn instances(&self) -> Vec<String> {
        self.endpoints
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|e| e.instance.id.clone())
            .collect()
    }

    /// Power of two choices over in-flight calls, among instances whose breaker admits a
    /// call and that this call has not tried yet. A call never goes to the same instance
    /// twice: a retry there would mostly meet the same failure, later.
    ///
    /// Panic mode (Envoy's panic threshold at its extreme): when every breaker is open, the
    /// breakers are set aside and any untried instance may be picked — an instance that may
    /// answer beats a certain refusal, and when the cause (often a dependency the instances
    /// share, such as their database) goes away, calls succeed at once instead of a breaker
    /// period later. The flag says the pick was made in panic (no breaker slot to take).
    fn pick(&self, tried: &[String]) -> Option<(Arc<Endpoint<C>>, bool)> {
        let eps = self.endpoints.read().unwrap_or_else(|p| p.into_inner());
        let untried = |e: &&Arc<Endpoint<C>>| !tried.contains(&e.instance.id);
        let fresh: Vec<&Arc<Endpoint<C>>> = eps
            .iter()
            .filter(|e| e.breaker.available())
            .filter(untried)
            .collect();
        let (candidates, panic) = if !fresh.is_empty() {
            (fresh, false)
        } else if eps.iter().any(|e| e.breaker.available()) {
            return None;
        } else {
            (eps.iter().filter(untried).collect::<Vec<_>>(), true)
        };
        let n = candidates.len();
        let chosen = match n {
            0 => return None,
            1 => candidates[0],
            _ => {
                let r = random_u64();
                let a = candidates[(r % n as u64) as usize];
                let mut j = ((r >> 32) % (n as u64 - 1)) as usize;
                if std::ptr::eq(candidates[j], a) {
                    j = n - 1;
                }
                let b = candidates[j];
                if b.inflight.load(Ordering::Relaxed) < a.inflight.load(Ordering::Relaxed) {
                    b
                } else {
                    a
                }
            }
        };
        Some((chosen.clone(), panic))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .policy
            .backoff_base
            .saturating_mul(1 << attempt.min(16))
            .min(self.policy.backoff_max);
        // Full jitter.
        exp.mul_f64((random_u64() % 10_000) as f64 / 10_000.0)
    }

    /// Calls `f` on one instance under the policy. `idempotent` methods are retried on
    /// another instance when an instance fails; others are never retried.
    pub async fn call<T, F, Fut>(
        &self,
        method: &'static str,
        idempotent: bool,
        ctx: &RequestContext,
        f: F,
    ) -> Result<T>
    where
        F: Fn(C, RequestContext) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut ctx = ctx.clone().with_timeout(self.policy.timeout);
        ctx.service_token = match &self.credentials {
            Some(c) => Some(c.token(&self.service).await?),
            None => None,
        };
        let started = Instant::now();
        self.budget.deposit();
        let mut tried: Vec<String> = Vec::new();
        let mut attempt = 0u32;
        let result = loop {
            attempt += 1;
            let Some((ep, panic)) = self.pick(&tried) else {
                break Err(Error::unavailable(format!(
                    "no available instance of {}",
                    self.service
                )));
            };
            if !panic && !ep.breaker.try_acquire() {
                tried.push(ep.instance.id.clone());
                continue;
            }
            let left = ctx.remaining().unwrap_or(self.policy.timeout);
            if left.is_zero() {
                break Err(Error::new(ErrorCode::DeadlineExceeded, "deadline exceeded"));
            }
            ep.inflight.fetch_add(1, Ordering::Relaxed);
            // One client span per attempt (semantic conventions: `{service}/{method}`); the
            // call's context carries it as the callee's parent.
            let span = tracing::info_span!(
                "rpc client",
                otel.name = %format_args!("{}/{}", self.service, method),
                otel.kind = "client",
                target = %self.service,
                method,
            );
            plt_kernel::trace::set_attribute(&span, "rpc.service", self.service.clone());
            plt_kernel::trace::set_attribute(&span, "rpc.method", method);
            plt_kernel::trace::set_attribute(&span, "server.address", ep.instance.address.clone());
            let outcome = tokio::time::timeout(left, f(ep.client.clone(), ctx.clone()))
                .instrument(span.clone())
                .await;
            ep.inflight.fetch_sub(1, Ordering::Relaxed);
            match &outcome {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => plt_kernel::trace::set_error(&span, e.code.to_string()),
                Err(_) => plt_kernel::trace::set_error(&span, "deadline exceeded"),
            }
            drop(span);
            let err = match outcome {
                Ok(Ok(v)) => {
                    ep.breaker.on_success();
                    break Ok(v);
                }
                Ok(Err(e)) => e,
                Err(_) => Error::new(ErrorCode::DeadlineExceeded, "deadline exceeded"),
            };
            if instance_failure(&err) {
                ep.breaker.on_failure();
            } else if err.code != ErrorCode::DeadlineExceeded {
                // The instance answered: the request was wrong, not the instance.
                ep.breaker.on_success();
            }
            // Retry an idempotent call after an instance failure, and any call that provably
            // never reached the server (connection refused), on another instance.
            tried.push(ep.instance.id.clone());
            let retry = ((idempotent && instance_failure(&err)) || err.never_sent())
                && attempt < self.policy.max_attempts
                && ctx.remaining().is_none_or(|l| !l.is_zero())
                && self.pick(&tried).is_some()
                && self.budget.try_withdraw();
            if !retry {
                break Err(err);
            }
            metrics::counter!("rpc_client_retries_total", "target" => self.service.clone(), "method" => method).increment(1);
            tokio::time::sleep(self.backoff(attempt)).await;
        };
        let outcome = result.as_ref().err().map(|e| e.code);
        self.requests
            .get(&(method, outcome), || {
                let code = outcome.map_or_else(|| "ok".to_owned(), |c| c.to_string());
                metrics::counter!("rpc_client_requests_total", "target" => self.service.clone(), "method" => method, "code" => code)
            })
            .increment(1);
        self.durations
            .get(&method, || {
                metrics::histogram!("rpc_client_duration_seconds", "target" => self.service.clone(), "method" => method)
            })
            .record(started.elapsed().as_secs_f64());
        result
    }
}
