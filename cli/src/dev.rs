//! `plt dev`: the whole platform on one machine with embedded defaults — every service on its
//! own port with its own SQLite file under the data directory, the development mail outbox,
//! an in-memory registry (one process) or the static one (`--processes`), and a bootstrap
//! admin created on first start. Services reach each other only through the client factory
//! over loopback gRPC, never by in-process calls, in both modes.

use anyhow::Context as _;
use api_gateway::ApiGateway;
use audit_service::Audit;
use auth_service::Auth;
use authz_service::Authz;
use identity_service::Identity;
use plt_contracts::{
    ErrorCode, RequestContext,
    identity::{IdentityServiceClient, NewUser, grpc::IdentityGrpcClient},
};
use plt_kernel::{
    Secret,
    config::ConfigSource,
    lifecycle::shutdown_signal,
    notify::{MailReader, OutboxNotifier},
    telemetry,
};
use plt_registry::{ServiceRegistry, memory::MemoryRegistry};
use plt_runtime::{Overrides, load_config, start};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Instant,
};
use tokio::sync::watch;
use uuid::Uuid;

/// How `plt dev` runs.
#[derive(Debug, Clone)]
pub struct DevArgs {
    pub data_dir: PathBuf,
    /// Each service in its own OS process (`plt serve <service>`), found through the static
    /// registry on the configured ports.
    pub processes: bool,
    pub admin_email: String,
    /// Generated (and printed once) when not given.
    pub admin_password: Option<Secret<String>>,
    /// Instances of a feature service beyond the first (`("billing", 2)`: one more).
    pub replicas: Vec<(String, u32)>,
}

/// The configuration every service of `plt dev` reads: the usual layers, with the data
/// directory and the mail outbox under `data_dir`.
pub fn source(data_dir: Option<&Path>) -> ConfigSource {
    // `PLT_DEV_*` (this command's own options) are not configuration: the loader ignores
    // them (`plt_kernel::config::is_reserved_var`), here and in every service binary.
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

/// The token of the newest verification mail to `to` in the outbox.
fn token_from_outbox(outbox: &OutboxNotifier, to: &str) -> Option<String> {
    let mail = outbox.latest_to(to).ok()??;
    plt_contracts::identity::token_in_mail(&mail.body).map(str::to_owned)
}

/// The bootstrap admin as `plt dev` found or created it.
pub(crate) struct Admin {
    pub id: Uuid,
    pub email: String,
    /// Set only when this start created the account.
    pub password: Option<Secret<String>>,
}

fn generated_password() -> anyhow::Result<Secret<String>> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("generating a password: {e}"))?;
    use base64::Engine as _;
    Ok(Secret::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
    ))
}

/// The file in the data directory where `plt dev` keeps the bootstrap admin's id and
/// e-mail (identity answers user lookups only to callers holding a permission, so plt dev
/// remembers whom it created rather than asking).
const ADMIN_FILE: &str = "bootstrap-admin.json";

/// Finds the admin account created by an earlier start (recorded in the data directory),
/// or creates it in identity (at `identity`) and verifies its address from the development
/// outbox. Holding role `admin` is authz's bootstrap configuration's job.
pub(crate) async fn ensure_admin(
    identity: SocketAddr,
    data_dir: &Path,
    args: &DevArgs,
) -> anyhow::Result<Admin> {
    let client = IdentityGrpcClient::connect_lazy(&format!("http://{identity}"))
        .map_err(|e| anyhow::anyhow!("identity client: {e}"))?;
    let ctx = RequestContext::new().with_request_id("plt-dev-bootstrap");
    let file = data_dir.join(ADMIN_FILE);
    if let Ok(bytes) = std::fs::read(&file) {
        let known: serde_json::Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}", file.display()))?;
        if known["email"]
            .as_str()
            .is_some_and(|e| e.eq_ignore_ascii_case(&args.admin_email))
            && let Some(id) = known["id"].as_str().and_then(|i| i.parse().ok())
        {
            return Ok(Admin {
                id,
                email: args.admin_email.clone(),
                password: None,
            });
        }
    }
    let password = match &args.admin_password {
        Some(p) => p.clone(),
        None => generated_password()?,
    };
    let user = client
        .create_user(
            &ctx,
            NewUser {
                email: args.admin_email.clone(),
                password: password.clone(),
                display_name: "Administrator".into(),
            },
        )
        .await
        .map_err(|e| {
            if e.code == ErrorCode::AlreadyExists {
                anyhow::anyhow!(
                    "{} exists in identity but is not the admin this data directory recorded \
                     ({}): choose another --admin-email or start with a fresh --data-dir",
                    args.admin_email,
                    file.display()
                )
            } else {
                anyhow::anyhow!("creating the bootstrap admin {}: {e}", args.admin_email)
            }
        })?;
    std::fs::write(
        &file,
        serde_json::json!({"id": user.id, "email": user.email}).to_string(),
    )
    .with_context(|| format!("writing {}", file.display()))?;
    let outbox = OutboxNotifier::new(data_dir.join("mail"), "");
    if let Some(token) = token_from_outbox(&outbox, &user.email) {
        client
            .verify_email(&ctx, &token)
            .await
            .map_err(|e| anyhow::anyhow!("verifying the bootstrap admin's address: {e}"))?;
    }
    Ok(Admin {
        id: user.id,
        email: user.email,
        password: Some(password),
    })
}

