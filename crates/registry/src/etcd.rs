//! The etcd registry, through etcd's v3 JSON gateway (`/v3/kv/*`, `/v3/lease/*`,
//! `/v3/watch`), so no protoc and no gRPC stack of etcd's are needed.
//!
//! Each instance is a key `<prefix>/<service>/<id>` holding its JSON, attached to a lease
//! with the instance's TTL that the registration keeps alive (every TTL/3). A crashed
//! instance's key disappears when its lease expires. A registration that finds itself gone
//! (its lease expired or revoked while etcd was unreachable or restarted, or its key
//! deleted) re-creates itself: a new lease, the key written again. While the instance is not
//! ready ([`crate::HealthSpec::ready`]) its key is deleted and its lease revoked, and no
//! keep-alive is sent; once ready it is written again under a new lease.
//!
//! `watch` follows the service's key prefix and re-reads the set on every event and every
//! few seconds (so a stream that went silent is noticed); on a broken stream it keeps the
//! last set and reconnects with jittered back-off. After an outage it does not drop
//! instances for a grace period (`EtcdRegistry::with_grace`): their registrations may still
//! be re-creating themselves, and an empty set would refuse every call in the meantime.

use crate::{
    HealthSpec, Instance, Registration, RegistryError, Result, ServiceRegistry, Watch,
    check_instance, jitter, sorted,
};
use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::STANDARD as B64};
use serde_json::{Value, json};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{sync::watch, time::Instant};

/// Every call but the watch stream gets an answer within this long, or counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// The watch re-reads the set this often even without events.
const RESYNC_EVERY: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct EtcdRegistry {
    http: reqwest::Client,
    endpoint: String,
    prefix: String,
    grace: Duration,
}

