//! The `main` of a runtime service's binary: `serve` (the default), `migrate`, `config print`.

use crate::{Overrides, Service, load_config, start};
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use plt_kernel::{
    binary::{ConfigCommand, EXIT_CONFIG},
    config::ConfigSource,
    lifecycle::shutdown_signal,
    telemetry,
};
use std::process::ExitCode;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC and HTTP on the section's listen address (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

/// Runs the binary of service `S`: `fn main() -> ExitCode { plt_runtime::main::<Notes>() }`.
pub fn main<S: Service>() -> ExitCode {
    let m = S::MANIFEST;
    let matches = Cli::command()
        .name(m.binary)
        .version(m.version)
        .about(format!("plt {} service", m.name))
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let cfg = match load_config::<S>(ConfigSource::from_env()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("{}: {e:#}", m.binary);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: starting the async runtime: {e}", m.binary);
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Config { command } => {
                command.run(&cfg);
                Ok(())
            }
            Command::Migrate => {
                telemetry::init(&cfg.kernel.log);
                let Some(migrations) = m.migrations else {
                    println!("{} keeps no data: nothing to migrate", m.name);
                    return Ok(());
                };
                let db = plt_db::Db::open(&cfg.kernel.database, m.name, *migrations).await?;
                tracing::info!(backend = db.backend(), "migrations applied");
                db.close().await;
                Ok(())
            }
            Command::Serve => {
                telemetry::init(&cfg.kernel.log);
                start::<S>(cfg, Overrides::default())
                    .await?
                    .run(shutdown_signal())
                    .await
            }
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{} failed", m.binary);
            eprintln!("{}: {e:#}", m.binary);
            ExitCode::FAILURE
        }
    }
}
