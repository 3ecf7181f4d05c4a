//! `plt-bench gateway`: what the API gateway costs over calling its upstream directly.
//!
//! In one process, on loopback, port 0:
//! - an upstream: a small axum server answering `GET /v1/ping` with a small JSON body,
//!   registered as service `bench` in an in-memory registry;
//! - the api-gateway, started as its binary starts it (`plt_runtime::start` from the repository's
//!   `config/` plus the variables below), with two routes to `bench`: `/pub` (public) and
//!   `/full` (access token verified against a test JWKS, permission `bench.ping.read` checked
//!   through an in-process authz fake that grants it, rate limits per client and per user set
//!   so high that nothing is throttled). Logs at `warn`.
//!
//! Targets: (a) the upstream directly, (b) the gateway's public route, (c) the full route.
//! For each: the maximum throughput (closed loop), then the latency at a fixed rate of half
//! of (c)'s maximum (open loop, from the scheduled send time). The upstream runs on its own
//! tokio runtime (`--server-threads`), the gateway on its worker threads (`gateway.workers`,
//! one per core by default) and the load generator on a third runtime (`--client-threads`),
//! all sharing the machine's cores — or, with `--isolate`, the proxy under test on CPUs of its
//! own and the upstream and load generator on the others. With `--reference-proxy` and
//! `--external`, the same is
//! measured through a bare hyper proxy, nginx and HAProxy for comparison. `PLT_*` variables
//! in the environment are applied on top of the benchmark's own (e.g. `PLT_LOG__LEVEL=info`
//! to see what request logging costs, `PLT_GATEWAY__WORKERS=1`).

use crate::{
    external,
    load::{self, Target},
};
use anyhow::Context as _;
use api_gateway::{ApiGateway, SECTION, config::GatewayConfig};
use axum::{Router, response::IntoResponse, routing::get, serve::ListenerExt};
use plt_authn::testing::TestAuthority;
use plt_contracts::testsuite::fakes::FakeAuthz;
use plt_kernel::config::ConfigSource;
use plt_registry::{ServiceRegistry, config::RegistryConfig, memory::MemoryRegistry};
use std::{
    collections::BTreeMap, fmt::Write as _, net::SocketAddr, path::PathBuf, process::ExitCode,
    sync::Arc, time::Duration,
};
use tokio::net::TcpListener;
use uuid::Uuid;

/// The permission the full route requires.
const PERMISSION: &str = "bench.ping.read";
/// The upstream's answer.
const PING_BODY: &str = r#"{"service":"bench","pong":true}"#;
/// Rate limits that never throttle: one request per microsecond, a million at once.
const NO_THROTTLE: &str = r#"{"requests": 1000000, "period": "1s", "burst": 1000000}"#;
/// Throughput of (c) relative to (a) that passes.
const MIN_FULL_RATIO: f64 = 0.40;
/// p99 that (c) may add over (a) at half of (c)'s maximum load.
const MAX_ADDED_P99: Duration = Duration::from_millis(1);

#[derive(clap::Args)]
pub struct Args {
    /// Measured seconds of each phase (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Warm-up seconds before each phase's measurement (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Keep-alive HTTP/1.1 connections of the load generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Worker threads of the servers' runtime (upstream and gateway).
    #[arg(long, default_value_t = 2)]
    server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Open-loop rate in requests/s instead of half of (c)'s measured maximum.
    #[arg(long)]
    rate: Option<f64>,
    /// Rounds of all phases (targets interleaved); the report shows medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Only the closed loop of this target (the open loop at `--rate` when that is given),
    /// each round printed (for profiling, e.g. with `perf record -p`).
    #[arg(long, value_enum)]
    only: Option<Only>,
    /// Also measure (p): a bare reverse proxy (axum + hyper-util's pooled client, as the
    /// gateway builds it, and nothing else): what one more HTTP hop costs on this machine.
    #[arg(long)]
    reference_proxy: bool,
    /// Also measure established proxies in front of the same upstream, each as its own
    /// process with keep-alive upstream connections and as many workers as
    /// `--server-threads`: (n) nginx and (h) HAProxy. A program that is not installed is
    /// reported and skipped.
    #[arg(long)]
    external: bool,
    /// The nginx binary for `--external`.
    #[arg(long, default_value = "nginx")]
    nginx: PathBuf,
    /// The HAProxy binary for `--external`.
    #[arg(long, default_value = "haproxy")]
    haproxy: PathBuf,
    /// Give the proxy under test CPUs of its own (Linux): the upper half of the CPUs this
    /// process may use runs the gateway's workers (pinned, `gateway.worker_cpus`, one per
    /// CPU), the bare proxy's runtime and nginx's and HAProxy's workers (as many as those
    /// CPUs); the lower half runs the upstream and the load generator. On 2 cores: CPU 1
    /// for the proxy, CPU 0 for the rest. Without it, the OS shares all cores among all.
    #[arg(long)]
    isolate: bool,
}