/// What a registration writes, kept to write it again.
struct Entry {
    key: String,
    value: Vec<u8>,
    ttl: u64,
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
            grace: Duration::from_secs(5),
        }
    }

    /// How long a watch keeps instances that vanished right after the registry came back
    /// (default 5 s; set it above the registrations' TTL plus their heartbeat interval).
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    fn service_prefix(&self, service: &str) -> String {
        format!("{}/{service}/", self.prefix)
    }

    async fn call(&self, path: &str, body: Value) -> Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.endpoint))
            .timeout(CALL_TIMEOUT)
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

    /// Writes the entry under a new lease; returns the lease id.
    async fn put_entry(&self, entry: &Entry) -> Result<String> {
        let lease = self
            .call("/v3/lease/grant", json!({"TTL": entry.ttl}))
            .await?;
        let lease_id = lease["ID"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| lease["ID"].as_i64().map(|n| n.to_string()))
            .ok_or_else(|| RegistryError::Refused(format!("no lease id in {lease}")))?;
        self.call(
            "/v3/kv/put",
            json!({"key": B64.encode(&entry.key), "value": B64.encode(&entry.value), "lease": lease_id}),
        )
        .await?;
        Ok(lease_id)
    }

    /// Renews the lease: `false` when etcd no longer has it (an expired lease answers
    /// without a TTL).
    async fn keep_alive(&self, lease: &str) -> Result<bool> {
        let v = self
            .call("/v3/lease/keepalive", json!({"ID": lease}))
            .await?;
        Ok(ttl_of(&v["result"]) > 0)
    }

    /// Whether the lease is alive and still carries `key`.
    async fn holds(&self, lease: &str, key: &str) -> Result<bool> {
        let v = self
            .call("/v3/lease/timetolive", json!({"ID": lease, "keys": true}))
            .await?;
        let want = B64.encode(key);
        Ok(ttl_of(&v) > 0
            && v["keys"]
                .as_array()
                .is_some_and(|keys| keys.iter().any(|k| k.as_str() == Some(want.as_str()))))
    }

    /// Keeps a registration alive until aborted: a keep-alive every TTL/3, a check that the
    /// key is still there about once per TTL and after every outage, and a new registration
    /// whenever the old one is gone. While `ready` reads false: withdrawn (key deleted,
    /// lease revoked), and written again once it reads true.
    async fn heartbeat(
        self,
        entry: Arc<Entry>,
        lease: Arc<Mutex<String>>,
        mut ready: Option<watch::Receiver<bool>>,
    ) {
        let every = Duration::from_secs(entry.ttl)
            .div_f64(3.0)
            .max(Duration::from_millis(200));
        let current = || lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let is_ready = |r: &Option<watch::Receiver<bool>>| r.as_ref().is_none_or(|r| *r.borrow());
        let mut failing_since: Option<Instant> = None;
        let mut beats: u64 = 0;
        // Registered not ready: nothing written yet.
        let mut withdrawn = current().is_empty();
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                () = crate::HealthSpec::ready_changed(&mut ready) => {}
            }
            beats += 1;
            let id = current();
            match (is_ready(&ready), withdrawn) {
                (false, false) => {
                    // Not ready: out of discovery now, not when the lease would lapse.
                    match self.withdraw(&entry.key, &id).await {
                        Ok(()) => {
                            tracing::info!(key = %entry.key, "not ready: removed from etcd until ready again")
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, key = %entry.key, "not ready, and removing the key failed; its lease lapses without keep-alives")
                        }
                    }
                    withdrawn = true;
                    continue;
                }
                (false, true) => continue,
                (true, true) => {
                    match self.put_entry(&entry).await {
                        Ok(new_lease) => {
                            tracing::info!(key = %entry.key, "ready again: registered in etcd");
                            *lease.lock().unwrap_or_else(|p| p.into_inner()) = new_lease;
                            withdrawn = false;
                            failing_since = None;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, key = %entry.key, "ready again, but registering failed; retrying");
                        }
                    }
                    continue;
                }
                (true, false) => {}
            }
            let mut state = self.keep_alive(&id).await;
            if matches!(state, Ok(true)) && (failing_since.is_some() || beats.is_multiple_of(3)) {
                state = self.holds(&id, &entry.key).await;
            }
            match state {
                Ok(true) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(key = %entry.key, after = ?since.elapsed(), "etcd reachable again; registration intact");
                    }
                }
                Ok(false) => match self.put_entry(&entry).await {
                    Ok(new_lease) => {
                        tracing::warn!(key = %entry.key, "registration was gone from etcd (lease expired or key removed); registered again");
                        *lease.lock().unwrap_or_else(|p| p.into_inner()) = new_lease;
                        failing_since = None;
                        // The old lease, if it still exists, no longer carries our key.
                        let _ = self.call("/v3/lease/revoke", json!({"ID": id})).await;
                    }
                    Err(e) => {
                        if failing_since.is_none() {
                            failing_since = Some(Instant::now());
                        }
                        tracing::warn!(error = %e, key = %entry.key, "registration gone from etcd and re-registering failed; retrying");
                    }
                },
                Err(e) => {
                    if failing_since.is_none() {
                        failing_since = Some(Instant::now());
                        tracing::warn!(error = %e, key = %entry.key, "etcd keep-alive failing; retrying every {every:?} and re-registering if the registration lapsed");
                    } else {
                        tracing::debug!(error = %e, "etcd keep-alive still failing");
                    }
                }
            }
        }
    }

    /// Deletes the key and revokes its lease (a lease etcd no longer has is gone already).
    async fn withdraw(&self, key: &str, lease: &str) -> Result<()> {
        self.call("/v3/kv/deleterange", json!({"key": B64.encode(key)}))
            .await?;
        if lease.is_empty() {
            return Ok(());
        }
        match self.call("/v3/lease/revoke", json!({"ID": lease})).await {
            Err(RegistryError::Refused(e)) if e.contains("lease not found") => Ok(()),
            other => other.map(|_| ()),
        }
    }
}

