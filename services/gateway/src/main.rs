//! The api-gateway binary: serve, print config.

use api_gateway::{App, Config, Overrides, SECTION};
use clap::{Parser, Subcommand};
use plt_kernel::{config::ConfigSource, lifecycle::shutdown_signal, telemetry};
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

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration, secrets redacted.
    Print,
}

/// mimalloc: glibc's malloc contends between worker threads under load (freeing on one
/// thread what another allocated).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg: Config = match ConfigSource::from_env().load(SECTION) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("api-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) =
        plt_client::check_shared_config(&cfg.source, api_gateway::SECTION, &cfg.kernel.env)
    {
        eprintln!("api-gateway: {e}");
        return ExitCode::from(2);
    }
    match run(cli.command.unwrap_or(Command::Serve), cfg).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "api-gateway failed");
            eprintln!("api-gateway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, cfg: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Config {
            command: ConfigCommand::Print,
        } => {
            print!("{}", cfg.to_yaml());
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve => {
            telemetry::init(&cfg.kernel.log);
            let app = App::build(&cfg, Overrides::default()).await?;
            app.run(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