/// Which CPUs run what under `--isolate`.
struct Isolation {
    /// The upstream, the load generator and everything else of this process.
    rest: Vec<usize>,
    /// The proxy under test.
    proxy: Vec<usize>,
}

impl Isolation {
    /// Splits the CPUs this process may use, and pins the calling thread (and so every
    /// thread it starts from now on) to the lower half.
    fn apply() -> anyhow::Result<Self> {
        let allowed = plt_kernel::affinity::allowed_cpus().context("--isolate")?;
        anyhow::ensure!(
            allowed.len() >= 2,
            "--isolate needs at least 2 CPUs; this process may use {}",
            plt_kernel::affinity::format_list(&allowed)
        );
        let (rest, proxy) = allowed.split_at(allowed.len() / 2);
        let iso = Self {
            rest: rest.to_vec(),
            proxy: proxy.to_vec(),
        };
        plt_kernel::affinity::pin_current_thread(&iso.rest)?;
        Ok(iso)
    }

    /// Runs `f` (which starts threads or processes) with the calling thread on the proxy's
    /// CPUs, so that what it starts inherits them; back to the lower half afterwards.
    fn on_proxy_cpus<T>(&self, f: impl FnOnce() -> T) -> anyhow::Result<T> {
        plt_kernel::affinity::pin_current_thread(&self.proxy)?;
        let out = f();
        plt_kernel::affinity::pin_current_thread(&self.rest)?;
        Ok(out)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Only {
    A,
    B,
    C,
    P,
    N,
    H,
}

/// The running servers.
struct Servers {
    upstream: SocketAddr,
    gateway: SocketAddr,
    authority: TestAuthority,
    /// Holds `bench.ping.read`.
    user: Uuid,
    /// The gateway's worker threads.
    workers: usize,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _registration: plt_registry::Registration,
}

pub(crate) fn config_dir() -> PathBuf {
    std::env::var_os("PLT_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config")))
}

/// The benchmark's configuration variables, then `PLT_*` from the environment.
fn config_vars(isolation: Option<&Isolation>) -> Vec<(String, String)> {
    let routes = format!(
        r#"[
  {{"prefix": "/pub", "service": "bench", "methods": ["GET"], "rewrite": "/v1/ping", "public": true}},
  {{"prefix": "/full", "service": "bench", "methods": ["GET"], "rewrite": "/v1/ping",
    "permission": "{PERMISSION}", "rate_limit": {{"client": {NO_THROTTLE}, "user": {NO_THROTTLE}}}}}
]"#
    );
    let mut vars: Vec<(String, String)> = [
        ("PLT_LOG__LEVEL", "warn"),
        ("PLT_REGISTRY__KIND", "memory"),
        ("PLT_GATEWAY__DISCOVERY__SERVICES", "[]"),
        ("PLT_GATEWAY__ROUTES", routes.as_str()),
        ("PLT_GATEWAY__RATE_LIMIT__ENABLED", "true"),
        ("PLT_GATEWAY__RATE_LIMIT__BACKEND", "memory"),
        ("PLT_GATEWAY__RATE_LIMIT__CLIENT__REQUESTS", "1000000"),
        ("PLT_GATEWAY__RATE_LIMIT__CLIENT__PERIOD", "1s"),
        ("PLT_GATEWAY__RATE_LIMIT__CLIENT__BURST", "1000000"),
        ("PLT_GATEWAY__RATE_LIMIT__USER__REQUESTS", "1000000"),
        ("PLT_GATEWAY__RATE_LIMIT__USER__PERIOD", "1s"),
        ("PLT_GATEWAY__RATE_LIMIT__USER__BURST", "1000000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Some(iso) = isolation {
        vars.push((
            "PLT_GATEWAY__WORKER_CPUS".into(),
            format!("{:?}", iso.proxy),
        ));
    }
    vars.extend(std::env::vars().filter(|(k, _)| k.starts_with("PLT_")));
    vars
}

async fn ping() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        PING_BODY,
    )
}

