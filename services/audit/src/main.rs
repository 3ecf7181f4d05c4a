//! The audit-service binary: `serve` (the default), `migrate`, `config print` (the
//! runtime's), and `verify`, which walks the hash chain.

use audit_service::{Audit, Config, SECTION, connect_db, verify_chain};
use clap::Subcommand;
use std::process::ExitCode;

/// Exit code of `verify` when the chain is broken (2 is a configuration error).
const EXIT_BROKEN: u8 = 3;

#[derive(Subcommand)]
enum Own {
    /// Walk the whole hash chain; exit 0 if intact, 3 naming the first broken sequence.
    Verify {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// mimalloc: glibc's malloc contends between worker threads under load (freeing on one
/// thread what another allocated).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    plt_runtime::main_with::<Audit, Own, _>(|Own::Verify { json }, cfg| Box::pin(verify(json, cfg)))
}

async fn verify(json: bool, cfg: Config) -> anyhow::Result<ExitCode> {
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
