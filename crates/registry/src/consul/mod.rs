//! The Consul registry, through the agent HTTP API: `PUT /v1/agent/service/register` with a
//! TTL check (`DeregisterCriticalServiceAfter` set, so a crashed instance is also reaped),
//! `PUT /v1/agent/check/pass/service:<id>` heartbeats (`check/fail` while the instance is not
//! ready, so it leaves `?passing` at once), `PUT /v1/agent/service/deregister/<id>`,
//! and `GET /v1/health/service/<name>?passing` — with blocking queries (`index`, `wait`,
//! `X-Consul-Index`) for watches.
//!
//! Verified against [`testserver`], an in-repo implementation of exactly this documented
//! subset; no live Consul agent is available on the build machines.

pub mod testserver;

use crate::{
    HealthSpec, Instance, Registration, RegistryError, Result, ServiceRegistry, Watch,
    check_instance, jitter, sorted,
};
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;
use std::{collections::BTreeMap, time::Duration};
use tokio::sync::watch;

#[derive(Clone)]
pub struct ConsulRegistry {
    http: reqwest::Client,
    agent: String,
    /// How long a critical instance stays registered before Consul removes it.
    pub deregister_critical_after: Duration,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HealthEntry {
    service: AgentService,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentService {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    address: String,
    port: u16,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
}

fn unavailable(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(e.to_string())
}

fn go_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1))
}

impl ConsulRegistry {
    /// `agent`: `http://127.0.0.1:8500`.
    pub fn new(http: reqwest::Client, agent: &str) -> Self {
        Self {
            http,
            agent: agent.trim_end_matches('/').to_owned(),
            deregister_critical_after: Duration::from_secs(60),
        }
    }

    async fn put(&self, path: &str, body: Option<serde_json::Value>) -> Result<()> {
        let mut rb = self.http.put(format!("{}{path}", self.agent));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .map_err(unavailable)?;
        if !resp.status().is_success() {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            return Err(RegistryError::Refused(format!("{path}: {status} {text}")));
        }
        Ok(())
    }

    /// One health query; with `index`, a blocking query that returns when the result changes
    /// (or after `wait`). Returns the instances and the new index.
    async fn health(
        &self,
        service: &str,
        index: Option<u64>,
        wait: Duration,
    ) -> Result<(Vec<Instance>, u64)> {
        let mut url = format!("{}/v1/health/service/{service}?passing=true", self.agent);
        if let Some(i) = index {
            url.push_str(&format!("&index={i}&wait={}", go_duration(wait)));
        }
        let resp = self
            .http
            .get(url)
            .timeout(wait + Duration::from_secs(5))
            .send()
            .await
            .map_err(unavailable)?;
        if !resp.status().is_success() {
            return Err(RegistryError::Refused(format!(
                "health query: {}",
                resp.status()
            )));
        }
        let new_index = resp
            .headers()
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        let entries: Vec<HealthEntry> = resp.json().await.map_err(unavailable)?;
        let instances = entries
            .into_iter()
            .map(|e| {
                let mut meta = e.service.meta.unwrap_or_default();
                let version = meta.remove("version").unwrap_or_default();
                Instance {
                    id: e.service.id,
                    service: e.service.service,
                    address: format!("{}:{}", e.service.address, e.service.port),
                    version,
                    tags: e.service.tags.unwrap_or_default(),
                    metadata: meta,
                }
            })
            .collect();
        Ok((sorted(instances), new_index))
    }
}

