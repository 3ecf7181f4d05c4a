//! plt-bench: benchmarks that need real servers, run as a program.
//!
//! `plt-bench gateway` starts an upstream and the api-gateway in this process on loopback and
//! measures, with a built-in load generator, the upstream directly, a public gateway route
//! and a fully checked one (JWT, permission, rate limits). See [`gateway`].
//!
//! `plt-bench guard` measures what a service's own access check costs on a direct call:
//! identity guarded by the runtime against the same core served unguarded. See [`guard`].
//!
//! `plt-bench blog` measures a public Blog post read through the gateway with the Blog's
//! cache warm against the same with the cache (nearly) off, in one run. See [`blog`].
//!
//! `plt-bench revocation` measures, against a running platform, how soon a session that
//! ended (logout) is refused at every gateway instance. See [`revocation`].

mod blog;
mod external;
mod gateway;
mod guard;
mod load;
mod revocation;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "plt-bench", version, about = "plt benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The API gateway's throughput and added latency against a direct upstream.
    Gateway(gateway::Args),
    /// A core service's own access check on a direct call, against the same core unguarded.
    Guard(guard::Args),
    /// A public Blog post read through the gateway: warm cache against uncached.
    Blog(blog::Args),
    /// How soon an ended session is refused at every gateway of a running platform.
    Revocation(revocation::Args),
    /// What tracing costs the gateway: off, 1% and 100% sampling in one run.
    Tracing(gateway::TracingArgs),
}

/// mimalloc: glibc's malloc contends between worker threads under load (freeing on one
/// thread what another allocated).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gateway(args) => gateway::run(&args),
        Command::Guard(args) => guard::run(&args),
        Command::Blog(args) => blog::run(&args),
        Command::Revocation(args) => revocation::run(&args),
        Command::Tracing(args) => gateway::run_tracing(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("plt-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
