//! plt-registry: where services find each other. A [`ServiceRegistry`] registers an
//! instance (id, service name, address, version, tags, metadata such as protocols and route
//! prefixes, health check), deregisters it, discovers the healthy instances of a service and
//! watches a service for changes. Backends: in-memory (one process), static (config), etcd
//! (v3 JSON gateway: a lease per instance kept alive, a key prefix per service, prefix
//! watch), Consul (agent HTTP API with TTL checks and blocking queries) and Kubernetes (DNS
//! of a headless Service).

pub mod config;
pub mod consul;
pub mod etcd;
pub mod kubernetes;
pub mod memory;
pub mod static_registry;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, time::Duration};
use tokio::sync::watch;

/// One running instance of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Unique across the platform, e.g. `identity-service-<uuid>`.
    pub id: String,
    /// The service name, e.g. `identity`.
    pub service: String,
    /// `host:port` serving gRPC and HTTP.
    pub address: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Protocols (`protocols: grpc,http`), gateway route prefixes (`routes: /v1/users`),
    /// permissions, …
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// The metadata key saying how to reach an instance: `https` when its port serves TLS
/// (absent: plaintext `http`).
pub const SCHEME_KEY: &str = "scheme";

impl Instance {
    /// `https` when the instance serves TLS (metadata `scheme: https`), else `http`.
    pub fn scheme(&self) -> &'static str {
        match self.metadata.get(SCHEME_KEY).map(String::as_str) {
            Some("https") => "https",
            _ => "http",
        }
    }

    /// `<scheme>://<address>`: where clients (gRPC, HTTP, the gateway) reach it.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme(), self.address)
    }
}

/// `https://host:port` → (`Some("https")`, `host:port`); `host:port` → (`None`, itself).
/// Other schemes are refused.
pub(crate) fn split_scheme(addr: &str) -> Result<(Option<&'static str>, &str)> {
    if let Some(rest) = addr.strip_prefix("https://") {
        Ok((Some("https"), rest))
    } else if let Some(rest) = addr.strip_prefix("http://") {
        Ok((Some("http"), rest))
    } else if addr.contains("://") {
        Err(RegistryError::Invalid(format!(
            "{addr}: the scheme must be http:// or https://"
        )))
    } else {
        Ok((None, addr))
    }
}

/// How the registry learns that an instance is alive and ready.
#[derive(Debug, Clone)]
pub struct HealthSpec {
    /// An instance that stops heartbeating is considered dead after this long.
    pub ttl: Duration,
    /// Whether the instance is ready to serve ([`follow_readiness`]). While it reads `false`
    /// the instance is not discovered: memory marks it unready, etcd drops its key (and
    /// lease), Consul fails its TTL check; it is discoverable again as soon as it reads
    /// `true`. Static and Kubernetes registrations have no heartbeat (Kubernetes follows
    /// the pod's own readiness probe). `None`: always ready.
    pub ready: Option<watch::Receiver<bool>>,
}

impl Default for HealthSpec {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(2),
            ready: None,
        }
    }
}

impl HealthSpec {
    /// Whether the instance is ready now.
    pub(crate) fn is_ready(&self) -> bool {
        self.ready.as_ref().is_none_or(|r| *r.borrow())
    }

    /// Resolves when readiness may have changed (never without a readiness signal, or once
    /// its sender is gone).
    pub(crate) async fn ready_changed(ready: &mut Option<watch::Receiver<bool>>) {
        if let Some(r) = ready
            && r.changed().await.is_ok()
        {
            return;
        }
        std::future::pending().await
    }
}

/// A readiness signal for [`HealthSpec::ready`]: `readiness` (the host's `/readyz` checks)
/// run every `every`, in a task of its own (a slow check never delays a heartbeat), which
/// ends when the last receiver is dropped. Starts as the first run's outcome.
pub async fn follow_readiness(
    readiness: plt_kernel::Readiness,
    every: Duration,
) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(readiness.report().await.ready);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = tx.closed() => return,
                () = tokio::time::sleep(every) => {}
            }
            let report = tokio::select! {
                () = tx.closed() => return,
                r = readiness.report() => r,
            };
            if tx.send_replace(report.ready) != report.ready && !report.draining {
                let failing: Vec<&str> = report
                    .results
                    .iter()
                    .filter(|(_, r)| r.is_err())
                    .map(|(n, _)| n.as_str())
                    .collect();
                if report.ready {
                    tracing::info!("ready again: discoverable in the registry");
                } else {
                    tracing::warn!(?failing, "not ready: withdrawn from discovery until it is");
                }
            }
        }
    });
    rx
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry unreachable: {0}")]
    Unavailable(String),
    #[error("registry refused the request: {0}")]
    Refused(String),
    #[error("invalid instance: {0}")]
    Invalid(String),
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// A live registration. Heartbeats run until [`Registration::deregister`] is called; when it
/// is dropped without that (a crash), they stop and the registry forgets the instance once its
/// TTL lapses.
pub struct Registration {
    id: String,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
    deregister: Option<Box<dyn FnOnce() -> futures_deregister::BoxFut + Send>>,
}

