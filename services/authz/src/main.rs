//! The authz-service binary: `serve` (the default), `migrate`, `config print` (the
//! runtime's), and `grant` / `revoke` a role.

use authz_service::{Authz, Config, SECTION, build_core, connect_db, core::CLI_ACTOR};
use clap::Subcommand;
use std::process::ExitCode;
use uuid::Uuid;

#[derive(Subcommand)]
enum Own {
    /// Grant a role to a user (e.g. the first administrator: `grant <user-id> admin`).
    /// Idempotent; audited with actor `authz-service-cli`.
    Grant { user_id: String, role: String },
    /// Revoke a role from a user. Idempotent; audited.
    Revoke { user_id: String, role: String },
}

/// mimalloc: glibc's malloc contends between worker threads under load (freeing on one
/// thread what another allocated).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    plt_runtime::main_with::<Authz, Own, _>(|own, cfg| {
        Box::pin(async move {
            match own {
                Own::Grant { user_id, role } => change(cfg, &user_id, &role, true).await,
                Own::Revoke { user_id, role } => change(cfg, &user_id, &role, false).await,
            }
        })
    })
}

async fn change(cfg: Config, user_id: &str, role: &str, grant: bool) -> anyhow::Result<ExitCode> {
    let Ok(user) = Uuid::parse_str(user_id.trim()) else {
        eprintln!("authz-service: invalid user id {user_id:?}: must be a UUID");
        return Ok(ExitCode::from(2));
    };
    // Logs go to stderr; stdout is the answer.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_new(&cfg.kernel.log.level)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let db = connect_db(&cfg, SECTION).await?;
    let verifier = cfg.service.auth.verifier(None)?;
    let core = build_core(&cfg, &db, verifier).await?;
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
    // Running instances pick the change up within authz.staleness_bound; its audit record
    // committed with it into the outbox, which a running instance's relay delivers.
    db.close().await;
    Ok(outcome)
}
