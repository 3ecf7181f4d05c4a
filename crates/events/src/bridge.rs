//! The development bus across processes: one process (`plt dev`) serves its embedded bus
//! over HTTP on loopback ([`routes`]), and services running as other processes (feature
//! services under `plt dev`) use it as their bus ([`BridgeBus`], `events.backend: bridge`
//! with `events.bridge.url`). Same semantics as the embedded bus — partitions, consumer
//! groups, committed offsets, redelivery after a member leaves — because it *is* that bus;
//! a member that stops polling for `MEMBER_TIMEOUT` is taken out of its group (its process
//! died), as Kafka does after a session time-out. For development only: refused in
//! production like `memory`.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | /plt/bus/publish | `{messages: [Wire]}` | `{results: [null or error]}` |
//! | POST | /plt/bus/join | `{group, topics, latest}` | `{member}` |
//! | POST | /plt/bus/poll | `{member, max, wait_ms}` | `{messages: [Wire]}`, 404 if the member is gone |
//! | POST | /plt/bus/commit | `{member, positions}` | 204, 409 after a rebalance |
//! | POST | /plt/bus/leave | `{member}` | 204 |

use crate::{Bus, BusError, Consumer, Outgoing, Position, Received, consumer::Start};
use async_trait::async_trait;
use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// A member that has not polled for this long has left its group.
pub const MEMBER_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest one poll waits at the bridge.
const MAX_WAIT: Duration = Duration::from_secs(5);

/// A message on the wire (bytes as arrays: development traffic, small).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Wire {
    pub topic: String,
    #[serde(default)]
    pub partition: i32,
    #[serde(default)]
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub value: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct PublishBody {
    messages: Vec<Wire>,
}

#[derive(Serialize, Deserialize)]
struct PublishAnswer {
    /// `None`: published; else why not.
    results: Vec<Option<String>>,
}

#[derive(Serialize, Deserialize)]
struct JoinBody {
    group: String,
    topics: Vec<String>,
    latest: bool,
}

#[derive(Serialize, Deserialize)]
struct MemberAnswer {
    member: u64,
}

#[derive(Serialize, Deserialize)]
struct PollBody {
    member: u64,
    max: usize,
    wait_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct MessagesAnswer {
    messages: Vec<Wire>,
}

#[derive(Serialize, Deserialize)]
struct CommitBody {
    member: u64,
    positions: Vec<(String, i32, i64)>,
}

#[derive(Serialize, Deserialize)]
struct LeaveBody {
    member: u64,
}

type Member = Arc<tokio::sync::Mutex<Box<dyn Consumer>>>;

struct Bridge {
    bus: Arc<dyn Bus>,
    timeout: Duration,
    members: Mutex<HashMap<u64, (Member, Instant)>>,
    next: Mutex<u64>,
}

impl Bridge {
    fn member(&self, id: u64) -> Option<Member> {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        let (m, seen) = members.get_mut(&id)?;
        *seen = Instant::now();
        Some(m.clone())
    }

    /// Drops members whose process stopped polling: their partitions go to the others.
    fn reap(&self) {
        let mut members = self.members.lock().unwrap_or_else(|p| p.into_inner());
        members.retain(|id, (_, seen)| {
            let alive = seen.elapsed() < self.timeout;
            if !alive {
                tracing::info!(
                    member = id,
                    "bus bridge: a member stopped polling; it left its group"
                );
            }
            alive
        });
    }
}

/// Serves `bus` to other processes (`plt dev`); a reaper drops members silent for
/// [`MEMBER_TIMEOUT`].
pub fn routes(bus: Arc<dyn Bus>) -> Router {
    routes_with(bus, MEMBER_TIMEOUT)
}

/// [`routes`] with another member time-out (tests).
pub fn routes_with(bus: Arc<dyn Bus>, member_timeout: Duration) -> Router {
    let bridge = Arc::new(Bridge {
        bus,
        timeout: member_timeout,
        members: Mutex::new(HashMap::new()),
        next: Mutex::new(0),
    });
    let weak = Arc::downgrade(&bridge);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval((member_timeout / 4).max(Duration::from_millis(10)));
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(b) => b.reap(),
                None => return,
            }
        }
    });
    Router::new()
        .route("/plt/bus/publish", post(publish))
        .route("/plt/bus/join", post(join))
        .route("/plt/bus/poll", post(poll))
        .route("/plt/bus/commit", post(commit))
        .route("/plt/bus/leave", post(leave))
        .with_state(bridge)
}

