//! api-gateway: the platform's single HTTP entry point. Routes come from configuration and
//! from the route prefixes services announce in the registry; instances come from discovery
//! through the same pool (balancing, breakers, retry budget) as the service clients. At the
//! edge it verifies access tokens, checks a route's permission with authz, strips identity
//! headers clients send and forwards the verified identity, limits rates per client address
//! and per user (in process or shared through Redis), answers CORS, limits body size and
//! time, and serves an OpenAPI 3.1 document of the public API. `App::build` wires
//! everything explicitly so tests build exactly what the binary runs, on port 0.

pub mod config;
pub mod cors;
pub mod docs;
pub mod edge;
pub mod front;
pub mod h1;
pub mod headers;
pub mod openapi;
/// Client addresses behind trusted proxies (the kernel's, shared with auth).
pub use plt_kernel::net;
pub mod proxy;
pub use proxy::Gateway;
pub mod ratelimit;
pub mod routes;
pub mod shard;
pub mod upstream;
pub mod vouch;

use crate::{
    config::GatewayConfig,
    edge::{Authenticator, Authorizer},
    net::TrustedProxies,
    ratelimit::RateLimiter,
    routes::Routes,
    upstream::Upstreams,
};
use anyhow::Context as _;
use plt_authn::JwksSource;
use plt_client::{ClientFactory, ClientsConfig, ServiceIdentityConfig};
use plt_contracts::authz::AuthzServiceClient;
use plt_kernel::{BoundHost, Loaded, ServiceHost};
use plt_registry::{Registration, ServiceRegistry, config::RegistryConfig};
use std::{collections::BTreeSet, net::SocketAddr, sync::Arc, time::Duration};

/// The service's name in logs and metrics.
pub const SERVICE_NAME: &str = "api-gateway";
/// The configuration section, and the gateway's name in the registry.
pub const SECTION: &str = "gateway";

pub type Config = Loaded<GatewayConfig>;

/// What tests (or an embedding process) may change from the configuration.
#[derive(Default)]
pub struct Overrides {
    /// Listen address instead of `gateway.listen` (port 0 for tests).
    pub listen: Option<SocketAddr>,
    /// The registry instead of the configured one (plt dev shares one in-memory registry).
    pub registry: Option<Arc<dyn ServiceRegistry>>,
    /// The authz client instead of the one built from `clients.authz` (tests inject fakes).
    pub authz: Option<Arc<dyn AuthzServiceClient>>,
    /// Where token keys come from instead of `gateway.auth.jwks_url`.
    pub jwks: Option<Arc<dyn JwksSource>>,
}

/// The gateway's client factory: clients over the registry, like every service's,
/// presenting the gateway's service tokens (`service_identity`).
pub async fn client_factory(
    cfg: &Config,
    registry: Arc<dyn ServiceRegistry>,
    clients: &ClientsConfig,
) -> anyhow::Result<ClientFactory> {
    let identity: ServiceIdentityConfig = cfg.source.section("service_identity")?;
    ClientFactory::for_service(registry, SECTION, &cfg.kernel.env, &identity, clients)
        .await
        .map_err(|e| anyhow::anyhow!("service clients: {e}"))
}

/// The authz client the gateway checks route permissions with: `clients.authz` through the
/// gateway's [`client_factory`] (authz's `Authorize` is for platform services only).
pub async fn authz_client(
    factory: &ClientFactory,
    clients: &ClientsConfig,
) -> anyhow::Result<Arc<dyn AuthzServiceClient>> {
    factory
        .authz(&clients.get("authz"))
        .await
        .map_err(|e| anyhow::anyhow!("authz client: {e}"))
}

/// The built gateway, bound to its port.
pub struct App {
    host: BoundHost,
    gateway: Arc<Gateway>,
    watchers: Vec<tokio::task::JoinHandle<()>>,
    registration: Option<Registration>,
}

