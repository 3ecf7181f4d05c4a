//! The api-gateway binary: serve, print config.

use api_gateway::{App, Config, Overrides, SECTION};
use clap::{Parser, Subcommand};
use plt_kernel::{
    binary::{Binary, ConfigCommand},
    lifecycle::shutdown_signal,
    telemetry,
};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "api-gateway", version, about = "plt API gateway")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP on gateway.listen (the default).
    Serve,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

const BINARY: Binary = Binary::new("api-gateway");

/// mimalloc: glibc's malloc contends between worker threads under load (freeing on one
/// thread what another allocated).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match BINARY.config(SECTION, |cfg: &Config| {
        plt_client::check_shared_config(&cfg.source, SECTION, &cfg.kernel.env)
    }) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    BINARY.exit(run(cli.command.unwrap_or(Command::Serve), cfg).await)
}

async fn run(command: Command, cfg: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Config { command } => Ok(command.run(&cfg)),
        Command::Serve => {
            telemetry::init(&cfg.kernel.log);
            let app = App::build(&cfg, Overrides::default()).await?;
            app.run(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
