//! Latency of an authz check: cached in process (the core, as a gateway-embedded check would
//! see it) and over gRPC at a fixed offered rate.
//!
//! ```sh
//! cargo bench -p authz-service --bench check
//! ```
//!
//! Runs the service as the binary does (SQLite in a temporary directory, port 0, audit
//! pointed at a fake that accepts everything), with one user holding a role with the checked
//! permission (the role check) and relation `editor` on `post:<uuid>`, which implies the
//! declared `bench.posts.edit` there (the resource-level check, `Check(user, permission,
//! resource)`). Both are measured the same way, side by side, with the ratio resource / role:
//!
//! - in process: `has_permission` / `check` on the core (the service caller verified, the
//!   decision from the policy's cache), `PLT_BENCH_INPROC_CHECKS` (2,000,000) calls in
//!   a loop after warm-up: mean from the loop's total time; p50 / p99 from 100,000
//!   individually timed calls (each includes one `Instant::now()`, ~20-30 ns).
//! - gRPC: `HasPermission` / `Check` through `AuthzGrpcClient` (one HTTP/2 connection), first
//!   one call at a time, then offered at `PLT_BENCH_RATE` (5,000) calls per second, open loop (a pacing
//!   thread starts each call on schedule — Poisson arrivals, i.e. exponential gaps with a mean
//!   of 200 µs, as from many independent callers — whether or not earlier ones have
//!   answered), for `PLT_BENCH_SECONDS` (3). Latency is from the moment each call is started
//!   to its answer. The server runs on its own 2-worker runtime, the client on a separate
//!   single-threaded runtime; they share the machine's cores.
//! - The same against the same core served by a bare tonic server with `TCP_NODELAY`, for
//!   comparison: the kernel's host (axum::serve) leaves Nagle's algorithm on, which delays
//!   responses written while earlier ones are unacknowledged.
//!
//! Targets (of the role check, as before): in-process mean ≤ 1 µs; gRPC p99 ≤ 1 ms at 5,000
//! checks/s. The resource-level rows are reported with their ratio, without a target. Not a test
//! (`harness = false`, not run by `cargo test`); exits 1 when a target is missed.

