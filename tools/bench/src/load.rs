//! A small HTTP/1.1 load generator on hyper's connection API: N keep-alive connections, each
//! with one request in flight at a time.
//!
//! - **Closed loop** ([`closed_loop`]): every connection sends its next request as soon as the
//!   previous answer is read, for a warm-up and then a measured window; the throughput is the
//!   requests started in the window over its length, the latency each request's own time.
//! - **Open loop** ([`open_loop`]): a pacing thread (OS sleep, not the 1 ms tokio timer) emits
//!   send times at a fixed rate into a queue the connections take from; latency is measured
//!   from the *scheduled* send time, so a request that waited for a free connection because
//!   earlier ones were slow counts its wait (no coordinated omission).
//!
//! Any transport error or non-2xx answer is an error; a failed connection is replaced.

use bytes::Bytes;
use http::{HeaderValue, Request, header};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{net::TcpStream, sync::Mutex};

/// Where requests go and what they carry.
#[derive(Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub path: String,
    host: HeaderValue,
    authorization: Option<HeaderValue>,
    /// Paths taken in turn instead of `path` (round robin over every connection of every
    /// clone of this target), when set by [`Target::rotating`].
    rotation: Option<Arc<(Vec<http::Uri>, AtomicUsize)>>,
}

impl Target {
    pub fn new(addr: SocketAddr, path: &str, bearer: Option<&str>) -> anyhow::Result<Self> {
        Ok(Self {
            addr,
            path: path.to_owned(),
            host: HeaderValue::from_str(&addr.to_string())?,
            authorization: bearer
                .map(|t| HeaderValue::from_str(&format!("Bearer {t}")))
                .transpose()?,
            rotation: None,
        })
    }

    /// A target whose requests take `paths` in turn (`path` names the first); e.g. many keys
    /// of a cache, so that each is asked only every `paths.len()` requests.
    pub fn rotating(
        addr: SocketAddr,
        paths: &[String],
        bearer: Option<&str>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(!paths.is_empty(), "no paths to rotate over");
        let uris = paths
            .iter()
            .map(|p| http::Uri::try_from(p.as_str()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            rotation: Some(Arc::new((uris, AtomicUsize::new(0)))),
            ..Self::new(addr, &paths[0], bearer)?
        })
    }

    fn request(&self) -> Request<Empty<Bytes>> {
        let mut req = Request::new(Empty::new());
        *req.uri_mut() = match &self.rotation {
            Some(r) => r.0[r.1.fetch_add(1, Ordering::Relaxed) % r.0.len()].clone(),
            None => http::Uri::try_from(self.path.as_str()).unwrap_or_default(),
        };
        let h = req.headers_mut();
        h.insert(header::HOST, self.host.clone());
        if let Some(a) = &self.authorization {
            h.insert(header::AUTHORIZATION, a.clone());
        }
        req
    }
}

/// One keep-alive connection, reopened after a failure.
struct Conn {
    target: Target,
    sender: Option<SendRequest<Empty<Bytes>>>,
}

impl Conn {
    fn new(target: Target) -> Self {
        Self {
            target,
            sender: None,
        }
    }

    async fn open(&self) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
        let tcp = TcpStream::connect(self.target.addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// Sends one request and reads the whole answer: the status, or why there is none.
    async fn send(&mut self) -> Result<u16, String> {
        if self.sender.as_ref().is_none_or(SendRequest::is_closed) {
            match self.open().await {
                Ok(s) => self.sender = Some(s),
                Err(e) => {
                    // Do not spin on a refused connection.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    return Err(format!("connect: {e}"));
                }
            }
        }
        let Some(sender) = self.sender.as_mut() else {
            return Err("no connection".into());
        };
        let result = async {
            sender.ready().await?;
            let resp = sender.send_request(self.target.request()).await?;
            let status = resp.status().as_u16();
            resp.into_body().collect().await?;
            Ok::<u16, hyper::Error>(status)
        }
        .await;
        result.map_err(|e| {
            self.sender = None;
            e.to_string()
        })
    }
}

/// One request on a new connection: status, headers and body (checks before loading).
pub async fn probe(target: &Target) -> anyhow::Result<(u16, http::HeaderMap, Bytes)> {
    let mut sender = Conn::new(target.clone()).open().await?;
    sender.ready().await?;
    let resp = sender.send_request(target.request()).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, headers, body))
}