/// The `TTL` of a lease answer (etcd's JSON gateway writes int64 as a string and leaves out
/// zero values).
fn ttl_of(v: &Value) -> i64 {
    match &v["TTL"] {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

#[async_trait]
impl ServiceRegistry for EtcdRegistry {
    async fn register(&self, instance: Instance, health: HealthSpec) -> Result<Registration> {
        check_instance(&instance)?;
        let ttl = health.ttl.as_secs().max(1);
        let key = format!("{}{}", self.service_prefix(&instance.service), instance.id);
        let value =
            serde_json::to_vec(&instance).map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let entry = Arc::new(Entry { key, value, ttl });
        // Written now only when ready; otherwise by the heartbeat once it is.
        let lease = Arc::new(Mutex::new(if health.is_ready() {
            self.put_entry(&entry).await?
        } else {
            String::new()
        }));
        let heartbeat = tokio::spawn(self.clone().heartbeat(
            entry.clone(),
            lease.clone(),
            health.ready.clone(),
        ));
        let me = self.clone();
        Ok(Registration::new(instance.id, Some(heartbeat), move || {
            Box::pin(async move {
                let lease_id = lease.lock().unwrap_or_else(|p| p.into_inner()).clone();
                me.withdraw(&entry.key, &lease_id).await
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
            let mut recovering = false;
            loop {
                if tx.is_closed() {
                    return;
                }
                match me.follow(&service, &tx, &mut recovering).await {
                    Ok(()) => backoff = Duration::from_millis(200),
                    Err(e) => {
                        if !recovering {
                            tracing::warn!(error = %e, service, "etcd watch interrupted; keeping the last known instances");
                        }
                        recovering = true;
                        tokio::time::sleep(jitter(backoff)).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        });
        Ok(rx)
    }
}

/// Publishes `set`; until `hold_until`, instances that vanished from it are kept.
fn publish(tx: &watch::Sender<Vec<Instance>>, mut set: Vec<Instance>, hold_until: Option<Instant>) {
    if hold_until.is_some_and(|t| Instant::now() < t) {
        let current = tx.borrow().clone();
        for i in current {
            if !set.iter().any(|n| n.id == i.id) {
                set.push(i);
            }
        }
        set = sorted(set);
    }
    tx.send_if_modified(|cur| std::mem::replace(cur, set.clone()) != set);
}

/// Whether a watch response line reports events.
fn has_events(line: &[u8]) -> bool {
    serde_json::from_slice::<Value>(line).is_ok_and(|v| {
        v["result"]["events"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
    })
}

impl EtcdRegistry {
    /// Streams watch events for the service prefix until the stream ends, publishing the
    /// re-read set after each event and every [`RESYNC_EVERY`]. `recovering`: the registry
    /// was unreachable before this call; once it answers again, vanished instances are kept
    /// for the grace period.
    async fn follow(
        &self,
        service: &str,
        tx: &watch::Sender<Vec<Instance>>,
        recovering: &mut bool,
    ) -> Result<()> {
        let p = self.service_prefix(service);
        let request = self
            .http
            .post(format!("{}/v3/watch", self.endpoint))
            .json(&json!({"create_request": {"key": B64.encode(&p), "range_end": B64.encode(prefix_end(&p))}}))
            .send();
        let mut resp = tokio::time::timeout(CALL_TIMEOUT, request)
            .await
            .map_err(|_| unavailable("no answer to the watch request"))?
            .map_err(unavailable)?;
        // Re-read once the watch is established: changes between the initial read and now.
        let set = self.range(service).await?;
        let hold_until = std::mem::take(recovering).then(|| Instant::now() + self.grace);
        if hold_until.is_some() {
            tracing::info!(service, grace = ?self.grace, "etcd reachable again; keeping vanished instances for the grace period");
        }
        publish(tx, set, hold_until);
        let mut buf = Vec::new();
        loop {
            let resync_at = match hold_until {
                Some(t) if t > Instant::now() => t + Duration::from_millis(50),
                _ => Instant::now() + RESYNC_EVERY,
            };
            let chunk = tokio::select! {
                c = resp.chunk() => c.map_err(unavailable)?,
                () = tx.closed() => return Ok(()),
                () = tokio::time::sleep_until(resync_at) => {
                    publish(tx, self.range(service).await?, hold_until);
                    continue;
                }
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
                changed |= has_events(&line);
            }
            if !buf.is_empty() && serde_json::from_slice::<Value>(&buf).is_ok() {
                changed |= has_events(&buf);
                buf.clear();
            }
            if changed {
                publish(tx, self.range(service).await?, hold_until);
            }
        }
    }
}
