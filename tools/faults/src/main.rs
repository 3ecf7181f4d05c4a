//! `plt-faults`: the platform's fault suite.
//!
//! Starts the platform from the service binaries against real PostgreSQL and Redis (through
//! `plt_testkit`'s fault proxies, in this process) and an etcd of its own, puts an open-loop
//! load on the gateway, injects one fault per scenario and judges the scenario by its
//! criteria. Exit code 1 when any scenario failed (2: bad usage or missing binaries).
//!
//! ```sh
//! export CARGO_TARGET_DIR=$HOME/.cache/plt-target
//! cargo build -p identity-service -p auth-service -p authz-service -p audit-service -p api-gateway
//! PLT_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo run -p plt-faults -- --quick --bin-dir $CARGO_TARGET_DIR/debug
//! ```
//!
//! `--only <name>` runs one scenario (`--list` names them); without `--quick` the faults last
//! their full durations (60 s registry outage, 30 s Redis and identity outages). Each scenario's service logs stay under `--run-dir`.

mod load;
mod platform;
mod report;
mod scenarios;

use clap::Parser;
use report::Summary;
use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

#[derive(Parser, Debug)]
#[command(
    name = "plt-faults",
    about = "The platform's fault suite: real PostgreSQL, etcd and Redis, load on the gateway, one fault per scenario"
)]
struct Cli {
    /// Directory of the service binaries (default: $CARGO_TARGET_DIR/release, else
    /// <workspace>/target/release).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The services' configuration directory (default: <workspace>/config); it must match
    /// the binaries (unknown keys are refused).
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// PostgreSQL server (a database is created per scenario and dropped afterwards).
    #[arg(
        long,
        env = "PLT_TEST_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// Redis server (the gateway's rate limiter, under a key prefix unique to the run).
    #[arg(
        long,
        env = "PLT_TEST_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    redis_url: String,
    /// The etcd binary (Debian: etcd-server); the suite runs its own on free ports.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Run only these scenarios (repeat or separate by commas).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// A few seconds per fault (CI); without it, the full durations.
    #[arg(long)]
    quick: bool,
    /// Load: requests per second through the gateway.
    #[arg(long, default_value_t = 150.0)]
    rate: f64,
    /// Where service logs go (a directory per scenario); default: a new directory under
    /// the system's temporary directory.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

/// The workspace root: two levels above this crate (`tools/faults`).
fn workspace() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .map(PathBuf::from)
        .unwrap_or(manifest)
}

fn default_bin_dir(workspace: &std::path::Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("release"),
        _ => workspace.join("target").join("release"),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let tag = format!(
        "{stamp}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let workspace = workspace();
    let settings = platform::Settings {
        bin_dir: cli
            .bin_dir
            .clone()
            .unwrap_or_else(|| default_bin_dir(&workspace)),
        config_dir: cli
            .config_dir
            .clone()
            .unwrap_or_else(|| workspace.join("config")),
        etcd_bin: cli.etcd.clone(),
        postgres_url: cli.postgres_url.clone(),
        redis_url: cli.redis_url.clone(),
        run_dir: cli
            .run_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join(format!("plt-faults-{tag}"))),
        tag,
    };
    let ctx = scenarios::Ctx {
        settings,
        quick: cli.quick,
        rate: cli.rate,
    };
    if cli.list {
        for name in scenarios::NAMES {
            println!("{name:<18} {}", scenarios::title(&ctx, name));
        }
        return ExitCode::SUCCESS;
    }
    let selected: Vec<&str> = if cli.only.is_empty() {
        scenarios::NAMES.to_vec()
    } else {
        let mut v = Vec::new();
        for name in &cli.only {
            match scenarios::NAMES.iter().find(|n| **n == name.as_str()) {
                Some(n) => v.push(*n),
                None => {
                    eprintln!(
                        "plt-faults: unknown scenario {name}; one of: {}",
                        scenarios::NAMES.join(", ")
                    );
                    return ExitCode::from(2);
                }
            }
        }
        v
    };
    if let Err(e) = preflight(&ctx.settings) {
        eprintln!("plt-faults: {e:#}");
        return ExitCode::from(2);
    }
    tokio::select! {
        code = run(&ctx, &selected) => code,
        _ = tokio::signal::ctrl_c() => {
            // Dropping the running scenario kills its processes (kill_on_drop) and removes
            // etcd's directory; its database is dropped here.
            eprintln!("plt-faults: interrupted; cleaning up");
            platform::drop_live_databases(&ctx.settings.postgres_url).await;
            ExitCode::from(130)
        }
    }
}

/// The binaries exist and the run directory can be made.
fn preflight(s: &platform::Settings) -> anyhow::Result<()> {
    let missing: Vec<String> = platform::Svc::ALL
        .iter()
        .map(|svc| s.bin_dir.join(svc.binary()))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        anyhow::bail!(
            "service binaries not found: {} (build them: cargo build -p identity-service -p auth-service -p authz-service -p audit-service -p api-gateway, and pass --bin-dir)",
            missing.join(", ")
        );
    }
    let default = s.config_dir.join("default.yaml");
    if !default.is_file() {
        anyhow::bail!("{} not found (--config-dir)", default.display());
    }
    std::fs::create_dir_all(&s.run_dir)?;
    Ok(())
}

async fn run(ctx: &scenarios::Ctx, selected: &[&str]) -> ExitCode {
    println!(
        "plt-faults: {} scenario(s), {}, load {} req/s; binaries {}; logs {}",
        selected.len(),
        if ctx.quick { "quick" } else { "full durations" },
        ctx.rate,
        ctx.settings.bin_dir.display(),
        ctx.settings.run_dir.display()
    );
    let mut rows = Vec::new();
    for name in selected {
        let started = Instant::now();
        println!("\n-- {name}: starting the platform");
        let outcome = scenarios::run(ctx, name).await;
        let took = started.elapsed();
        let title = scenarios::title(ctx, name);
        rows.push(match outcome {
            Ok(report) => {
                report::print_scenario(name, &title, &report, took);
                let failed: Vec<String> = report
                    .criteria
                    .iter()
                    .filter(|c| !c.pass)
                    .map(|c| c.name.clone())
                    .collect();
                Summary {
                    name: (*name).into(),
                    verdict: if report.passed() { "PASS" } else { "FAIL" },
                    took,
                    detail: failed.join("; "),
                }
            }
            Err(e) => {
                println!("\n== {name}: {title}\n  ERROR  {e:#}");
                Summary {
                    name: (*name).into(),
                    verdict: "ERROR",
                    took,
                    detail: format!("{e:#}"),
                }
            }
        });
        println!("  logs: {}", ctx.settings.run_dir.join(name).display());
    }
    report::print_summary(&rows, &ctx.settings.run_dir);
    if rows.iter().all(|r| r.verdict == "PASS") {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
