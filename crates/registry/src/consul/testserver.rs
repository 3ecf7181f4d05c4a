//! An in-repo server for exactly the subset of the Consul agent HTTP API that
//! [`super::ConsulRegistry`] uses, following Consul's documented behaviour: TTL checks start
//! critical and pass on `check/pass`, turn critical on `check/fail` or after their TTL, critical
//! services
//! are removed after `DeregisterCriticalServiceAfter`, `?passing` filters to passing
//! instances, and health queries with `index` block until the result's index moves past it
//! or `wait` elapses, answering with `X-Consul-Index`.

use axum::{
    Json, Router,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::{get, put},
};
use serde::Deserialize;
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
struct Service {
    body: Value,
    name: String,
    check_id: String,
    ttl: Duration,
    deregister_after: Duration,
    last_pass: Option<Instant>,
    critical_since: Option<Instant>,
}

#[derive(Default)]
struct Inner {
    services: BTreeMap<String, Service>,
    index: u64,
    /// Last published passing set per service name, to bump the index only on change.
    published: HashMap<String, Vec<String>>,
}

#[derive(Clone, Default)]
pub struct ConsulTestServer {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
}

fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.')?);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "ns" => n / 1e9,
        "us" | "µs" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

impl ConsulTestServer {
    /// Serves on `127.0.0.1:0`; returns the base URL.
    pub async fn start() -> std::io::Result<(Self, String)> {
        let server = Self::default();
        let app = Router::new()
            .route("/v1/agent/service/register", put(register))
            .route("/v1/agent/service/deregister/{id}", put(deregister))
            .route("/v1/agent/check/pass/{check}", put(pass))
            .route("/v1/agent/check/fail/{check}", put(fail))
            .route("/v1/health/service/{name}", get(health))
            .with_state(server.clone());
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let ticker = server.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(Duration::from_millis(50));
            loop {
                t.tick().await;
                ticker.tick();
            }
        });
        Ok((server, format!("http://{addr}")))
    }

    fn passing(s: &Service, now: Instant) -> bool {
        s.last_pass.is_some_and(|t| now.duration_since(t) <= s.ttl)
    }

    /// Lapses TTLs, reaps long-critical services, bumps the index when a passing set moves.
    fn tick(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let mut reap = Vec::new();
        for (id, s) in inner.services.iter_mut() {
            if Self::passing(s, now) {
                s.critical_since = None;
            } else {
                let since = *s.critical_since.get_or_insert(now);
                if now.duration_since(since) >= s.deregister_after {
                    reap.push(id.clone());
                }
            }
        }
        for id in reap {
            inner.services.remove(&id);
        }
        self.republish(&mut inner, now);
    }

    fn republish(&self, inner: &mut Inner, now: Instant) {
        let mut sets: HashMap<String, Vec<String>> = HashMap::new();
        for (id, s) in &inner.services {
            let entry = sets.entry(s.name.clone()).or_default();
            if Self::passing(s, now) {
                entry.push(id.clone());
            }
        }
        let mut moved = false;
        let names: Vec<String> = sets.keys().chain(inner.published.keys()).cloned().collect();
        for name in names {
            let now_set = sets.get(&name).cloned().unwrap_or_default();
            if inner.published.get(&name).cloned().unwrap_or_default() != now_set {
                inner.published.insert(name, now_set);
                moved = true;
            }
        }
        if moved {
            inner.index += 1;
            self.changed.notify_waiters();
        }
    }

    /// Forgets every registration, as an agent restarted without its state would.
    pub fn forget_all(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.services.clear();
        self.republish(&mut inner, Instant::now());
    }

    /// Registered service ids (any health), for tests.
    pub fn registered(&self) -> Vec<String> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .services
            .keys()
            .cloned()
            .collect()
    }
}

