//! The etcd registry, through etcd's v3 JSON gateway (`/v3/kv/*`, `/v3/lease/*`,
//! `/v3/watch`), so no protoc and no gRPC stack of etcd's are needed.
//!
//! Each instance is a key `<prefix>/<service>/<id>` holding its JSON, attached to a lease
//! with the instance's TTL that the registration keeps alive (every TTL/3). A crashed
//! instance's key disappears when its lease expires. `watch` follows the service's key
//! prefix and re-reads the set on every event; on a broken stream it keeps the last set and
//! reconnects with jittered back-off.

use crate::{
    HealthSpec, Instance, Registration, RegistryError, Result, ServiceRegistry, Watch,
    check_instance, jitter, sorted,
};
use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
pub struct EtcdRegistry {
    http: reqwest::Client,
    endpoint: String,
    prefix: String,
}

fn unavailable(e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(e.to_string())
}

/// The key just after every key with this prefix (etcd's `range_end` for a prefix).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdRegistry {
    /// `endpoint`: `http://127.0.0.1:2379`; `prefix`: the key namespace, e.g. `/plt/services`.
    pub fn new(http: reqwest::Client, endpoint: &str, prefix: &str) -> Self {
        Self {
            http,
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    fn service_prefix(&self, service: &str) -> String {
        format!("{}/{service}/", self.prefix)
    }

    async fn call(&self, path: &str, body: Value) -> Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .json(&body)
            .send()
            .await
            .map_err(unavailable)?;
        let status = resp.status();
        let v: Value = resp.json().await.map_err(unavailable)?;
        if !status.is_success() || v.get("error").is_some() {
            return Err(RegistryError::Refused(format!("{path}: {status} {v}")));
        }
        Ok(v)
    }

    async fn range(&self, service: &str) -> Result<Vec<Instance>> {
        let p = self.service_prefix(service);
        let v = self
            .call(
                "/v3/kv/range",
                json!({"key": B64.encode(&p), "range_end": B64.encode(prefix_end(&p))}),
            )
            .await?;
        let mut out = Vec::new();
        for kv in v["kvs"].as_array().into_iter().flatten() {
            let Some(raw) = kv["value"].as_str().and_then(|s| B64.decode(s).ok()) else {
                continue;
            };
            match serde_json::from_slice::<Instance>(&raw) {
                Ok(i) => out.push(i),
                Err(e) => tracing::warn!(error = %e, "ignoring a malformed registry entry"),
            }
        }
        Ok(sorted(out))
    }
}

#[async_trait]
impl ServiceRegistry for EtcdRegistry {
    async fn register(&self, instance: Instance, health: HealthSpec) -> Result<Registration> {
        check_instance(&instance)?;
        let ttl = health.ttl.as_secs().max(1);
        let lease = self.call("/v3/lease/grant", json!({"TTL": ttl})).await?;
        let lease_id = lease["ID"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| lease["ID"].as_i64().map(|n| n.to_string()))
            .ok_or_else(|| RegistryError::Refused(format!("no lease id in {lease}")))?;
        let key = format!("{}{}", self.service_prefix(&instance.service), instance.id);
        let value =
            serde_json::to_vec(&instance).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        self.call(
            "/v3/kv/put",
            json!({"key": B64.encode(&key), "value": B64.encode(value), "lease": lease_id}),
        )
        .await?;
        let me = self.clone();
        let beat_lease = lease_id.clone();
        let heartbeat = tokio::spawn(async move {
            let every = Duration::from_secs(ttl)
                .div_f64(3.0)
                .max(Duration::from_millis(200));
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = me
                    .call("/v3/lease/keepalive", json!({"ID": beat_lease}))
                    .await
                {
                    tracing::warn!(error = %e, "etcd keep-alive failed; retrying");
                }
            }
        });
        let me = self.clone();
        Ok(Registration::new(instance.id, Some(heartbeat), move || {
            Box::pin(async move {
                me.call("/v3/kv/deleterange", json!({"key": B64.encode(&key)}))
                    .await?;
                me.call("/v3/lease/revoke", json!({"ID": lease_id})).await?;
                Ok(())
            })
        }))
    }

    async fn discover(&self, service: &str) -> Result<Vec<Instance>> {
        self.range(service).await
    }

    async fn watch(&self, service: &str) -> Result<Watch> {
        let initial = self.range(service).await?;
        let (tx, rx) = watch::channel(initial);
        let me = self.clone();
        let service = service.to_owned();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(200);
            loop {
                if tx.is_closed() {
                    return;
                }
                match me.follow(&service, &tx).await {
                    Ok(()) => backoff = Duration::from_millis(200),
                    Err(e) => {
                        tracing::warn!(error = %e, service, "etcd watch interrupted; keeping the last known instances");
                        tokio::time::sleep(jitter(backoff)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        });
        Ok(rx)
    }
}

impl EtcdRegistry {
    /// Streams watch events for the service prefix until the stream ends, publishing the
    /// re-read set after each event.
    async fn follow(&self, service: &str, tx: &watch::Sender<Vec<Instance>>) -> Result<()> {
        let p = self.service_prefix(service);
        let mut resp = self
            .http
            .post(format!("{}/v3/watch", self.endpoint))
            .json(&json!({"create_request": {"key": B64.encode(&p), "range_end": B64.encode(prefix_end(&p))}}))
            .send()
            .await
            .map_err(unavailable)?;
        // Re-read once the watch is established: changes between the initial read and now.
        let set = self.range(service).await?;
        tx.send_if_modified(|cur| std::mem::replace(cur, set.clone()) != set);
        let mut buf = Vec::new();
        loop {
            let chunk = tokio::select! {
                c = resp.chunk() => c.map_err(unavailable)?,
                () = tx.closed() => return Ok(()),
            };
            let Some(chunk) = chunk else {
                return Err(RegistryError::Unavailable("watch stream ended".into()));
            };
            buf.extend_from_slice(&chunk);
            // The gateway sends one JSON object per event batch; a batch with events means
            // the set may have changed.
            let mut changed = false;
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if let Ok(v) = serde_json::from_slice::<Value>(&line)
                    && v["result"]["events"]
                        .as_array()
                        .is_some_and(|e| !e.is_empty())
                {
                    changed = true;
                }
            }
            if !buf.is_empty() && serde_json::from_slice::<Value>(&buf).is_ok() {
                let v: Value = serde_json::from_slice(&buf).unwrap_or_default();
                buf.clear();
                if v["result"]["events"]
                    .as_array()
                    .is_some_and(|e| !e.is_empty())
                {
                    changed = true;
                }
            }
            if changed {
                let set = self.range(service).await?;
                tx.send_if_modified(|cur| std::mem::replace(cur, set.clone()) != set);
            }
        }
    }
}
