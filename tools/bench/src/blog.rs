//! `plt-bench blog`: what the Blog's public-post cache gives a read through the gateway.
//!
//! In one process, on loopback, port 0: the Blog service started twice by the runtime (its
//! real start-up path: SQLite in a temporary directory of its own, a test token authority's
//! keys and service credentials, authz's fake granting the author `blog.posts.write`,
//! audit's fake accepting the records its outbox relays), each with `--posts` (64) published
//! posts, read in turn (round robin over all connections):
//!
//! - **warm**: the default `cache` section (memory, TTL 5 min): after the first reads every
//!   `GetPost` is answered from the cache;
//! - **uncached**: the same with the cache as short-lived as its configuration allows
//!   (`cache.ttl` 1ms — the least it accepts —, `negative_ttl` 0s, `jitter` 0). With one
//!   post read over and over, a 1 ms TTL still answers most reads (at ~10,000 req/s several
//!   arrive within a millisecond of a load, and concurrent misses share one load): hence
//!   the rotation over many posts, each read only every `--posts` requests, so that nearly
//!   every read loads from SQLite. The report shows the hit ratio and the loads per request
//!   that the cache's own counters measured during each phase.
//!
//! The api-gateway is started as its binary starts it (`plt_runtime::start`, the repository's
//! `config/`, rate limits on but never throttling) with two public routes, each to one
//! instance (registered in the gateway's in-memory registry as `blog-warm` and
//! `blog-uncached`):
//! `GET /api/v1/blog/posts/{id}` → warm, `GET /api/uncached/v1/blog/posts/{id}` → uncached;
//! both forward to the Blog's `/v1/blog/posts/{id}`.
//!
//! Measured with the closed loop of [`crate::load`], phases interleaved over rounds (medians):
//! (w) through the gateway, warm; (u) through the gateway, uncached; (dw) / (du) the same
//! directly on the instances' ports. No target: a report (exit code 0 unless an error).

use crate::{
    gateway::MachineCpu,
    load::{self, Target, closed_loop},
};
use anyhow::Context as _;
use api_gateway::{ApiGateway, SECTION as GATEWAY, config::GatewayConfig};
use blog_contract::{BlogServiceClient, BlogServiceHttpClient, pb};
use blog_service::Blog;
use plt_authn::testing::TestAuthority;
use plt_contracts::{
    RequestContext,
    audit::AuditServiceClient,
    authz::AuthzServiceClient,
    testsuite::fakes::{FakeAudit, FakeAuthz},
};
use plt_kernel::{Secret, config::ConfigSource};
use plt_registry::{ServiceRegistry, config::RegistryConfig, memory::MemoryRegistry};
use std::{
    collections::BTreeMap, net::SocketAddr, path::Path, process::ExitCode, sync::Arc,
    time::Duration,
};
use uuid::Uuid;

/// The permission the runtime asks of the author before `CreatePost`.
const WRITE: &str = "blog.posts.write";