impl App {
    pub async fn build(cfg: &Config, overrides: Overrides) -> anyhow::Result<Self> {
        let g = &cfg.service;
        let reg_cfg: RegistryConfig = cfg.source.section("registry")?;
        let clients: ClientsConfig = cfg.source.section("clients")?;
        let registry = match overrides.registry {
            Some(r) => r,
            None => reg_cfg.build(reqwest::Client::new())?,
        };
        let factory = client_factory(cfg, registry.clone(), &clients).await?;
        let authz = match overrides.authz {
            Some(a) => a,
            None => authz_client(&factory, &clients).await?,
        };
        let verifier = g
            .auth
            .verifier(overrides.jwks)
            .context("building the token verifier")?;
        let max_timeout = g
            .routes
            .iter()
            .filter_map(|r| r.timeout)
            .fold(g.upstream.timeout, Duration::max);
        let routes = Arc::new(Routes::new(
            g.routes.clone(),
            g.discovery.clone(),
            g.upstream.timeout,
        ));
        let services: BTreeSet<String> = g
            .routes
            .iter()
            .filter(|r| !r.blocked)
            .map(|r| r.service.clone())
            .chain(g.discovery.services.iter().cloned())
            .collect();
        let upstreams =
            Upstreams::new(&registry, services.clone(), &g.upstream, max_timeout).await?;
        let mut watchers = Vec::new();
        for service in &g.discovery.services {
            let mut watch = registry
                .watch(service)
                .await
                .map_err(|e| anyhow::anyhow!("discovering {service}: {e}"))?;
            let initial = watch.borrow_and_update().clone();
            routes.set_instances(service, &initial);
            let routes = routes.clone();
            let service = service.clone();
            watchers.push(tokio::spawn(async move {
                while watch.changed().await.is_ok() {
                    let set = watch.borrow_and_update().clone();
                    routes.set_instances(&service, &set);
                }
            }));
        }
        let limiter = RateLimiter::new(&g.rate_limit)?;
        // Tokens to vouch with, fetched now so that the first requests carry them.
        let vouch = vouch::Vouch::new(factory.credentials());
        for service in &services {
            vouch.fetch(service);
        }
        let doc = openapi::document(g);
        let documented = openapi::Documented::new(&doc);
        let openapi =
            docs::Docs::new(serde_json::to_value(&doc).context("rendering the OpenAPI document")?);
        watchers.push(openapi.spawn_refresh(
            registry.clone(),
            g.discovery.services.clone(),
            g.discovery.api_prefix.clone(),
        ));
        let gateway = Arc::new(Gateway {
            routes,
            upstreams,
            auth: Authenticator::new(verifier, g.token_cache.max_entries, g.token_cache.max_ttl),
            authz: Authorizer::new(authz, g.authz.staleness_bound, g.authz.max_entries),
            limiter,
            trusted: TrustedProxies::new(&g.trusted_proxies),
            vouch: vouch.clone(),
            authz_failing: std::sync::atomic::AtomicBool::new(false),
            body_limit: g.body_limit_bytes,
            retry_buffer: g.upstream.retry_buffer_bytes.min(g.body_limit_bytes),
            openapi,
            documented,
        });
        let front = front::GatewayFront::new(gateway.clone(), cors::Cors::new(&g.cors));
        let listen = overrides.listen.unwrap_or(g.listen);
        let host = ServiceHost::new(SERVICE_NAME, &cfg.kernel.server)
            .front(Arc::new(front))
            .workers(g.worker_threads())
            .pin_workers(g.worker_cpus.clone())
            .bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        // Ready: port bound, pools following the registry. Now others may find us.
        let registration = plt_registry::register_service(
            registry.as_ref(),
            &reg_cfg,
            SECTION,
            env!("CARGO_PKG_VERSION"),
            host.local_addr(),
            [("protocols".to_owned(), "http".to_owned())].into(),
        )
        .await
        .context("registering in the service registry")?;
        tracing::info!(instance = registration.id(), "registered");
        Ok(Self {
            host,
            gateway,
            watchers,
            registration: Some(registration),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.host.local_addr()
    }

    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.clone()
    }

    /// Serves until `shutdown`, then deregisters (so no new requests are routed here) and
    /// drains in-flight requests.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let registration = self.registration.take();
        let result = self
            .host
            .run(plt_registry::deregister_after(shutdown, registration))
            .await;
        for w in &self.watchers {
            w.abort();
        }
        Ok(result?)
    }
}
