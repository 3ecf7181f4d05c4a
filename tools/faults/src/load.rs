//! Load on the gateway: an open-loop generator (requests start on a fixed schedule whatever
//! the answers do, each with its own client-side timeout) and the record of every request.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::task::JoinSet;
use uuid::Uuid;

/// Client-side timeout of every request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET /api/v1/users/{id}` with the admin's token (gateway → authz → identity).
    Read,
    /// `POST /api/v1/users` (public sign-up; identity and its database).
    Write,
    /// `POST /api/v1/auth/login` by the rightful user.
    Login,
    /// `POST /api/v1/auth/login` by the attacker (password spraying).
    Attack,
}

impl Kind {
    /// Whether the request reaches identity (directly, or through auth for sign-ins).
    pub fn needs_identity(self) -> bool {
        matches!(self, Kind::Read | Kind::Write)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    Timeout,
    /// A transport error (refused, reset, broken answer), shortened.
    Error(String),
}

impl Outcome {
    pub fn ok(&self) -> bool {
        matches!(self, Outcome::Status(s) if (200..300).contains(s))
    }

    pub fn label(&self) -> String {
        match self {
            Outcome::Status(s) => s.to_string(),
            Outcome::Timeout => "timeout".into(),
            Outcome::Error(e) => format!("error({e})"),
        }
    }

    pub fn from_error(e: &reqwest::Error) -> Self {
        if e.is_timeout() {
            Outcome::Timeout
        } else if e.is_connect() {
            Outcome::Error("connect".into())
        } else if e.is_request() || e.is_body() || e.is_decode() {
            Outcome::Error("request".into())
        } else {
            Outcome::Error("other".into())
        }
    }
}

/// One request: when it was due (seconds since the scenario's start), how long until its
/// answer (from when it was due: no coordinated omission), and the answer.
#[derive(Debug, Clone)]
pub struct Sample {
    pub kind: Kind,
    pub start: f64,
    pub latency: f64,
    pub outcome: Outcome,
}

impl Sample {
    pub fn end(&self) -> f64 {
        self.start + self.latency
    }
}

/// Every request of a scenario, timed against the scenario's start.
#[derive(Clone)]
pub struct Recorder {
    t0: Instant,
    wall0: std::time::SystemTime,
    samples: Arc<Mutex<Vec<Sample>>>,
}

impl Recorder {
    pub fn new() -> Self {
        Self {
            t0: Instant::now(),
            wall0: std::time::SystemTime::now(),
            samples: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The wall-clock time (UTC, as the services log it) of t = 0, `HH:MM:SS.mmm`.
    pub fn started_at(&self) -> String {
        let ms = self
            .wall0
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or_default();
        let day_ms = ms % 86_400_000;
        format!(
            "{:02}:{:02}:{:02}.{:03}",
            day_ms / 3_600_000,
            day_ms / 60_000 % 60,
            day_ms / 1000 % 60,
            day_ms % 1000
        )
    }

    /// Seconds since the scenario's start.
    pub fn now(&self) -> f64 {
        self.at(Instant::now())
    }

    pub fn at(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.t0).as_secs_f64()
    }

    pub fn record(&self, kind: Kind, due: Instant, outcome: Outcome) {
        let sample = Sample {
            kind,
            start: self.at(due),
            latency: due.elapsed().as_secs_f64(),
            outcome,
        };
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sample);
    }

    /// A copy of the samples so far, by start time.
    pub fn samples(&self) -> Vec<Sample> {
        let mut v = self
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        v.sort_by(|a, b| a.start.total_cmp(&b.start));
        v
    }
}

/// Users whose creation was acknowledged (201): reads pick among them, and each must still
/// be readable after the scenario.
#[derive(Clone, Default)]
pub struct Users {
    ids: Arc<Mutex<Vec<Uuid>>>,
}

impl Users {
    pub fn add(&self, id: Uuid) {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).push(id);
    }

    pub fn all(&self) -> Vec<Uuid> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn pick(&self) -> Option<Uuid> {
        let ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.is_empty() {
            return None;
        }
        let i = (Uuid::new_v4().as_u128() % ids.len() as u128) as usize;
        Some(ids[i])
    }
}

/// The HTTP client of the load (HTTP/1.1 to the gateway, pooled, per-request timeout).
pub fn client(local: Option<std::net::IpAddr>) -> anyhow::Result<reqwest::Client> {
    Ok(plt_kernel::tls::http_client_builder()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_secs(5))
        .http1_only()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(512)
        .local_address(local)
        .build()?)
}