async fn register(State(s): State<ConsulTestServer>, Json(body): Json<Value>) -> impl IntoResponse {
    let (Some(id), Some(name)) = (body["ID"].as_str(), body["Name"].as_str()) else {
        return (StatusCode::BAD_REQUEST, "ID and Name required").into_response();
    };
    let ttl = body["Check"]["TTL"].as_str().and_then(parse_go_duration);
    let dereg = body["Check"]["DeregisterCriticalServiceAfter"]
        .as_str()
        .and_then(parse_go_duration);
    let Some(ttl) = ttl else {
        return (StatusCode::BAD_REQUEST, "only TTL checks are supported").into_response();
    };
    let check_id = body["Check"]["CheckID"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| format!("service:{id}"));
    let mut inner = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    inner.services.insert(
        id.to_owned(),
        Service {
            body: body.clone(),
            name: name.to_owned(),
            check_id,
            ttl,
            deregister_after: dereg.unwrap_or(Duration::from_secs(3600 * 24 * 365)),
            // Consul: a TTL check starts critical until the first pass.
            last_pass: None,
            critical_since: None,
        },
    );
    s.republish(&mut inner, Instant::now());
    StatusCode::OK.into_response()
}

async fn deregister(
    State(s): State<ConsulTestServer>,
    Path(id): Path<String>,
) -> impl IntoResponse {
    let mut inner = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    inner.services.remove(&id);
    s.republish(&mut inner, Instant::now());
    StatusCode::OK
}

async fn pass(State(s): State<ConsulTestServer>, Path(check): Path<String>) -> impl IntoResponse {
    let mut inner = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let Some(svc) = inner.services.values_mut().find(|v| v.check_id == check) else {
        return (
            StatusCode::NOT_FOUND,
            format!("CheckID {check:?} does not have associated TTL"),
        )
            .into_response();
    };
    svc.last_pass = Some(now);
    svc.critical_since = None;
    s.republish(&mut inner, now);
    StatusCode::OK.into_response()
}

async fn fail(State(s): State<ConsulTestServer>, Path(check): Path<String>) -> impl IntoResponse {
    let mut inner = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let Some(svc) = inner.services.values_mut().find(|v| v.check_id == check) else {
        return (
            StatusCode::NOT_FOUND,
            format!("CheckID {check:?} does not have associated TTL"),
        )
            .into_response();
    };
    // Critical now (the TTL is reset: it stays critical until the next pass).
    svc.last_pass = None;
    svc.critical_since.get_or_insert(now);
    s.republish(&mut inner, now);
    StatusCode::OK.into_response()
}

#[derive(Deserialize)]
struct HealthQuery {
    passing: Option<String>,
    index: Option<u64>,
    wait: Option<String>,
}

async fn health(
    State(s): State<ConsulTestServer>,
    Path(name): Path<String>,
    Query(q): Query<HealthQuery>,
) -> impl IntoResponse {
    if let Some(index) = q.index {
        let wait = q
            .wait
            .as_deref()
            .and_then(parse_go_duration)
            .unwrap_or(Duration::from_secs(300))
            .min(Duration::from_secs(600));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = s.changed.notified();
            if s.inner.lock().unwrap_or_else(|p| p.into_inner()).index > index {
                break;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break;
            }
        }
    }
    let inner = s.inner.lock().unwrap_or_else(|p| p.into_inner());
    let now = Instant::now();
    let only_passing = q
        .passing
        .is_some_and(|p| p.is_empty() || p == "true" || p == "1");
    let entries: Vec<Value> = inner
        .services
        .values()
        .filter(|svc| svc.name == name && (!only_passing || ConsulTestServer::passing(svc, now)))
        .map(|svc| {
            let b = &svc.body;
            let status = if ConsulTestServer::passing(svc, now) {
                "passing"
            } else {
                "critical"
            };
            json!({
                "Node": {"Node": "plt-test", "Address": "127.0.0.1"},
                "Service": {
                    "ID": b["ID"], "Service": b["Name"], "Address": b["Address"], "Port": b["Port"],
                    "Tags": b["Tags"], "Meta": b["Meta"],
                },
                "Checks": [{"CheckID": svc.check_id, "Status": status, "ServiceID": b["ID"]}],
            })
        })
        .collect();
    let mut headers = HeaderMap::new();
    if let Ok(v) = inner.index.max(1).to_string().parse() {
        headers.insert("x-consul-index", v);
    }
    (headers, Json(entries)).into_response()
}
