//! The auth-service binary: `serve` (the default), `migrate`, `config print` (the
//! runtime's), and `keys rotate` / `keys list`.

use auth_service::{Auth, Config, SECTION, connect_db, key_ring};
use clap::Subcommand;
use std::process::ExitCode;

#[derive(Subcommand)]
enum Own {
    /// Signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Rotate now: the next key starts signing, the active one starts retiring.
    Rotate,
    /// List the keys with their state.
    List,
}

/// mimalloc: glibc's malloc contends between worker threads under load (freeing on one
/// thread what another allocated).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    plt_runtime::main_with::<Auth, Own, _>(|Own::Keys { command }, cfg| {
        Box::pin(keys(command, cfg))
    })
}

async fn keys(command: KeysCommand, cfg: Config) -> anyhow::Result<ExitCode> {
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
    Ok(ExitCode::SUCCESS)
}
