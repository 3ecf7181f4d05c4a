//! Cached decisions with bounded staleness.
//!
//! Each instance keeps, in process (moka), every recently asked user's effective grants and
//! the set of declared permissions. Every change to the policy bumps one counter row
//! (`policy_version`) in the same transaction. Each instance:
//!
//! - polls that row every `staleness_bound / 2` (one primary-key read) and, when it moved,
//!   raises its known version and drops its cached grants;
//! - tags every cached entry with the version read BEFORE the entry's data, and uses an entry
//!   only while its tag is at least the known version (so an entry loaded concurrently with
//!   a change can never outlive the change's discovery);
//! - uses the cache only while the last successful poll STARTED no longer than
//!   `staleness_bound` ago. When polls fail (database unreachable), decisions are read from
//!   the database, and if that fails too the call fails: never a decision older than the
//!   bound, never fail open.
//!
//! Worst case: a change committed at T is reflected by every instance's answers from
//! T + `staleness_bound` on (normally within `staleness_bound / 2` plus one poll query). The
//! instance that made the change sees it at once.

use crate::store::{AuthzStore, Grants, ResourceGrants, StoreError};
use plt_contracts::{
    Error, Result,
    authz::{Permission, validate_permission_name},
};
use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use uuid::Uuid;

/// The declared permissions as of `version`.
#[derive(Debug, Default)]
pub struct Declared {
    pub version: u64,
    /// name → description
    pub by_name: HashMap<String, String>,
    /// name → the relations on a resource that imply it there (sorted).
    pub relations: HashMap<String, Vec<String>>,
    /// Sorted by name.
    pub sorted: Vec<Permission>,
}

impl Declared {
    fn new(version: u64, permissions: Vec<Permission>) -> Self {
        let by_name = permissions
            .iter()
            .map(|p| (p.name.clone(), p.description.clone()))
            .collect();
        let relations = permissions
            .iter()
            .filter(|p| !p.relations.is_empty())
            .map(|p| (p.name.clone(), p.relations.clone()))
            .collect();
        Self {
            version,
            by_name,
            relations,
            sorted: permissions,
        }
    }
}

/// Counters exported as metrics at `/metrics` time (no cost on the hot path beyond an
/// atomic increment).
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Decisions read from the database because the last successful poll was too old.
    pub bypassed: AtomicU64,
    pub invalidations: AtomicU64,
}

pub struct Policy {
    store: Arc<dyn AuthzStore>,
    users: moka::future::Cache<Uuid, Arc<Grants>>,
    /// (user, resource) → what the user holds on it; the same version rules as `users`.
    resources: moka::future::Cache<(Uuid, String), Arc<ResourceGrants>>,
    declared: RwLock<Arc<Declared>>,
    reload: tokio::sync::Mutex<()>,
    known: AtomicU64,
    /// Microseconds after `epoch` at which the last successful poll started.
    confirmed_at: AtomicU64,
    epoch: Instant,
    bound: Duration,
    pub stats: CacheStats,
}

pub(crate) fn unavailable(context: &str, e: &StoreError) -> Error {
    if plt_db::is_gated(&e.0) {
        // The database gate reported the outage once; not again for every request.
        tracing::debug!(context, error = %e, "authorization data unavailable");
    } else {
        tracing::warn!(context, error = %e, "authorization data unavailable");
    }
    Error::unavailable("authorization data unavailable")
}

impl Policy {
    /// Reads the current version and declared permissions.
    pub async fn load(
        store: Arc<dyn AuthzStore>,
        bound: Duration,
        max_users: u64,
    ) -> Result<Arc<Self>, StoreError> {
        let epoch = Instant::now();
        let version = store.version().await?;
        let declared = Declared::new(version, store.permissions().await?);
        Ok(Arc::new(Self {
            store,
            // The TTL only bounds memory held by idle entries; freshness is the version's job.
            users: moka::future::Cache::builder()
                .max_capacity(max_users)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            resources: moka::future::Cache::builder()
                .max_capacity(max_users.saturating_mul(4))
                .time_to_idle(Duration::from_secs(600))
                .build(),
            declared: RwLock::new(Arc::new(declared)),
            reload: tokio::sync::Mutex::new(()),
            known: AtomicU64::new(version),
            confirmed_at: AtomicU64::new(0),
            epoch,
            bound,
            stats: CacheStats::default(),
        }))
    }

