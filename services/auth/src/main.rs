//! The auth-service binary: serve, migrate, rotate or list signing keys, print config.

use auth_service::{App, Config, Overrides, SECTION, connect_db, key_ring};
use clap::{Parser, Subcommand};
use plt_kernel::{
    binary::{Binary, ConfigCommand},
    lifecycle::shutdown_signal,
    telemetry,
};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "auth-service", version, about = "plt auth service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC and HTTP on auth.listen (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Rotate now: the next key starts signing, the active one starts retiring.
    Rotate,
    /// List the keys with their state.
    List,
}

const BINARY: Binary = Binary::new("auth-service");

/// mimalloc: glibc's malloc contends between worker threads under load (freeing on one
/// thread what another allocated).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match BINARY.config(SECTION, |cfg: &Config| {
        cfg.service
            .validate_for_env(&cfg.kernel.env)
            .and_then(|()| plt_client::check_shared_config(&cfg.source, SECTION, &cfg.kernel.env))
    }) {
        Ok(cfg) => cfg,
        Err(code) => return code,
    };
    BINARY.exit(
        run(cli.command.unwrap_or(Command::Serve), cfg)
            .await
            .map(|()| ExitCode::SUCCESS),
    )
}

async fn run(command: Command, cfg: Config) -> anyhow::Result<()> {
    match command {
        Command::Config { command } => {
            command.run(&cfg);
            Ok(())
        }
        Command::Migrate => {
            telemetry::init(&cfg.kernel.log);
            connect_db(&cfg, SECTION).await?.close().await;
            Ok(())
        }
        Command::Keys { command } => {
            let db = connect_db(&cfg, SECTION).await?;
            let ring = key_ring(&cfg, &db).await?;
            if let KeysCommand::Rotate = command {
                let kid = ring.rotate().await?;
                println!("rotated: {kid} signs now");
            }
            for k in ring.keys() {
                println!(
                    "{}\t{:<8}\tcreated {}\tactivated {}\tremove after {}",
                    k.kid,
                    k.state.as_str(),
                    k.created_at.to_rfc3339(),
                    k.activated_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "-".into()),
                    k.remove_after
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "-".into()),
                );
            }
            db.close().await;
            Ok(())
        }
        Command::Serve => {
            telemetry::init(&cfg.kernel.log);
            let app = App::build(&cfg, Overrides::default()).await?;
            app.run(shutdown_signal()).await
        }
    }
}
