//! The authz-service binary: serve, migrate, grant or revoke a role, print config.

use authz_service::{
    App, Config, Overrides, SECTION, audit_client, build_core, connect_db, core::CLI_ACTOR,
};
use clap::{Parser, Subcommand};
use plt_kernel::{
    binary::{Binary, ConfigCommand},
    lifecycle::shutdown_signal,
    telemetry,
};
use std::process::ExitCode;
use uuid::Uuid;

#[derive(Parser)]
#[command(name = "authz-service", version, about = "plt authz service")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve gRPC and HTTP on authz.listen (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Grant a role to a user (e.g. the first administrator: `grant <user-id> admin`).
    /// Idempotent; audited with actor `authz-service-cli`.
    Grant { user_id: String, role: String },
    /// Revoke a role from a user. Idempotent; audited.
    Revoke { user_id: String, role: String },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

const BINARY: Binary = Binary::new("authz-service");

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

async fn change(cfg: Config, user_id: &str, role: &str, grant: bool) -> anyhow::Result<ExitCode> {
    let Ok(user) = Uuid::parse_str(user_id.trim()) else {
        eprintln!("authz-service: invalid user id {user_id:?}: must be a UUID");
        return Ok(ExitCode::from(2));
    };
    // Logs (an undelivered audit record among them) go to stderr; stdout is the answer.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cfg.kernel.log.level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let db = connect_db(&cfg, SECTION).await?;
    let (_, registry) = authz_service::registry(&cfg, None)?;
    let core = build_core(&cfg, &db, audit_client(&cfg, registry).await?, None).await?;
    let result = if grant {
        core.grant_as(CLI_ACTOR, user, role, "cli").await
    } else {
        core.revoke_as(CLI_ACTOR, user, role, "cli").await
    };
    let outcome = match result {
        Ok(changed) => {
            let verb = if grant { "granted" } else { "revoked" };
            if changed {
                println!("{verb} {role} {} {user}", if grant { "to" } else { "from" });
            } else {
                println!(
                    "unchanged: {user} {} {role}",
                    if grant {
                        "already holds"
                    } else {
                        "does not hold"
                    }
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authz-service: {e}");
            ExitCode::from(2)
        }
    };
    // Running instances pick the change up within authz.staleness_bound.
    let audit = core.audit();
    if !audit.flush(cfg.service.audit.timeout).await {
        eprintln!(
            "authz-service: warning: the audit service did not take the record; it was written to the log instead"
        );
    }
    audit.shutdown(std::time::Duration::ZERO).await;
    db.close().await;
    Ok(outcome)
}

async fn run(command: Command, cfg: Config) -> anyhow::Result<ExitCode> {
    match command {
        Command::Config { command } => Ok(command.run(&cfg)),
        Command::Migrate => {
            telemetry::init(&cfg.kernel.log);
            connect_db(&cfg, SECTION).await?.close().await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Grant { user_id, role } => change(cfg, &user_id, &role, true).await,
        Command::Revoke { user_id, role } => change(cfg, &user_id, &role, false).await,
        Command::Serve => {
            telemetry::init(&cfg.kernel.log);
            let app = App::build(&cfg, Overrides::default()).await?;
            app.run(shutdown_signal()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