pub(crate) struct Banner {
    pub started: Instant,
    pub gateway: SocketAddr,
    pub services: Vec<(String, SocketAddr)>,
    pub admin: Admin,
    pub data_dir: PathBuf,
    pub processes: bool,
}

impl Banner {
    pub fn print(&self) {
        let mut out = format!(
            "\nplt dev is up in {} ms{}\n  gateway   http://{}  (the public API under /api; OpenAPI at /openapi.json)\n",
            self.started.elapsed().as_millis(),
            if self.processes {
                " (one process per service)"
            } else {
                ""
            },
            self.gateway
        );
        for (name, addr) in &self.services {
            out.push_str(&format!("  {name:<9} http://{addr}  (gRPC and HTTP)\n"));
        }
        match &self.admin.password {
            Some(p) => out.push_str(&format!(
                "  admin     {} / {}  (role admin; created now, the password is not shown again)\n",
                self.admin.email,
                p.expose()
            )),
            None => out.push_str(&format!(
                "  admin     {}  (role admin; created on an earlier start)\n",
                self.admin.email
            )),
        }
        out.push_str(&format!(
            "  data      {}  (SQLite, one file per service)\n  mail      {}  (read with: plt mail list --data-dir {})\nCtrl-C stops everything.\n",
            self.data_dir.display(),
            self.data_dir.join("mail").display(),
            self.data_dir.display()
        ));
        println!("{out}");
    }
}

