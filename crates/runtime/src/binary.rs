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
    /// Print what the service is (name, binary, version, the services it calls) as JSON,
    /// for tools that start services in order (`plt dev`). Reads no configuration.
    Manifest,
}

/// No commands beyond the runtime's.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum NoCommands {}

/// Runs the binary of service `S`: `fn main() -> ExitCode { plt_runtime::main::<Notes>() }`.
pub fn main<S: Service>() -> ExitCode {
    main_with::<S, NoCommands, _>(|c, _| match c {})
}

/// The outcome of a service's own command: its exit code, or an error (exit code 1).
pub type CommandResult = futures_util::future::BoxFuture<'static, anyhow::Result<ExitCode>>;

/// Like [`main`], with the service's own commands `E` beside `serve`, `migrate` and
/// `config`, run by `run` with the loaded configuration (logging not set up: a command
/// that wants it calls `plt_kernel::telemetry::init`).
pub fn main_with<S, E, F>(run: F) -> ExitCode
where
    S: Service,
    E: Subcommand + clap::FromArgMatches,
    F: FnOnce(E, plt_kernel::Loaded<S::Config>) -> CommandResult,
{
    let m = S::MANIFEST;
    let matches = E::augment_subcommands(Cli::command())
        .name(m.binary)
        .version(m.version)
        .about(format!("plt {} service", m.name))
        .get_matches();
    let own = matches
        .subcommand_name()
        .is_some_and(|name| E::has_subcommand(name));
    let (cli, extra) = if own {
        match E::from_arg_matches(&matches) {
            Ok(e) => (Cli { command: None }, Some(e)),
            Err(e) => e.exit(),
        }
    } else {
        match Cli::from_arg_matches(&matches) {
            Ok(c) => (c, None),
            Err(e) => e.exit(),
        }
    };
    if matches!(cli.command, Some(Command::Manifest)) {
        println!(
            "{}",
            serde_json::json!({
                "name": m.name,
                "binary": m.binary,
                "version": m.version,
                "calls": m.calls,
                "keeps_data": m.migrations.is_some(),
            })
        );
        return ExitCode::SUCCESS;
    }
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
        if let Some(extra) = extra {
            return run(extra, cfg).await;
        }
        match cli.command.unwrap_or(Command::Serve) {
            Command::Config { command } => Ok(command.run(&cfg)),
            Command::Manifest => Ok(ExitCode::SUCCESS),
            Command::Migrate => {
                telemetry::init_logs(&cfg.kernel.log);
                let Some(migrations) = m.migrations else {
                    println!("{} keeps no data: nothing to migrate", m.name);
                    return Ok(ExitCode::SUCCESS);
                };
                let db = plt_db::Db::open(&cfg.kernel.database, m.name, *migrations).await?;
                tracing::info!(backend = db.backend(), "migrations applied");
                db.close().await;
                Ok(ExitCode::SUCCESS)
            }
            Command::Serve => {
                let telemetry = telemetry::init(&cfg.kernel, &[m.binary]);
                let served = match start::<S>(cfg, Overrides::default()).await {
                    Ok(app) => app.run(shutdown_signal()).await,
                    Err(e) => Err(e),
                };
                telemetry.shutdown();
                served?;
                Ok(ExitCode::SUCCESS)
            }
        }
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "{} failed", m.binary);
            eprintln!("{}: {e:#}", m.binary);
            ExitCode::FAILURE
        }
    }
}