type Answer<T> = Result<Json<T>, (StatusCode, String)>;

fn bus_error(e: BusError) -> (StatusCode, String) {
    match e {
        BusError::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
        BusError::Rejected(m) | BusError::Config(m) => (StatusCode::BAD_REQUEST, m),
    }
}

async fn publish(
    State(b): State<Arc<Bridge>>,
    Json(body): Json<PublishBody>,
) -> Answer<PublishAnswer> {
    let out: Vec<Outgoing> = body
        .messages
        .into_iter()
        .map(|w| Outgoing {
            topic: w.topic,
            key: w.key,
            headers: w.headers,
            value: w.value,
        })
        .collect();
    let results = b
        .bus
        .publish(&out)
        .await
        .into_iter()
        .map(|r| r.err().map(|e| e.to_string()))
        .collect();
    Ok(Json(PublishAnswer { results }))
}

async fn join(State(b): State<Arc<Bridge>>, Json(body): Json<JoinBody>) -> Answer<MemberAnswer> {
    let start = if body.latest {
        Start::Latest
    } else {
        Start::Earliest
    };
    let consumer = b
        .bus
        .join(&body.group, &body.topics, start)
        .await
        .map_err(bus_error)?;
    let id = {
        let mut next = b.next.lock().unwrap_or_else(|p| p.into_inner());
        *next += 1;
        *next
    };
    b.members.lock().unwrap_or_else(|p| p.into_inner()).insert(
        id,
        (Arc::new(tokio::sync::Mutex::new(consumer)), Instant::now()),
    );
    Ok(Json(MemberAnswer { member: id }))
}

fn gone() -> (StatusCode, String) {
    (
        StatusCode::NOT_FOUND,
        "no such member (it stopped polling and left its group): join again".into(),
    )
}

async fn poll(State(b): State<Arc<Bridge>>, Json(body): Json<PollBody>) -> Answer<MessagesAnswer> {
    let member = b.member(body.member).ok_or_else(gone)?;
    let wait = Duration::from_millis(body.wait_ms).min(MAX_WAIT);
    let got = member
        .lock()
        .await
        .poll(body.max.clamp(1, 10_000), wait)
        .await
        .map_err(bus_error)?;
    b.member(body.member);
    Ok(Json(MessagesAnswer {
        messages: got
            .into_iter()
            .map(|r| Wire {
                topic: r.topic,
                partition: r.partition,
                offset: r.offset,
                key: r.key,
                headers: r.headers,
                value: r.value,
            })
            .collect(),
    }))
}

async fn commit(
    State(b): State<Arc<Bridge>>,
    Json(body): Json<CommitBody>,
) -> Result<StatusCode, (StatusCode, String)> {
    let member = b.member(body.member).ok_or_else(gone)?;
    let positions: Vec<Position> = body
        .positions
        .into_iter()
        .map(|(topic, partition, next)| Position {
            topic,
            partition,
            next,
        })
        .collect();
    member
        .lock()
        .await
        .commit(&positions)
        .await
        .map_err(|e| (StatusCode::CONFLICT, e.to_string()))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn leave(State(b): State<Arc<Bridge>>, Json(body): Json<LeaveBody>) -> StatusCode {
    let removed = b
        .members
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&body.member);
    drop(removed);
    StatusCode::NO_CONTENT
}

/// The bus of another process, over [`routes`] (`events.backend: bridge`).
#[derive(Clone)]
pub struct BridgeBus {
    http: reqwest::Client,
    base: String,
}

impl BridgeBus {
    /// The bridge at `url` (`http://127.0.0.1:<port>`, where `plt dev` serves it).
    pub fn new(url: &str) -> Result<Self, BusError> {
        let http = plt_kernel::tls::http_client_builder()
            .connect_timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| BusError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: url.trim_end_matches('/').to_owned(),
        })
    }

    async fn call<B: Serialize, T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<Option<T>, BusError> {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| BusError::Unavailable(format!("bus bridge: {e}")))?;
        match r.status() {
            s if s.is_success() && s != StatusCode::NO_CONTENT => r
                .json()
                .await
                .map(Some)
                .map_err(|e| BusError::Unavailable(format!("bus bridge answer: {e}"))),
            s if s.is_success() => Ok(None),
            StatusCode::BAD_REQUEST => Err(BusError::Rejected(r.text().await.unwrap_or_default())),
            s => Err(BusError::Unavailable(format!(
                "bus bridge answered {s}: {}",
                r.text().await.unwrap_or_default()
            ))),
        }
    }
}

