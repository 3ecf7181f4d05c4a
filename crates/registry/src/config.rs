//! The `registry` section of the configuration, and the registry it describes.

use crate::{
    ServiceRegistry, consul::ConsulRegistry, etcd::EtcdRegistry, kubernetes::KubernetesDnsRegistry,
    memory::MemoryRegistry, static_registry::StaticRegistry,
};
use plt_kernel::config::{ConfigError, Validate};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, sync::Arc, time::Duration};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistryKind {
    /// One process only (plt dev shares one between its services).
    Memory,
    /// The `static` list below.
    Static,
    Etcd,
    Consul,
    Kubernetes,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    pub kind: RegistryKind,
    /// An instance that stops heartbeating leaves discovery after this long.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// The address other services should use to reach this instance when it listens on
    /// 0.0.0.0 or [::] (empty: the listen address).
    pub advertise_host: String,
    #[serde(rename = "static")]
    pub static_instances: BTreeMap<String, Vec<String>>,
    pub etcd: EtcdConfig,
    pub consul: ConsulConfig,
    pub kubernetes: KubernetesConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    pub endpoint: String,
    pub prefix: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulConfig {
    pub agent: String,
    #[serde(with = "humantime_serde")]
    pub deregister_critical_after: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesConfig {
    /// `{service}` is replaced by the service name.
    pub host_template: String,
    pub port: u16,
}

impl Validate for RegistryConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        if self.ttl < Duration::from_secs(1) || self.ttl > Duration::from_secs(60) {
            return Err(ConfigError::new(
                format!("{p}.ttl"),
                "must be between 1s and 60s",
            ));
        }
        let url = |k: &str, v: &str| {
            if v.starts_with("http://") || v.starts_with("https://") {
                Ok(())
            } else {
                Err(ConfigError::new(
                    format!("{p}.{k}"),
                    "must be an http:// or https:// URL",
                ))
            }
        };
        match self.kind {
            RegistryKind::Etcd => url("etcd.endpoint", &self.etcd.endpoint)?,
            RegistryKind::Consul => url("consul.agent", &self.consul.agent)?,
            RegistryKind::Kubernetes if !self.kubernetes.host_template.contains("{service}") => {
                return Err(ConfigError::new(
                    format!("{p}.kubernetes.host_template"),
                    "must contain {service}",
                ));
            }
            RegistryKind::Static => {
                if let Err(e) = StaticRegistry::new(&self.static_instances) {
                    return Err(ConfigError::new(format!("{p}.static"), e.to_string()));
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl RegistryConfig {
    /// The registry this configuration describes.
    pub fn build(&self, http: reqwest::Client) -> crate::Result<Arc<dyn ServiceRegistry>> {
        Ok(match self.kind {
            RegistryKind::Memory => Arc::new(MemoryRegistry::new()),
            RegistryKind::Static => Arc::new(StaticRegistry::new(&self.static_instances)?),
            // A watch keeps vanished instances after an outage for as long as their
            // registrations may need to notice and re-create themselves.
            RegistryKind::Etcd => Arc::new(
                EtcdRegistry::new(http, &self.etcd.endpoint, &self.etcd.prefix)
                    .with_grace(self.ttl * 2 + Duration::from_secs(1)),
            ),
            RegistryKind::Consul => {
                let mut c = ConsulRegistry::new(http, &self.consul.agent);
                c.deregister_critical_after = self.consul.deregister_critical_after;
                Arc::new(c)
            }
            RegistryKind::Kubernetes => Arc::new(KubernetesDnsRegistry::new(
                &self.kubernetes.host_template,
                self.kubernetes.port,
            )),
        })
    }

    /// The address to register for a service listening on `listen`.
    pub fn advertised(&self, listen: std::net::SocketAddr) -> String {
        if !self.advertise_host.is_empty() {
            format!("{}:{}", self.advertise_host, listen.port())
        } else if listen.ip().is_unspecified() {
            format!("127.0.0.1:{}", listen.port())
        } else {
            listen.to_string()
        }
    }
}