#[async_trait]
impl ServiceRegistry for ConsulRegistry {
    async fn register(&self, instance: Instance, health: HealthSpec) -> Result<Registration> {
        check_instance(&instance)?;
        let (host, port) = instance
            .address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| RegistryError::Invalid("address must be host:port".into()))?;
        let mut meta = instance.metadata.clone();
        meta.insert("version".into(), instance.version.clone());
        let check_id = format!("service:{}", instance.id);
        let body = json!({
            "ID": instance.id,
            "Name": instance.service,
            "Address": host,
            "Port": port,
            "Tags": instance.tags,
            "Meta": meta,
            "Check": {
                "CheckID": check_id,
                "TTL": go_duration(health.ttl),
                "DeregisterCriticalServiceAfter": go_duration(self.deregister_critical_after),
            },
        });
        let pass = format!("/v1/agent/check/pass/{check_id}");
        let fail = format!("/v1/agent/check/fail/{check_id}?note=not%20ready");
        self.put("/v1/agent/service/register", Some(body.clone()))
            .await?;
        self.put(if health.is_ready() { &pass } else { &fail }, None)
            .await?;
        let me = self.clone();
        let heartbeat = tokio::spawn(async move {
            let every = health.ttl.div_f64(3.0).max(Duration::from_millis(100));
            let mut ready = health.ready.clone();
            let mut failing = false;
            let mut was_ready = health.is_ready();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = HealthSpec::ready_changed(&mut ready) => {}
                }
                let now_ready = health.is_ready();
                if now_ready != std::mem::replace(&mut was_ready, now_ready) {
                    tracing::info!(check = %pass, ready = now_ready, "readiness changed; the consul check follows");
                }
                if !now_ready {
                    // Critical: out of `?passing`. An agent that lost us is dealt with once
                    // ready again (below).
                    if let Err(e) = me.put(&fail, None).await {
                        tracing::debug!(error = %e, "failing the consul check failed");
                    }
                    continue;
                }
                match me.put(&pass, None).await {
                    Ok(()) => {
                        if std::mem::take(&mut failing) {
                            tracing::info!(check = %pass, "consul TTL pass accepted again");
                        }
                    }
                    // The agent answered but no longer knows the check (it restarted without
                    // its state, or reaped us): register again, then pass.
                    Err(RegistryError::Refused(e)) => {
                        let again = async {
                            me.put("/v1/agent/service/register", Some(body.clone()))
                                .await?;
                            me.put(&pass, None).await
                        };
                        match again.await {
                            Ok(()) => {
                                failing = false;
                                tracing::warn!(error = %e, "consul had lost this registration; registered again");
                            }
                            Err(e) => {
                                failing = true;
                                tracing::warn!(error = %e, "consul lost this registration and re-registering failed; retrying");
                            }
                        }
                    }
                    Err(e) => {
                        if !std::mem::replace(&mut failing, true) {
                            tracing::warn!(error = %e, "consul TTL pass failing; retrying, and re-registering if the agent lost us");
                        }
                    }
                }
            }
        });
        let me = self.clone();
        let id = instance.id.clone();
        Ok(Registration::new(instance.id, Some(heartbeat), move || {
            Box::pin(async move {
                me.put(&format!("/v1/agent/service/deregister/{id}"), None)
                    .await
            })
        }))
    }

    async fn discover(&self, service: &str) -> Result<Vec<Instance>> {
        Ok(self.health(service, None, Duration::ZERO).await?.0)
    }

    async fn watch(&self, service: &str) -> Result<Watch> {
        let (initial, mut index) = self.health(service, None, Duration::ZERO).await?;
        let (tx, rx) = watch::channel(initial);
        let me = self.clone();
        let service = service.to_owned();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            while !tx.is_closed() {
                let query = me.health(&service, Some(index), Duration::from_secs(30));
                let result = tokio::select! {
                    r = query => r,
                    () = tx.closed() => return,
                };
                match result {
                    Ok((set, new_index)) => {
                        backoff = Duration::from_millis(200);
                        // Consul's rule: an index that goes backwards resets the watch.
                        index = if new_index < index { 0 } else { new_index };
                        tx.send_if_modified(|cur| std::mem::replace(cur, set.clone()) != set);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, service, "consul watch failed; keeping the last known instances");
                        tokio::time::sleep(jitter(backoff)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
        Ok(rx)
    }
}
