//! The identity-service binary: reads configuration, sets up logging, then serves, migrates,
//! prints the effective configuration, or lists the development mail outbox.

use clap::{Parser, Subcommand};
use identity_service::{App, Config, Overrides, SECTION, connect_db, notifier};
use plt_kernel::{config::ConfigSource, lifecycle::shutdown_signal, notify::MailReader, telemetry};
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
enum ConfigCommand {
    /// Print the effective configuration, secrets redacted.
    Print,
}

#[derive(Subcommand)]
enum MailCommand {
    /// List the mail written to the outbox, oldest first.
    List,
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
            eprintln!("identity-service: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = cfg
        .source
        .section::<plt_registry::config::RegistryConfig>("registry")
    {
        eprintln!("identity-service: {e}");
        return ExitCode::from(2);
    }
    match run(cli.command.unwrap_or(Command::Serve), cfg).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "identity-service failed");
            eprintln!("identity-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command, cfg: Config) -> anyhow::Result<()> {
    match command {
        Command::Config {
            command: ConfigCommand::Print,
        } => {
            print!("{}", cfg.to_yaml());
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
