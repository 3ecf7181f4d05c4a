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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn https_entries_are_instances_that_serve_tls() {
        let list: BTreeMap<String, Vec<String>> = [(
            "identity".to_owned(),
            vec![
                "127.0.0.1:8082".to_owned(),
                "https://identity.internal:8443".to_owned(),
                "http://127.0.0.1:9082".to_owned(),
            ],
        )]
        .into();
        let found = StaticRegistry::new(&list)
            .unwrap()
            .discover("identity")
            .await
            .unwrap();
        let urls: Vec<String> = found.iter().map(Instance::base_url).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:8082",
                "https://identity.internal:8443",
                "http://127.0.0.1:9082"
            ]
        );
        assert_eq!(found[1].address, "identity.internal:8443");

        for bad in ["ftp://127.0.0.1:21", "https://no-port"] {
            let list: BTreeMap<String, Vec<String>> =
                [("identity".to_owned(), vec![bad.to_owned()])].into();
            assert!(StaticRegistry::new(&list).is_err(), "{bad}");
        }
    }
}
