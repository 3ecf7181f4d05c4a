//! audit-service: an append-only, hash-chained log of security-relevant actions, served over
//! gRPC and HTTP/JSON on one port. `App::build` wires everything explicitly so tests build
//! exactly what the binary runs, on port 0.
//!
//! - [`chain`]: the canonical form of an entry, its hash, and verification.
//! - [`writer`]: the single writer that owns the chain head, with group commit.
//! - [`store`]: `AuditStore` on PostgreSQL and SQLite (append-only tables).
//! - [`core`]: the contract implementation (validation, queries, verify).

pub mod chain;
pub mod config;
pub mod core;
pub mod guard;
pub mod store;
pub mod validate;
pub mod writer;

use crate::{config::AuditConfig, core::AuditCore, writer::Writer};
use anyhow::Context as _;
use plt_contracts::audit::{AuditServiceClient, VerifyReport, grpc::AuditGrpcServer};
use plt_db::{Db, Migrations};
use plt_kernel::{BoundHost, Loaded, ServiceHost};
use plt_registry::{Registration, ServiceRegistry, config::RegistryConfig};
use std::{net::SocketAddr, sync::Arc};

/// The service's name in logs, metrics and the registry.
pub const SERVICE_NAME: &str = "audit-service";
/// The configuration section, and the database schema (PostgreSQL) or file (SQLite).
pub const SECTION: &str = "audit";

/// This service's migrations, one set per backend.
pub static MIGRATIONS: Migrations = plt_db::embed_migrations!();

pub type Config = Loaded<AuditConfig>;

/// What tests (or an embedding process) may change from the configuration.
#[derive(Default)]
pub struct Overrides {
    /// Database schema / SQLite file name instead of `audit`.
    pub schema: Option<String>,
    /// Listen address instead of `audit.listen` (port 0 for tests).
    pub listen: Option<SocketAddr>,
    /// The registry instead of the configured one (plt dev shares one in-memory registry).
    pub registry: Option<Arc<dyn ServiceRegistry>>,
    /// The authz client instead of one from the registry (tests inject fakes).
    pub authz: Option<Arc<dyn plt_contracts::authz::AuthzServiceClient>>,
    /// Where access-token keys come from instead of `audit.auth.jwks_url` (tests).
    pub jwks: Option<Arc<dyn plt_authn::JwksSource>>,
}

/// Connects the database and applies migrations.
pub async fn connect_db(cfg: &Config, schema: &str) -> anyhow::Result<Db> {
    Ok(Db::open(&cfg.kernel.database, schema, MIGRATIONS).await?)
}

/// Walks the whole chain of the log in `db` (what `audit-service verify` runs). Without the
/// running writer, a deleted tail is not seen; everything else is.
pub async fn verify_chain(db: &Db) -> anyhow::Result<VerifyReport> {
    chain::verify(store::for_db(db).as_ref(), 0)
        .await
        .context("reading the audit log")
}

/// The built service, bound to its port.
pub struct App {
    host: BoundHost,
    db: Db,
    core: Arc<dyn AuditServiceClient>,
    writer: Writer,
    registration: Option<Registration>,
}

impl App {
    pub async fn build(cfg: &Config, overrides: Overrides) -> anyhow::Result<Self> {
        let schema = overrides.schema.unwrap_or_else(|| SECTION.to_owned());
        let db = connect_db(cfg, &schema).await?;
        tracing::info!(backend = db.backend(), schema = %schema, "database ready");
        let store = store::for_db(&db);
        let (writer, handle) = Writer::start(
            store.clone(),
            cfg.service.max_batch,
            cfg.service.queue_capacity,
            SERVICE_NAME,
        )
        .await
        .context("loading the head of the audit chain")?;
        tracing::info!(head = handle.committed(), "audit chain head loaded");
        let verifier = cfg.service.auth.verifier(overrides.jwks)?;
        let core: Arc<dyn AuditServiceClient> = Arc::new(AuditCore::new(
            store,
            handle,
            cfg.service.clone(),
            plt_authn::ServiceGuard::new(verifier.clone(), SECTION),
        ));
        let reg_cfg: RegistryConfig = cfg.source.section("registry")?;
        let registry = match overrides.registry {
            Some(r) => r,
            None => reg_cfg.build(reqwest::Client::new())?,
        };
        // What the network sees: the core behind access control (unless switched off).
        let served: Arc<dyn AuditServiceClient> = if cfg.service.access_control {
            let authz = match overrides.authz {
                Some(a) => a,
                None => {
                    let clients: plt_client::ClientsConfig = cfg.source.section("clients")?;
                    let identity: plt_client::ServiceIdentityConfig =
                        cfg.source.section("service_identity")?;
                    plt_client::ClientFactory::for_service(
                        registry.clone(),
                        SECTION,
                        &cfg.kernel.env,
                        &identity,
                        &clients,
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("service clients: {e}"))?
                    .authz(&clients.get("authz"))
                    .await
                    .map_err(|e| anyhow::anyhow!("authz client: {e}"))?
                }
            };
            Arc::new(guard::Guarded::new(core.clone(), verifier, authz))
        } else {
            tracing::warn!(
                "audit.access_control is off: anyone reaching this port can read the log"
            );
            core.clone()
        };
        let listen = overrides.listen.unwrap_or(cfg.service.listen);
        let host = ServiceHost::new(SERVICE_NAME, &cfg.kernel.server)
            .http(
                plt_contracts::audit::http::routes(served.clone())
                    .fallback(plt_contracts::http_api::not_found_fallback),
            )
            .grpc(AuditGrpcServer::new(served))
            .reflection(plt_contracts::FILE_DESCRIPTOR_SET)
            .health_check(db.health_check())
            .metrics_collector(db.metrics_collector(SERVICE_NAME))
            .bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        // Ready: database migrated, chain head loaded, port bound. Now others may find us.
        // Routes for the gateway: reading and verifying; `POST /v1/audit/records` is for
        // services only and is not advertised.
        let registration = plt_registry::register_service(
            registry.as_ref(),
            &reg_cfg,
            SECTION,
            env!("CARGO_PKG_VERSION"),
            host.local_addr(),
            [(
                "routes".to_owned(),
                "/v1/audit/logs,/v1/audit/verify".to_owned(),
            )]
            .into(),
        )
        .await
        .context("registering in the service registry")?;
        tracing::info!(instance = registration.id(), "registered");
        Ok(Self {
            host,
            db,
            core,
            writer,
            registration: Some(registration),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.host.local_addr()
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The core, for in-process tests of the contract.
    pub fn core(&self) -> Arc<dyn AuditServiceClient> {
        self.core.clone()
    }

    /// Serves until `shutdown`, then deregisters (so no new calls are routed here), drains
    /// in-flight requests, commits the entries still waiting for the writer, and closes the
    /// pool.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let registration = self.registration.take();
        let served = self
            .host
            .run(plt_registry::deregister_after(shutdown, registration))
            .await;
        self.writer.shutdown().await;
        self.db.close().await;
        served?;
        Ok(())
    }
}
