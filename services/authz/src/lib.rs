//! authz-service: role-based access control — declared permissions, roles, user grants —
//! with decisions cached in process under a bounded staleness, admin calls authenticated by
//! access token and authorised by `authz.roles.manage`, and denials and changes audited
//! through the transactional outbox (a change and its record commit together; a relay
//! delivers the records to audit); over gRPC and HTTP/JSON on one port. `App::build` wires
//! everything explicitly so tests build exactly what the binary runs, on port 0.

pub mod cache;
pub mod config;
pub mod core;
pub mod store;

use crate::{
    cache::Policy,
    config::AuthzConfig,
    core::{AuthzCore, SYSTEM_ACTOR},
};
use anyhow::Context as _;
use plt_authn::Verifier;
use plt_contracts::{
    audit::AuditServiceClient,
    authz::{ADMIN_ROLE, AuthzServiceClient},
    serve::AuthzServe,
};
use plt_db::{Db, Migrations};
use plt_kernel::Loaded;
use plt_outbox::{Outbox, OutboxConfig};
use plt_runtime::{Context, Manifest, Parts, Service};
use std::sync::{Arc, atomic::Ordering};

/// The service's name in logs, metrics and the registry.
pub const SERVICE_NAME: &str = "authz-service";
/// The configuration section, and the database schema (PostgreSQL) or file (SQLite).
pub const SECTION: &str = "authz";

/// This service's migrations, one set per backend.
pub static MIGRATIONS: Migrations = plt_db::embed_migrations!();

pub type Config = Loaded<AuthzConfig>;

/// Connects the database and applies migrations.
pub async fn connect_db(cfg: &Config, schema: &str) -> anyhow::Result<Db> {
    Ok(Db::open(&cfg.kernel.database, schema, MIGRATIONS).await?)
}

/// Builds the core on `db`: declares the platform permissions and built-in roles, loads the
/// policy and grants `admin` to the bootstrap admins. Audit records go to the outbox of
/// `db`. No server, no version poller and no outbox relay (the command line uses this as
/// is: a running instance's relay delivers its records).
pub async fn build_core(
    cfg: &Config,
    db: &Db,
    verifier: Verifier,
) -> anyhow::Result<Arc<AuthzCore>> {
    build_core_with(
        cfg,
        db,
        verifier,
        Outbox::new(db, SERVICE_NAME),
        plt_events::Publisher::disabled(SERVICE_NAME),
    )
    .await
}

/// [`build_core`] writing into `outbox` and publishing events with `events`.
pub async fn build_core_with(
    cfg: &Config,
    db: &Db,
    verifier: Verifier,
    outbox: Outbox,
    events: plt_events::Publisher,
) -> anyhow::Result<Arc<AuthzCore>> {
    let s = &cfg.service;
    let store = store::for_db(db);
    AuthzCore::ensure_platform(store.as_ref())
        .await
        .context("declaring platform permissions and built-in roles")?;
    let policy = Policy::load(store.clone(), s.staleness_bound, s.cache.max_users)
        .await
        .context("loading the policy")?;
    let core = Arc::new(AuthzCore::new(store, policy, verifier, outbox).with_events(events));
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

/// Publishes the cache counters at each `/metrics` render.
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
    })
}

/// Drops cached decisions when a policy change is published: re-reads the policy version
/// (one query), which makes every older cache entry unusable.
struct PolicyListener(Arc<Policy>);

#[async_trait::async_trait]
impl plt_events::Handler for PolicyListener {
    async fn handle(
        &self,
        _: &plt_events::Event,
        _: &plt_events::Received,
    ) -> Result<(), plt_events::HandlerError> {
        self.0
            .poll()
            .await
            .map(drop)
            .map_err(|e| plt_events::HandlerError::Retry(e.to_string()))
    }
}

/// The guard's permission decisions for authz's own methods: from its policy cache, not
/// over the network to itself.
struct LocalDecide(Arc<AuthzCore>);

#[async_trait::async_trait]
impl plt_runtime::Decide for LocalDecide {
    async fn holds(
        &self,
        _ctx: &plt_contracts::RequestContext,
        user: uuid::Uuid,
        permission: &'static str,
    ) -> plt_contracts::Result<bool> {
        self.0.policy().has_permission(user, permission).await
    }
}

/// The authz service, as the runtime runs it. Exports its core (`Arc<AuthzCore>`). Tests
/// may put an `Arc<dyn AuditServiceClient>` in the overrides' extensions.
pub struct Authz;

#[async_trait::async_trait]
impl Service for Authz {
    type Config = AuthzConfig;
    const MANIFEST: Manifest = Manifest::new(SECTION, SERVICE_NAME, env!("CARGO_PKG_VERSION"))
        .calls(&["audit"])
        .migrations(&MIGRATIONS);

    async fn build(cx: &Context<AuthzConfig>) -> anyhow::Result<Parts> {
        let cfg = &cx.config;
        let audit = match cx.extension::<Arc<dyn AuditServiceClient>>() {
            Some(a) => a.clone(),
            None => cx
                .clients
                .client::<dyn AuditServiceClient>()
                .await
                .map_err(|e| anyhow::anyhow!("audit client: {e}"))?,
        };
        // Ready once migrated, the platform declared and the policy loaded.
        let core = build_core_with(
            cfg,
            cx.db()?,
            cx.verifier()?,
            cx.outbox()?.clone(),
            cx.publisher(),
        )
        .await?;
        let contract: Arc<dyn AuthzServiceClient> = core.clone();
        let outbox: OutboxConfig = cfg.source.section("outbox")?;
        let relay = core.outbox().relay(
            plt_outbox::audit::TOPIC,
            cx.audit_destination(audit, outbox.timeout),
            &outbox,
        );
        // Policy changes committed by any instance reach this one's cache through the bus in
        // well under a second; the poller stays the fallback and the bound. The group is this
        // instance's own (every instance must see every change), from the newest event on.
        let listener = plt_events::Subscription::new(
            &format!("authz.cache.{}", uuid::Uuid::new_v4().simple()),
            &[plt_contracts::events::POLICY_CHANGED],
            Arc::new(PolicyListener(core.policy().clone())),
        )
        .start(plt_events::Start::Latest);
        Ok(Parts::new()
            .subscribe(listener)
            .serve(AuthzServe(contract))
            .decide(Arc::new(LocalDecide(core.clone())))
            .task(core.policy().spawn_poller(cfg.service.poll_interval()))
            .metrics_collector(collector(core.clone()))
            .metrics_collector(relay.metrics_collector())
            .job(relay.run(cx.stopping.clone()))
            .export(core.outbox().clone())
            .export(core))
    }
}