async fn start_servers(
    isolation: Option<&Isolation>,
    otlp_endpoint: Option<String>,
) -> anyhow::Result<Servers> {
    let mut vars = config_vars(isolation);
    if let Some(endpoint) = &otlp_endpoint {
        vars.push(("PLT_TRACING__ENDPOINT".into(), endpoint.clone()));
        vars.push(("PLT_TRACING__PROTOCOL".into(), "grpc".into()));
    }
    let source = ConfigSource {
        dir: config_dir(),
        vars,
        sections: Vec::new(),
    };
    let cfg = source
        .load::<GatewayConfig>(SECTION)
        .context("loading the gateway configuration")?;
    if otlp_endpoint.is_some() {
        // As the gateway's binary sets it up (kept for the process's life).
        std::mem::forget(plt_kernel::telemetry::init(
            &cfg.kernel,
            &[api_gateway::SERVICE_NAME],
        ));
    } else {
        plt_kernel::telemetry::init_logs(&cfg.kernel.log);
    }

    // The upstream, with TCP_NODELAY like the service host.
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let upstream = listener.local_addr()?;
    let router = Router::new().route("/v1/ping", get(ping));
    tokio::spawn(async move {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, router).await;
    });
    let registry = MemoryRegistry::new();
    let reg_cfg: RegistryConfig = cfg.source.section("registry")?;
    let registration = plt_registry::register_service(
        &registry,
        &reg_cfg,
        "bench",
        env!("CARGO_PKG_VERSION"),
        upstream,
        BTreeMap::new(),
        None,
    )
    .await
    .context("registering the upstream")?;

    let authority = TestAuthority::new();
    let user = Uuid::new_v4();
    let authz = FakeAuthz::default();
    authz.grant(user, PERMISSION);
    let registry: Arc<dyn ServiceRegistry> = Arc::new(registry);
    let workers = cfg.service.worker_threads();
    let mut extensions = http::Extensions::new();
    extensions.insert(Arc::new(authz) as Arc<dyn plt_contracts::authz::AuthzServiceClient>);
    let app = plt_runtime::start::<ApiGateway>(
        cfg,
        plt_runtime::Overrides {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            registry: Some(registry),
            jwks: Some(authority.jwks()),
            extensions,
            ..Default::default()
        },
    )
    .await
    .context("building the gateway")?;
    let gateway = app.local_addr();
    let gw = app
        .get::<Arc<api_gateway::Gateway>>()
        .context("the gateway exports itself")?;
    for _ in 0..200 {
        if !gw.instances("bench").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::ensure!(
        !gw.instances("bench").is_empty(),
        "the gateway never saw the upstream"
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async move {
        let _ = stopped.await;
    }));
    Ok(Servers {
        upstream,
        gateway,
        authority,
        user,
        workers,
        stop,
        task,
        _registration: registration,
    })
}

/// (p): forwards every request to the upstream's `/v1/ping` through hyper-util's pooled
/// client, built like the gateway's (`upstream.rs`), with no other work.
async fn start_reference_proxy(upstream: SocketAddr) -> anyhow::Result<SocketAddr> {
    use hyper_util::{
        client::legacy::{Client, connect::HttpConnector},
        rt::TokioExecutor,
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, axum::body::Body> =
        Client::builder(TokioExecutor::new()).build(connector);
    let uri = http::Uri::try_from(format!("http://{upstream}/v1/ping"))?;
    let router = Router::new().fallback(move |req: axum::extract::Request| {
        let client = client.clone();
        let uri = uri.clone();
        async move {
            let (mut parts, body) = req.into_parts();
            parts.uri = uri;
            match client.request(http::Request::from_parts(parts, body)).await {
                Ok(resp) => resp.map(axum::body::Body::new).into_response(),
                Err(_) => http::StatusCode::BAD_GATEWAY.into_response(),
            }
        }
    });
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

/// Checks that each target answers as it should before loading it: (c) refuses a missing
/// token (401) and a user without the permission (403), and reports its rate limit.
async fn sanity(servers: &Servers, targets: &[Target]) -> anyhow::Result<()> {
    for t in targets {
        let (status, _, body) = load::probe(t).await?;
        anyhow::ensure!(
            status == 200 && body == PING_BODY.as_bytes(),
            "GET {} on {} answered {status} {:?}",
            t.path,
            t.addr,
            String::from_utf8_lossy(&body)
        );
    }
    let (_, headers, _) = load::probe(&targets[2]).await?;
    anyhow::ensure!(
        headers.contains_key("ratelimit-limit"),
        "the full route reports no rate limit"
    );
    let anonymous = Target::new(servers.gateway, "/full", None)?;
    let (status, _, _) = load::probe(&anonymous).await?;
    anyhow::ensure!(status == 401, "the full route without a token: {status}");
    let stranger = servers.authority.access_token(&Uuid::new_v4().to_string());
    let stranger = Target::new(servers.gateway, "/full", Some(&stranger))?;
    let (status, _, _) = load::probe(&stranger).await?;
    anyhow::ensure!(
        status == 403,
        "the full route for a user without {PERMISSION}: {status}"
    );
    Ok(())
}

// ---------------------------------------------------------------- CPU accounting

/// CPU time used so far by this process's threads, by thread-name prefix (`srv`, `load`, …).
fn cpu_by_group() -> BTreeMap<String, Duration> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for t in tasks.flatten() {
        let dir = t.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let group = name.trim().split('-').next().unwrap_or("").to_owned();
        // schedstat: nanoseconds on a CPU; else stat's utime + stime in 10 ms ticks.
        let used = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .map(Duration::from_nanos)
            .or_else(|| {
                let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
                let rest = stat.rsplit_once(')')?.1;
                let f: Vec<&str> = rest.split_whitespace().collect();
                let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
                Some(Duration::from_millis(ticks * 10))
            })
            .unwrap_or_default();
        *out.entry(group).or_default() += used;
    }
    out
}

/// The machine's busy and stolen CPU time so far (`/proc/stat`, 10 ms ticks), and this
/// process's own.
#[derive(Clone, Copy)]
pub(crate) struct MachineCpu {
    busy: Duration,
    steal: Duration,
    own: Duration,
    at: std::time::Instant,
}

impl MachineCpu {
    pub(crate) fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let f: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let tick = |i: usize| Duration::from_millis(f.get(i).copied().unwrap_or(0) * 10);
        // user nice system idle iowait irq softirq steal
        Self {
            busy: tick(0) + tick(1) + tick(2) + tick(5) + tick(6),
            steal: tick(7),
            own: cpu_by_group().values().sum(),
            at: std::time::Instant::now(),
        }
    }

    /// CPU used since `before` by other processes (and stolen by the hypervisor), in cores.
    pub(crate) fn others_since(&self, before: &Self) -> f64 {
        let secs = self.at.duration_since(before.at).as_secs_f64().max(1e-3);
        let busy = self.busy.saturating_sub(before.busy);
        let own = self.own.saturating_sub(before.own);
        let steal = self.steal.saturating_sub(before.steal);
        (busy.as_secs_f64() - own.as_secs_f64()).max(0.0) / secs + steal.as_secs_f64() / secs
    }
}

