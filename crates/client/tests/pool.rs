//! The client pool against real gRPC servers on loopback: failover when an instance dies,
//! circuit breaking, the retry budget, no retries of non-idempotent methods, and deadline
//! propagation to the callee.

use async_trait::async_trait;
use plt_client::{ClientConfig, ClientFactory, Protocol};
use plt_contracts::{
    Error, RequestContext, Result,
    identity::{
        IdentityServiceClient, NewUser, PageRequest, User, UserPage, UserUpdate,
        grpc::IdentityGrpcServer,
    },
    testsuite::fakes::FakeIdentity,
};
use plt_kernel::{Secret, ServiceHost, config::ServerConfig};
use plt_registry::{HealthSpec, Instance, Registration, ServiceRegistry, memory::MemoryRegistry};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use uuid::Uuid;

/// A FakeIdentity that counts calls, can be told to fail, and records the deadline it saw.
#[derive(Clone, Default)]
struct Flaky {
    inner: FakeIdentity,
    calls: Arc<AtomicUsize>,
    fail: Arc<AtomicBool>,
    seen_remaining: Arc<Mutex<Option<Duration>>>,
}

impl Flaky {
    fn enter(&self, ctx: &RequestContext) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        *self.seen_remaining.lock().unwrap() = ctx.remaining();
        if self.fail.load(Ordering::SeqCst) {
            Err(Error::unavailable("instance failing"))
        } else {
            Ok(())
        }
    }
}

#[async_trait]
impl IdentityServiceClient for Flaky {
    async fn get_user(&self, ctx: &RequestContext, id: Uuid) -> Result<User> {
        self.enter(ctx)?;
        self.inner.get_user(ctx, id).await
    }
    async fn get_user_by_email(&self, ctx: &RequestContext, email: &str) -> Result<User> {
        self.enter(ctx)?;
        self.inner.get_user_by_email(ctx, email).await
    }
    async fn list_users(&self, ctx: &RequestContext, page: PageRequest) -> Result<UserPage> {
        self.enter(ctx)?;
        self.inner.list_users(ctx, page).await
    }
    async fn create_user(&self, ctx: &RequestContext, user: NewUser) -> Result<User> {
        self.enter(ctx)?;
        Ok(self.inner.add_user(&user.email, user.password.expose()))
    }
    async fn update_user(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        update: UserUpdate,
    ) -> Result<User> {
        self.enter(ctx)?;
        self.inner.update_user(ctx, id, update).await
    }
    async fn delete_user(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        self.enter(ctx)?;
        self.inner.delete_user(ctx, id).await
    }
    async fn verify_email(&self, ctx: &RequestContext, token: &str) -> Result<()> {
        self.enter(ctx)?;
        self.inner.verify_email(ctx, token).await
    }
    async fn request_password_reset(&self, ctx: &RequestContext, email: &str) -> Result<()> {
        self.enter(ctx)?;
        self.inner.request_password_reset(ctx, email).await
    }
    async fn reset_password(
        &self,
        ctx: &RequestContext,
        token: &str,
        pw: Secret<String>,
    ) -> Result<()> {
        self.enter(ctx)?;
        self.inner.reset_password(ctx, token, pw).await
    }
    async fn verify_credentials(
        &self,
        ctx: &RequestContext,
        email: &str,
        pw: Secret<String>,
    ) -> Result<User> {
        self.enter(ctx)?;
        self.inner.verify_credentials(ctx, email, pw).await
    }
}

struct Server {
    flaky: Flaky,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    registration: Option<Registration>,
}

impl Server {
    async fn kill(mut self) {
        // Stop serving (connections refused from now on) without deregistering: a crash.
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
        if let Some(r) = self.registration.take() {
            r.abandon();
        }
    }
}

