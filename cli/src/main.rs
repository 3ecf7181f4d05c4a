//! plt: the development and administration command. `plt dev` runs every core service in
//! one process, each on its own port with its own database file, talking to each other over
//! loopback gRPC through the contract clients exactly as separate processes would.

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use plt_kernel::{
    config::ConfigSource,
    lifecycle::shutdown_signal,
    notify::{MailReader, OutboxNotifier},
    telemetry,
};
use plt_registry::{ServiceRegistry, memory::MemoryRegistry};
use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Instant};
use tokio::sync::watch;

#[derive(Parser)]
#[command(name = "plt", version, about = "plt platform command")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the platform for development: identity, auth, authz and audit, SQLite files and the mail outbox
    /// under the data directory, no external servers.
    Dev {
        /// Where SQLite files and the mail outbox go.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// The development mail outbox.
    Mail {
        #[command(subcommand)]
        command: MailCommand,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum MailCommand {
    /// List the mail in the outbox, oldest first.
    List {
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration of a service, secrets redacted.
    Print {
        /// identity, auth, authz or audit
        service: String,
    },
}

fn source(data_dir: Option<&PathBuf>) -> ConfigSource {
    let mut s = ConfigSource::from_env();
    if let Some(dir) = data_dir {
        s.vars
            .push(("PLT_DATABASE__DATA_DIR".into(), dir.display().to_string()));
        s.vars.push((
            "PLT_NOTIFIER__OUTBOX_DIR".into(),
            dir.join("mail").display().to_string(),
        ));
    }
    s
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Cli::parse().command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("plt: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dev { data_dir } => dev(data_dir).await,
        Command::Mail {
            command: MailCommand::List { data_dir },
        } => {
            let outbox = OutboxNotifier::new(data_dir.join("mail"), "");
            let mails = outbox.list()?;
            if mails.is_empty() {
                println!("(no mail in {})", outbox.dir().display());
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
        Command::Config {
            command: ConfigCommand::Print { service },
        } => {
            let s = source(None);
            let yaml = match service.as_str() {
                "identity" => s
                    .load::<identity_service::config::IdentityConfig>("identity")?
                    .to_yaml(),
                "auth" => s
                    .load::<auth_service::config::AuthConfig>("auth")?
                    .to_yaml(),
                other => anyhow::bail!("unknown service {other:?}: identity or auth"),
            };
            print!("{yaml}");
            Ok(())
        }
    }
}

async fn dev(data_dir: PathBuf) -> anyhow::Result<()> {
    let started = Instant::now();
    let s = source(Some(&data_dir));
    let identity_cfg: identity_service::Config = s.load(identity_service::SECTION)?;
    let auth_cfg: auth_service::Config = s.load(auth_service::SECTION)?;
    let audit_cfg: audit_service::Config = s.load(audit_service::SECTION)?;
    let authz_cfg: authz_service::Config = s.load(authz_service::SECTION)?;
    telemetry::init(&identity_cfg.kernel.log);

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // One in-memory registry for the process: each service registers the port it really got
    // and finds the others there, then calls them over loopback gRPC.
    let registry: Arc<dyn ServiceRegistry> = Arc::new(MemoryRegistry::new());
    // Auth first: the others verify tokens (users' and services') against its keys, fetched
    // from where it really listens. Its identity client finds identity through the registry
    // on first use.
    let auth = auth_service::App::build(
        &auth_cfg,
        auth_service::Overrides {
            registry: Some(registry.clone()),
            ..Default::default()
        },
    )
    .await
    .context("starting auth-service")?;
    let auth_addr = auth.local_addr();
    let jwks = || -> Arc<dyn plt_authn::JwksSource> {
        Arc::new(plt_authn::HttpJwksSource::new(
            reqwest::Client::new(),
            format!("http://{auth_addr}/.well-known/jwks.json"),
        ))
    };
    let identity = identity_service::App::build(
        &identity_cfg,
        identity_service::Overrides {
            registry: Some(registry.clone()),
            jwks: Some(jwks()),
            ..Default::default()
        },
    )
    .await
    .context("starting identity-service")?;
    let identity_addr = identity.local_addr();
    let audit = audit_service::App::build(
        &audit_cfg,
        audit_service::Overrides {
            registry: Some(registry.clone()),
            jwks: Some(jwks()),
            ..Default::default()
        },
    )
    .await
    .context("starting audit-service")?;
    let audit_addr = audit.local_addr();
    // authz sends its audit records to audit through the registry like every other call.
    let authz = authz_service::App::build(
        &authz_cfg,
        authz_service::Overrides {
            registry: Some(registry.clone()),
            jwks: Some(jwks()),
            ..Default::default()
        },
    )
    .await
    .context("starting authz-service")?;
    let authz_addr = authz.local_addr();
    let tasks = vec![
        tokio::spawn(authz.run(stop(stop_rx.clone()))),
        tokio::spawn(identity.run(stop(stop_rx.clone()))),
        tokio::spawn(auth.run(stop(stop_rx.clone()))),
        tokio::spawn(audit.run(stop(stop_rx.clone()))),
    ];
    println!(
        "\nplt dev is up in {} ms\n  identity  http://{identity_addr}  (gRPC and HTTP)\n  auth      http://{auth_addr}  (gRPC and HTTP; JWKS at /.well-known/jwks.json)\n  authz     http://{authz_addr}  (gRPC and HTTP)\n  audit     http://{audit_addr}  (gRPC and HTTP)\n  data      {}  (SQLite, one file per service)\n  mail      {}  (read with: cargo run -p plt -- mail list)\nCtrl-C stops everything.\n",
        started.elapsed().as_millis(),
        data_dir.display(),
        data_dir.join("mail").display(),
    );
    shutdown_signal().await;
    let _ = stop_tx.send(true);
    for r in futures_util::future::join_all(tasks).await {
        r.context("service task")??;
    }
    Ok(())
}