#[async_trait]
impl Bus for BridgeBus {
    fn backend(&self) -> &'static str {
        "bridge"
    }

    async fn publish(&self, messages: &[Outgoing]) -> Vec<Result<(), BusError>> {
        let body = PublishBody {
            messages: messages
                .iter()
                .map(|m| Wire {
                    topic: m.topic.clone(),
                    partition: 0,
                    offset: 0,
                    key: m.key.clone(),
                    headers: m.headers.clone(),
                    value: m.value.clone(),
                })
                .collect(),
        };
        match self
            .call::<_, PublishAnswer>("/plt/bus/publish", &body, Duration::from_secs(10))
            .await
        {
            Ok(Some(a)) if a.results.len() == messages.len() => a
                .results
                .into_iter()
                .map(|r| match r {
                    None => Ok(()),
                    Some(e) => Err(BusError::Rejected(e)),
                })
                .collect(),
            Ok(_) => messages
                .iter()
                .map(|_| Err(BusError::Unavailable("bus bridge: a short answer".into())))
                .collect(),
            Err(e) => messages.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    async fn join(
        &self,
        group: &str,
        topics: &[String],
        start: Start,
    ) -> Result<Box<dyn Consumer>, BusError> {
        let join = JoinBody {
            group: group.to_owned(),
            topics: topics.to_vec(),
            latest: start == Start::Latest,
        };
        let member = self.join_member(&join).await?;
        Ok(Box::new(BridgeConsumer {
            bus: self.clone(),
            join,
            member,
        }))
    }
}

impl BridgeBus {
    async fn join_member(&self, join: &JoinBody) -> Result<u64, BusError> {
        let a: Option<MemberAnswer> = self
            .call("/plt/bus/join", join, Duration::from_secs(5))
            .await?;
        a.map(|a| a.member)
            .ok_or_else(|| BusError::Unavailable("bus bridge: no member id".into()))
    }
}

struct BridgeConsumer {
    bus: BridgeBus,
    join: JoinBody,
    member: u64,
}

#[async_trait]
impl Consumer for BridgeConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Received>, BusError> {
        let wait = wait.min(MAX_WAIT);
        let body = PollBody {
            member: self.member,
            max,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
        };
        let got: Result<Option<MessagesAnswer>, BusError> = self
            .bus
            .call("/plt/bus/poll", &body, wait + Duration::from_secs(5))
            .await;
        match got {
            Ok(a) => Ok(a
                .map(|a| a.messages)
                .unwrap_or_default()
                .into_iter()
                .map(|w| Received {
                    topic: w.topic,
                    partition: w.partition,
                    offset: w.offset,
                    key: w.key,
                    headers: w.headers,
                    value: w.value,
                })
                .collect()),
            Err(BusError::Unavailable(m)) if m.contains("404") => {
                // Taken out of the group (the bridge restarted, or we were silent too
                // long): join again; the group resumes from its committed offsets.
                self.member = self.bus.join_member(&self.join).await?;
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<(), BusError> {
        let body = CommitBody {
            member: self.member,
            positions: positions
                .iter()
                .map(|p| (p.topic.clone(), p.partition, p.next))
                .collect(),
        };
        self.bus
            .call::<_, serde_json::Value>("/plt/bus/commit", &body, Duration::from_secs(5))
            .await
            .map(drop)
    }

    async fn close(self: Box<Self>) {
        let _ = self
            .bus
            .call::<_, serde_json::Value>(
                "/plt/bus/leave",
                &LeaveBody {
                    member: self.member,
                },
                Duration::from_secs(2),
            )
            .await;
    }
}

impl Drop for BridgeConsumer {
    /// Leaving the group when the consumer is dropped (also when its task is killed), as the
    /// embedded bus does; a process that dies is taken out by the bridge after
    /// [`MEMBER_TIMEOUT`].
    fn drop(&mut self) {
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let bus = self.bus.clone();
            let member = self.member;
            rt.spawn(async move {
                let _ = bus
                    .call::<_, serde_json::Value>(
                        "/plt/bus/leave",
                        &LeaveBody { member },
                        Duration::from_secs(2),
                    )
                    .await;
            });
        }
    }
}
