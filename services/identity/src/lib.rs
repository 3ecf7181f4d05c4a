//! identity-service: users, credentials, e-mail verification and password reset, served
//! over gRPC and HTTP/JSON on one port. `App::build` wires everything explicitly so tests
//! build exactly what the binary runs, on port 0.

pub mod config;
pub mod core;
pub mod password;
pub mod store;
pub mod tokens;
pub mod validate;

use crate::{config::IdentityConfig, core::IdentityCore, password::Passwords};
use anyhow::Context as _;
use plt_contracts::identity::{IdentityServiceClient, grpc::IdentityGrpcServer};
use plt_db::{Db, Migrations};
use plt_kernel::{
    BoundHost, Loaded, ServiceHost,
    notify::{Notifier, OutboxNotifier},
};
use plt_registry::{Registration, ServiceRegistry, config::RegistryConfig};
use std::{net::SocketAddr, sync::Arc};

/// The service's name in logs, metrics and the registry.
pub const SERVICE_NAME: &str = "identity-service";
/// The configuration section, and the database schema (PostgreSQL) or file (SQLite).
pub const SECTION: &str = "identity";

/// This service's migrations, one set per backend.
pub static MIGRATIONS: Migrations = plt_db::embed_migrations!();

pub type Config = Loaded<IdentityConfig>;

/// What tests (or an embedding process) may change from the configuration.
#[derive(Default)]
pub struct Overrides {
    /// Database schema / SQLite file name instead of `identity`.
    pub schema: Option<String>,
    /// Mail sink instead of the configured one.
    pub notifier: Option<Arc<dyn Notifier>>,
    /// Listen address instead of `identity.listen` (port 0 for tests).
    pub listen: Option<SocketAddr>,
    /// The registry instead of the configured one (plt dev shares one in-memory registry).
    pub registry: Option<Arc<dyn ServiceRegistry>>,
    /// Auth's keys instead of `identity.auth.jwks_url` (tests).
    pub jwks: Option<Arc<dyn plt_authn::JwksSource>>,
}

/// The configured notifier.
pub fn notifier(cfg: &Config) -> OutboxNotifier {
    OutboxNotifier::new(&cfg.kernel.notifier.outbox_dir, &cfg.kernel.notifier.from)
}

/// Connects the database and applies migrations.
pub async fn connect_db(cfg: &Config, schema: &str) -> anyhow::Result<Db> {
    Ok(Db::open(&cfg.kernel.database, schema, MIGRATIONS).await?)
}

/// The built service, bound to its port.
pub struct App {
    host: BoundHost,
    db: Db,
    core: Arc<dyn IdentityServiceClient>,
    registration: Option<Registration>,
}

impl App {
    pub async fn build(cfg: &Config, overrides: Overrides) -> anyhow::Result<Self> {
        let schema = overrides.schema.unwrap_or_else(|| SECTION.to_owned());
        let db = connect_db(cfg, &schema).await?;
        tracing::info!(backend = db.backend(), schema = %schema, "database ready");
        let notifier = overrides
            .notifier
            .unwrap_or_else(|| Arc::new(notifier(cfg)) as Arc<dyn Notifier>);
        let passwords = Passwords::new(cfg.service.password, &cfg.service.argon2)
            .map_err(|e| anyhow::anyhow!("identity.argon2: {e}"))?;
        let verifier = cfg
            .service
            .auth
            .verifier(overrides.jwks)
            .context("building the token verifier")?;
        let core: Arc<dyn IdentityServiceClient> = Arc::new(IdentityCore::new(
            store::for_db(&db),
            passwords,
            notifier,
            cfg.service.clone(),
            plt_authn::ServiceGuard::new(verifier, SECTION),
        ));
        let listen = overrides.listen.unwrap_or(cfg.service.listen);
        let host = ServiceHost::new(SERVICE_NAME, &cfg.kernel.server)
            .http(
                plt_contracts::identity::http::routes(core.clone())
                    .fallback(plt_contracts::http_api::not_found_fallback),
            )
            .grpc(IdentityGrpcServer::new(core.clone()))
            .reflection(plt_contracts::FILE_DESCRIPTOR_SET)
            .health_check(db.health_check())
            .metrics_collector(db.metrics_collector(SERVICE_NAME))
            .bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        // Ready: database migrated, port bound. Now others may find us.
        let reg_cfg: RegistryConfig = cfg.source.section("registry")?;
        let registry = match overrides.registry {
            Some(r) => r,
            None => reg_cfg.build(reqwest::Client::new())?,
        };
        let registration = plt_registry::register_service(
            registry.as_ref(),
            &reg_cfg,
            SECTION,
            env!("CARGO_PKG_VERSION"),
            host.local_addr(),
            [(
                "routes".to_owned(),
                "/v1/users,/v1/password-reset".to_owned(),
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
    pub fn core(&self) -> Arc<dyn IdentityServiceClient> {
        self.core.clone()
    }

    /// Serves until `shutdown`, then deregisters (so no new calls are routed here), drains
    /// in-flight requests and closes the pool.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let registration = self.registration.take();
        self.host
            .run(plt_registry::deregister_after(shutdown, registration))
            .await?;
        self.db.close().await;
        Ok(())
    }
}
