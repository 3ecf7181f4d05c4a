//! authz-service: role-based access control — declared permissions, roles, user grants —
//! with decisions cached in process under a bounded staleness, admin calls authenticated by
//! access token and authorised by `authz.roles.manage`, and denials and changes audited
//! through a bounded retrying queue; over gRPC and HTTP/JSON on one port. `App::build` wires
//! everything explicitly so tests build exactly what the binary runs, on port 0.

pub mod audit;
pub mod cache;
pub mod config;
pub mod core;
pub mod store;

use crate::{
    audit::{AuditQueue, AuditQueueConfig},
    cache::Policy,
    config::AuthzConfig,
    core::{AuthzCore, SYSTEM_ACTOR},
};
use anyhow::Context as _;
use plt_authn::{HttpJwksSource, JwksSource, Verifier, VerifierConfig};
use plt_client::{ClientFactory, ClientsConfig, ServiceIdentityConfig};
use plt_contracts::{
    audit::AuditServiceClient,
    authz::{ADMIN_ROLE, AuthzServiceClient, grpc::AuthzGrpcServer},
};
use plt_db::{Db, Migrations};
use plt_kernel::{BoundHost, Loaded, ServiceHost};
use plt_registry::{Registration, ServiceRegistry, config::RegistryConfig};
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

/// The service's name in logs, metrics and the registry.
pub const SERVICE_NAME: &str = "authz-service";
/// The configuration section, and the database schema (PostgreSQL) or file (SQLite).
pub const SECTION: &str = "authz";

/// This service's migrations, one set per backend.
pub static MIGRATIONS: Migrations = plt_db::embed_migrations!();

pub type Config = Loaded<AuthzConfig>;

/// What tests (or an embedding process) may change from the configuration.
#[derive(Default)]
pub struct Overrides {
    /// Database schema / SQLite file name instead of `authz`.
    pub schema: Option<String>,
    /// Listen address instead of `authz.listen` (port 0 for tests).
    pub listen: Option<SocketAddr>,
    /// The audit client instead of the configured one (tests inject fakes).
    pub audit: Option<Arc<dyn AuditServiceClient>>,
    /// Where admin callers' token keys come from instead of `authz.auth.jwks_url`.
    pub jwks: Option<Arc<dyn JwksSource>>,
    /// The registry instead of the configured one (plt dev shares one in-memory registry).
    pub registry: Option<Arc<dyn ServiceRegistry>>,
}

/// Connects the database and applies migrations.
pub async fn connect_db(cfg: &Config, schema: &str) -> anyhow::Result<Db> {
    Ok(Db::open(&cfg.kernel.database, schema, MIGRATIONS).await?)
}

/// This service's audit client: audit found in `registry` and called through the client
/// factory (`clients.audit`), presenting authz's service tokens (`service_identity`).
pub async fn audit_client(
    cfg: &Config,
    registry: Arc<dyn ServiceRegistry>,
) -> anyhow::Result<Arc<dyn AuditServiceClient>> {
    let clients: ClientsConfig = cfg.source.section("clients")?;
    let identity: ServiceIdentityConfig = cfg.source.section("service_identity")?;
    let factory =
        ClientFactory::for_service(registry, SECTION, &cfg.kernel.env, &identity, &clients)
            .await
            .map_err(|e| anyhow::anyhow!("service clients: {e}"))?;
    factory
        .audit(&clients.get("audit"))
        .await
        .map_err(|e| anyhow::anyhow!("audit client: {e}"))
}

/// The configured registry, or `registry` when given.
pub fn registry(
    cfg: &Config,
    registry: Option<Arc<dyn ServiceRegistry>>,
) -> anyhow::Result<(RegistryConfig, Arc<dyn ServiceRegistry>)> {
    let reg_cfg: RegistryConfig = cfg.source.section("registry")?;
    let registry = match registry {
        Some(r) => r,
        None => reg_cfg.build(reqwest::Client::new())?,
    };
    Ok((reg_cfg, registry))
}

/// The verifier of admin callers' access tokens described by `authz.auth`.
pub fn verifier(cfg: &AuthzConfig, jwks: Option<Arc<dyn JwksSource>>) -> anyhow::Result<Verifier> {
    let source = match jwks {
        Some(s) => s,
        None => Arc::new(HttpJwksSource::new(
            reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            cfg.auth.jwks_url.clone(),
        )),
    };
    Ok(Verifier::new(
        VerifierConfig::new(&cfg.auth.issuer, &cfg.auth.audience),
        source,
    ))
}

pub fn audit_queue_config(cfg: &AuthzConfig) -> AuditQueueConfig {
    AuditQueueConfig {
        capacity: cfg.audit.queue_capacity,
        timeout: cfg.audit.timeout,
        initial_backoff: cfg.audit.retry_initial_backoff,
        max_backoff: cfg.audit.retry_max_backoff,
    }
}

