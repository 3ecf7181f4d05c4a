//! `plt-bench guard`: what a service's own access check costs on a direct call.
//!
//! identity is started by the runtime (its real start-up path, SQLite, port 0) and its core is
//! served a second time on another port behind `AllowAll` — exactly the adapters without the
//! check, as every core service was served before it guarded itself. The same requests go to
//! both, interleaved over rounds, each with the same bearer token:
//!
//! - (b0) `GET /v1/users/{id}` unguarded, (b) guarded: the own-resource rule (the token
//!   verified locally; no authz);
//! - (l0) `GET /v1/users?page_size=1` unguarded, (l) guarded: permission
//!   `identity.users.read` (token verified, authz's decision reused for 1 s).
//!
//! The report shows medians of the rounds and the guarded/unguarded ratios (target ≥ 0.90).

use crate::load::{Target, closed_loop};
use anyhow::Context as _;
use identity_service::Identity;
use plt_authn::testing::TestAuthority;
use plt_contracts::{
    access::AllowAll,
    auth::AuthServiceClient,
    identity::{IdentityServiceClient, NewUser},
    serve::IdentityServe,
    testsuite::fakes::{FakeAuth, FakeAuthz},
};
use plt_kernel::{
    Secret, ServiceHost, config::ConfigSource, notify::MemoryNotifier, notify::Notifier,
};
use plt_registry::{ServiceRegistry, memory::MemoryRegistry};
use std::{net::SocketAddr, process::ExitCode, sync::Arc, time::Duration};

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
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.rounds > 0 && args.connections > 0,
        "--seconds, --rounds and --connections must be positive"
    );
    let servers_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("srv-worker")
        .enable_all()
        .build()?;
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("load-worker")
        .enable_all()
        .build()?;
    let dir = tempfile::tempdir()?;
    let (guarded, unguarded, user, tokens) = servers_rt.block_on(start(dir.path()))?;
    let warmup = Duration::from_secs_f64(args.warmup);
    let window = Duration::from_secs_f64(args.seconds);
    let phases = [
        ("b0", unguarded, format!("/v1/users/{user}"), &tokens.0),
        ("b", guarded, format!("/v1/users/{user}"), &tokens.0),
        (
            "l0",
            unguarded,
            "/v1/users?page_size=1".to_owned(),
            &tokens.1,
        ),
        ("l", guarded, "/v1/users?page_size=1".to_owned(), &tokens.1),
    ];
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); phases.len()];
    let mut p99: Vec<Vec<f64>> = vec![Vec::new(); phases.len()];
    for round in 0..args.rounds {
        for (i, (name, addr, path, token)) in phases.iter().enumerate() {
            let target = Target::new(*addr, path, Some(token))?;
            let s = client_rt.block_on(closed_loop(&target, args.connections, warmup, window));
            anyhow::ensure!(
                s.errors == 0,
                "({name}) {path}: {} errors, first: {:?}",
                s.errors,
                s.first_error
            );
            eprintln!("round {} ({name}): {:.0} req/s", round + 1, s.rps());
            rps[i].push(s.rps());
            p99[i].push(s.quantile(0.99).as_secs_f64() * 1e3);
        }
    }
    let rps: Vec<f64> = rps.into_iter().map(median).collect();
    let p99: Vec<f64> = p99.into_iter().map(median).collect();
    println!(
        "plt-bench guard: identity called directly, {} connections, {} rounds × {:.1} s (medians)",
        args.connections, args.rounds, args.seconds
    );
    println!();
    println!("| target | req/s | p99 ms | guarded / unguarded |");
    println!("|---|---|---|---|");
    let names = [
        "(b0) GET /v1/users/{id}, unguarded",
        "(b) GET /v1/users/{id}, guarded (own resource)",
        "(l0) GET /v1/users, unguarded",
        "(l) GET /v1/users, guarded (permission, cached)",
    ];
    let mut pass = true;
    for i in 0..phases.len() {
        let ratio = if i % 2 == 1 {
            let r = rps[i] / rps[i - 1];
            pass &= r >= 0.90;
            format!("{:.1} %", r * 100.0)
        } else {
            "—".to_owned()
        };
        println!("| {} | {:.0} | {:.2} | {ratio} |", names[i], rps[i], p99[i]);
    }
    println!();
    println!(
        "target: the guarded call keeps ≥ 90 % of the unguarded throughput: {}",
        if pass { "PASS" } else { "FAIL" }
    );
    Ok(if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// identity guarded (by the runtime) and the same core unguarded; a user; tokens: (the user's
/// own, a reader's).
async fn start(
    data: &std::path::Path,
) -> anyhow::Result<(SocketAddr, SocketAddr, uuid::Uuid, (String, String))> {
    let source = ConfigSource {
        dir: crate::gateway::config_dir(),
        vars: vec![
            (
                "PLT_DATABASE__DATA_DIR".into(),
                data.to_string_lossy().into_owned(),
            ),
            ("PLT_LOG__LEVEL".into(), "error".into()),
        ],
        sections: Vec::new(),
    };
    let cfg = plt_runtime::load_config::<Identity>(source)?;
    plt_kernel::telemetry::init_logs(&cfg.kernel.log);
    let authority = TestAuthority::new();
    let authz = FakeAuthz::default();
    let registry: Arc<dyn ServiceRegistry> = Arc::new(MemoryRegistry::new());
    let mut extensions = http::Extensions::new();
    extensions.insert(Arc::new(MemoryNotifier::default()) as Arc<dyn Notifier>);
    extensions.insert(Arc::new(FakeAuth::default()) as Arc<dyn AuthServiceClient>);
    let server = cfg.kernel.server.clone();
    let app = plt_runtime::start::<Identity>(
        cfg,
        plt_runtime::Overrides {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            registry: Some(registry),
            jwks: Some(authority.jwks()),
            authz: Some(Arc::new(authz.clone())),
            extensions,
            ..Default::default()
        },
    )
    .await
    .context("starting identity")?;
    let guarded = app.local_addr();
    let core = app
        .get::<Arc<dyn IdentityServiceClient>>()
        .context("identity exports its core")?;
    let user = core
        .create_user(
            &Default::default(),
            NewUser {
                email: "bench@example.com".into(),
                password: Secret::new("a benchmark passphrase 42".into()),
                display_name: String::new(),
            },
        )
        .await
        .context("creating the user")?;
    let reader = uuid::Uuid::now_v7();
    authz.grant(reader, "identity.users.read");
    tokio::spawn(app.run(std::future::pending()));
    use plt_contracts::access::Serve as _;
    let host = IdentityServe(core).mount(
        ServiceHost::new("identity-unguarded", &server),
        Arc::new(AllowAll),
    );
    let bound = host.bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let unguarded = bound.local_addr();
    tokio::spawn(bound.run(std::future::pending()));
    Ok((
        guarded,
        unguarded,
        user.id,
        (
            authority.access_token(&user.id.to_string()),
            authority.access_token(&reader.to_string()),
        ),
    ))
}