#[derive(clap::Args)]
pub struct Args {
    /// Measured seconds of each phase (after the warm-up).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Warm-up seconds before each phase's measurement.
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// Keep-alive connections of the load generator.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Rounds of all phases (interleaved); the report shows medians.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Worker threads of the Blog instances' runtime (the gateway has its own workers,
    /// `gateway.workers`: one per core unless `PLT_GATEWAY__WORKERS` says otherwise).
    #[arg(long, default_value_t = 1)]
    server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Published posts per instance, read in turn (1: one post over and over — then the
    /// 1 ms TTL still answers most reads of the "uncached" instance).
    #[arg(long, default_value_t = 64)]
    posts: usize,
    /// Skip the direct rows (dw) and (du).
    #[arg(long)]
    no_direct: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The cache's counters of the `posts` cache, summed over every label set: hits, misses,
/// loads (from this process's Prometheus recorder, which both instances share; the phases
/// run one at a time, so a phase's difference is its instance's).
#[derive(Clone, Copy, Default)]
struct CacheCounts {
    hits: f64,
    misses: f64,
    loads: f64,
}

impl CacheCounts {
    fn now() -> Self {
        let text = plt_kernel::metrics::render(&[]);
        let mut c = Self::default();
        for line in text.lines() {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            if !series.contains(r#"cache="posts""#) {
                continue;
            }
            let v: f64 = value.parse().unwrap_or(0.0);
            if series.starts_with("cache_hits_total{") {
                c.hits += v;
            } else if series.starts_with("cache_misses_total{") {
                c.misses += v;
            } else if series.starts_with("cache_loads_total{") {
                c.loads += v;
            }
        }
        c
    }

    fn since(self, before: Self) -> Self {
        Self {
            hits: self.hits - before.hits,
            misses: self.misses - before.misses,
            loads: self.loads - before.loads,
        }
    }

    /// Hits over lookups, in %; `None` when nothing was counted.
    fn hit_ratio(self) -> Option<f64> {
        let all = self.hits + self.misses;
        (all > 0.0).then(|| self.hits / all * 100.0)
    }
}

/// The running servers.
struct Servers {
    warm: SocketAddr,
    uncached: SocketAddr,
    gateway: SocketAddr,
    /// The published posts of each instance: (warm, uncached).
    posts: (Vec<String>, Vec<String>),
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _registrations: Vec<plt_registry::Registration>,
}

/// One Blog instance with `vars` on top of the configuration, and `posts` published posts
/// (written over its HTTP API as `author`): its address and the posts' ids.
async fn start_blog(
    data: &Path,
    vars: &[(&str, &str)],
    authority: &TestAuthority,
    author: Uuid,
    posts: usize,
    stops: &mut Vec<tokio::sync::oneshot::Sender<()>>,
    tasks: &mut Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
) -> anyhow::Result<(SocketAddr, Vec<String>)> {
    let mut all: Vec<(String, String)> = vec![
        (
            "PLT_DATABASE__DATA_DIR".into(),
            data.to_string_lossy().into_owned(),
        ),
        ("PLT_LOG__LEVEL".into(), "warn".into()),
        ("PLT_EVENTS__BACKEND".into(), "none".into()),
        ("PLT_REGISTRY__KIND".into(), "memory".into()),
    ];
    all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let source = ConfigSource {
        dir: crate::gateway::config_dir(),
        vars: all,
        sections: Vec::new(),
    };
    let cfg = plt_runtime::load_config::<Blog>(source)?;
    let authz = FakeAuthz::default();
    authz.grant(author, WRITE);
    // The instances register in a registry of their own (both as `blog`); the gateway's
    // knows them under a name each.
    let registry: Arc<dyn ServiceRegistry> = Arc::new(MemoryRegistry::new());
    let mut extensions = http::Extensions::new();
    extensions.insert(Arc::new(FakeAudit::default()) as Arc<dyn AuditServiceClient>);
    let app = plt_runtime::start::<Blog>(
        cfg,
        plt_runtime::Overrides {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            registry: Some(registry.clone()),
            jwks: Some(authority.jwks()),
            clients: Some(
                plt_client::ClientFactory::new(registry)
                    .with_credentials(authority.credentials("blog")),
            ),
            authz: Some(Arc::new(authz) as Arc<dyn AuthzServiceClient>),
            extensions,
            ..Default::default()
        },
    )
    .await
    .context("starting blog")?;
    let addr = app.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tasks.push(tokio::spawn(app.run(async move {
        let _ = stopped.await;
    })));
    stops.push(stop);

    let client =
        BlogServiceHttpClient::new(plt_kernel::tls::http_client(), &format!("http://{addr}"));
    let ctx = RequestContext {
        authorization: Some(Secret::new(format!(
            "Bearer {}",
            authority.access_token(&author.to_string())
        ))),
        ..Default::default()
    };
    let mut ids = Vec::with_capacity(posts);
    for i in 0..posts {
        let draft = client
            .create_post(
                &ctx,
                pb::CreatePostRequest {
                    title: format!("A benchmark post, number {i}"),
                    body: "# Hello\n\nA post of a few paragraphs of *Markdown*.\n\n".repeat(8),
                    tags: vec!["bench".into(), "rust".into()],
                    slug: String::new(),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("creating a post: {e}"))?;
        let post = client
            .publish_post(
                &ctx,
                pb::PublishPostRequest {
                    id: draft.id.clone(),
                },
            )
            .await
            .map_err(|e| anyhow::anyhow!("publishing a post: {e}"))?;
        anyhow::ensure!(post.status == "published", "post status {}", post.status);
        ids.push(post.id);
    }
    Ok((addr, ids))
}

fn gateway_vars() -> Vec<(String, String)> {
    let route = |prefix: &str, service: &str| {
        format!(
            r#"{{"prefix": "{prefix}", "service": "{service}", "methods": ["GET"],
               "rewrite": "/v1/blog/posts", "public": true}}"#
        )
    };
    let routes = format!(
        "[{}, {}]",
        route("/api/v1/blog/posts", "blog-warm"),
        route("/api/uncached/v1/blog/posts", "blog-uncached")
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
    vars.extend(std::env::vars().filter(|(k, _)| k.starts_with("PLT_GATEWAY__")));
    vars
}

async fn start(data: &Path, posts: usize) -> anyhow::Result<Servers> {
    // Counters only count once the recorder is installed.
    let _ = plt_kernel::metrics::handle();
    let source = ConfigSource {
        dir: crate::gateway::config_dir(),
        vars: gateway_vars(),
        sections: Vec::new(),
    };
    let cfg = source
        .load::<GatewayConfig>(GATEWAY)
        .context("loading the gateway configuration")?;
    plt_kernel::telemetry::init_logs(&cfg.kernel.log);

    let authority = TestAuthority::new();
    let author = Uuid::now_v7();
    let (mut stops, mut tasks) = (Vec::new(), Vec::new());
    let (warm_dir, cold_dir) = (data.join("warm"), data.join("uncached"));
    std::fs::create_dir_all(&warm_dir)?;
    std::fs::create_dir_all(&cold_dir)?;
    let (warm, warm_post) = start_blog(
        &warm_dir,
        &[],
        &authority,
        author,
        posts,
        &mut stops,
        &mut tasks,
    )
    .await?;
    let (uncached, cold_post) = start_blog(
        &cold_dir,
        &[
            ("PLT_CACHE__TTL", "1ms"),
            ("PLT_CACHE__NEGATIVE_TTL", "0s"),
            ("PLT_CACHE__JITTER", "0"),
        ],
        &authority,
        author,
        posts,
        &mut stops,
        &mut tasks,
    )
    .await?;

    let registry = MemoryRegistry::new();
    let reg_cfg: RegistryConfig = cfg.source.section("registry")?;
    let mut registrations = Vec::new();
    for (name, addr) in [("blog-warm", warm), ("blog-uncached", uncached)] {
        registrations.push(
            plt_registry::register_service(
                &registry,
                &reg_cfg,
                name,
                env!("CARGO_PKG_VERSION"),
                addr,
                BTreeMap::new(),
                None,
            )
            .await
            .with_context(|| format!("registering {name}"))?,
        );
    }
    let registry: Arc<dyn ServiceRegistry> = Arc::new(registry);
    let mut extensions = http::Extensions::new();
    extensions.insert(Arc::new(FakeAuthz::default()) as Arc<dyn AuthzServiceClient>);
    let app = plt_runtime::start::<ApiGateway>(
        cfg,
        plt_runtime::Overrides {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            registry: Some(registry.clone()),
            jwks: Some(authority.jwks()),
            // The gateway vouches for its requests with its service token, as deployed.
            clients: Some(
                plt_client::ClientFactory::new(registry)
                    .with_credentials(authority.credentials("gateway")),
            ),
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
        if !gw.instances("blog-warm").is_empty() && !gw.instances("blog-uncached").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    anyhow::ensure!(
        !gw.instances("blog-warm").is_empty() && !gw.instances("blog-uncached").is_empty(),
        "the gateway never saw the blog instances"
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tasks.push(tokio::spawn(app.run(async move {
        let _ = stopped.await;
    })));
    stops.push(stop);
    Ok(Servers {
        warm,
        uncached,
        gateway,
        posts: (warm_post, cold_post),
        stops,
        tasks,
        _registrations: registrations,
    })
}

/// One row of the report.
struct Phase {
    name: &'static str,
    label: &'static str,
    target: Target,
    /// The posts it reads (one is checked in the answer before loading).
    posts: Vec<String>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.seconds > 0.0
            && args.warmup >= 0.0
            && args.rounds > 0
            && args.connections > 0
            && args.server_threads > 0
            && args.client_threads > 0,
        "--seconds, --rounds, --connections, --server-threads and --client-threads must be \
         positive, --warmup ≥ 0"
    );
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
    let dir = tempfile::tempdir()?;
    anyhow::ensure!(args.posts > 0, "--posts must be positive");
    let servers = servers_rt.block_on(start(dir.path(), args.posts))?;
    let (wp, up) = &servers.posts;
    let paths = |prefix: &str, ids: &[String]| -> Vec<String> {
        ids.iter().map(|id| format!("{prefix}/{id}")).collect()
    };
    let phase = |name, label, addr, prefix: &str, ids: &Vec<String>| {
        anyhow::Ok(Phase {
            name,
            label,
            target: Target::rotating(addr, &paths(prefix, ids), None)?,
            posts: ids.clone(),
        })
    };
    let mut phases = vec![
        phase(
            "w",
            "(w) gateway, warm cache",
            servers.gateway,
            "/api/v1/blog/posts",
            wp,
        )?,
        phase(
            "u",
            "(u) gateway, uncached",
            servers.gateway,
            "/api/uncached/v1/blog/posts",
            up,
        )?,
    ];
    if !args.no_direct {
        phases.push(phase(
            "dw",
            "(dw) blog directly, warm cache",
            servers.warm,
            "/v1/blog/posts",
            wp,
        )?);
        phases.push(phase(
            "du",
            "(du) blog directly, uncached",
            servers.uncached,
            "/v1/blog/posts",
            up,
        )?);
    }
    eprintln!(
        "plt-bench blog: gateway http://{}, blog warm http://{}, blog uncached http://{}",
        servers.gateway, servers.warm, servers.uncached
    );
    client_rt.block_on(async {
        for p in &phases {
            let (status, _, body) = load::probe(&p.target).await?;
            let body = String::from_utf8_lossy(&body);
            anyhow::ensure!(
                status == 200 && p.posts.iter().any(|id| body.contains(id.as_str())),
                "({}) GET {}: {status} {body}",
                p.name,
                p.target.path
            );
        }
        anyhow::Ok(())
    })?;

    let warmup = Duration::from_secs_f64(args.warmup);
    let window = Duration::from_secs_f64(args.seconds);
    let n = phases.len();
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut p50: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut hits: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut others: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut loads = vec![0.0; n];
    for round in 1..=args.rounds {
        for (i, p) in phases.iter().enumerate() {
            let before = CacheCounts::now();
            let machine = MachineCpu::now();
            let s = client_rt.block_on(closed_loop(&p.target, args.connections, warmup, window));
            let busy = MachineCpu::now().others_since(&machine);
            let counted = CacheCounts::now().since(before);
            anyhow::ensure!(
                s.errors == 0,
                "({}) {}: {} errors, first: {:?}",
                p.name,
                p.target.path,
                s.errors,
                s.first_error
            );
            let ratio = counted.hit_ratio();
            eprintln!(
                "round {round} ({}): {:.0} req/s, p99 {:.2} ms, cache hits {}, others {busy:.2} cores",
                p.name,
                s.rps(),
                s.quantile(0.99).as_secs_f64() * 1e3,
                ratio.map_or("?".into(), |r| format!("{r:.1} %"))
            );
            others[i].push(busy);
            rps[i].push(s.rps());
            p50[i].push(s.quantile(0.50).as_secs_f64() * 1e3);
            p99[i].push(s.quantile(0.99).as_secs_f64() * 1e3);
            if let Some(r) = ratio {
                hits[i].push(r);
            }
            // Per request, warm-up included.
            loads[i] += counted.loads / s.total.max(1) as f64 / args.rounds as f64;
        }
    }

    // The load generator's keep-alive connections go first, then the gateway (its pooled
    // connections to the instances; it takes ~5 s), then the instances: servers drain open
    // connections.
    client_rt.shutdown_timeout(Duration::from_secs(1));
    let stopped = servers_rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(15), async {
            for (stop, task) in servers.stops.into_iter().zip(servers.tasks).rev() {
                let _ = stop.send(());
                let _ = task.await;
            }
        })
        .await
    });
    if stopped.is_err() {
        eprintln!("plt-bench blog: the servers did not stop within 15 s");
    }
    servers_rt.shutdown_timeout(Duration::from_secs(1));

    let per_round = rps.clone();
    let rps: Vec<f64> = rps.into_iter().map(median).collect();
    let p50: Vec<f64> = p50.into_iter().map(median).collect();
    let p99: Vec<f64> = p99.into_iter().map(median).collect();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?").to_owned();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "plt-bench blog: GET a published post (public), Blog on SQLite, through the api-gateway \
         and directly; {} connections, {} rounds × {:.1} s after {:.1} s warm-up (medians); \
         {cores} cores shared by the Blog instances ({} worker thread(s)), the gateway's \
         workers and the load generator ({} thread(s)); load average at the end {load}",
        args.connections,
        args.rounds,
        args.seconds,
        args.warmup,
        args.server_threads,
        args.client_threads
    );
    println!(
        "warm: cache section as configured (memory, ttl 5m); uncached: cache.ttl 1ms (the least \
         accepted), negative_ttl 0s, jitter 0"
    );
    println!();
    println!(
        "| target | req/s | p50 ms | p99 ms | cache hits | SQLite loads / req | others (cores) | warm / uncached |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for i in 0..n {
        let ratio = if i % 2 == 0 && i + 1 < n {
            format!("{:.2}×", rps[i] / rps[i + 1])
        } else {
            "—".to_owned()
        };
        let hit = if hits[i].is_empty() {
            "?".to_owned()
        } else {
            format!("{:.1} %", median(hits[i].clone()))
        };
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {hit} | {:.3} | {:.2} | {ratio} |",
            phases[i].label,
            rps[i],
            p50[i],
            p99[i],
            loads[i],
            median(others[i].clone())
        );
    }
    println!();
    println!(
        "cache hits, SQLite loads: the posts cache's own counters during each phase (loads \
         per request, warm-up included); others: cores used by other processes (or stolen) \
         during a phase — numbers taken while it is well above 0 are disturbed"
    );
    for (p, r) in phases.iter().zip(&per_round) {
        let r: Vec<String> = r.iter().map(|v| format!("{v:.0}")).collect();
        println!("  per round {}: req/s [{}]", p.label, r.join(" "));
    }
    println!();
    println!(
        "warm cache: {:.1}x the uncached throughput (through the gateway)",
        rps[0] / rps[1]
    );
    if n > 3 {
        println!(
            "directly on the Blog: warm {:.1}x the uncached throughput",
            rps[2] / rps[3]
        );
    }
    Ok(ExitCode::SUCCESS)
}
