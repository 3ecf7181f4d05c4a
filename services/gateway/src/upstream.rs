//! Forwarding to upstream instances: one [`plt_client::Pool`] per service (registry watch,
//! power of two choices, breakers, retry budget — the same policy as the service clients)
//! over one shared pooled hyper client. Bodies are streamed both ways; a small request body
//! of known length is kept so that the request can be retried on another instance.
//! Instances that serve TLS (registry metadata `scheme: https`) are reached over TLS with
//! the process's `client_tls`, by both clients.

use crate::config::UpstreamConfig;
use axum::body::Body;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use plt_client::{Policy, Pool};
use plt_contracts::{Error, ErrorCode, RequestContext, context::TIMEOUT_HEADER};
use plt_h1::{ConnPool, SendError};
use plt_kernel::metrics::HandleCache;
use plt_registry::{Instance, ServiceRegistry};
use std::{
    collections::HashMap,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

/// One instance of an upstream service: where to send requests, and the gateway's own
/// keep-alive connections to it (for requests with an in-memory body).
#[derive(Clone)]
pub struct Upstream {
    authority: http::uri::Authority,
    /// `http` or `https`.
    scheme: &'static str,
    conns: Arc<ConnPool>,
}

type HttpClient = Client<plt_kernel::tls::Connector, Body>;

/// The pools of every service the gateway forwards to.
pub struct Upstreams {
    client: HttpClient,
    /// Per service: its pool, and the handle of `gateway_upstream_duration_seconds`.
    pools: HashMap<String, (Arc<Pool<Upstream>>, DurationHandle)>,
}

type DurationHandle = HandleCache<(), metrics::Histogram>;

/// The request body as it will be sent: kept in memory (replayable, so retryable) or
/// streamed once.
pub enum UpstreamBody {
    Buffered(Bytes),
    Streamed(Mutex<Option<Body>>),
}

impl UpstreamBody {
    fn replayable(&self) -> bool {
        matches!(self, UpstreamBody::Buffered(_))
    }

    fn take(&self) -> Option<Body> {
        match self {
            UpstreamBody::Buffered(b) => Some(Body::from(b.clone())),
            UpstreamBody::Streamed(m) => m.lock().unwrap_or_else(|p| p.into_inner()).take(),
        }
    }
}

const BODY_TOO_LARGE: u8 = 1;
const BODY_READ_FAILED: u8 = 2;

/// What happened to a streamed request body, readable after the upstream call failed.
#[derive(Clone, Default)]
pub struct BodyState(Arc<AtomicU8>);

impl BodyState {
    fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A streamed request body that stops with an error beyond `remaining` bytes, recording
/// why it stopped in its [`BodyState`].
pub struct LimitedBody {
    inner: Body,
    remaining: u64,
    state: BodyState,
}

impl LimitedBody {
    pub fn new(inner: Body, limit: usize, state: BodyState) -> Self {
        Self {
            inner,
            remaining: limit as u64,
            state,
        }
    }
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.remaining {
                        self.state.0.store(BODY_TOO_LARGE, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(axum::Error::new("request body too large"))));
                    }
                    self.remaining -= n;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                self.state.0.store(BODY_READ_FAILED, Ordering::Relaxed);
                Poll::Ready(Some(Err(e)))
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The method name for client metrics (a static string, as the pool wants).
fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// Whether requests with this method may be repeated (RFC 9110 §9.2.2).
pub fn idempotent(m: &Method) -> bool {
    crate::config::IDEMPOTENT_METHODS.contains(&m.as_str())
}

/// One request to forward.
pub struct Outgoing {
    pub method: Method,
    /// Path and query for the upstream.
    pub path_and_query: String,
    /// In the order they are sent.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: UpstreamBody,
    pub body_state: BodyState,
}

impl Upstreams {
    /// Pools for `services`, following the registry.
    pub async fn new(
        registry: &Arc<dyn ServiceRegistry>,
        services: impl IntoIterator<Item = String>,
        cfg: &UpstreamConfig,
        max_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let tls = plt_kernel::tls::client();
        let connector = tls
            .connector(plt_kernel::tls::Alpn::Http1)
            .connect_timeout(cfg.connect_timeout);
        let client: HttpClient = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(cfg.pool_idle_timeout)
            .build(connector);
        let policy = Policy {
            timeout: max_timeout,
            max_attempts: cfg.max_attempts,
            retry_budget_ratio: cfg.retry_budget_ratio,
            breaker_failures: cfg.breaker_failures,
            breaker_open_for: cfg.breaker_open_for,
            ..Policy::default()
        };
        let mut pools = HashMap::new();
        for service in services {
            if pools.contains_key(&service) {
                continue;
            }
            let watch = registry
                .watch(&service)
                .await
                .map_err(|e| anyhow::anyhow!("discovering {service}: {e}"))?;
            let (connect_timeout, idle_timeout) = (cfg.connect_timeout, cfg.pool_idle_timeout);
            let tls = tls.clone();
            let make = move |i: &Instance| -> Option<Upstream> {
                match i.address.parse::<http::uri::Authority>() {
                    Ok(authority) => Some(Upstream {
                        conns: match i.scheme() {
                            "https" => ConnPool::with_tls(
                                authority.clone(),
                                tls.clone(),
                                connect_timeout,
                                idle_timeout,
                            ),
                            _ => ConnPool::new(authority.clone(), connect_timeout, idle_timeout),
                        },
                        scheme: i.scheme(),
                        authority,
                    }),
                    Err(_) => {
                        tracing::warn!(instance = %i.id, address = %i.address, "ignoring an instance with an unusable address");
                        None
                    }
                }
            };
            let pool = Pool::new(&service, watch, make, policy.clone());
            pools.insert(service, (pool, HandleCache::default()));
        }
        Ok(Self { client, pools })
    }

    /// The instance ids now in `service`'s pool.
    pub fn instances(&self, service: &str) -> Vec<String> {
        self.pools
            .get(service)
            .map(|(p, _)| p.instances())
            .unwrap_or_default()
    }

    /// Sends `req` to one instance of `service` within `ctx`'s deadline. Retried on another
    /// instance only when the method is idempotent and the body replayable, and then only
    /// before any response arrived; a refused connection (never sent) is retried for any
    /// method with a replayable body.
    pub async fn forward(
        &self,
        service: &str,
        ctx: &RequestContext,
        req: Outgoing,
    ) -> Result<Response<Body>, Error> {
        let Some((pool, durations)) = self.pools.get(service) else {
            return Err(Error::unavailable(format!("no pool for {service}")));
        };
        let replayable = req.body.replayable();
        let retry = idempotent(&req.method) && replayable;
        let (client, req) = (&self.client, &req);
        let resp = pool
            .call(
                method_name(&req.method),
                retry,
                ctx,
                move |up: Upstream, cx| async move {
                    let started = Instant::now();
                    let result = match &req.body {
                        UpstreamBody::Buffered(body) => send_h1(service, &up, &cx, req, body).await,
                        UpstreamBody::Streamed(_) => {
                            send_once(client, service, &up, &cx, req, replayable).await
                        }
                    };
                    durations
                        .get(&(), || {
                            metrics::histogram!(
                                "gateway_upstream_duration_seconds",
                                "service" => crate::SERVICE_NAME,
                                "target" => service.to_owned()
                            )
                        })
                        .record(started.elapsed().as_secs_f64());
                    result
                },
            )
            .await?;
        let (mut parts, body) = resp.into_parts();
        crate::headers::strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(parts, body))
    }
}

/// What the gateway adds per attempt: the deadline left (`x-plt-timeout-ms`) and the trace
/// context of the attempt's span (`traceparent`, `tracestate`).
fn attempt_headers(cx: &RequestContext) -> Vec<(HeaderName, HeaderValue)> {
    let mut out = Vec::with_capacity(3);
    if let Some(left) = cx.remaining() {
        let ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
        out.push((
            HeaderName::from_static(TIMEOUT_HEADER),
            HeaderValue::from(ms),
        ));
    }
    let mut trace = http::HeaderMap::new();
    plt_kernel::trace::inject_current(&mut trace);
    for (name, value) in trace.into_iter() {
        if let Some(name) = name {
            out.push((name, value));
        }
    }
    out
}

/// A request with an in-memory body, on the gateway's own connections (see [`plt_h1`]).
async fn send_h1(
    service: &str,
    up: &Upstream,
    cx: &RequestContext,
    req: &Outgoing,
    body: &Bytes,
) -> Result<Response<Body>, Error> {
    let extra = attempt_headers(cx);
    up.conns
        .send(
            &req.method,
            &req.path_and_query,
            &req.headers,
            extra.as_slice(),
            body,
        )
        .await
        .map_err(|e| match e {
            SendError::Connect(e) => {
                tracing::debug!(target_service = service, instance = %up.authority, error = %e, "upstream connection failed");
                Error::not_sent(format!("{service}: {e}"))
            }
            e => {
                tracing::warn!(target_service = service, instance = %up.authority, error = %e, "upstream request failed");
                Error::unavailable(format!("{service} unreachable"))
            }
        })
}

/// A request with a streamed body, through hyper's pooled client.
async fn send_once(
    client: &HttpClient,
    service: &str,
    up: &Upstream,
    cx: &RequestContext,
    req: &Outgoing,
    replayable: bool,
) -> Result<Response<Body>, Error> {
    let Some(body) = req.body.take() else {
        // A streamed body goes out once; a second attempt has nothing to send.
        return Err(Error::new(ErrorCode::Internal, "request body already sent"));
    };
    let uri = Uri::builder()
        .scheme(up.scheme)
        .authority(up.authority.clone())
        .path_and_query(req.path_and_query.as_str())
        .build()
        .map_err(|e| Error::invalid("path", e.to_string()))?;
    let mut out = Request::builder()
        .method(req.method.clone())
        .uri(uri)
        .version(http::Version::HTTP_11)
        .body(body)
        .map_err(|e| Error::internal("building the upstream request", &e))?;
    let headers = out.headers_mut();
    headers.reserve(req.headers.len() + 1);
    for (name, value) in &req.headers {
        headers.append(name.clone(), value.clone());
    }
    for (name, value) in attempt_headers(cx) {
        out.headers_mut().insert(name, value);
    }
    let result = client.request(out).await;
    result.map(|r| r.map(Body::new)).map_err(|e| {
        match req.body_state.get() {
            BODY_TOO_LARGE => {
                return Error::new(ErrorCode::PayloadTooLarge, "request body is too large");
            }
            BODY_READ_FAILED => return Error::invalid("body", "could not be read"),
            _ => {}
        }
        let detail = error_chain(&e);
        if e.is_connect() {
            tracing::debug!(target_service = service, instance = %up.authority, error = %detail, "upstream connection failed");
            if replayable {
                return Error::not_sent(format!("{service}: {detail}"));
            }
        } else {
            tracing::warn!(target_service = service, instance = %up.authority, error = %detail, "upstream request failed");
        }
        Error::unavailable(format!("{service} unreachable"))
    })
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