async fn serve(registry: &MemoryRegistry, n: usize, users: &FakeIdentity) -> Server {
    let flaky = Flaky {
        inner: users.clone(),
        ..Default::default()
    };
    let server_cfg = ServerConfig {
        shutdown_timeout: Duration::from_millis(100),
        body_limit_bytes: 1 << 20,
        readiness_timeout: Duration::from_secs(1),
        tls: Default::default(),
    };
    let host = ServiceHost::new("identity-test", &server_cfg)
        .grpc(IdentityGrpcServer::new(Arc::new(flaky.clone())))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = host.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = host
            .run(async move {
                let _ = rx.await;
            })
            .await;
    });
    let registration = registry
        .register(
            Instance {
                id: format!("identity-{n}"),
                service: "identity".into(),
                address: addr.to_string(),
                version: String::new(),
                tags: vec![],
                metadata: Default::default(),
            },
            HealthSpec {
                ttl: Duration::from_secs(1),
                ready: None,
            },
        )
        .await
        .unwrap();
    Server {
        flaky,
        stop: Some(tx),
        task,
        registration: Some(registration),
    }
}

fn config() -> ClientConfig {
    ClientConfig {
        protocol: Protocol::Grpc,
        timeout: Duration::from_secs(2),
        max_attempts: 3,
        retry_budget_ratio: 0.2,
        breaker_failures: 3,
        breaker_open_for: Duration::from_millis(300),
    }
}

