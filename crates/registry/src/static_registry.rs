//! The static registry: instances listed in configuration. Registration is accepted and
//! ignored (the list is the truth); discovery returns the configured instances.

use crate::{
    HealthSpec, Instance, Registration, Result, ServiceRegistry, Watch, check_instance, sorted,
};
use async_trait::async_trait;
use std::collections::BTreeMap;
use tokio::sync::watch;

#[derive(Clone, Default)]
pub struct StaticRegistry {
    services: BTreeMap<String, Vec<Instance>>,
}

impl StaticRegistry {
    /// From `service → [host:port, …]`; `https://host:port` lists an instance serving TLS.
    pub fn new(services: &BTreeMap<String, Vec<String>>) -> Result<Self> {
        let mut out = BTreeMap::new();
        for (name, addrs) in services {
            let mut list = Vec::new();
            for (i, addr) in addrs.iter().enumerate() {
                let (scheme, address) = crate::split_scheme(addr)?;
                let mut metadata = std::collections::BTreeMap::new();
                if scheme == Some("https") {
                    metadata.insert(crate::SCHEME_KEY.to_owned(), "https".to_owned());
                }
                let inst = Instance {
                    id: format!("{name}-{i}"),
                    service: name.clone(),
                    address: address.to_owned(),
                    version: String::new(),
                    tags: vec!["static".into()],
                    metadata,
                };
                check_instance(&inst)?;
                list.push(inst);
            }
            out.insert(name.clone(), sorted(list));
        }
        Ok(Self { services: out })
    }
}

#[async_trait]
impl ServiceRegistry for StaticRegistry {
    async fn register(&self, instance: Instance, _health: HealthSpec) -> Result<Registration> {
        check_instance(&instance)?;
        Ok(Registration::new(instance.id, None, || {
            Box::pin(async { Ok(()) })
        }))
    }

    async fn discover(&self, service: &str) -> Result<Vec<Instance>> {
        Ok(self.services.get(service).cloned().unwrap_or_default())
    }

    async fn watch(&self, service: &str) -> Result<Watch> {
        let (tx, rx) = watch::channel(self.discover(service).await?);
        // Nothing ever changes; keep the sender alive so the receiver stays open.
        tokio::spawn(async move {
            tx.closed().await;
        });
        Ok(rx)
    }
}