use async_trait::async_trait;
use authz_service::{Authz, SECTION};
use plt_authn::{AccessClaims, Signer, StaticJwks};
use plt_contracts::{
    Error, ErrorCode, RequestContext, Result,
    audit::{AuditPage, AuditQuery, AuditServiceClient, NewAuditEntry, VerifyReport},
    auth::Jwks,
    authz::{
        AuthzServiceClient, Permission, ResourceGrant, Role,
        grpc::{AuthzGrpcClient, AuthzGrpcServer},
    },
};
use plt_kernel::{Secret, config::ConfigSource};
use std::{
    net::SocketAddr,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use uuid::Uuid;

const TARGET_INPROC_NS: f64 = 1_000.0;
const TARGET_GRPC_P99_MS: f64 = 1.0;

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct AcceptingAudit;

#[async_trait]
impl AuditServiceClient for AcceptingAudit {
    async fn record(&self, _ctx: &RequestContext, _e: NewAuditEntry) -> Result<u64> {
        Ok(1)
    }
    async fn query(&self, _ctx: &RequestContext, _q: AuditQuery) -> Result<AuditPage> {
        Err(Error::new(ErrorCode::Unimplemented, "bench"))
    }
    async fn verify(&self, _ctx: &RequestContext) -> Result<VerifyReport> {
        Err(Error::new(ErrorCode::Unimplemented, "bench"))
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "no" }
}

/// What the server side hands to the measurements.
struct Served {
    core: Arc<authz_service::core::AuthzCore>,
    host: SocketAddr,
    bare: SocketAddr,
    user: Uuid,
    /// `post:<uuid>`, on which `user` holds relation `editor` (implying [`EDIT`]).
    post: String,
    /// Carries a service token (checks are for platform services only).
    service: RequestContext,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

const PERM: &str = "bench.documents.read";
/// Declared with relations `owner` and `editor`; the user holds none by a role.
const EDIT: &str = "bench.posts.edit";

/// Which check a measurement makes.
#[derive(Clone)]
enum Probe {
    /// `has_permission(user, PERM)`: the user's roles.
    Role,
    /// `check(user, EDIT, resource)`: a relation on one resource.
    Resource(Arc<str>),
}

impl Probe {
    async fn call(
        &self,
        authz: &dyn AuthzServiceClient,
        ctx: &RequestContext,
        user: Uuid,
    ) -> Result<bool> {
        match self {
            Probe::Role => authz.has_permission(ctx, user, PERM).await,
            Probe::Resource(on) => authz.check(ctx, user, EDIT, on).await,
        }
    }
}

async fn serve() -> anyhow::Result<Served> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().to_string_lossy().to_string();
    let admin = Uuid::new_v4();
    let admins = format!("[{admin}]");
    let source = ConfigSource {
        dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config"),
        vars: vec![
            ("PLT_DATABASE__DATA_DIR".into(), data),
            ("PLT_AUTHZ__BOOTSTRAP_ADMINS".into(), admins),
            ("PLT_LOG__LEVEL".into(), "error".into()),
        ],
        sections: Vec::new(),
    };
    let cfg: authz_service::Config = source.load(SECTION)?;
    let signer = Signer::generate("bench")?;
    let jwks = StaticJwks::new(Jwks {
        keys: vec![signer.public_jwk()],
    });
    let mut extensions = http::Extensions::new();
    extensions.insert(Arc::new(AcceptingAudit) as Arc<dyn AuditServiceClient>);
    let app = plt_runtime::start::<Authz>(
        cfg,
        plt_runtime::Overrides {
            listen: Some("127.0.0.1:0".parse()?),
            jwks: Some(Arc::new(jwks)),
            extensions,
            ..Default::default()
        },
    )
    .await?;
    let host = app.local_addr();
    let core = app
        .get::<Arc<authz_service::core::AuthzCore>>()
        .expect("authz exports its core");
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let mut rx1 = stop_rx.clone();
    let mut tasks = vec![tokio::spawn(async move {
        let _ = app
            .run(async move {
                let _ = rx1.changed().await;
            })
            .await;
    })];
    // The same core behind a bare tonic server with TCP_NODELAY, for comparison.
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse()?)?
        .with_nodelay(Some(true));
    let bare = incoming.local_addr()?;
    let contract: Arc<dyn AuthzServiceClient> = core.clone();
    let mut rx2 = stop_rx.clone();
    tasks.push(tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(AuthzGrpcServer::new(contract))
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = rx2.changed().await;
            })
            .await;
    }));

    // One user holding a role with the checked permission.
    let now = chrono::Utc::now().timestamp();
    let token = signer.sign(&AccessClaims {
        iss: "plt".into(),
        sub: admin.to_string(),
        aud: vec!["plt-api".into()],
        exp: now + 600,
        nbf: now,
        iat: now,
        jti: Uuid::new_v4().to_string(),
        scope: String::new(),
        client_id: String::new(),
        sid: String::new(),
    });
    let mut admin_ctx = RequestContext::new();
    admin_ctx.authorization = Some(Secret::new(format!("Bearer {token}")));
    let ctx = RequestContext::new().with_service_token(Secret::new(plt_authn::sign_service_token(
        &signer,
        "plt",
        "gateway",
        authz_service::SECTION,
        Duration::from_secs(3600),
    )));
    core.register_permissions(
        &ctx,
        "bench",
        vec![
            Permission {
                name: PERM.into(),
                description: String::new(),
                ..Default::default()
            },
            Permission {
                name: EDIT.into(),
                description: String::new(),
                relations: vec!["owner".into(), "editor".into()],
                ..Default::default()
            },
        ],
    )
    .await?;
    core.create_role(
        &admin_ctx,
        Role {
            name: "readers".into(),
            description: String::new(),
            permissions: vec![PERM.into()],
            built_in: false,
        },
    )
    .await?;
    let user = Uuid::new_v4();
    core.grant_role(&admin_ctx, user, "readers").await?;
    anyhow::ensure!(core.has_permission(&ctx, user, PERM).await?);
    // ... and relation `editor` on one post (granted as a service: the post's own service
    // decides who may share it).
    let post = format!("post:{}", Uuid::new_v4());
    core.grant_resource(
        &ctx,
        ResourceGrant {
            user_id: user,
            resource: post.clone(),
            grant: "editor".into(),
            granted_by: String::new(),
        },
    )
    .await?;
    anyhow::ensure!(core.check(&ctx, user, EDIT, &post).await?);
    anyhow::ensure!(!core.has_permission(&ctx, user, EDIT).await?);
    anyhow::ensure!(
        !core
            .check(&ctx, user, EDIT, &format!("post:{}", Uuid::new_v4()))
            .await?
    );
    Ok(Served {
        core,
        host,
        bare,
        user,
        post,
        service: ctx.clone(),
        stop,
        tasks,
        _dir: dir,
    })
}

struct InProcess {
    n: u64,
    mean_ns: f64,
    p50: Duration,
    p99: Duration,
}

