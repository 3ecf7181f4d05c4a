//! plt: the development and administration command. `plt dev` runs the gateway and every
//! core service, each on its own port with its own database file, talking to each other over
//! loopback gRPC through the client factory — in one process, or one process per service
//! (`--processes`, each `plt serve <service>`).

mod dev;
mod features;
mod processes;
mod scaffold;

use clap::{Parser, Subcommand};
use plt_kernel::{
    Secret, config::ConfigSource, lifecycle::shutdown_signal, notify::OutboxNotifier, telemetry,
};
use std::{path::PathBuf, process::ExitCode};

#[derive(Parser)]
#[command(name = "plt", version, about = "plt platform command")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the platform for development: the gateway, identity, auth, authz and audit, SQLite
    /// files and the mail outbox under the data directory, no external servers.
    Dev {
        /// Where SQLite files and the mail outbox go.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Run each service as its own OS process instead of all in this one.
        #[arg(long)]
        processes: bool,
        /// The bootstrap admin's e-mail (created on first start with role admin).
        #[arg(long, env = "PLT_DEV_ADMIN_EMAIL", default_value = "admin@example.com")]
        admin_email: String,
        /// The bootstrap admin's password; generated and printed once when not given.
        #[arg(long, env = "PLT_DEV_ADMIN_PASSWORD", hide_env_values = true)]
        admin_password: Option<String>,
        /// More than one instance of a feature service (`billing=2`): the extra ones listen on
        /// any free port and share its database, as replicas of a deployment do.
        #[arg(long = "replicas", value_name = "SERVICE=N", value_parser = parse_replicas)]
        replicas: Vec<(String, u32)>,
    },
    /// Run one service in this process, as its own binary would (what `dev --processes`
    /// starts): identity, auth, authz, audit or gateway.
    Serve {
        service: String,
        /// Where SQLite files and the mail outbox go.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
    },
    /// The development mail outbox.
    Mail {
        #[command(subcommand)]
        command: MailCommand,
    },
    /// Generate a new part of the platform.
    New {
        #[command(subcommand)]
        command: NewCommand,
    },
    /// Configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum NewCommand {
    /// A feature service: services/<name> (core, store, migrations, tests) and
    /// services/<name>-contract (its .proto and what is generated from it). Run from the
    /// repository root; `plt dev` then runs it and the gateway routes /api/v1/<name>.
    Service {
        /// 2 to 30 of a-z and 0-9, starting with a letter (e.g. notes).
        name: String,
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

/// Runs service `S` from `source` exactly as its binary does (the runtime's one path).
async fn serve_one<S: plt_runtime::Service>(source: ConfigSource) -> anyhow::Result<()> {
    let cfg = plt_runtime::load_config::<S>(source)?;
    let telemetry = telemetry::init(&cfg.kernel, &[S::MANIFEST.binary]);
    let served = match plt_runtime::start::<S>(cfg, Default::default()).await {
        Ok(app) => app.run(shutdown_signal()).await,
        Err(e) => Err(e),
    };
    telemetry.shutdown();
    served
}

/// Runs one service until SIGTERM or Ctrl-C.
async fn serve(service: &str, data_dir: &std::path::Path) -> anyhow::Result<()> {
    let s = dev::source(Some(data_dir));
    match service {
        "identity" => serve_one::<identity_service::Identity>(s).await,
        "auth" => serve_one::<auth_service::Auth>(s).await,
        "authz" => serve_one::<authz_service::Authz>(s).await,
        "audit" => serve_one::<audit_service::Audit>(s).await,
        "gateway" => serve_one::<api_gateway::ApiGateway>(s).await,
        other => {
            // A feature service: its own binary, built and run in the foreground.
            let features = features::discover()?;
            let Some(f) = features.iter().find(|f| f.service == other) else {
                anyhow::bail!(
                    "unknown service {other:?}: identity, auth, authz, audit, gateway{}",
                    features
                        .iter()
                        .map(|f| format!(", {}", f.service))
                        .collect::<String>()
                )
            };
            let exe = features::build(std::slice::from_ref(f))?.remove(0);
            let status = tokio::process::Command::new(exe)
                .arg("serve")
                .envs(
                    s.vars
                        .iter()
                        .filter(|(k, _)| {
                            k.starts_with("PLT_DATABASE__") || k.starts_with("PLT_NOTIFIER__")
                        })
                        .cloned(),
                )
                .status()
                .await?;
            if status.success() {
                Ok(())
            } else {
                anyhow::bail!("{} exited with {status}", f.binary)
            }
        }
    }
}

/// mimalloc: glibc's malloc contends between worker threads under load (freeing on one
/// thread what another allocated).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// `billing=2` → ("billing", 2).
fn parse_replicas(s: &str) -> Result<(String, u32), String> {
    let (name, n) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected SERVICE=N, for example billing=2"))?;
    let n: u32 = n
        .parse()
        .ok()
        .filter(|n| (1..=8).contains(n))
        .ok_or_else(|| format!("{s:?}: N must be 1 to 8"))?;
    Ok((name.to_owned(), n))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Dev {
            data_dir,
            processes,
            admin_email,
            admin_password,
            replicas,
        } => {
            dev::dev(dev::DevArgs {
                data_dir,
                processes,
                admin_email,
                admin_password: admin_password.map(Secret::new),
                replicas,
            })
            .await
        }
        Command::Serve { service, data_dir } => serve(&service, &data_dir).await,
        Command::New {
            command: NewCommand::Service { name },
        } => {
            let root = std::env::current_dir()?;
            let dirs = scaffold::new_service(&root, &name)?;
            for d in &dirs {
                println!("created {}", d.strip_prefix(&root).unwrap_or(d).display());
            }
            println!(
                "\nNext:\n  cargo test -p {name}-service     # its contract over gRPC and HTTP, on SQLite (and PostgreSQL with PLT_TEST_POSTGRES_URL)\n  cargo run -p plt -- dev           # runs it with the platform; the gateway serves /api/v1/{name}\nEdit services/{name}-contract/proto/{name}.proto for its API and access rules, services/{name}/src/core.rs for its behaviour."
            );
            Ok(())
        }
        Command::Mail {
            command: MailCommand::List { data_dir },
        } => {
            let outbox = OutboxNotifier::new(data_dir.join("mail"), "");
            print!("{}", outbox.listing()?);
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Print { service },
        } => {
            let s = dev::source(None);
            use plt_runtime::load_config;
            let yaml = match service.as_str() {
                "identity" => load_config::<identity_service::Identity>(s)?.to_yaml(),
                "auth" => load_config::<auth_service::Auth>(s)?.to_yaml(),
                "authz" => load_config::<authz_service::Authz>(s)?.to_yaml(),
                "audit" => load_config::<audit_service::Audit>(s)?.to_yaml(),
                "gateway" => load_config::<api_gateway::ApiGateway>(s)?.to_yaml(),
                other => anyhow::bail!(
                    "unknown service {other:?}: identity, auth, authz, audit or gateway"
                ),
            };
            print!("{yaml}");
            Ok(())
        }
    }
}
