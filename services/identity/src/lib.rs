//! identity-service: users, credentials, e-mail verification and password reset, served
//! over gRPC and HTTP/JSON on one port by the plt runtime, which does the start-up
//! (configuration, database, registry, shutdown); what is here is the service's own wiring.

pub mod config;
pub mod core;
pub mod password;
pub mod store;
pub mod tokens;
pub mod validate;

use crate::{config::IdentityConfig, core::IdentityCore, password::Passwords};
use plt_contracts::{
    audit::AuditServiceClient, auth::AuthServiceClient, identity::IdentityServiceClient,
    serve::IdentityServe,
};
use plt_db::{Db, Migrations};
use plt_kernel::{
    ConfigError, Loaded,
    notify::{self, Notifier, OutboxNotifier},
};
use plt_outbox::OutboxConfig;
use plt_runtime::{Context, Manifest, Parts, Service};
use std::sync::Arc;

/// The service's name in logs, metrics and the registry.
pub const SERVICE_NAME: &str = "identity-service";
/// The configuration section, and the database schema (PostgreSQL) or file (SQLite).
pub const SECTION: &str = "identity";

/// This service's migrations, one set per backend.
pub static MIGRATIONS: Migrations = plt_db::embed_migrations!();

pub type Config = Loaded<IdentityConfig>;

/// The configured notifier: SMTP, or the development outbox (refused in production).
/// (`Overrides::extensions` may hold an `Arc<dyn Notifier>` instead.)
pub fn notifier(cfg: &Config) -> Result<Arc<dyn Notifier>, ConfigError> {
    notify::from_config(&cfg.kernel)
}

/// The development outbox `notifier.outbox_dir` names (`mail list`).
pub fn outbox(cfg: &Config) -> OutboxNotifier {
    OutboxNotifier::new(&cfg.kernel.notifier.outbox_dir, &cfg.kernel.notifier.from)
}

/// Connects the database and applies migrations.
pub async fn connect_db(cfg: &Config, schema: &str) -> anyhow::Result<Db> {
    Ok(Db::open(&cfg.kernel.database, schema, MIGRATIONS).await?)
}

/// The identity service, as the runtime runs it. Exports its core
/// (`Arc<dyn IdentityServiceClient>`) and its `Outbox`. Tests may put an
/// `Arc<dyn AuditServiceClient>` in the overrides' extensions.
pub struct Identity;

#[async_trait::async_trait]
impl Service for Identity {
    type Config = IdentityConfig;
    // Identity also calls auth (EndUserSessions) when a user's sessions must end, through a
    // lazily connected client: not a start-up dependency (auth calls identity to sign in).
    const MANIFEST: Manifest = Manifest::new(SECTION, SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .calls(&["audit"])
        .migrations(&MIGRATIONS);

    /// Identity sends mail: the notifier must be usable here (production refuses the
    /// outbox; a CA file must be readable).
    fn check(cfg: &Config) -> Result<(), ConfigError> {
        notifier(cfg).map(drop)
    }

    async fn build(cx: &Context<IdentityConfig>) -> anyhow::Result<Parts> {
        let cfg = &cx.config;
        let notifier = match cx.extension::<Arc<dyn Notifier>>() {
            Some(n) => n.clone(),
            None => notifier(cfg)?,
        };
        let passwords = Passwords::new(cfg.service.password, &cfg.service.argon2)
            .map_err(|e| anyhow::anyhow!("identity.argon2: {e}"))?;
        let auth = match cx.extension::<Arc<dyn AuthServiceClient>>() {
            Some(a) => a.clone(),
            None => cx
                .clients
                .client::<dyn AuthServiceClient>()
                .await
                .map_err(|e| anyhow::anyhow!("auth client: {e}"))?,
        };
        let auth_for_sessions = auth.clone();
        let db = cx.db()?;
        let outbox = cx.outbox()?.clone();
        let core: Arc<dyn IdentityServiceClient> = Arc::new(
            IdentityCore::new(
                store::for_db(db),
                passwords,
                notifier,
                cfg.service.clone(),
                plt_authn::ServiceGuard::new(cx.verifier()?, SECTION),
                cx.verifier()?,
                outbox.clone(),
            )
            .with_sessions(core::Sessions::new(auth))
            .with_events(cx.publisher()),
        );
        // Audit records committed with the users' changes, delivered to audit.
        let audit = match cx.extension::<Arc<dyn AuditServiceClient>>() {
            Some(a) => a.clone(),
            None => cx
                .clients
                .client::<dyn AuditServiceClient>()
                .await
                .map_err(|e| anyhow::anyhow!("audit client: {e}"))?,
        };
        let outbox_cfg: OutboxConfig = cfg.source.section("outbox")?;
        let relay = outbox.relay(
            plt_outbox::audit::TOPIC,
            cx.audit_destination(audit, outbox_cfg.timeout),
            &outbox_cfg,
        );
        // Sessions ended at auth after a reset, a disable or a delete: committed with the
        // change, delivered until auth takes them.
        let sessions = outbox.relay(
            core::SESSIONS_TOPIC,
            Arc::new(core::EndSessions::new(
                auth_for_sessions,
                outbox_cfg.timeout,
            )),
            &outbox_cfg,
        );
        Ok(Parts::new()
            .serve(IdentityServe(core.clone()))
            .metrics_collector(relay.metrics_collector())
            .job(relay.run(cx.stopping.clone()))
            .metrics_collector(sessions.metrics_collector())
            .job(sessions.run(cx.stopping.clone()))
            .export(outbox)
            .export(core))
    }
}