#[tokio::test]
async fn a_crashed_instance_is_survived_and_leaves_the_pool() {
    let registry = MemoryRegistry::new();
    let users = FakeIdentity::default();
    users.add_user("a@example.com", "pw");
    let s1 = serve(&registry, 1, &users).await;
    let s2 = serve(&registry, 2, &users).await;
    let client = ClientFactory::new(Arc::new(registry.clone()))
        .identity(&config())
        .await
        .unwrap();
    let ctx = RequestContext::new();
    for _ in 0..20 {
        client
            .get_user_by_email(&ctx, "a@example.com")
            .await
            .unwrap();
    }
    assert!(
        s1.flaky.calls.load(Ordering::SeqCst) > 0 && s2.flaky.calls.load(Ordering::SeqCst) > 0,
        "both used"
    );
    let killed_at = Instant::now();
    s1.kill().await;
    // A stream of idempotent calls keeps succeeding: failures on the dead instance are
    // retried on the live one.
    let mut failures = 0;
    let mut gone_after = None;
    while killed_at.elapsed() < Duration::from_secs(3) {
        if client
            .get_user_by_email(&ctx, "a@example.com")
            .await
            .is_err()
        {
            failures += 1;
        }
        // Not idempotent, but a refused connection proves the request never reached the
        // dead instance, so it too goes to the live one.
        if client
            .verify_credentials(&ctx, "a@example.com", Secret::new("pw".into()))
            .await
            .is_err()
        {
            failures += 1;
        }
        if gone_after.is_none() && registry.discover("identity").await.unwrap().len() == 1 {
            gone_after = Some(killed_at.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(failures, 0, "calls failed after one instance died");
    let gone_after = gone_after.expect("the dead instance left discovery");
    assert!(
        gone_after <= Duration::from_secs(2),
        "left after {gone_after:?}"
    );
    drop(s2);
}

#[tokio::test]
async fn a_failing_instance_is_ejected_and_readmitted() {
    let registry = MemoryRegistry::new();
    let users = FakeIdentity::default();
    users.add_user("b@example.com", "pw");
    let bad = serve(&registry, 1, &users).await;
    let good = serve(&registry, 2, &users).await;
    bad.flaky.fail.store(true, Ordering::SeqCst);
    let client = ClientFactory::new(Arc::new(registry.clone()))
        .identity(&config())
        .await
        .unwrap();
    let ctx = RequestContext::new();
    for _ in 0..50 {
        client
            .get_user_by_email(&ctx, "b@example.com")
            .await
            .expect("served by the good instance");
    }
    let bad_calls = bad.flaky.calls.load(Ordering::SeqCst);
    assert!(
        bad_calls <= 4,
        "breaker did not eject the failing instance: {bad_calls} calls"
    );
    // Recovered: after the open period a probe succeeds and it takes traffic again.
    bad.flaky.fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(350)).await;
    let before = bad.flaky.calls.load(Ordering::SeqCst);
    for _ in 0..50 {
        client
            .get_user_by_email(&ctx, "b@example.com")
            .await
            .unwrap();
    }
    assert!(
        bad.flaky.calls.load(Ordering::SeqCst) > before + 5,
        "recovered instance not readmitted"
    );
    drop(good);
}

#[tokio::test]
async fn retries_stay_within_budget_and_never_repeat_mutations() {
    let registry = MemoryRegistry::new();
    let users = FakeIdentity::default();
    let only = serve(&registry, 1, &users).await;
    only.flaky.fail.store(true, Ordering::SeqCst);
    let other = serve(&registry, 2, &users).await;
    other.flaky.fail.store(true, Ordering::SeqCst);
    let mut cfg = config();
    cfg.breaker_failures = 1_000_000; // keep the breaker out of this test
    cfg.max_attempts = 5;
    let client = ClientFactory::new(Arc::new(registry.clone()))
        .identity(&cfg)
        .await
        .unwrap();
    let ctx = RequestContext::new();
    let calls = 200;
    for _ in 0..calls {
        assert!(
            client
                .get_user_by_email(&ctx, "x@example.com")
                .await
                .is_err()
        );
    }
    let attempts =
        only.flaky.calls.load(Ordering::SeqCst) + other.flaky.calls.load(Ordering::SeqCst);
    // 20% budget plus the small initial reserve; never twice on one instance (at most two
    // attempts per call with two instances, although max_attempts is 5).
    assert!(
        attempts <= calls + calls / 5 + 4,
        "{attempts} attempts for {calls} calls"
    );
    assert!(attempts > calls, "idempotent calls were never retried");

    only.flaky.calls.store(0, Ordering::SeqCst);
    other.flaky.calls.store(0, Ordering::SeqCst);
    for i in 0..20 {
        let r = client
            .create_user(
                &ctx,
                NewUser {
                    email: format!("n{i}@example.com"),
                    password: Secret::new("pw".into()),
                    display_name: String::new(),
                },
            )
            .await;
        assert!(r.is_err());
    }
    assert_eq!(
        only.flaky.calls.load(Ordering::SeqCst) + other.flaky.calls.load(Ordering::SeqCst),
        20,
        "a mutating call was retried"
    );
    // One instance left: a failing call is not retried on it.
    drop(other);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    only.flaky.calls.store(0, Ordering::SeqCst);
    for _ in 0..20 {
        assert!(
            client
                .get_user_by_email(&ctx, "x@example.com")
                .await
                .is_err()
        );
    }
    assert_eq!(
        only.flaky.calls.load(Ordering::SeqCst),
        20,
        "a call went to the same instance twice"
    );
}

#[tokio::test]
async fn the_callee_sees_the_callers_remaining_deadline() {
    let registry = MemoryRegistry::new();
    let users = FakeIdentity::default();
    users.add_user("d@example.com", "pw");
    let s = serve(&registry, 1, &users).await;
    let client = ClientFactory::new(Arc::new(registry.clone()))
        .identity(&config())
        .await
        .unwrap();
    // The caller has 800 ms left (less than the client's 2 s default): the callee sees that.
    let ctx = RequestContext::new().with_timeout(Duration::from_millis(800));
    client
        .get_user_by_email(&ctx, "d@example.com")
        .await
        .unwrap();
    let seen = s
        .flaky
        .seen_remaining
        .lock()
        .unwrap()
        .expect("callee saw a deadline");
    assert!(
        seen <= Duration::from_millis(800) && seen >= Duration::from_millis(500),
        "{seen:?}"
    );
    // Without one, the client's configured timeout is propagated.
    client
        .get_user_by_email(&RequestContext::new(), "d@example.com")
        .await
        .unwrap();
    let seen = s
        .flaky
        .seen_remaining
        .lock()
        .unwrap()
        .expect("callee saw a deadline");
    assert!(
        seen <= Duration::from_secs(2) && seen > Duration::from_millis(1500),
        "{seen:?}"
    );
}

#[tokio::test]
async fn no_instance_is_unavailable_not_a_hang() {
    let registry = MemoryRegistry::new();
    let client = ClientFactory::new(Arc::new(registry))
        .identity(&config())
        .await
        .unwrap();
    let e = client
        .get_user_by_email(&RequestContext::new(), "z@example.com")
        .await
        .unwrap_err();
    assert_eq!(e.code, plt_contracts::ErrorCode::Unavailable);
}

#[tokio::test]
async fn when_every_instance_failed_calls_succeed_as_soon_as_they_recover() {
    // Both instances fail (as when the database they share is down) until every breaker is
    // open; then they recover. The calls must not wait out the breakers' open period.
    let registry = MemoryRegistry::new();
    let users = FakeIdentity::default();
    users.add_user("c@example.com", "pw");
    let one = serve(&registry, 1, &users).await;
    let two = serve(&registry, 2, &users).await;
    one.flaky.fail.store(true, Ordering::SeqCst);
    two.flaky.fail.store(true, Ordering::SeqCst);
    let mut cfg = config();
    cfg.breaker_open_for = Duration::from_secs(60);
    let client = ClientFactory::new(Arc::new(registry.clone()))
        .identity(&cfg)
        .await
        .unwrap();
    let ctx = RequestContext::new();
    for _ in 0..20 {
        let e = client
            .get_user_by_email(&ctx, "c@example.com")
            .await
            .unwrap_err();
        assert_eq!(e.code, plt_contracts::ErrorCode::Unavailable);
    }
    one.flaky.fail.store(false, Ordering::SeqCst);
    two.flaky.fail.store(false, Ordering::SeqCst);
    client
        .get_user_by_email(&ctx, "c@example.com")
        .await
        .expect("served as soon as the instances answer again");
    drop((one, two));
}

/// The value of the series of `name` whose labels include every one of `labels` (0 if none).
fn series(name: &str, labels: &[(&str, &str)]) -> f64 {
    plt_kernel::metrics::render(&[])
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Client RED metrics: every call through a pool is counted by target, method and outcome
/// code, and timed (`rpc_client_requests_total`, `rpc_client_duration_seconds`).
#[tokio::test]
async fn every_call_is_counted_by_outcome_and_timed() {
    let _ = plt_kernel::metrics::handle();
    let registry = MemoryRegistry::new();
    let users = FakeIdentity::default();
    let s = serve(&registry, 1, &users).await;
    let client = ClientFactory::new(Arc::new(registry.clone()))
        .identity(&config())
        .await
        .unwrap();
    let ctx = RequestContext::new();
    let target = [("target", "identity"), ("method", "GetUser")];
    let not_found = [target[0], target[1], ("code", "not_found")];
    let unavailable = [target[0], target[1], ("code", "unavailable")];
    let (nf0, un0) = (
        series("rpc_client_requests_total", &not_found),
        series("rpc_client_requests_total", &unavailable),
    );
    let timed0 = series("rpc_client_duration_seconds_count", &target);
    for _ in 0..3 {
        let e = client.get_user(&ctx, Uuid::now_v7()).await.unwrap_err();
        assert_eq!(e.code, plt_contracts::ErrorCode::NotFound);
    }
    s.flaky.fail.store(true, Ordering::SeqCst);
    let e = client.get_user(&ctx, Uuid::now_v7()).await.unwrap_err();
    assert_eq!(e.code, plt_contracts::ErrorCode::Unavailable);
    assert_eq!(series("rpc_client_requests_total", &not_found) - nf0, 3.0);
    assert_eq!(series("rpc_client_requests_total", &unavailable) - un0, 1.0);
    assert_eq!(
        series("rpc_client_duration_seconds_count", &target) - timed0,
        4.0
    );
    drop(s);
}