/// Builds the core on `db`: declares the platform permissions and built-in roles, loads the
/// policy, starts the audit queue and grants `admin` to the bootstrap admins. No server and
/// no version poller (the command line uses this as is).
pub async fn build_core(
    cfg: &Config,
    db: &Db,
    audit: Arc<dyn AuditServiceClient>,
    jwks: Option<Arc<dyn JwksSource>>,
) -> anyhow::Result<Arc<AuthzCore>> {
    let s = &cfg.service;
    let store = store::for_db(db);
    AuthzCore::ensure_platform(store.as_ref())
        .await
        .context("declaring platform permissions and built-in roles")?;
    let policy = Policy::load(store.clone(), s.staleness_bound, s.cache.max_users)
        .await
        .context("loading the policy")?;
    let queue = AuditQueue::start(audit, audit_queue_config(s), SERVICE_NAME);
    let core = Arc::new(AuthzCore::new(store, policy, verifier(s, jwks)?, queue));
    for id in s.bootstrap_admin_ids() {
        let changed = core
            .grant_as(SYSTEM_ACTOR, id, ADMIN_ROLE, "bootstrap")
            .await
            .with_context(|| format!("granting admin to bootstrap admin {id}"))?;
        if changed {
            tracing::info!(user_id = %id, "bootstrap admin granted admin");
        }
    }
    Ok(core)
}

/// Publishes the cache and audit-queue counters at each `/metrics` render.
fn collector(core: Arc<AuthzCore>) -> plt_kernel::metrics::Collector {
    Arc::new(move || {
        let st = &core.policy().stats;
        let svc = SERVICE_NAME;
        for (result, n) in [
            ("hit", st.hits.load(Ordering::Relaxed)),
            ("miss", st.misses.load(Ordering::Relaxed)),
            ("bypass", st.bypassed.load(Ordering::Relaxed)),
        ] {
            metrics::counter!("authz_cache_lookups_total", "service" => svc, "result" => result)
                .absolute(n);
        }
        metrics::counter!("authz_cache_invalidations_total", "service" => svc)
            .absolute(st.invalidations.load(Ordering::Relaxed));
        metrics::gauge!("authz_policy_version", "service" => svc)
            .set(core.policy().known_version() as f64);
        metrics::gauge!("authz_audit_queue_pending", "service" => svc)
            .set(core.audit().pending() as f64);
        metrics::counter!("authz_audit_delivered_total", "service" => svc)
            .absolute(core.audit().delivered());
    })
}

/// The built service, bound to its port.
pub struct App {
    host: BoundHost,
    db: Db,
    core: Arc<AuthzCore>,
    poller: tokio::task::JoinHandle<()>,
    audit_grace: Duration,
    registration: Option<Registration>,
}

impl App {
    pub async fn build(cfg: &Config, overrides: Overrides) -> anyhow::Result<Self> {
        let schema = overrides.schema.unwrap_or_else(|| SECTION.to_owned());
        let db = connect_db(cfg, &schema).await?;
        tracing::info!(backend = db.backend(), schema = %schema, "database ready");
        let (reg_cfg, registry) = registry(cfg, overrides.registry)?;
        let audit = match overrides.audit {
            Some(a) => a,
            None => audit_client(cfg, registry.clone()).await?,
        };
        let core = build_core(cfg, &db, audit, overrides.jwks).await?;
        let poller = core.policy().spawn_poller(cfg.service.poll_interval());
        let contract: Arc<dyn AuthzServiceClient> = core.clone();
        let listen = overrides.listen.unwrap_or(cfg.service.listen);
        let host = ServiceHost::new(SERVICE_NAME, &cfg.kernel.server)
            .http(
                plt_contracts::authz::http::routes(contract.clone())
                    .fallback(plt_contracts::http_api::not_found_fallback),
            )
            .grpc(AuthzGrpcServer::new(contract))
            .reflection(plt_contracts::FILE_DESCRIPTOR_SET)
            .health_check(db.health_check())
            .metrics_collector(db.metrics_collector(SERVICE_NAME))
            .metrics_collector(collector(core.clone()))
            .bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        // Ready: database migrated, platform declared, policy loaded, port bound. Now others
        // may find us.
        let registration = plt_registry::register_service(
            registry.as_ref(),
            &reg_cfg,
            SECTION,
            env!("CARGO_PKG_VERSION"),
            host.local_addr(),
            [("routes".to_owned(), "/v1/authz".to_owned())].into(),
        )
        .await
        .context("registering in the service registry")?;
        tracing::info!(instance = registration.id(), "registered");
        Ok(Self {
            registration: Some(registration),
            host,
            db,
            core,
            poller,
            audit_grace: cfg
                .kernel
                .server
                .shutdown_timeout
                .min(Duration::from_secs(5)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.host.local_addr()
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The core, for in-process tests of the contract.
    pub fn core(&self) -> Arc<AuthzCore> {
        self.core.clone()
    }

    /// Serves until `shutdown`, then deregisters (so no new calls are routed here), drains
    /// in-flight requests, gives the audit queue a few seconds to deliver what it holds
    /// (logging what it cannot), and closes the pool.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let registration = self.registration.take();
        let result = self
            .host
            .run(plt_registry::deregister_after(shutdown, registration))
            .await;
        self.poller.abort();
        self.core.audit().shutdown(self.audit_grace).await;
        self.db.close().await;
        Ok(result?)
    }
}