async fn in_process(s: &Served, probe: &Probe) -> anyhow::Result<InProcess> {
    let ctx = s.service.clone();
    let core: &dyn AuthzServiceClient = s.core.as_ref();
    let n = env_num("PLT_BENCH_INPROC_CHECKS", 2_000_000);
    for _ in 0..10_000 {
        probe.call(core, &ctx, s.user).await?;
    }
    let t = Instant::now();
    let mut allowed = 0u64;
    for _ in 0..n {
        allowed += u64::from(probe.call(core, &ctx, s.user).await?);
    }
    let total = t.elapsed();
    anyhow::ensure!(allowed == n, "a cached check answered no");
    let mut samples = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let t = Instant::now();
        probe.call(core, &ctx, s.user).await?;
        samples.push(t.elapsed());
    }
    samples.sort();
    Ok(InProcess {
        n,
        mean_ns: total.as_secs_f64() * 1e9 / n as f64,
        p50: percentile(&samples, 0.50),
        p99: percentile(&samples, 0.99),
    })
}

struct OverGrpc {
    seq_p50: Duration,
    seq_p99: Duration,
    calls: u64,
    achieved: f64,
    errors: u64,
    mean: Duration,
    p50: Duration,
    p99: Duration,
    p999: Duration,
    max: Duration,
}

