//! The identity-service binary: reads configuration, sets up logging, then serves, migrates,
//! prints the effective configuration, or lists the development mail outbox.

use clap::{Parser, Subcommand};
use identity_service::{App, Config, Overrides, SECTION, connect_db, notifier};
use plt_kernel::{
    binary::{Binary, ConfigCommand},
    lifecycle::shutdown_signal,
    notify::MailReader,
    telemetry,
};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "identity-service", version, about = "plt identity service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC and HTTP on identity.listen (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// The development mail outbox.
    Mail {
        #[command(subcommand)]
        command: MailCommand,
    },
}

#[derive(Subcommand)]
enum MailCommand {
    /// List the mail written to the outbox, oldest first.
    List,
}

const BINARY: Binary = Binary::new("identity-service");

/// mimalloc: glibc's malloc contends between worker threads under load (freeing on one
/// thread what another allocated).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match BINARY.config(SECTION, |cfg: &Config| {
        cfg.source
            .section::<plt_registry::config::RegistryConfig>("registry")
            .map(drop)
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
        Command::Mail {
            command: MailCommand::List,
        } => {
            let mails = notifier(&cfg).list()?;
            if mails.is_empty() {
                println!("(no mail in {})", cfg.kernel.notifier.outbox_dir.display());
            }
            for m in mails {
                println!(
                    "--- {} {}\nFrom: {}\nTo: {}\nSubject: {}\n\n{}",
                    m.created_at.to_rfc3339(),
                    m.id,
                    m.from,
                    m.to,
                    m.subject,
                    m.body
                );
            }
            Ok(())
        }
        Command::Migrate => {
            telemetry::init(&cfg.kernel.log);
            let db = connect_db(&cfg, SECTION).await?;
            tracing::info!(backend = db.backend(), "migrations applied");
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