pub async fn dev(args: DevArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    if args.processes {
        return crate::processes::run(args, data_dir).await;
    }
    // Feature services (crates declaring `[package.metadata.plt] service`), built first.
    let features = crate::features::discover()?;
    let exes = crate::features::build(&features)?;
    let order = crate::features::start_order(&features, &exes)?;
    let started = Instant::now();
    let mut s = source(Some(&data_dir));
    // A feature service's own variables (`PLT_BILLING__PERIOD`) are its own: they reach its
    // process (which inherits this environment), not the core services' loaders, which would
    // refuse a section they do not know.
    s.vars.retain(|(k, _)| {
        !features.iter().any(|f| {
            k.starts_with(&format!(
                "PLT_{}__",
                f.service.to_uppercase().replace('-', "_")
            ))
        })
    });
    let identity_cfg = load_config::<Identity>(s.clone())?;
    let mut auth_cfg = load_config::<Auth>(s.clone())?;
    let audit_cfg = load_config::<Audit>(s.clone())?;
    let mut authz_cfg = load_config::<Authz>(s.clone())?;
    let mut gateway_cfg = load_config::<ApiGateway>(s.clone())?;
    // One process, five services: each exports its spans under its own service.name.
    let telemetry = telemetry::init(
        &identity_cfg.kernel,
        &[
            "plt-dev",
            <ApiGateway as plt_runtime::Service>::MANIFEST.binary,
            <Auth as plt_runtime::Service>::MANIFEST.binary,
            <Identity as plt_runtime::Service>::MANIFEST.binary,
            <Authz as plt_runtime::Service>::MANIFEST.binary,
            <Audit as plt_runtime::Service>::MANIFEST.binary,
        ],
    );
    for f in &features {
        // Its development credential, and its announced routes served by the gateway.
        auth_cfg.service.service_accounts.insert(
            f.service.clone(),
            Secret::new(plt_client::development_secret(&f.service)),
        );
        gateway_cfg
            .service
            .discovery
            .services
            .push(f.service.clone());
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let stop = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    // One in-memory registry for the process: each service registers the port it really got
    // and finds the others there, then calls them over loopback gRPC. With feature services
    // (other processes), a registry they can reach too: the Consul agent API, served here.
    let (registry, agent): (Arc<dyn ServiceRegistry>, Option<String>) = if features.is_empty() {
        (Arc::new(MemoryRegistry::new()), None)
    } else {
        let (_agent, url) = plt_registry::consul::testserver::ConsulTestServer::start()
            .await
            .context("starting the development registry")?;
        (
            Arc::new(plt_registry::consul::ConsulRegistry::new(
                plt_kernel::tls::http_client(),
                &url,
            )),
            Some(url),
        )
    };
    // Auth first: the others verify tokens (users' and services') against its keys, fetched
    // from where it really listens. Its identity client finds identity through the registry
    // on first use.
    // One embedded bus for the platform of this command, unless `events.backend` is kafka:
    // every service publishes and consumes on it.
    let events: plt_events::EventsConfig = auth_cfg.source.section("events")?;
    let bus: Option<Arc<dyn plt_events::Bus>> = match events.backend {
        plt_events::config::Backend::Kafka => None,
        _ => Some(Arc::new(plt_events::memory::MemoryBus::new())),
    };
    // Feature services run as processes: they reach this bus through its bridge on loopback.
    let bridge = match (&bus, &agent) {
        (Some(bus), Some(_)) => {
            let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .context("binding the event bus bridge")?;
            let url = format!("http://{}", listener.local_addr()?);
            let app = plt_events::bridge::routes(bus.clone());
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "the event bus bridge stopped");
                }
            });
            Some(url)
        }
        _ => None,
    };
    let shared = Overrides {
        registry: Some(registry.clone()),
        events: bus,
        ..Default::default()
    };
    let auth = start_marked::<Auth>(auth_cfg, shared.clone())
        .await
        .context("starting auth-service")?;
    let auth_addr = auth.local_addr();
    let jwks = || -> Arc<dyn plt_authn::JwksSource> {
        Arc::new(plt_authn::HttpJwksSource::new(
            plt_kernel::tls::http_client(),
            format!("http://{auth_addr}/.well-known/jwks.json"),
        ))
    };
    let feed = format!("http://{auth_addr}{}", plt_authn::revocation::FEED_PATH);
    let identity = start_marked::<Identity>(
        identity_cfg,
        Overrides {
            jwks: Some(jwks()),
            revocation_feed: Some(feed.clone()),
            ..shared.clone()
        },
    )
    .await
    .context("starting identity-service")?;
    let identity_addr = identity.local_addr();
    let mut declared = vec![identity.permissions_registered()];
    let mut tasks = vec![
        tokio::spawn(plt_kernel::trace::marked(
            Some(<Identity as plt_runtime::Service>::MANIFEST.binary),
            identity.run(stop(stop_rx.clone())),
        )),
        tokio::spawn(plt_kernel::trace::marked(
            Some(<Auth as plt_runtime::Service>::MANIFEST.binary),
            auth.run(stop(stop_rx.clone())),
        )),
    ];
    let admin = ensure_admin(identity_addr, &data_dir, &args).await?;
    authz_cfg
        .service
        .bootstrap_admins
        .push(admin.id.to_string());
    let audit = start_marked::<Audit>(
        audit_cfg,
        Overrides {
            jwks: Some(jwks()),
            revocation_feed: Some(feed.clone()),
            ..shared.clone()
        },
    )
    .await
    .context("starting audit-service")?;
    let audit_addr = audit.local_addr();
    declared.push(audit.permissions_registered());
    // authz sends its audit records to audit through the registry like every other call.
    let authz = start_marked::<Authz>(
        authz_cfg,
        Overrides {
            jwks: Some(jwks()),
            revocation_feed: Some(feed.clone()),
            ..shared.clone()
        },
    )
    .await
    .context("starting authz-service")?;
    let authz_addr = authz.local_addr();
    let gateway = start_marked::<ApiGateway>(
        gateway_cfg,
        Overrides {
            jwks: Some(jwks()),
            revocation_feed: Some(feed.clone()),
            ..shared.clone()
        },
    )
    .await
    .context("starting api-gateway")?;
    let gateway_addr = gateway.local_addr();
    tasks.push(tokio::spawn(plt_kernel::trace::marked(
        Some(<Audit as plt_runtime::Service>::MANIFEST.binary),
        audit.run(stop(stop_rx.clone())),
    )));
    tasks.push(tokio::spawn(plt_kernel::trace::marked(
        Some(<Authz as plt_runtime::Service>::MANIFEST.binary),
        authz.run(stop(stop_rx.clone())),
    )));
    tasks.push(tokio::spawn(plt_kernel::trace::marked(
        Some(<ApiGateway as plt_runtime::Service>::MANIFEST.binary),
        gateway.run(stop(stop_rx.clone())),
    )));
    // Services declare their permissions to authz as it comes up; the platform is ready for
    // roles naming them once that happened.
    if tokio::time::timeout(
        std::time::Duration::from_secs(10),
        futures_util::future::join_all(declared),
    )
    .await
    .is_err()
    {
        tracing::warn!("services have not declared their permissions to authz yet; still trying");
    }
    let mut running = Vec::new();
    if let Some(agent) = &agent {
        let mut env: Vec<(String, String)> = s
            .vars
            .iter()
            .filter(|(k, _)| k == "PLT_DATABASE__DATA_DIR" || k == "PLT_NOTIFIER__OUTBOX_DIR")
            .cloned()
            .collect();
        if let Some(url) = &bridge {
            env.push(("PLT_EVENTS__BACKEND".into(), "bridge".into()));
            env.push(("PLT_EVENTS__BRIDGE__URL".into(), url.clone()));
        }
        for (f, exe) in order.iter().map(|&i| (&features[i], &exes[i])) {
            let n = args
                .replicas
                .iter()
                .find(|(s, _)| *s == f.service)
                .map_or(1, |(_, n)| *n);
            for instance in 0..n {
                let mut env = env.clone();
                if instance > 0 {
                    // Replicas listen on any free port; they register the one they got.
                    env.push((
                        format!("PLT_{}__LISTEN", f.service.to_uppercase().replace('-', "_")),
                        "127.0.0.1:0".into(),
                    ));
                }
                let others: Vec<SocketAddr> = running
                    .iter()
                    .filter(|r: &&crate::features::Running| r.feature.service == f.service)
                    .map(|r| r.addr)
                    .collect();
                match crate::features::spawn(f, exe, agent, &registry, auth_addr, &env, &others)
                    .await
                {
                    Ok(r) => running.push(r),
                    Err(e) => {
                        let _ = crate::features::stop(running).await;
                        let _ = stop_tx.send(true);
                        return Err(e);
                    }
                }
            }
        }
        for (name, _) in &args.replicas {
            if !features.iter().any(|f| f.service == *name) {
                tracing::warn!(service = %name, "--replicas names no feature service of this workspace");
            }
        }
    }
    let mut services: Vec<(String, SocketAddr)> = vec![
        ("identity".into(), identity_addr),
        ("auth".into(), auth_addr),
        ("authz".into(), authz_addr),
        ("audit".into(), audit_addr),
    ];
    services.extend(running.iter().map(|r| (r.feature.service.clone(), r.addr)));
    Banner {
        started,
        gateway: gateway_addr,
        services,
        admin,
        data_dir,
        processes: false,
    }
    .print();
    shutdown_signal().await;
    let features_stopped = crate::features::stop(running).await;
    let _ = stop_tx.send(true);
    features_stopped?;
    let stopped = futures_util::future::join_all(tasks).await;
    telemetry.shutdown();
    for r in stopped {
        r.context("service task")??;
    }
    Ok(())
}

/// `start::<S>` with the spans of its start-up and of the tasks it spawns marked as `S`'s
/// (one process, several services: each exports under its own name).
async fn start_marked<S: plt_runtime::Service>(
    cfg: plt_kernel::Loaded<S::Config>,
    overrides: Overrides,
) -> anyhow::Result<plt_runtime::Running> {
    plt_kernel::trace::marked(Some(S::MANIFEST.binary), start::<S>(cfg, overrides)).await
}