/// CPU used between two snapshots by the servers' and by the load generator's threads.
fn cpu_delta(
    before: &BTreeMap<String, Duration>,
    after: &BTreeMap<String, Duration>,
) -> (Duration, Duration) {
    let d = |g: &str| {
        after
            .get(g)
            .copied()
            .unwrap_or_default()
            .saturating_sub(before.get(g).copied().unwrap_or_default())
    };
    // `http-N`: the gateway's worker threads.
    (d("srv") + d("http"), d("load") + d("bench"))
}

// ---------------------------------------------------------------- the run

/// Servers' CPU (the external proxy's included), load generator's CPU, and other processes'
/// cores (the external proxy's excluded) since the snapshots.
fn usage(
    t: &Entry,
    machine: &MachineCpu,
    before: &BTreeMap<String, Duration>,
    ext_before: Duration,
) -> (Duration, Duration, f64) {
    let now = MachineCpu::now();
    let ext = t
        .pid
        .map(external::tree_cpu)
        .unwrap_or_default()
        .saturating_sub(ext_before);
    let secs = now.at.duration_since(machine.at).as_secs_f64().max(1e-3);
    let others = (now.others_since(machine) - ext.as_secs_f64() / secs).max(0.0);
    let (srv, cli) = cpu_delta(before, &cpu_by_group());
    (srv + ext, cli, others)
}

/// One target of the run.
struct Entry {
    which: Only,
    label: &'static str,
    target: Target,
    /// The process of an external proxy (its CPU counts as the servers').
    pid: Option<u32>,
}

/// One phase (closed or open loop), summarised.
#[derive(Clone)]
struct Phase {
    rps: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
    /// Servers' and load generator's (pacing thread included) CPU per request.
    server_cpu: Duration,
    client_cpu: Duration,
    /// Cores used by other processes (or stolen) meanwhile.
    others: f64,
    first_error: Option<String>,
}

/// A target's phases, one per round.
struct Row {
    which: Only,
    label: &'static str,
    closed: Vec<Phase>,
    open: Vec<Phase>,
}

fn median<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    v[v.len() / 2]
}

impl Row {
    fn closed_median<T: Copy + PartialOrd>(&self, f: impl Fn(&Phase) -> T) -> T {
        median(self.closed.iter().map(f).collect())
    }

    fn open_median<T: Copy + PartialOrd>(&self, f: impl Fn(&Phase) -> T) -> T {
        median(self.open.iter().map(f).collect())
    }

    fn errors(&self) -> u64 {
        self.closed.iter().map(|c| c.errors).sum::<u64>()
            + self.open.iter().map(|o| o.errors).sum::<u64>()
    }

    fn others(&self) -> f64 {
        self.closed
            .iter()
            .map(|c| c.others)
            .chain(self.open.iter().map(|o| o.others))
            .fold(0.0, f64::max)
    }
}

/// CPU of the servers' threads, and of an external proxy's processes when there is one.
fn servers_cpu(external: Option<u32>) -> (BTreeMap<String, Duration>, Duration) {
    (
        cpu_by_group(),
        external.map(external::tree_cpu).unwrap_or_default(),
    )
}

/// Runs one phase of load against `t`, with the CPU it cost.
fn run_phase(
    rt: &tokio::runtime::Runtime,
    t: &Entry,
    load: impl std::future::Future<Output = load::Sample>,
) -> Phase {
    let (before, ext_before) = servers_cpu(t.pid);
    let machine = MachineCpu::now();
    let s = rt.block_on(load);
    let (srv, cli, others) = usage(t, &machine, &before, ext_before);
    let n = u32::try_from(s.total.max(1)).unwrap_or(u32::MAX);
    std::thread::sleep(Duration::from_millis(200));
    Phase {
        rps: s.rps(),
        p50: s.quantile(0.5),
        p99: s.quantile(0.99),
        errors: s.errors,
        server_cpu: srv / n,
        client_cpu: cli / n,
        others,
        first_error: s.first_error,
    }
}