    pub fn store(&self) -> &Arc<dyn AuthzStore> {
        &self.store
    }

    pub fn staleness_bound(&self) -> Duration {
        self.bound
    }

    pub fn known_version(&self) -> u64 {
        self.known.load(Ordering::Acquire)
    }

    fn micros_since_epoch(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    /// Whether cached data may be used now: the last successful poll started within the
    /// staleness bound.
    pub fn is_fresh(&self) -> bool {
        let confirmed = self.confirmed_at.load(Ordering::Acquire);
        let now = self.micros_since_epoch(Instant::now());
        let bound = u64::try_from(self.bound.as_micros()).unwrap_or(u64::MAX);
        now.saturating_sub(confirmed) <= bound
    }

    /// Records that the policy is at `version` (a poll read it, or this instance committed
    /// it). A higher version makes every older cache entry unusable at once.
    pub fn advance(&self, version: u64) {
        let before = self.known.fetch_max(version, Ordering::AcqRel);
        if version > before {
            self.stats.invalidations.fetch_add(1, Ordering::Relaxed);
            // Unusable already (their tags are older); this frees the memory.
            self.users.invalidate_all();
            self.resources.invalidate_all();
        }
    }

    /// One poll: reads the version; on success the cache is confirmed fresh as of the
    /// moment the read started.
    pub async fn poll(&self) -> Result<u64, StoreError> {
        let started = Instant::now();
        let v = self.store.version().await?;
        self.advance(v);
        self.confirmed_at
            .store(self.micros_since_epoch(started), Ordering::Release);
        Ok(v)
    }

    /// Polls every `interval` until the task is aborted.
    pub fn spawn_poller(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let policy = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut failing = false;
            loop {
                tick.tick().await;
                let Some(p) = policy.upgrade() else { return };
                match p.poll().await {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("policy version readable again; cache in use");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, "reading the policy version failed; \
                                decisions go to the database until it succeeds");
                        }
                        failing = true;
                    }
                }
            }
        })
    }

    /// The declared permissions, at least as new as `min_version` and the known version.
    /// Permissions are never undeclared, so an old set can only lack new ones, which
    /// [`Self::check_declared`] looks up in the database before refusing: no freshness
    /// check is needed here.
    pub async fn declared(&self, min_version: u64) -> Result<Arc<Declared>> {
        let want = min_version.max(self.known_version());
        let current = self.declared_now();
        if current.version >= want {
            return Ok(current);
        }
        self.reload_declared(want).await
    }

    fn declared_now(&self) -> Arc<Declared> {
        self.declared
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn reload_declared(&self, want: u64) -> Result<Arc<Declared>> {
        let _one = self.reload.lock().await;
        let current = self.declared_now();
        if current.version >= want {
            return Ok(current);
        }
        let version = self
            .store
            .version()
            .await
            .map_err(|e| unavailable("reading policy version", &e))?;
        let permissions = self
            .store
            .permissions()
            .await
            .map_err(|e| unavailable("reading permissions", &e))?;
        let fresh = Arc::new(Declared::new(version, permissions));
        *self.declared.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        Ok(fresh)
    }

    /// Checks that `permission` is well formed and declared (field `field`); returns the
    /// declared set it was found in.
    pub async fn check_declared(&self, field: &str, permission: &str) -> Result<Arc<Declared>> {
        validate_permission_name(field, permission)?;
        let declared = self.declared(0).await?;
        if declared.by_name.contains_key(permission) {
            return Ok(declared);
        }
        // Maybe declared on another instance since our last poll: ask the database.
        let exists = self
            .store
            .permission_exists(permission)
            .await
            .map_err(|e| unavailable("reading permission", &e))?;
        if exists {
            let v = self.known_version();
            return self.reload_declared(v.max(declared.version) + 1).await;
        }
        Err(Error::invalid(
            field,
            format!("{permission} is not a declared permission"),
        ))
    }

    /// The user's grants: from the cache when fresh, else from the database.
    pub async fn grants(&self, user: Uuid) -> Result<Arc<Grants>> {
        if !self.is_fresh() {
            self.stats.bypassed.fetch_add(1, Ordering::Relaxed);
            let g = self
                .store
                .grants(user)
                .await
                .map_err(|e| unavailable("reading grants", &e))?;
            return Ok(Arc::new(g));
        }
        let known = self.known_version();
        if let Some(g) = self.users.get(&user).await {
            if g.version >= known {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(g);
            }
            self.users.invalidate(&user).await;
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let store = self.store.clone();
        // Concurrent misses for one user share one load.
        self.users
            .try_get_with(user, async move { store.grants(user).await.map(Arc::new) })
            .await
            .map_err(|e| unavailable("reading grants", &e))
    }

    /// Whether the user holds `permission`, which must be well formed and declared.
    pub async fn has_permission(&self, user: Uuid, permission: &str) -> Result<bool> {
        self.check_declared("permission", permission).await?;
        let g = self.grants(user).await?;
        Ok(g.all
            || g.permissions
                .binary_search_by(|p| p.as_str().cmp(permission))
                .is_ok())
    }

    /// The user's effective permissions with descriptions, sorted.
    pub async fn user_permissions(&self, user: Uuid) -> Result<Vec<Permission>> {
        let g = self.grants(user).await?;
        let declared = self.declared(g.version).await?;
        if g.all {
            return Ok(declared.sorted.clone());
        }
        Ok(g.permissions
            .iter()
            .map(|name| Permission {
                name: name.clone(),
                description: declared.by_name.get(name).cloned().unwrap_or_default(),
                ..Default::default()
            })
            .collect())
    }

    /// What the user holds on `resource`: from the cache when fresh, else the database.
    pub async fn resource_grants(&self, user: Uuid, resource: &str) -> Result<Arc<ResourceGrants>> {
        if !self.is_fresh() {
            self.stats.bypassed.fetch_add(1, Ordering::Relaxed);
            let g = self
                .store
                .resource_grants(user, resource)
                .await
                .map_err(|e| unavailable("reading resource grants", &e))?;
            return Ok(Arc::new(g));
        }
        let known = self.known_version();
        let key = (user, resource.to_owned());
        if let Some(g) = self.resources.get(&key).await {
            if g.version >= known {
                self.stats.hits.fetch_add(1, Ordering::Relaxed);
                return Ok(g);
            }
            self.resources.invalidate(&key).await;
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let store = self.store.clone();
        let r = resource.to_owned();
        self.resources
            .try_get_with(key, async move {
                store.resource_grants(user, &r).await.map(Arc::new)
            })
            .await
            .map_err(|e| unavailable("reading resource grants", &e))
    }

    /// Whether the user may do `permission` (well formed, declared) on `resource`: through
    /// a role, a grant of the permission on it, or a grant on it of a relation the
    /// permission was declared with.
    pub async fn check(&self, user: Uuid, permission: &str, resource: &str) -> Result<bool> {
        let declared = self.check_declared("permission", permission).await?;
        let g = self.grants(user).await?;
        if g.all
            || g.permissions
                .binary_search_by(|p| p.as_str().cmp(permission))
                .is_ok()
        {
            return Ok(true);
        }
        let on = self.resource_grants(user, resource).await?;
        if on.grants.is_empty() {
            return Ok(false);
        }
        if on.grants.iter().any(|g| g == permission) {
            return Ok(true);
        }
        // Relations as declared at least as recently as the grants were read.
        let declared = if declared.version >= on.version {
            declared
        } else {
            self.declared(on.version).await?
        };
        Ok(declared
            .relations
            .get(permission)
            .is_some_and(|rels| rels.iter().any(|r| on.grants.contains(r))))
    }
}
