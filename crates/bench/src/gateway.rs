//! `plt-bench gateway`: what the API gateway costs over calling its upstream directly.
//!
//! In one process, on loopback, port 0:
//! - an upstream: a small axum server answering `GET /v1/ping` with a small JSON body,
//!   registered as service `bench` in an in-memory registry;
//! - the api-gateway, built as its binary builds it (`App::build` from the repository's
//!   `config/` plus the variables below), with two routes to `bench`: `/pub` (public) and
//!   `/full` (access token verified against a test JWKS, permission `bench.ping.read` checked
//!   through an in-process authz fake that grants it, rate limits per client and per user set
//!   so high that nothing is throttled). Logs at `warn`.
//!
//! Targets: (a) the upstream directly, (b) the gateway's public route, (c) the full route.
//! For each: the maximum throughput (closed loop), then the latency at a fixed rate of half
//! of (c)'s maximum (open loop, from the scheduled send time). Servers and the load generator
//! run on separate tokio runtimes (`--server-threads`, `--client-threads`) sharing the
//! machine's cores. `PLT_*` variables in the environment are applied on top of the
//! benchmark's own (e.g. `PLT_LOG__LEVEL=info` to see what request logging costs).

use crate::load::{self, Sample, Target};
use anyhow::Context as _;
use api_gateway::{App, Overrides, SECTION, config::GatewayConfig};
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
}

/// The running servers.
struct Servers {
    upstream: SocketAddr,
    gateway: SocketAddr,
    authority: TestAuthority,
    /// Holds `bench.ping.read`.
    user: Uuid,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _registration: plt_registry::Registration,
}

fn config_dir() -> PathBuf {
    std::env::var_os("PLT_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../config")))
}

/// The benchmark's configuration variables, then `PLT_*` from the environment.
fn config_vars() -> Vec<(String, String)> {
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
    vars.extend(std::env::vars().filter(|(k, _)| k.starts_with("PLT_")));
    vars
}

async fn ping() -> impl IntoResponse {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        PING_BODY,
    )
}

async fn start_servers() -> anyhow::Result<Servers> {
    let source = ConfigSource {
        dir: config_dir(),
        vars: config_vars(),
    };
    let cfg = source
        .load::<GatewayConfig>(SECTION)
        .context("loading the gateway configuration")?;
    plt_kernel::telemetry::init(&cfg.kernel.log);

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
    )
    .await
    .context("registering the upstream")?;

    let authority = TestAuthority::new();
    let user = Uuid::new_v4();
    let authz = FakeAuthz::default();
    authz.grant(user, PERMISSION);
    let registry: Arc<dyn ServiceRegistry> = Arc::new(registry);
    let app = App::build(
        &cfg,
        Overrides {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            registry: Some(registry),
            authz: Some(Arc::new(authz)),
            jwks: Some(authority.jwks()),
        },
    )
    .await
    .context("building the gateway")?;
    let gateway = app.local_addr();
    let gw = app.gateway();
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
        stop,
        task,
        _registration: registration,
    })
}

/// Checks that each target answers as it should before loading it: (c) refuses a missing
/// token (401) and a user without the permission (403), and reports its rate limit.
async fn sanity(servers: &Servers, targets: &[Target; 3]) -> anyhow::Result<()> {
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
    (d("srv"), d("load") + d("bench"))
}

// ---------------------------------------------------------------- the run