mod futures_deregister {
    pub type BoxFut =
        std::pin::Pin<Box<dyn std::future::Future<Output = super::Result<()>> + Send>>;
}

impl Registration {
    pub(crate) fn new(
        id: String,
        heartbeat: Option<tokio::task::JoinHandle<()>>,
        deregister: impl FnOnce() -> futures_deregister::BoxFut + Send + 'static,
    ) -> Self {
        Self {
            id,
            heartbeat,
            deregister: Some(Box::new(deregister)),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Stops heartbeats and removes the instance now (graceful shutdown).
    pub async fn deregister(mut self) -> Result<()> {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        match self.deregister.take() {
            Some(f) => f().await,
            None => Ok(()),
        }
    }

    /// Stops heartbeats without deregistering, as a crash would (tests).
    pub fn abandon(mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        self.deregister = None;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
    }
}

/// The current healthy instances of a service, updated as they change.
pub type Watch = watch::Receiver<Vec<Instance>>;

#[async_trait]
pub trait ServiceRegistry: Send + Sync + 'static {
    async fn register(&self, instance: Instance, health: HealthSpec) -> Result<Registration>;
    /// The healthy instances of `service`, sorted by id.
    async fn discover(&self, service: &str) -> Result<Vec<Instance>>;
    /// A receiver of the healthy instances of `service`, current now and updated on change.
    /// While the registry is unreachable the last known set stays and the watch reconnects
    /// with jittered back-off.
    async fn watch(&self, service: &str) -> Result<Watch>;
}

pub(crate) fn check_instance(i: &Instance) -> Result<()> {
    let ok_name = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    if !ok_name(&i.id) {
        return Err(RegistryError::Invalid(
            "id must be 1-128 of A-Z a-z 0-9 - _ .".into(),
        ));
    }
    if !ok_name(&i.service) {
        return Err(RegistryError::Invalid(
            "service must be 1-128 of A-Z a-z 0-9 - _ .".into(),
        ));
    }
    match i.address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(RegistryError::Invalid("address must be host:port".into())),
    }
}

/// A random fraction in [0.5, 1.5) of `base`, to spread reconnects.
pub(crate) fn jitter(base: Duration) -> Duration {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    let f = 0.5 + f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX);
    base.mul_f64(f)
}

pub(crate) fn sorted(mut v: Vec<Instance>) -> Vec<Instance> {
    v.sort_by(|a, b| a.id.cmp(&b.id));
    v
}

/// Registers a service instance listening on `listen` under a fresh id, advertising the
/// address from `cfg`, with protocols and any extra metadata (an instance serving TLS adds
/// [`SCHEME_KEY`]` = https`); discoverable only while `ready` reads `true` (see
/// [`HealthSpec::ready`]).
pub async fn register_service(
    registry: &dyn ServiceRegistry,
    cfg: &config::RegistryConfig,
    service: &str,
    version: &str,
    listen: std::net::SocketAddr,
    metadata: BTreeMap<String, String>,
    ready: Option<watch::Receiver<bool>>,
) -> Result<Registration> {
    let mut suffix = [0u8; 8];
    let _ = getrandom::fill(&mut suffix);
    let id = format!(
        "{service}-{}",
        suffix
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let mut meta = metadata;
    meta.entry("protocols".into())
        .or_insert_with(|| "grpc,http".into());
    registry
        .register(
            Instance {
                id,
                service: service.to_owned(),
                address: cfg.advertised(listen),
                version: version.to_owned(),
                tags: vec![],
                metadata: meta,
            },
            HealthSpec {
                ttl: cfg.ttl,
                ready,
            },
        )
        .await
}

/// Waits for `shutdown`, then deregisters, so that a service stops receiving new calls before
/// it drains. Pass the result to the host as its shutdown signal. A failed deregistration is
/// logged: the registry expires the instance after its TTL anyway.
pub async fn deregister_after(
    shutdown: impl std::future::Future<Output = ()>,
    registration: Option<Registration>,
) {
    shutdown.await;
    if let Some(r) = registration
        && let Err(e) = r.deregister().await
    {
        tracing::warn!(error = %e, "deregistration failed; the registry will expire this instance");
    }
}
