//! The audit-service binary: reads configuration, sets up logging, then serves, migrates,
//! prints the effective configuration, or verifies the hash chain.

use audit_service::{App, Config, Overrides, SECTION, connect_db, verify_chain};
use clap::{Parser, Subcommand};
use plt_kernel::{
    binary::{Binary, ConfigCommand},
    lifecycle::shutdown_signal,
    telemetry,
};
use std::process::ExitCode;

/// Exit code of `verify` when the chain is broken (2 is a configuration error).
const EXIT_BROKEN: u8 = 3;

#[derive(Parser)]
#[command(name = "audit-service", version, about = "plt audit service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC and HTTP on audit.listen (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Walk the whole hash chain; exit 0 if intact, 3 naming the first broken sequence.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

const BINARY: Binary = Binary::new("audit-service");

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
        Command::Migrate => {
            telemetry::init(&cfg.kernel.log);
            let db = connect_db(&cfg, SECTION).await?;
            tracing::info!(backend = db.backend(), "migrations applied");
            db.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { json } => {
            let db = connect_db(&cfg, SECTION).await?;
            let report = verify_chain(&db).await;
            db.close().await;
            let report = report?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else if report.ok {
                println!(
                    "ok: {} entries checked, the chain is intact",
                    report.checked
                );
            } else {
                println!(
                    "BROKEN at sequence {}: {} ({} entries intact before it)",
                    report.first_broken_sequence.unwrap_or_default(),
                    report.reason,
                    report.checked
                );
            }
            Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_BROKEN)
            })
        }
        Command::Serve => {
            telemetry::init(&cfg.kernel.log);
            let app = App::build(&cfg, Overrides::default()).await?;
            app.run(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
