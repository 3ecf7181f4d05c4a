//! plt-bench: benchmarks that need real servers, run as a program.
//!
//! `plt-bench gateway` starts an upstream and the api-gateway in this process on loopback and
//! measures, with a built-in load generator, the upstream directly, a public gateway route
//! and a fully checked one (JWT, permission, rate limits). See [`gateway`].

mod external;
mod gateway;
mod load;

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
}

/// mimalloc: glibc's malloc contends between worker threads under load (freeing on one
/// thread what another allocated).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Gateway(args) => gateway::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("plt-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}
