//! Kubernetes: instances of a service are the A/AAAA records of its headless Service
//! (`<service>.<namespace>.svc.<cluster domain>`), which Kubernetes keeps to the ready pods.
//! Registration is Kubernetes' job (readiness probes), so `register` only validates;
//! `watch` re-resolves periodically.

use crate::{
    HealthSpec, Instance, Registration, RegistryError, Result, ServiceRegistry, Watch,
    check_instance, sorted,
};
use async_trait::async_trait;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
pub struct KubernetesDnsRegistry {
    /// `{service}` is replaced by the service name, e.g. `{service}.plt.svc.cluster.local`.
    pub host_template: String,
    pub port: u16,
    pub refresh: Duration,
}

impl KubernetesDnsRegistry {
    pub fn new(host_template: &str, port: u16) -> Self {
        Self {
            host_template: host_template.to_owned(),
            port,
            refresh: Duration::from_secs(2),
        }
    }

    async fn resolve(&self, service: &str) -> Result<Vec<Instance>> {
        let host = self.host_template.replace("{service}", service);
        let addrs = tokio::net::lookup_host((host.as_str(), self.port))
            .await
            .map_err(|e| RegistryError::Unavailable(format!("resolving {host}: {e}")))?;
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for a in addrs {
            if seen.insert(a) {
                out.push(Instance {
                    id: format!("{service}-{a}"),
                    service: service.to_owned(),
                    address: a.to_string(),
                    version: String::new(),
                    tags: vec!["kubernetes".into()],
                    metadata: Default::default(),
                });
            }
        }
        Ok(sorted(out))
    }
}

#[async_trait]
impl ServiceRegistry for KubernetesDnsRegistry {
    async fn register(&self, instance: Instance, _health: HealthSpec) -> Result<Registration> {
        check_instance(&instance)?;
        Ok(Registration::new(instance.id, None, || {
            Box::pin(async { Ok(()) })
        }))
    }

    async fn discover(&self, service: &str) -> Result<Vec<Instance>> {
        self.resolve(service).await
    }

    async fn watch(&self, service: &str) -> Result<Watch> {
        let (tx, rx) = watch::channel(self.resolve(service).await?);
        let me = self.clone();
        let service = service.to_owned();
        tokio::spawn(async move {
            while !tx.is_closed() {
                tokio::time::sleep(me.refresh).await;
                match me.resolve(&service).await {
                    Ok(set) => {
                        tx.send_if_modified(|cur| std::mem::replace(cur, set.clone()) != set);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "DNS refresh failed; keeping the last known instances")
                    }
                }
            }
        });
        Ok(rx)
    }
}