fn run_closed(rt: &tokio::runtime::Runtime, t: &Entry, args: &Args) -> Phase {
    let load = load::closed_loop(
        &t.target,
        args.connections,
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.seconds),
    );
    run_phase(rt, t, load)
}

fn run_open(rt: &tokio::runtime::Runtime, t: &Entry, args: &Args, rate: f64) -> Phase {
    let load = load::open_loop(
        &t.target,
        args.connections,
        rate,
        Duration::from_secs_f64(args.warmup),
        Duration::from_secs_f64(args.seconds),
    );
    run_phase(rt, t, load)
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e6)
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map(|(_, m)| m.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let listed = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let usable = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{model}, {listed} logical cores ({usable} usable by this process), Linux {}",
        kernel.trim()
    )
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.warmup >= 0.0,
        "--seconds must be > 0, --warmup ≥ 0"
    );
    anyhow::ensure!(
        args.connections > 0
            && args.server_threads > 0
            && args.client_threads > 0
            && args.rounds > 0,
        "--connections, --server-threads, --client-threads and --rounds must be ≥ 1"
    );
    // Described before --isolate narrows what this thread may use.
    let machine = machine();
    let isolation = if args.isolate {
        Some(Isolation::apply()?)
    } else {
        None
    };
    let servers_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads)
        .thread_name("srv-worker")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("load-worker")
        .enable_all()
        .build()?;
    let servers = servers_rt.block_on(start_servers(isolation.as_ref(), None))?;
    // Under --isolate the bare proxy gets a runtime of its own on the proxy's CPUs.
    let proxy_rt = match &isolation {
        Some(iso) => Some(iso.on_proxy_cpus(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(iso.proxy.len())
                .thread_name("srv-proxy")
                .enable_all()
                .build()
        })??),
        None => None,
    };

    let token = servers.authority.access_token(&servers.user.to_string());
    let entry = |which, label, target| Entry {
        which,
        label,
        target,
        pid: None,
    };
    let mut targets = vec![
        entry(
            Only::A,
            "(a) upstream direct",
            Target::new(servers.upstream, "/v1/ping", None)?,
        ),
        entry(
            Only::B,
            "(b) gateway, public route",
            Target::new(servers.gateway, "/pub", None)?,
        ),
        entry(
            Only::C,
            "(c) gateway, full route",
            Target::new(servers.gateway, "/full", Some(&token))?,
        ),
    ];
    if args.reference_proxy || args.only == Some(Only::P) {
        let proxy = proxy_rt
            .as_ref()
            .unwrap_or(&servers_rt)
            .block_on(start_reference_proxy(servers.upstream))?;
        targets.push(entry(
            Only::P,
            "(p) bare proxy, reference",
            Target::new(proxy, "/v1/ping", None)?,
        ));
    }
    // Kept running until the end of the run.
    let mut externals = Vec::new();
    for (which, kind, bin, label) in [
        (
            Only::N,
            external::Kind::Nginx,
            &args.nginx,
            "(n) nginx, reference",
        ),
        (
            Only::H,
            external::Kind::Haproxy,
            &args.haproxy,
            "(h) HAProxy, reference",
        ),
    ] {
        if !(args.external || args.only == Some(which)) {
            continue;
        }
        if !external::available(bin) {
            eprintln!(
                "plt-bench gateway: {} ({}) is not installed; skipping {label}",
                kind.name(),
                bin.display()
            );
            continue;
        }
        let proxy = match &isolation {
            Some(iso) => iso.on_proxy_cpus(|| {
                external::start(kind, bin, servers.upstream, iso.proxy.len())
            })??,
            None => external::start(kind, bin, servers.upstream, args.server_threads)?,
        };
        eprintln!(
            "plt-bench gateway: {} at http://{} ({})",
            kind.name(),
            proxy.addr,
            proxy.version
        );
        targets.push(Entry {
            which,
            label,
            target: Target::new(proxy.addr, "/v1/ping", None)?,
            pid: Some(proxy.pid()),
        });
        externals.push(proxy);
    }
    eprintln!(
        "plt-bench gateway: upstream http://{}, gateway http://{} (metrics at /metrics)",
        servers.upstream, servers.gateway
    );
    let plain: Vec<Target> = targets.iter().map(|e| e.target.clone()).collect();
    client_rt.block_on(sanity(&servers, &plain))?;

    let result = match args.only {
        Some(only) => {
            let Some(t) = targets.iter().find(|e| e.which == only) else {
                anyhow::bail!("that target is not available here");
            };
            for round in 1..=args.rounds {
                let c = match args.rate {
                    Some(rate) => run_open(&client_rt, t, args, rate),
                    None => run_closed(&client_rt, t, args),
                };
                println!(
                    "{} round {round}: {:.0} req/s, p50 {} ms, p99 {} ms, errors {}, \
                     srv CPU {} µs/req, load CPU {} µs/req, others {:.2} cores",
                    t.label,
                    c.rps,
                    ms(c.p50),
                    ms(c.p99),
                    c.errors,
                    us(c.server_cpu),
                    us(c.client_cpu),
                    c.others
                );
            }
            None
        }
        None => Some(measure(args, &client_rt, &targets)),
    };
    drop(externals);

    let gateway_workers = servers.workers;
    let _ = servers.stop.send(());
    let task = servers.task;
    let stopped =
        servers_rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
    if !matches!(stopped, Ok(Ok(Ok(())))) {
        eprintln!("plt-bench: the gateway did not stop cleanly");
    }
    client_rt.shutdown_timeout(Duration::from_secs(1));
    servers_rt.shutdown_timeout(Duration::from_secs(1));
    if let Some(rt) = proxy_rt {
        rt.shutdown_timeout(Duration::from_secs(1));
    }

    let Some((rate, rows)) = result else {
        return Ok(ExitCode::SUCCESS);
    };
    let (report, pass) = report(
        args,
        &machine,
        isolation.as_ref(),
        gateway_workers,
        rate,
        &rows,
    );
    print!("{report}");
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Every target's closed loops (round by round, targets interleaved), then the open loops at
/// half of (c)'s median maximum.
fn measure(args: &Args, rt: &tokio::runtime::Runtime, targets: &[Entry]) -> (f64, Vec<Row>) {
    eprintln!(
        "plt-bench gateway: {} connections, {}s warm-up + {}s per phase, {} rounds of {} phases",
        args.connections,
        args.warmup,
        args.seconds,
        args.rounds,
        targets.len() * 2
    );
    let mut rows: Vec<Row> = targets
        .iter()
        .map(|e| Row {
            which: e.which,
            label: e.label,
            closed: Vec::new(),
            open: Vec::new(),
        })
        .collect();
    for round in 1..=args.rounds {
        for (t, row) in targets.iter().zip(rows.iter_mut()) {
            eprintln!("  round {round}: closed loop {} …", t.label);
            row.closed.push(run_closed(rt, t, args));
        }
    }
    let rate = args
        .rate
        .unwrap_or_else(|| rows[2].closed_median(|c| c.rps) * 0.5)
        .max(1.0);
    for round in 1..=args.rounds {
        for (t, row) in targets.iter().zip(rows.iter_mut()) {
            eprintln!(
                "  round {round}: open loop {} at {rate:.0} req/s …",
                t.label
            );
            row.open.push(run_open(rt, t, args, rate));
        }
    }
    (rate, rows)
}

