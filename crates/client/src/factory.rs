//! The client factory: from configuration and a registry to `Arc<dyn …ServiceClient>`.

use crate::{
    balanced::{BalancedAudit, BalancedAuth, BalancedAuthz, BalancedIdentity},
    credentials::{IssuedCredentials, ServiceIdentityConfig},
    pool::{Policy, Pool},
};
use plt_contracts::{
    Error, Result,
    audit::{AuditServiceClient, grpc::AuditGrpcClient, http::AuditHttpClient},
    auth::{AuthServiceClient, grpc::AuthGrpcClient, http::AuthHttpClient},
    authz::{AuthzServiceClient, grpc::AuthzGrpcClient, http::AuthzHttpClient},
    identity::{IdentityServiceClient, grpc::IdentityGrpcClient, http::IdentityHttpClient},
    service_identity::ServiceCredentials,
};
use plt_kernel::Secret;
use plt_registry::{Instance, ServiceRegistry};
use serde::{Deserialize, Serialize};
use std::{sync::Arc, time::Duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Grpc,
    Http,
}

/// The configuration of one client (`clients.<service>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub protocol: Protocol,
    /// Per-call deadline when the caller has none.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Attempts per idempotent call, the first included.
    pub max_attempts: u32,
    /// At most this fraction of extra load from retries.
    pub retry_budget_ratio: f64,
    /// Consecutive failures that open an instance's breaker, and how long it stays open.
    pub breaker_failures: u32,
    #[serde(with = "humantime_serde")]
    pub breaker_open_for: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        let p = Policy::default();
        Self {
            protocol: Protocol::Grpc,
            timeout: p.timeout,
            max_attempts: p.max_attempts,
            retry_budget_ratio: p.retry_budget_ratio,
            breaker_failures: p.breaker_failures,
            breaker_open_for: p.breaker_open_for,
        }
    }
}

impl ClientConfig {
    fn policy(&self) -> Policy {
        Policy {
            timeout: self.timeout,
            max_attempts: self.max_attempts.max(1),
            retry_budget_ratio: self.retry_budget_ratio,
            breaker_failures: self.breaker_failures,
            breaker_open_for: self.breaker_open_for,
            ..Policy::default()
        }
    }
}

/// A contract the factory can build clients of: its trait object type (`dyn NotesServiceClient`)
/// with the registry name of its service and how to reach one instance over each protocol.
/// Generated for every `plt-build` contract; implemented here for the core contracts.
pub trait Contract: Send + Sync + 'static {
    /// The registry name of the service implementing it.
    const SERVICE: &'static str;
    /// A client of the instance at `base_url` (`http://host:port`, or `https://host:port`
    /// for an instance serving TLS: this process's `client_tls`) over gRPC.
    fn grpc(base_url: &str) -> Option<Arc<Self>>;
    /// A client of the instance at `base_url` over HTTP/JSON.
    fn http(http: reqwest::Client, base_url: &str) -> Arc<Self>;
    /// The contract over a pool of instances.
    fn balanced(pool: Arc<Pool<Arc<Self>>>) -> Arc<Self>;
}

/// Builds contract clients. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct ClientFactory {
    registry: Arc<dyn ServiceRegistry>,
    http: reqwest::Client,
    credentials: Option<Arc<dyn ServiceCredentials>>,
    clients: Arc<ClientsConfig>,
}

impl ClientFactory {
    pub fn new(registry: Arc<dyn ServiceRegistry>) -> Self {
        Self {
            registry,
            http: plt_kernel::tls::http_client(),
            credentials: None,
            clients: Arc::default(),
        }
    }

    /// This factory, with `clients.<service>` settings for [`ClientFactory::client`].
    pub fn with_clients(mut self, clients: ClientsConfig) -> Self {
        self.clients = Arc::new(clients);
        self
    }

    /// The client of contract `C` (`factory.client::<dyn NotesServiceClient>()`): its
    /// service's healthy instances from the registry, over the protocol and with the policy
    /// of `clients.<service>`, presenting this factory's credentials.
    pub async fn client<C: Contract + ?Sized>(&self) -> Result<Arc<C>> {
        self.client_with::<C>(&self.clients.get(C::SERVICE)).await
    }

    /// Like [`ClientFactory::client`], with `cfg` instead of the configured settings.
    pub async fn client_with<C: Contract + ?Sized>(&self, cfg: &ClientConfig) -> Result<Arc<C>> {
        let http = self.http.clone();
        let protocol = cfg.protocol;
        let make = move |i: &Instance| -> Option<Arc<C>> {
            match protocol {
                Protocol::Grpc => C::grpc(&i.base_url()),
                Protocol::Http => Some(C::http(http.clone(), &i.base_url())),
            }
        };
        let pool = Pool::with_credentials(
            C::SERVICE,
            self.watch(C::SERVICE).await?,
            make,
            cfg.policy(),
            self.credentials.clone(),
        );
        Ok(C::balanced(pool))
    }

    /// This factory, with every client it builds presenting a service token from
    /// `credentials` on every call.
    pub fn with_credentials(mut self, credentials: Arc<dyn ServiceCredentials>) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// The credentials this factory's clients present, if any.
    pub fn credentials(&self) -> Option<Arc<dyn ServiceCredentials>> {
        self.credentials.clone()
    }