/// A new user's e-mail and password (unique per run and sequence number).
pub fn new_user(tag: &str, n: u64) -> (String, String) {
    (
        format!("faults-{tag}-{n}@example.com"),
        format!("correct horse battery staple {n}"),
    )
}

/// Signs a new user up through the gateway; Some(id) when acknowledged with 201.
pub async fn sign_up(
    http: &reqwest::Client,
    gateway: SocketAddr,
    email: &str,
    password: &str,
) -> Result<Uuid, Outcome> {
    let resp = http
        .post(format!("http://{gateway}/api/v1/users"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .map_err(|e| Outcome::from_error(&e))?;
    let status = resp.status().as_u16();
    if status != 201 {
        return Err(Outcome::Status(status));
    }
    let body: serde_json::Value = resp.json().await.map_err(|e| Outcome::from_error(&e))?;
    body["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Outcome::Error("201 without an id".into()))
}

/// What the generator does.
#[derive(Clone)]
pub struct LoadSpec {
    pub gateway: SocketAddr,
    /// Requests per second, started on a fixed schedule.
    pub rate: f64,
    /// Every `write_every`-th request is a sign-up, the others reads.
    pub write_every: u64,
    /// The admin's access token for the reads.
    pub token: String,
    /// Makes sign-up e-mails unique to this run.
    pub tag: String,
}

/// A running generator.
pub struct Load {
    stop: Arc<AtomicBool>,
    scheduler: tokio::task::JoinHandle<JoinSet<()>>,
}

impl Load {
    pub fn start(
        spec: LoadSpec,
        http: reqwest::Client,
        users: Users,
        rec: Recorder,
        first_user: u64,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let scheduler = tokio::spawn(schedule(spec, http, users, rec, stop.clone(), first_user));
        Self { stop, scheduler }
    }

    /// Stops starting requests and waits for those in flight (each ends by its timeout).
    pub async fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let Ok(mut tasks) = self.scheduler.await else {
            return;
        };
        let drained = tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tasks.abort_all();
        }
    }
}

async fn schedule(
    spec: LoadSpec,
    http: reqwest::Client,
    users: Users,
    rec: Recorder,
    stop: Arc<AtomicBool>,
    first_user: u64,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    let period = Duration::from_secs_f64(1.0 / spec.rate.max(0.1));
    let begin = Instant::now();
    let mut n: u64 = 0;
    let mut next_user = first_user;
    while !stop.load(Ordering::SeqCst) {
        let due = begin + period.mul_f64(n as f64);
        tokio::time::sleep_until(due.into()).await;
        if stop.load(Ordering::SeqCst) {
            break;
        }
        n += 1;
        // Reap finished requests so the set stays small.
        while tasks.try_join_next().is_some() {}
        let http = http.clone();
        let rec = rec.clone();
        let users = users.clone();
        let gateway = spec.gateway;
        if n.is_multiple_of(spec.write_every.max(1)) {
            let (email, password) = new_user(&spec.tag, next_user);
            next_user += 1;
            tasks.spawn(async move {
                let outcome = match sign_up(&http, gateway, &email, &password).await {
                    Ok(id) => {
                        users.add(id);
                        Outcome::Status(201)
                    }
                    Err(o) => o,
                };
                rec.record(Kind::Write, due, outcome);
            });
        } else {
            let Some(id) = users.pick() else { continue };
            let token = spec.token.clone();
            tasks.spawn(async move {
                let outcome = get_user(&http, gateway, &token, id).await;
                rec.record(Kind::Read, due, outcome);
            });
        }
    }
    tasks
}

/// Signs in through the gateway; the access token when answered 200.
pub async fn login(
    http: &reqwest::Client,
    gateway: SocketAddr,
    email: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> Result<String, Outcome> {
    let mut req = http
        .post(format!("http://{gateway}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}));
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    let resp = req.send().await.map_err(|e| Outcome::from_error(&e))?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(|e| Outcome::from_error(&e))?;
    if status != 200 {
        return Err(Outcome::Status(status));
    }
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["access_token"].as_str().map(str::to_owned))
        .ok_or_else(|| Outcome::Error("200 without an access token".into()))
}

/// `GET /api/v1/users/{id}` with a bearer token; the status, or how it failed.
pub async fn get_user(
    http: &reqwest::Client,
    gateway: SocketAddr,
    token: &str,
    id: Uuid,
) -> Outcome {
    match http
        .get(format!("http://{gateway}/api/v1/users/{id}"))
        .bearer_auth(token)
        .send()
        .await
    {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // Read the body so the connection goes back to the pool.
            match resp.bytes().await {
                Ok(_) => Outcome::Status(status),
                Err(e) => Outcome::from_error(&e),
            }
        }
        Err(e) => Outcome::from_error(&e),
    }
}
