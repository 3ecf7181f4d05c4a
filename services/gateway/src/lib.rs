//! api-gateway: the platform's single HTTP entry point. Routes come from configuration and
//! from the route prefixes services announce in the registry; instances come from discovery
//! through the same pool (balancing, breakers, retry budget) as the service clients. At the
//! edge it verifies access tokens, checks a route's permission with authz, strips identity
//! headers clients send and forwards the verified identity, limits rates per client address
//! and per user (in process or shared through Redis), answers CORS, limits body size and
//! time, and serves an OpenAPI 3.1 document of the public API. It starts, registers and
//! stops through the plt runtime like every service ([`ApiGateway`]).

pub mod config;
pub mod cors;
pub mod docs;
pub mod edge;
pub mod front;
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
use plt_contracts::authz::AuthzServiceClient;
use plt_kernel::Loaded;
use plt_runtime::{Context, Manifest, Parts, Service};
use std::{collections::BTreeSet, sync::Arc, time::Duration};

/// The service's name in logs and metrics.
pub const SERVICE_NAME: &str = "api-gateway";
/// The configuration section, and the gateway's name in the registry.
pub const SECTION: &str = "gateway";

pub type Config = Loaded<GatewayConfig>;

/// The API gateway, as the runtime runs it: a data plane behind its own front handler on
/// worker threads of its own. Exports the [`Gateway`]. Tests may put an
/// `Arc<dyn AuthzServiceClient>` in the overrides' extensions.
pub struct ApiGateway;

#[plt_runtime::async_trait]
impl Service for ApiGateway {
    type Config = GatewayConfig;
    const MANIFEST: Manifest =
        Manifest::new(SECTION, SERVICE_NAME, env!("CARGO_PKG_VERSION")).calls(&["authz"]);

    async fn build(cx: &Context<GatewayConfig>) -> anyhow::Result<Parts> {
        let cfg = &cx.config;
        let g = &cfg.service;
        let registry = cx.registry.clone();
        let factory = &cx.clients;
        let authz = match cx.extension::<Arc<dyn AuthzServiceClient>>() {
            Some(a) => a.clone(),
            None => factory
                .client::<dyn AuthzServiceClient>()
                .await
                .map_err(|e| anyhow::anyhow!("authz client: {e}"))?,
        };
        let verifier = cx.verifier()?;
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
        let (workers, cpus) = (g.worker_threads(), g.worker_cpus.clone());
        let mut parts = Parts::new()
            .host(move |host| {
                host.front(Arc::new(front))
                    .workers(workers)
                    .pin_workers(cpus)
            })
            .metadata("protocols", "http")
            .export(gateway);
        for w in watchers {
            parts = parts.task(w);
        }
        Ok(parts)
    }
}
