//! The identity-service binary: `serve` (the default), `migrate`, `config print` (the
//! runtime's), and `mail list`, the development outbox.

use clap::Subcommand;
use identity_service::{Config, Identity, outbox};
use plt_kernel::config::NotifierKind;
use std::process::ExitCode;

#[derive(Subcommand)]
enum Own {
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

/// mimalloc: glibc's malloc contends between worker threads under load (freeing on one
/// thread what another allocated).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    plt_runtime::main_with::<Identity, Own, _>(
        |Own::Mail {
             command: MailCommand::List,
         },
         cfg| { Box::pin(async move { list_mail(&cfg).map(|()| ExitCode::SUCCESS) }) },
    )
}

fn list_mail(cfg: &Config) -> anyhow::Result<()> {
    let n = &cfg.kernel.notifier;
    if n.kind != NotifierKind::Outbox {
        anyhow::bail!(
            "notifier.kind is smtp: mail is sent to {}:{}, not kept in an outbox",
            n.smtp.host,
            n.smtp.port
        );
    }
    print!("{}", outbox(cfg).listing()?);
    Ok(())
}