/// Closed loop, then open loop at `rate` for `seconds`, against `addr`, on a single-threaded
/// client runtime fed by a pacing thread.
fn over_grpc(
    addr: SocketAddr,
    user: Uuid,
    service: &RequestContext,
    probe: &Probe,
    rate: u64,
    seconds: u64,
) -> anyhow::Result<OverGrpc> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // The channel's connection task lives on the client runtime.
    let client = {
        let _in = rt.enter();
        AuthzGrpcClient::connect_lazy(&format!("http://{addr}"))?
    };
    let ctx = service.clone();
    let seq = rt.block_on(async {
        for _ in 0..2_000 {
            anyhow::ensure!(
                probe.call(&client, &ctx, user).await?,
                "a check answered no"
            );
        }
        let mut seq = Vec::with_capacity(5_000);
        for _ in 0..5_000 {
            let t = Instant::now();
            probe.call(&client, &ctx, user).await?;
            seq.push(t.elapsed());
        }
        seq.sort();
        anyhow::Ok(seq)
    })?;

    let calls = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let latencies = Arc::new(Mutex::new(Vec::with_capacity(calls as usize)));
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let handle = rt.handle().clone();
    let pacer = {
        let (latencies, errors, done, client, probe) = (
            latencies.clone(),
            errors.clone(),
            done.clone(),
            client.clone(),
            probe.clone(),
        );
        std::thread::spawn(move || {
            // Poisson arrivals (exponential gaps, mean `interval`), seeded: independent
            // callers, not a metronome; overlapping calls happen as they would.
            let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
            let mut next_gap = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let u = ((seed >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                interval.mul_f64(-u.ln())
            };
            let start = Instant::now();
            let mut due = start;
            for _ in 0..calls {
                due += next_gap();
                loop {
                    let now = Instant::now();
                    if now >= due {
                        break;
                    }
                    let left = due - now;
                    if left > Duration::from_micros(120) {
                        std::thread::sleep(left - Duration::from_micros(100));
                    } else {
                        std::hint::spin_loop();
                    }
                }
                let (latencies, errors, done, client, call_ctx, probe) = (
                    latencies.clone(),
                    errors.clone(),
                    done.clone(),
                    client.clone(),
                    ctx.clone(),
                    probe.clone(),
                );
                handle.spawn(async move {
                    let t = Instant::now();
                    match probe.call(&client, &call_ctx, user).await {
                        Ok(true) => latencies.lock().unwrap().push(t.elapsed()),
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    done.fetch_add(1, Ordering::Release);
                });
            }
            start.elapsed()
        })
    };
    // The client runtime runs the calls while this thread waits for them.
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(seconds + 30);
        while done.load(Ordering::Acquire) < calls && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    let sent_in = pacer
        .join()
        .map_err(|_| anyhow::anyhow!("pacing thread panicked"))?;
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let errors =
        errors.load(Ordering::Relaxed) + calls.saturating_sub(done.load(Ordering::Acquire));
    let mean = lat.iter().sum::<Duration>() / (lat.len().max(1) as u32);
    Ok(OverGrpc {
        seq_p50: percentile(&seq, 0.50),
        seq_p99: percentile(&seq, 0.99),
        calls,
        achieved: calls as f64 / sent_in.as_secs_f64(),
        errors,
        mean,
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        p999: percentile(&lat, 0.999),
        max: lat.last().copied().unwrap_or_default(),
    })
}

/// `a` / `b` as a ratio ("1.23×").
fn ratio(resource: f64, role: f64) -> String {
    if role > 0.0 {
        format!("{:.2}×", resource / role)
    } else {
        "—".into()
    }
}

fn run() -> anyhow::Result<bool> {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let served = server.block_on(serve())?;
    let role = Probe::Role;
    let resource = Probe::Resource(served.post.as_str().into());
    let inproc = server.block_on(in_process(&served, &role))?;
    let inproc_r = server.block_on(in_process(&served, &resource))?;
    let rate = env_num("PLT_BENCH_RATE", 5_000).max(1);
    let seconds = env_num("PLT_BENCH_SECONDS", 3).max(1);
    let (user, svc) = (served.user, &served.service);
    let host = over_grpc(served.host, user, svc, &role, rate, seconds)?;
    let host_r = over_grpc(served.host, user, svc, &resource, rate, seconds)?;
    let bare = over_grpc(served.bare, user, svc, &role, rate, seconds)?;
    let bare_r = over_grpc(served.bare, user, svc, &resource, rate, seconds)?;
    let _ = served.stop.send(true);
    server.block_on(async {
        for t in served.tasks {
            let _ = t.await;
        }
    });

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let inproc_met = inproc.mean_ns <= TARGET_INPROC_NS;
    let rate_met = host.achieved >= rate as f64 * 0.97;
    let p99_met = host.p99.as_secs_f64() * 1e3 <= TARGET_GRPC_P99_MS;
    let grpc_met = p99_met && rate_met && host.errors == 0;
    println!();
    println!(
        "authz check latency: SQLite, one instance, cached decision; {cores} cores shared by \
         server (2 workers) and client (1 thread); load average at the end {load}"
    );
    println!(
        "role: HasPermission(user, {PERM}) through a role; resource: Check(user, {EDIT}, \
         post:<uuid>) through relation editor on that post; targets are the role check's"
    );
    println!();
    println!("| measurement | role | resource | resource / role | target (role) | met |");
    println!("|---|---|---|---|---|---|");
    let d = |a: Duration, b: Duration| ratio(b.as_secs_f64(), a.as_secs_f64());
    println!(
        "| in process: mean of {} checks | {:.0} ns | {:.0} ns | {} | <= 1 µs | {} |",
        inproc.n,
        inproc.mean_ns,
        inproc_r.mean_ns,
        ratio(inproc_r.mean_ns, inproc.mean_ns),
        yes(inproc_met)
    );
    for (q, a, b) in [
        ("p50", inproc.p50, inproc_r.p50),
        ("p99", inproc.p99, inproc_r.p99),
    ] {
        println!(
            "| in process: {q} of 100000 timed checks | {} | {} | {} | | |",
            us(a),
            us(b),
            d(a, b)
        );
    }
    for (name, g, r, is_target) in [
        ("gRPC via the service host", &host, &host_r, true),
        (
            "gRPC via tonic + TCP_NODELAY (comparison)",
            &bare,
            &bare_r,
            false,
        ),
    ] {
        for (q, a, b) in [("p50", g.seq_p50, r.seq_p50), ("p99", g.seq_p99, r.seq_p99)] {
            println!(
                "| {name}: one call at a time, {q} | {} | {} | {} | | |",
                ms(a),
                ms(b),
                d(a, b)
            );
        }
        println!(
            "| {name}: {} calls offered at {rate}/s, achieved | {:.0}/s, {} errors | {:.0}/s, {} errors | | {} | {} |",
            g.calls,
            g.achieved,
            g.errors,
            r.achieved,
            r.errors,
            if is_target {
                format!("{rate}/s, 0 errors")
            } else {
                String::new()
            },
            if is_target {
                yes(rate_met && g.errors == 0)
            } else {
                ""
            }
        );
        println!(
            "| {name}: mean | {} | {} | {} | | |",
            ms(g.mean),
            ms(r.mean),
            d(g.mean, r.mean)
        );
        println!(
            "| {name}: p50 | {} | {} | {} | | |",
            ms(g.p50),
            ms(r.p50),
            d(g.p50, r.p50)
        );
        println!(
            "| {name}: p99 | {} | {} | {} | {} | {} |",
            ms(g.p99),
            ms(r.p99),
            d(g.p99, r.p99),
            if is_target { "<= 1 ms" } else { "" },
            if is_target { yes(p99_met) } else { "" }
        );
        println!(
            "| {name}: p99.9 / max | {} / {} | {} / {} | | | |",
            ms(g.p999),
            ms(g.max),
            ms(r.p999),
            ms(r.max)
        );
    }
    println!();
    Ok(inproc_met && grpc_met)
}

fn main() -> ExitCode {
    match run() {
        Ok(all_met) => {
            println!("targets met: {}", yes(all_met));
            if all_met {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("authz bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
