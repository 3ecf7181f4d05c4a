//! `/openapi.json`: the gateway's own document (the core services' public API, from its
//! configured routes) merged with the documents the discovered services serve themselves
//! (registry metadata `openapi`: the path of a document generated from the same `.proto` as
//! their routes), their paths under the API prefix. Refreshed in the background, so a
//! service that starts or stops shows up or goes within seconds, and a request never waits.

use bytes::Bytes;
use plt_registry::ServiceRegistry;
use serde_json::Value;
use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

/// How often the services' documents are fetched again.
const REFRESH: Duration = Duration::from_secs(2);

pub struct Docs {
    base: Value,
    current: RwLock<Bytes>,
}

impl Docs {
    pub fn new(base: Value) -> Arc<Self> {
        let bytes = Bytes::from(serde_json::to_vec(&base).unwrap_or_default());
        Arc::new(Self {
            base,
            current: RwLock::new(bytes),
        })
    }

    /// The current document.
    pub fn bytes(&self) -> Bytes {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Keeps the document current from `services`' own documents.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        registry: Arc<dyn ServiceRegistry>,
        services: Vec<String>,
        api_prefix: String,
    ) -> tokio::task::JoinHandle<()> {
        let docs = self.clone();
        tokio::spawn(async move {
            let http = plt_kernel::tls::http_client_builder()
                .timeout(Duration::from_secs(1))
                .build()
                .unwrap_or_default();
            loop {
                docs.refresh(registry.as_ref(), &services, &api_prefix, &http)
                    .await;
                tokio::time::sleep(REFRESH).await;
            }
        })
    }

    async fn refresh(
        &self,
        registry: &dyn ServiceRegistry,
        services: &[String],
        api_prefix: &str,
        http: &reqwest::Client,
    ) {
        let mut doc = self.base.clone();
        for service in services {
            let Ok(instances) = registry.discover(service).await else {
                continue;
            };
            let Some((base, path)) = instances
                .iter()
                .find_map(|i| i.metadata.get("openapi").map(|p| (i.base_url(), p.clone())))
            else {
                continue;
            };
            let fetched = async {
                http.get(format!("{base}{path}"))
                    .send()
                    .await?
                    .error_for_status()?
                    .json::<Value>()
                    .await
            }
            .await;
            match fetched {
                Ok(frag) => {
                    if let Err(e) = plt_contracts::docs::merge_into(&mut doc, &frag, api_prefix) {
                        tracing::debug!(service, error = %e, "not merging the service's OpenAPI document");
                    }
                }
                Err(e) => {
                    tracing::debug!(service, error = %e, "fetching the service's OpenAPI document")
                }
            }
        }
        let bytes = Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = bytes;
    }
}