struct Row {
    label: &'static str,
    closed: Sample,
    /// Servers' and load generator's CPU per request in the closed loop.
    server_cpu: Duration,
    client_cpu: Duration,
    open: Sample,
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
        args.connections > 0 && args.server_threads > 0 && args.client_threads > 0,
        "--connections, --server-threads and --client-threads must be ≥ 1"
    );
    let window = Duration::from_secs_f64(args.seconds);
    let warmup = Duration::from_secs_f64(args.warmup);
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
    let servers = servers_rt.block_on(start_servers())?;

    let token = servers.authority.access_token(&servers.user.to_string());
    let targets = [
        Target::new(servers.upstream, "/v1/ping", None)?,
        Target::new(servers.gateway, "/pub", None)?,
        Target::new(servers.gateway, "/full", Some(&token))?,
    ];
    let labels = [
        "(a) upstream direct",
        "(b) gateway, public route",
        "(c) gateway, full route",
    ];
    client_rt.block_on(sanity(&servers, &targets))?;

    eprintln!(
        "plt-bench gateway: {} connections, {}s warm-up + {}s per phase, 6 phases",
        args.connections, args.warmup, args.seconds
    );
    let mut closed = Vec::new();
    for (t, label) in targets.iter().zip(labels) {
        eprintln!("  closed loop {label} …");
        let before = cpu_by_group();
        let s = client_rt.block_on(load::closed_loop(t, args.connections, warmup, window));
        let (srv, cli) = cpu_delta(&before, &cpu_by_group());
        let n = u32::try_from(s.total.max(1)).unwrap_or(u32::MAX);
        closed.push((label, s, srv / n, cli / n));
        std::thread::sleep(Duration::from_millis(200));
    }
    let rate = args.rate.unwrap_or(closed[2].1.rps() * 0.5).max(1.0);
    let mut rows = Vec::new();
    for (t, (label, closed, server_cpu, client_cpu)) in targets.iter().zip(closed) {
        eprintln!("  open loop {label} at {rate:.0} req/s …");
        let open = client_rt.block_on(load::open_loop(t, args.connections, rate, warmup, window));
        rows.push(Row {
            label,
            closed,
            server_cpu,
            client_cpu,
            open,
        });
        std::thread::sleep(Duration::from_millis(200));
    }

    let _ = servers.stop.send(());
    let task = servers.task;
    let stopped =
        servers_rt.block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
    if !matches!(stopped, Ok(Ok(Ok(())))) {
        eprintln!("plt-bench: the gateway did not stop cleanly");
    }
    client_rt.shutdown_timeout(Duration::from_secs(1));
    servers_rt.shutdown_timeout(Duration::from_secs(1));

    let (report, pass) = report(args, rate, &rows);
    print!("{report}");
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn report(args: &Args, rate: f64, rows: &[Row]) -> (String, bool) {
    let mut o = String::new();
    let _ = writeln!(o, "\nplt-bench gateway");
    let _ = writeln!(o, "machine: {}", machine());
    let _ = writeln!(
        o,
        "         load generator and servers share this machine and its cores, in one process"
    );
    let _ = writeln!(
        o,
        "runtimes: servers (upstream + gateway) {} tokio worker thread(s); load generator {} \
         worker thread(s) + 1 pacing thread (open loop); the OS shares the cores among them",
        args.server_threads, args.client_threads
    );
    let _ = writeln!(
        o,
        "method: HTTP/1.1 keep-alive, {} connections, GET, loopback; closed loop {}s after {}s \
         warm-up (max throughput); open loop at {rate:.0} req/s = {} for {}s after {}s warm-up, \
         latency from the scheduled send time; errors = transport errors + non-2xx",
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
    );
    let _ = writeln!(
        o,
        "(b) /pub → /v1/ping, public (client rate limit checked); (c) /full → /v1/ping with \
         Bearer JWT (verified, cached), permission {PERMISSION} (authz fake, decision cache), \
         client + user rate limits (never throttling); logs at warn\n"
    );
    let _ = writeln!(
        o,
        "{:<27} | {:>9} {:>8} {:>8} {:>6} {:>8} {:>8} | {:>9} {:>8} {:>8} {:>6}",
        "",
        "max",
        "p50",
        "p99",
        "errors",
        "srv CPU",
        "load CPU",
        "open loop",
        "p50",
        "p99",
        "errors"
    );
    let _ = writeln!(
        o,
        "{:<27} | {:>9} {:>8} {:>8} {:>6} {:>8} {:>8} | {:>9} {:>8} {:>8} {:>6}",
        "target", "req/s", "ms", "ms", "", "µs/req", "µs/req", "req/s", "ms", "ms", ""
    );
    let _ = writeln!(o, "{}", "-".repeat(130));
    for r in rows {
        let _ = writeln!(
            o,
            "{:<27} | {:>9.0} {:>8} {:>8} {:>6} {:>8} {:>8} | {:>9.0} {:>8} {:>8} {:>6}",
            r.label,
            r.closed.rps(),
            ms(r.closed.quantile(0.5)),
            ms(r.closed.quantile(0.99)),
            r.closed.errors,
            us(r.server_cpu),
            us(r.client_cpu),
            r.open.rps(),
            ms(r.open.quantile(0.5)),
            ms(r.open.quantile(0.99)),
            r.open.errors,
        );
    }
    let (a, b, c) = (&rows[0], &rows[1], &rows[2]);
    let ratio_b = b.closed.rps() / a.closed.rps();
    let ratio_c = c.closed.rps() / a.closed.rps();
    let added = c.open.quantile(0.99).as_secs_f64() - a.open.quantile(0.99).as_secs_f64();
    let added_b = b.open.quantile(0.99).as_secs_f64() - a.open.quantile(0.99).as_secs_f64();
    let errors: u64 = rows.iter().map(|r| r.closed.errors + r.open.errors).sum();
    let verdict = |ok: bool| if ok { "PASS" } else { "FAIL" };
    let ok_ratio = ratio_c >= MIN_FULL_RATIO;
    let ok_added = added <= MAX_ADDED_P99.as_secs_f64();
    let _ = writeln!(o);
    let _ = writeln!(o, "throughput (b)/(a): {:.1}%", ratio_b * 100.0);
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
        for (phase, s) in [("closed", &r.closed), ("open", &r.open)] {
            if let Some(e) = &s.first_error {
                let _ = writeln!(o, "  first error, {} {phase} loop: {e}", r.label);
            }
        }
    }
    let pass = ok_ratio && ok_added && errors == 0;
    let _ = writeln!(o, "overall: {}", verdict(pass));
    (o, pass)
}
