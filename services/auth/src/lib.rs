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
use plt_outbox::OutboxConfig;
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

/// Keeps this instance's revocations current from the database (every instance's writes):
/// at once after a local change, else every 250 ms. Reads overlap by 5 s so a change
/// committed late by another instance is not missed.
async fn publish_revocations(
    store: Arc<dyn store::AuthStore>,
    revocations: Arc<plt_authn::Revocations>,
    changed: Arc<tokio::sync::Notify>,
) {
    let mut since = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    let mut failing = false;
    loop {
        let started = chrono::Utc::now();
        match store.revocations_since(since, started).await {
            Ok(rows) => {
                revocations.add(rows);
                since = started - chrono::Duration::seconds(5);
                if failing {
                    tracing::info!("reading revocations works again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "reading revocations failed; will retry");
                    failing = true;
                }
            }
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
        }
    }
}

#[derive(serde::Deserialize)]
struct FeedQuery {
    cursor: Option<String>,
    #[serde(default)]
    wait_ms: u64,
}

/// `GET /v1/auth/revocations?cursor=&wait_ms=`: the sessions and tokens ended before their
/// expiry (opaque ids, nothing else), as a long poll of at most 25 s. Public like the JWKS:
/// every verifier follows it.
fn revocation_feed(revocations: Arc<plt_authn::Revocations>) -> axum::Router {
    use axum::{extract::Query, routing::get};
    axum::Router::new().route(
        plt_authn::revocation::FEED_PATH,
        get(move |Query(q): Query<FeedQuery>| {
            let revocations = revocations.clone();
            async move {
                let wait = std::time::Duration::from_millis(q.wait_ms.min(25_000));
                axum::Json(revocations.feed(q.cursor.as_deref(), wait).await)
            }
        }),
    )
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
        keys.publish_events(cx.publisher());
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
        let outbox = cx.outbox()?.clone();
        let outbox_cfg: OutboxConfig = cfg.source.section("outbox")?;
        let relay = outbox.relay(
            plt_outbox::audit::TOPIC,
            cx.audit_destination(audit, outbox_cfg.timeout),
            &outbox_cfg,
        );
        let core = Arc::new(
            AuthCore::new(
                cfg.service.clone(),
                store::for_db(db),
                keys.clone(),
                identity,
                outbox.clone(),
            )?
            .with_events(cx.publisher()),
        );
        let contract: Arc<dyn AuthServiceClient> = core.clone();
        let a = &cfg.service.keys;
        let revocations = keys
            .verifier()
            .revocations()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("the key ring's verifier has no revocations"))?;
        Ok(Parts::new()
            .serve(AuthServe(contract))
            .http(
                revocation_feed(revocations.clone()),
                &[plt_authn::revocation::FEED_PATH],
            )
            .job(publish_revocations(
                store::for_db(db),
                revocations,
                core.revocations_changed().clone(),
            ))
            // Auth checks tokens with its own key ring (it has no `auth` block).
            .verifier(keys.verifier().clone())
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