    /// The credentials of `service` issued by auth in exchange for `secret` (auth reached
    /// through this factory's registry with `auth_cfg`).
    pub async fn issued_credentials(
        &self,
        service: &str,
        secret: Secret<String>,
        auth_cfg: &ClientConfig,
    ) -> Result<Arc<dyn ServiceCredentials>> {
        let anonymous = Self {
            credentials: None,
            ..self.clone()
        };
        let auth = anonymous.auth(auth_cfg).await?;
        Ok(Arc::new(IssuedCredentials::new(service, secret, auth)))
    }

    /// The factory of the process `service`: its clients present tokens issued by auth for
    /// the secret in `identity` (the development secret outside production).
    pub async fn for_service(
        registry: Arc<dyn ServiceRegistry>,
        service: &str,
        env: &str,
        identity: &ServiceIdentityConfig,
        clients: &ClientsConfig,
    ) -> Result<Self> {
        let secret = identity
            .secret_for(service, env)
            .map_err(|e| Error::invalid(e.key.clone(), e.reason.clone()))?;
        let base = Self::new(registry);
        let creds = base
            .issued_credentials(service, secret, &clients.get("auth"))
            .await?;
        Ok(base.with_credentials(creds))
    }

    async fn watch(&self, service: &str) -> Result<plt_registry::Watch> {
        self.registry
            .watch(service)
            .await
            .map_err(|e| Error::unavailable(format!("discovering {service}: {e}")))
    }

    /// The identity service, found as `identity` in the registry.
    pub async fn identity(&self, cfg: &ClientConfig) -> Result<Arc<dyn IdentityServiceClient>> {
        self.client_with::<dyn IdentityServiceClient>(cfg).await
    }

    /// The auth service, found as `auth` in the registry.
    pub async fn auth(&self, cfg: &ClientConfig) -> Result<Arc<dyn AuthServiceClient>> {
        self.client_with::<dyn AuthServiceClient>(cfg).await
    }

    /// The authz service, found as `authz` in the registry.
    pub async fn authz(&self, cfg: &ClientConfig) -> Result<Arc<dyn AuthzServiceClient>> {
        self.client_with::<dyn AuthzServiceClient>(cfg).await
    }

    /// The audit service, found as `audit` in the registry.
    pub async fn audit(&self, cfg: &ClientConfig) -> Result<Arc<dyn AuditServiceClient>> {
        self.client_with::<dyn AuditServiceClient>(cfg).await
    }
}

macro_rules! core_contract {
    ($svc:literal, $trait:ident, $grpc:ident, $http:ident, $balanced:ident) => {
        impl Contract for dyn $trait {
            const SERVICE: &'static str = $svc;
            fn grpc(base_url: &str) -> Option<Arc<Self>> {
                $grpc::connect_lazy(base_url)
                    .ok()
                    .map(|c| Arc::new(c) as Arc<Self>)
            }
            fn http(http: reqwest::Client, base_url: &str) -> Arc<Self> {
                Arc::new($http::new(http, base_url))
            }
            fn balanced(pool: Arc<Pool<Arc<Self>>>) -> Arc<Self> {
                Arc::new($balanced(pool))
            }
        }
    };
}

core_contract!(
    "identity",
    IdentityServiceClient,
    IdentityGrpcClient,
    IdentityHttpClient,
    BalancedIdentity
);
core_contract!(
    "auth",
    AuthServiceClient,
    AuthGrpcClient,
    AuthHttpClient,
    BalancedAuth
);
core_contract!(
    "authz",
    AuthzServiceClient,
    AuthzGrpcClient,
    AuthzHttpClient,
    BalancedAuthz
);
core_contract!(
    "audit",
    AuditServiceClient,
    AuditGrpcClient,
    AuditHttpClient,
    BalancedAudit
);

/// The `clients` section: one entry per target service; missing ones use the defaults.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClientsConfig(pub std::collections::BTreeMap<String, ClientConfig>);

impl ClientsConfig {
    pub fn get(&self, service: &str) -> ClientConfig {
        self.0.get(service).cloned().unwrap_or_default()
    }
}

impl plt_kernel::config::Validate for ClientsConfig {
    fn validate(&self, p: &str) -> Result<(), plt_kernel::config::ConfigError> {
        use plt_kernel::config::ConfigError;
        for (name, c) in &self.0 {
            let key = |k: &str| format!("{p}.{name}.{k}");
            if c.timeout.is_zero() {
                return Err(ConfigError::new(key("timeout"), "must be greater than 0"));
            }
            if c.max_attempts == 0 || c.max_attempts > 10 {
                return Err(ConfigError::new(
                    key("max_attempts"),
                    "must be between 1 and 10",
                ));
            }
            if !(0.0..=1.0).contains(&c.retry_budget_ratio) {
                return Err(ConfigError::new(
                    key("retry_budget_ratio"),
                    "must be between 0 and 1",
                ));
            }
            if c.breaker_failures == 0 {
                return Err(ConfigError::new(
                    key("breaker_failures"),
                    "must be at least 1",
                ));
            }
        }
        Ok(())
    }
}