fn report(
    args: &Args,
    machine: &str,
    isolation: Option<&Isolation>,
    gateway_workers: usize,
    rate: f64,
    rows: &[Row],
) -> (String, bool) {
    let mut o = String::new();
    let _ = writeln!(o, "\nplt-bench gateway");
    let _ = writeln!(o, "machine: {machine}");
    let _ = writeln!(
        o,
        "         load generator and servers share this machine and its cores, in one process \
         (nginx and HAProxy, when measured, in their own)"
    );
    match isolation {
        None => {
            let _ = writeln!(
                o,
                "runtimes: upstream (and the bare proxy) {} tokio worker thread(s); gateway {} \
                 worker thread(s) (gateway.workers); load generator {} worker thread(s) + 1 \
                 pacing thread (open loop); the OS shares the cores among them",
                args.server_threads, gateway_workers, args.client_threads
            );
        }
        Some(iso) => {
            let _ = writeln!(
                o,
                "cpus:     --isolate: the proxy under test on CPU {}, the rest on CPU {}\n\
                 runtimes: upstream {} tokio worker thread(s) and load generator {} worker \
                 thread(s) + 1 pacing thread (open loop) on the rest; on the proxy's CPUs the \
                 gateway's {} worker thread(s), each pinned (gateway.worker_cpus), the bare \
                 proxy's {} tokio worker thread(s), nginx's and HAProxy's {5} worker(s)",
                plt_kernel::affinity::format_list(&iso.proxy),
                plt_kernel::affinity::format_list(&iso.rest),
                args.server_threads,
                args.client_threads,
                gateway_workers,
                iso.proxy.len(),
            );
        }
    }
    let _ = writeln!(
        o,
        "method: HTTP/1.1 keep-alive, {} connections, GET, loopback; closed loop {}s after {}s \
         warm-up (max throughput); open loop at {rate:.0} req/s = {} for {}s after {}s warm-up, \
         latency from the scheduled send time; errors = transport errors + non-2xx; {} round(s), \
         targets interleaved, medians shown",
        args.connections,
        args.seconds,
        args.warmup,
        if args.rate.is_some() {
            "--rate"
        } else {
            "0.5 × max of (c)"
        },
        args.seconds,
        args.warmup,
        args.rounds,
    );
    let _ = writeln!(
        o,
        "(b) /pub → /v1/ping, public (client rate limit checked); (c) /full → /v1/ping with \
         Bearer JWT (verified, cached), permission {PERMISSION} (authz fake, decision cache), \
         client + user rate limits (never throttling); logs at warn\n"
    );
    let _ = writeln!(
        o,
        "{:<27} | {:>9} {:>8} {:>8} {:>8} {:>8} | {:>9} {:>8} {:>8} {:>8} {:>8} | {:>6} {:>6}",
        "",
        "max",
        "p50",
        "p99",
        "srv CPU",
        "load CPU",
        "open loop",
        "p50",
        "p99",
        "srv CPU",
        "load CPU",
        "errors",
        "others"
    );
    let _ = writeln!(
        o,
        "{:<27} | {:>9} {:>8} {:>8} {:>8} {:>8} | {:>9} {:>8} {:>8} {:>8} {:>8} | {:>6} {:>6}",
        "target",
        "req/s",
        "ms",
        "ms",
        "µs/req",
        "µs/req",
        "req/s",
        "ms",
        "ms",
        "µs/req",
        "µs/req",
        "",
        "cores"
    );
    let _ = writeln!(o, "{}", "-".repeat(146));
    for r in rows {
        let _ = writeln!(
            o,
            "{:<27} | {:>9.0} {:>8} {:>8} {:>8} {:>8} | {:>9.0} {:>8} {:>8} {:>8} {:>8} | {:>6} {:>6.2}",
            r.label,
            r.closed_median(|c| c.rps),
            ms(r.closed_median(|c| c.p50)),
            ms(r.closed_median(|c| c.p99)),
            us(r.closed_median(|c| c.server_cpu)),
            us(r.closed_median(|c| c.client_cpu)),
            r.open_median(|c| c.rps),
            ms(r.open_median(|c| c.p50)),
            ms(r.open_median(|c| c.p99)),
            us(r.open_median(|c| c.server_cpu)),
            us(r.open_median(|c| c.client_cpu)),
            r.errors(),
            r.others(),
        );
    }
    let _ = writeln!(
        o,
        "srv CPU / load CPU: CPU time of the servers' / the load generator's threads per request \
         (warm-up included); errors: all phases, warm-ups included; others: most \
         cores used by other processes or stolen by the hypervisor during a phase"
    );
    if args.rounds > 1 {
        for r in rows {
            let per = |v: Vec<String>| v.join(" ");
            let _ = writeln!(
                o,
                "  per round {:<27} max req/s [{}]  open-loop p99 ms [{}]",
                r.label,
                per(r.closed.iter().map(|c| format!("{:.0}", c.rps)).collect()),
                per(r.open.iter().map(|c| ms(c.p99)).collect()),
            );
        }
    }
    let (a, b, c) = (&rows[0], &rows[1], &rows[2]);
    let rps = |r: &Row| r.closed_median(|c| c.rps);
    let p99 = |r: &Row| r.open_median(|c| c.p99).as_secs_f64();
    let ratio_b = rps(b) / rps(a);
    let ratio_c = rps(c) / rps(a);
    let added_b = p99(b) - p99(a);
    let added = p99(c) - p99(a);
    let errors: u64 = rows.iter().map(Row::errors).sum();
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let ok_ratio = ratio_c >= MIN_FULL_RATIO;
    let ok_added = added <= MAX_ADDED_P99.as_secs_f64();
    let _ = writeln!(o);
    let _ = writeln!(o, "throughput (b)/(a): {:.1}%", ratio_b * 100.0);
    for r in &rows[3..] {
        let what = match r.which {
            Only::P => "one more HTTP hop through hyper and nothing else",
            _ => "an established proxy, one more HTTP hop and nothing else",
        };
        let _ = writeln!(
            o,
            "throughput {}/(a): {:.1}% ({what}); (c)/{0}: {:.1}%",
            &r.label[..3],
            rps(r) / rps(a) * 100.0,
            rps(c) / rps(r) * 100.0
        );
    }
    let _ = writeln!(
        o,
        "throughput (c)/(a): {:.1}%   target ≥ {:.0}%   {}",
        ratio_c * 100.0,
        MIN_FULL_RATIO * 100.0,
        verdict(ok_ratio)
    );
    let _ = writeln!(
        o,
        "p99 added at {rate:.0} req/s: (b) {:+.3} ms, (c) {:+.3} ms   target (c) ≤ +{} ms   {}",
        added_b * 1e3,
        added * 1e3,
        MAX_ADDED_P99.as_millis(),
        verdict(ok_added)
    );
    let _ = writeln!(o, "errors: {errors}   target 0   {}", verdict(errors == 0));
    for r in rows {
        let firsts = r
            .closed
            .iter()
            .map(|c| &c.first_error)
            .chain(r.open.iter().map(|o| &o.first_error));
        if let Some(e) = firsts.flatten().next() {
            let _ = writeln!(o, "  first error, {}: {e}", r.label);
        }
    }
    let busiest = rows.iter().map(Row::others).fold(0.0, f64::max);
    if busiest > 0.1 {
        let _ = writeln!(
            o,
            "WARNING: other processes (or the hypervisor) used up to {busiest:.2} cores during a \
             phase; the numbers are disturbed — re-run on a quiet machine"
        );
    }
    let pass = ok_ratio && ok_added && errors == 0;
    let _ = writeln!(o, "overall: {}", verdict(pass));
    (o, pass)
}