/// What one phase measured.
#[derive(Debug, Default)]
pub struct Sample {
    /// Latencies of the successful requests in the measured window, in nanoseconds, sorted.
    latencies: Vec<u64>,
    /// Requests completed in the measured window (successful or not).
    pub completed: u64,
    /// Requests completed over the whole phase, warm-up included.
    pub total: u64,
    /// Failed requests over the whole phase, warm-up included.
    pub errors: u64,
    /// The first error seen, for the report.
    pub first_error: Option<String>,
    /// Length of the measured window.
    pub window: Duration,
}

impl Sample {
    pub fn rps(&self) -> f64 {
        self.completed as f64 / self.window.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of the latencies, nearest rank.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let rank =
            ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, self.latencies.len());
        Duration::from_nanos(self.latencies[rank - 1])
    }

    fn merge(parts: Vec<Part>, window: Duration) -> Self {
        let mut s = Sample {
            window,
            ..Sample::default()
        };
        for p in parts {
            s.latencies.extend(p.latencies);
            s.completed += p.completed;
            s.total += p.total;
            s.errors += p.errors;
            if s.first_error.is_none() {
                s.first_error = p.first_error;
            }
        }
        s.latencies.sort_unstable();
        s
    }
}

/// One connection's share of a sample.
#[derive(Default)]
struct Part {
    latencies: Vec<u64>,
    completed: u64,
    total: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Part {
    fn record(&mut self, outcome: Result<u16, String>, latency: Duration, measured: bool) {
        let ok = match outcome {
            Ok(status) if (200..300).contains(&status) => true,
            Ok(status) => {
                self.first_error
                    .get_or_insert_with(|| format!("HTTP status {status}"));
                false
            }
            Err(e) => {
                self.first_error.get_or_insert(e);
                false
            }
        };
        self.total += 1;
        if !ok {
            self.errors += 1;
        }
        if measured {
            self.completed += 1;
            if ok {
                self.latencies
                    .push(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
            }
        }
    }
}

/// Each connection sends back to back for `warmup`, then for `window` while measuring.
pub async fn closed_loop(
    target: &Target,
    connections: usize,
    warmup: Duration,
    window: Duration,
) -> Sample {
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + window;
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let mut conn = Conn::new(target.clone());
            tokio::spawn(async move {
                let mut part = Part::default();
                loop {
                    let sent = Instant::now();
                    if sent >= end {
                        break;
                    }
                    let outcome = conn.send().await;
                    part.record(outcome, sent.elapsed(), sent >= measure_from);
                }
                part
            })
        })
        .collect();
    let mut parts = Vec::with_capacity(connections);
    for t in tasks {
        parts.push(t.await.unwrap_or_default());
    }
    Sample::merge(parts, window)
}

/// Requests at `rate` per second for `warmup`, then for `window` while measuring, spread over
/// `connections`; each latency runs from the request's scheduled send time.
pub async fn open_loop(
    target: &Target,
    connections: usize,
    rate: f64,
    warmup: Duration,
    window: Duration,
) -> Sample {
    // Open the connections before the clock starts.
    let mut conns = Vec::with_capacity(connections);
    for _ in 0..connections {
        let mut c = Conn::new(target.clone());
        if let Ok(s) = c.open().await {
            c.sender = Some(s);
        }
        conns.push(c);
    }
    let start = Instant::now() + Duration::from_millis(5);
    let measure_from = start + warmup;
    let total = ((warmup + window).as_secs_f64() * rate).floor() as u64;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let pacer = std::thread::Builder::new()
        .name("bench-pacer".into())
        .spawn(move || {
            let mut i = 0u64;
            while i < total {
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                    continue;
                }
                // Everything due by now goes out at once (after a late wake-up).
                if tx.send(due).is_err() {
                    return;
                }
                i += 1;
            }
        });
    let rx = Arc::new(Mutex::new(rx));
    let tasks: Vec<_> = conns
        .into_iter()
        .map(|mut conn| {
            let rx = rx.clone();
            tokio::spawn(async move {
                let mut part = Part::default();
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(due) = next else { break };
                    let outcome = conn.send().await;
                    part.record(outcome, due.elapsed(), due >= measure_from);
                }
                part
            })
        })
        .collect();
    let mut parts = Vec::with_capacity(connections);
    for t in tasks {
        parts.push(t.await.unwrap_or_default());
    }
    if let Ok(p) = pacer {
        let _ = p.join();
    }
    Sample::merge(parts, window)
}
