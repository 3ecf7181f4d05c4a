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
use plt_authn::VerifierConfig;
use plt_client::{ClientFactory, ClientsConfig};
use plt_contracts::{
    audit::AuditServiceClient, auth::AuthServiceClient, identity::IdentityServiceClient,
    serve::AuthServe,
};
use plt_db::{Db, Migrations};
use plt_kernel::Loaded;
use plt_outbox::{Outbox, OutboxConfig, audit::AuditDestination};
use plt_runtime::{Context, Manifest, Parts, Service};
use std::sync::Arc;

pub const SERVICE_NAME: &str = "auth-service";
pub const SECTION: &str = "auth";

/// This service's migrations, one set per backend.
pub static MIGRATIONS: Migrations = plt_db::embed_migrations!();

pub type Config = Loaded<AuthConfig>;

/// Connects the database and applies migrations.
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

/// The auth service, as the runtime runs it. Exports its core (`Arc<AuthCore>`) and its
/// `Outbox`. Tests may put an `Arc<dyn IdentityServiceClient>` and an
/// `Arc<dyn AuditServiceClient>` in the overrides' extensions.
pub struct Auth;

#[async_trait::async_trait]
impl Service for Auth {
    type Config = AuthConfig;
    const MANIFEST: Manifest = Manifest::new(SECTION, SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .calls(&["identity", "audit"])
        .migrations(&MIGRATIONS);

    fn check(cfg: &Config) -> Result<(), plt_kernel::ConfigError> {
        cfg.service.validate_for_env(&cfg.kernel.env)
    }

    async fn build(cx: &Context<AuthConfig>) -> anyhow::Result<Parts> {
        let cfg = &cx.config;
        let db = cx.db()?;
        let keys = key_ring(cfg, db).await?;
        // Auth signs its own service tokens: its clients present those, not ones it would
        // have to ask itself for.
        let clients: ClientsConfig = cfg.source.section("clients")?;
        let factory = ClientFactory::new(cx.registry.clone())
            .with_credentials(Arc::new(core::LocalCredentials::new(
                keys.clone(),
                &cfg.service,
            )))
            .with_clients(clients.clone());
        let identity = match cx.extension::<Arc<dyn IdentityServiceClient>>() {
            Some(i) => i.clone(),
            None => factory
                .identity(&clients.get("identity"))
                .await
                .map_err(|e| anyhow::anyhow!("identity client: {e}"))?,
        };
        let audit = match cx.extension::<Arc<dyn AuditServiceClient>>() {
            Some(a) => a.clone(),
            None => factory
                .client::<dyn AuditServiceClient>()
                .await
                .map_err(|e| anyhow::anyhow!("audit client: {e}"))?,
        };
        let outbox = Outbox::new(db, SERVICE_NAME);
        let outbox_cfg: OutboxConfig = cfg.source.section("outbox")?;
        let relay = outbox.relay(
            plt_outbox::audit::TOPIC,
            Arc::new(AuditDestination::new(audit, outbox_cfg.timeout)),
            &outbox_cfg,
        );
        let core = Arc::new(AuthCore::new(
            cfg.service.clone(),
            store::for_db(db),
            keys.clone(),
            identity,
            outbox.clone(),
        ));
        let contract: Arc<dyn AuthServiceClient> = core.clone();
        let a = &cfg.service.keys;
        Ok(Parts::new()
            .serve(AuthServe(contract))
            .metrics_collector(relay.metrics_collector())
            .job(relay.run(cx.stopping.clone()))
            .export(outbox)
            .job(maintain_keys(
                keys,
                store::for_db(db),
                a.reload_interval,
                a.check_interval,
            ))
            .export(core))
    }
}