#[derive(clap::Args)]
pub struct TracingArgs {
    /// Measured seconds of each phase (after the warm-up).
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Warm-up seconds before each phase's measurement (not measured).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Concurrent connections of the load generator.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Rounds of the three cases, interleaved; medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Worker threads of the upstream's and gateway's runtime.
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

/// The longest 1% sampling may cost in throughput against tracing off.
const MAX_ONE_PERCENT_COST: f64 = 0.05;

/// `plt-bench tracing`: what tracing costs the gateway's authenticated route (`/full`:
/// token, permission, rate limits, upstream), in one process and one run: traces off (no
/// trace recorded; trace context still propagated and logged — what a deployment without
/// `tracing.endpoint` does), on at 1% sampling and at 100%, exported over OTLP/gRPC to an
/// in-process receiver. The three cases alternate in each round (`set_sampling_ratio`), so
/// drift of the machine falls on all of them; medians of the rounds are compared.
pub fn run_tracing(args: &TracingArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.rounds > 0 && args.connections > 0,
        "--seconds, --rounds and --connections must be > 0"
    );
    let machine = machine();
    let servers_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.server_threads.max(1))
        .thread_name("srv-worker")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .thread_name("load-worker")
        .enable_all()
        .build()?;
    let receiver = servers_rt.block_on(plt_kernel::testing::collectors::OtlpReceiver::start());
    let servers = servers_rt.block_on(start_servers(None, Some(receiver.grpc_endpoint())))?;
    let token = servers.authority.access_token(&servers.user.to_string());
    let target = Entry {
        which: Only::C,
        label: "(c) gateway, full route",
        target: Target::new(servers.gateway, "/full", Some(&token))?,
        pid: None,
    };
    let cases = [("off", 0.0), ("1%", 0.01), ("100%", 1.0)];
    let mut phases: Vec<Vec<Phase>> = vec![Vec::new(); cases.len()];
    let mut spans: Vec<usize> = vec![0; cases.len()];
    for round in 0..args.rounds {
        for (i, (_, ratio)) in cases.iter().enumerate() {
            plt_kernel::trace::set_sampling_ratio(*ratio);
            let before = receiver.spans().len();
            let load = load::closed_loop(
                &target.target,
                args.connections,
                Duration::from_secs_f64(args.warmup),
                Duration::from_secs_f64(args.seconds),
            );
            let phase = run_phase(&client_rt, &target, load);
            // Let the batch exporter deliver what the phase recorded.
            std::thread::sleep(Duration::from_secs(6));
            spans[i] += receiver.spans().len() - before;
            eprintln!(
                "round {}: {:>5} {:>9.0} req/s",
                round + 1,
                cases[i].0,
                phase.rps
            );
            phases[i].push(phase);
        }
    }
    let _ = servers.stop.send(());
    let off = median(phases[0].iter().map(|p| p.rps).collect());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\nplt-bench tracing: the gateway's authenticated route, {} rounds of {}s, {} connections",
        args.rounds, args.seconds, args.connections
    );
    let _ = writeln!(out, "machine: {machine}");
    let _ = writeln!(
        out,
        "\n| sampling | req/s (median) | vs off | p50 ms | p99 ms | server CPU µs/req | spans exported |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|");
    for (i, (label, _)) in cases.iter().enumerate() {
        let p = &phases[i];
        let rps = median(p.iter().map(|x| x.rps).collect());
        let _ = writeln!(
            out,
            "| {label} | {rps:.0} | {:.3} | {} | {} | {} | {} |",
            rps / off,
            ms(median(p.iter().map(|x| x.p50).collect())),
            ms(median(p.iter().map(|x| x.p99).collect())),
            us(median(p.iter().map(|x| x.server_cpu).collect())),
            spans[i]
        );
    }
    let one = median(phases[1].iter().map(|p| p.rps).collect());
    let cost = 1.0 - one / off;
    let errors: u64 = phases.iter().flatten().map(|p| p.errors).sum();
    let pass = cost <= MAX_ONE_PERCENT_COST && errors == 0;
    let _ = writeln!(
        out,
        "\n1% sampling costs {:.1}% of throughput (goal ≤ {:.0}%), {errors} errors: {}",
        cost * 100.0,
        MAX_ONE_PERCENT_COST * 100.0,
        if pass { "PASS" } else { "FAIL" }
    );
    print!("{out}");
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
