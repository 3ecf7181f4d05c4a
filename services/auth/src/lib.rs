//! auth-service: sign-in through identity's credential check, EdDSA access tokens from a
//! rotating key ring published as JWKS, refresh-token families with rotation and reuse
//! detection, revocation, and sign-in throttling — over gRPC and HTTP/JSON on one port.

pub mod config;
pub mod core;
pub mod keys;
pub mod seal;
pub mod store;
pub mod throttle;

use crate::{config::AuthConfig, core::AuthCore, keys::KeyRing, seal::Sealer};
use anyhow::Context as _;
use plt_authn::VerifierConfig;
use plt_client::{ClientFactory, ClientsConfig};
use plt_contracts::{
    auth::{AuthServiceClient, grpc::AuthGrpcServer},
    identity::IdentityServiceClient,
};
use plt_db::{Db, Migrations};
use plt_kernel::{BoundHost, Loaded, ServiceHost};
use plt_registry::{Registration, ServiceRegistry, config::RegistryConfig};
use std::{net::SocketAddr, sync::Arc};

pub const SERVICE_NAME: &str = "auth-service";
pub const SECTION: &str = "auth";

/// This service's migrations, one set per backend.
pub static MIGRATIONS: Migrations = plt_db::embed_migrations!();

pub type Config = Loaded<AuthConfig>;

#[derive(Default)]
pub struct Overrides {
    pub schema: Option<String>,
    /// The identity client instead of the configured one (tests inject fakes).
    pub identity: Option<Arc<dyn IdentityServiceClient>>,
    pub listen: Option<SocketAddr>,
    /// The registry instead of the configured one (plt dev shares one in-memory registry).
    pub registry: Option<Arc<dyn ServiceRegistry>>,
}

pub async fn connect_db(cfg: &Config, schema: &str) -> anyhow::Result<Db> {
    Ok(Db::open(&cfg.kernel.database, schema, MIGRATIONS).await?)
}

/// Opens the key ring of this configuration on `db`.
pub async fn key_ring(cfg: &Config, db: &Db) -> anyhow::Result<Arc<KeyRing>> {
    let a = &cfg.service;
    let kek = a
        .keys
        .encryption_key_bytes()
        .map_err(|e| anyhow::anyhow!("auth.keys.encryption_key: {e}"))?;
    let ring = KeyRing::open(
        store::for_db(db),
        Sealer::new(&kek),
        VerifierConfig::new(&a.issuer, &a.audience),
        a.keys.rotation_interval,
        a.access_token_ttl,
    )
    .await?;
    Ok(ring)
}

/// Re-reads the key ring every `reload` (a rotation made elsewhere signs here promptly) and
/// applies due rotations and removals, and purges expired tokens, every `check`.
async fn maintain_keys(
    keys: Arc<KeyRing>,
    store: Arc<dyn store::AuthStore>,
    reload: std::time::Duration,
    check: std::time::Duration,
) {
    let mut reload_tick = tokio::time::interval(reload);
    let mut check_tick = tokio::time::interval(check);
    reload_tick.tick().await;
    check_tick.tick().await;
    loop {
        tokio::select! {
            _ = reload_tick.tick() => {
                if let Err(e) = keys.reload().await {
                    tracing::debug!(error = %e, "reloading keys failed; will retry");
                }
            }
            _ = check_tick.tick() => {
                if let Err(e) = keys.maintain().await {
                    tracing::warn!(error = %e, "key maintenance failed; will retry");
                }
                if let Err(e) = store.purge_expired(keys::now()).await {
                    tracing::warn!(error = %e, "purging expired tokens failed; will retry");
                }
            }
        }
    }
}

pub struct App {
    host: BoundHost,
    db: Db,
    core: Arc<AuthCore>,
    maintenance: tokio::task::JoinHandle<()>,
    registration: Option<Registration>,
}

impl App {
    pub async fn build(cfg: &Config, overrides: Overrides) -> anyhow::Result<Self> {
        cfg.service.validate_for_env(&cfg.kernel.env)?;
        let schema = overrides.schema.unwrap_or_else(|| SECTION.to_owned());
        let db = connect_db(cfg, &schema).await?;
        let keys = key_ring(cfg, &db).await?;
        let reg_cfg: RegistryConfig = cfg.source.section("registry")?;
        let clients: ClientsConfig = cfg.source.section("clients")?;
        let registry = match overrides.registry {
            Some(r) => r,
            None => reg_cfg.build(reqwest::Client::new())?,
        };
        let identity = match overrides.identity {
            Some(i) => i,
            None => ClientFactory::new(registry.clone())
                .with_credentials(Arc::new(core::LocalCredentials::new(
                    keys.clone(),
                    &cfg.service,
                )))
                .identity(&clients.get("identity"))
                .await
                .map_err(|e| anyhow::anyhow!("identity client: {e}"))?,
        };
        let core = Arc::new(AuthCore::new(
            cfg.service.clone(),
            store::for_db(&db),
            keys.clone(),
            identity,
        ));
        let contract: Arc<dyn AuthServiceClient> = core.clone();
        let listen = overrides.listen.unwrap_or(cfg.service.listen);
        let host = ServiceHost::new(SERVICE_NAME, &cfg.kernel.server)
            .http(
                plt_contracts::auth::http::routes(contract.clone())
                    .fallback(plt_contracts::http_api::not_found_fallback),
            )
            .grpc(AuthGrpcServer::new(contract))
            .reflection(plt_contracts::FILE_DESCRIPTOR_SET)
            .health_check(db.health_check())
            .metrics_collector(db.metrics_collector(SERVICE_NAME))
            .bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let store = store::for_db(&db);
        let maintenance = tokio::spawn(maintain_keys(
            keys,
            store,
            cfg.service.keys.reload_interval,
            cfg.service.keys.check_interval,
        ));
        let registration = plt_registry::register_service(
            registry.as_ref(),
            &reg_cfg,
            SECTION,
            env!("CARGO_PKG_VERSION"),
            host.local_addr(),
            [(
                "routes".to_owned(),
                "/v1/auth,/.well-known/jwks.json".to_owned(),
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
            maintenance,
            registration: Some(registration),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.host.local_addr()
    }

    pub fn core(&self) -> Arc<AuthCore> {
        self.core.clone()
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Serves until `shutdown`, then deregisters, drains and closes the pool.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let registration = self.registration.take();
        let result = self
            .host
            .run(plt_registry::deregister_after(shutdown, registration))
            .await;
        self.maintenance.abort();
        self.db.close().await;
        Ok(result?)
    }
}
