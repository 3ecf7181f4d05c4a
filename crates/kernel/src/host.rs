//! The service host: one TCP port that serves gRPC (HTTP/2) and HTTP/JSON (HTTP/1.1 and
//! h2c), dispatched on the request's content type, with request ids, request spans,
//! metrics, health, readiness, gRPC health and reflection, and graceful shutdown.
//!
//! ```text
//! request ─► request id ─► span(request_id) ─┬─ content-type application/grpc* ─► gRPC routes
//!                                             └─ anything else ─────────────────► HTTP router
//! ```
//!
//! A data-plane service (the API gateway) may add a [`FrontHandler`]: it sees every request
//! first, with the peer's address and nothing else done, and
//! either serves it itself (doing its own request id, logging and metrics) or hands it to
//! the stack above. It may also ask for [`ServiceHost::workers`]: that many threads, each
//! with its own single-threaded runtime and its own listening socket on the shared port
//! (`SO_REUSEPORT`, the kernel spreads connections over them), so that a connection's work
//! stays on one thread, as in nginx, HAProxy and Envoy. With [`ServiceHost::pin_workers`]
//! each worker thread is also pinned to a CPU of its own (nginx's `worker_cpu_affinity`).
//!
//! With `server.tls` set the port serves TLS only (ALPN `h2` and `http/1.1`: gRPC and
//! HTTP/1.1 as on the plaintext port), and with its `client_ca_path` only to clients
//! presenting a certificate that CA signed (see [`crate::tls`]).

use crate::{
    REQUEST_ID_HEADER,
    health::{HealthCheck, Readiness, liveness},
    metrics::{self, Collector},
};
use axum::{
    Router,
    body::Body,
    extract::{DefaultBodyLimit, Request},
    response::Response,
    routing::get,
    serve::ListenerExt,
};
use http::HeaderName;
use std::{
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::net::TcpListener;
use tonic::{server::NamedService, service::Routes};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::{DefaultOnResponse, OnResponse as _, TraceLayer},
};
use tracing::Level;

/// The future of a request a [`FrontHandler`] serves.
pub type FrontFuture = std::pin::Pin<Box<dyn Future<Output = Response> + Send>>;

/// Sees each request before the host's stack (request id, span, metrics, router): a data
/// path that does those itself serves its requests here without paying for them twice.
pub trait FrontHandler: Send + Sync + 'static {
    /// `Ok` with the response's future when this handler serves `req` (from `peer`);
    /// `Err(req)` hands it, unchanged, to the host's stack.
    #[allow(
        clippy::result_large_err,
        reason = "the request goes back unchanged, by value; boxing it would allocate for nothing"
    )]
    fn serve(&self, req: Request, peer: Option<SocketAddr>) -> Result<FrontFuture, Request>;
}

/// Builds the host of one service. Explicit wiring: the service hands over its HTTP router,
/// its gRPC services and its readiness checks; nothing is discovered by reflection.
pub struct ServiceHost {
    name: Arc<str>,
    http: Router,
    grpc: Routes,
    grpc_names: Vec<&'static str>,
    descriptor_sets: Vec<&'static [u8]>,
    checks: Vec<Arc<dyn HealthCheck>>,
    collectors: Vec<Collector>,
    shutdown_timeout: Duration,
    readiness_timeout: Duration,
    body_limit: usize,
    front: Option<Arc<dyn FrontHandler>>,
    workers: usize,
    worker_cpus: Vec<usize>,
    tls: crate::tls::ServerTlsConfig,
}

thread_local! {
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The number of the host worker thread this code runs on (1, 2, …), or 0 off them: for
/// per-thread state such as connections registered with this thread's runtime.
pub fn worker_index() -> usize {
    WORKER.with(std::cell::Cell::get)
}

impl ServiceHost {
    pub fn new(name: &str, server: &crate::config::ServerConfig) -> Self {
        Self {
            name: Arc::from(name),
            http: Router::new(),
            grpc: Routes::default(),
            grpc_names: Vec::new(),
            descriptor_sets: Vec::new(),
            checks: Vec::new(),
            collectors: Vec::new(),
            shutdown_timeout: server.shutdown_timeout,
            readiness_timeout: server.readiness_timeout,
            body_limit: server.body_limit_bytes,
            front: None,
            workers: 1,
            worker_cpus: Vec::new(),
            tls: server.tls.clone(),
        }
    }

    /// Serves from `n` worker threads (see the module's documentation) instead of the
    /// ambient runtime; 1 (the default) serves on the runtime `run` is called on.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Pins the worker threads to these CPUs, worker *i* to `cpus[i % cpus.len()]`; with
    /// any CPU given, even a single worker gets a thread of its own. Empty (the default):
    /// the threads run wherever the kernel puts them. [`ServiceHost::bind`] refuses a CPU
    /// that a thread of this process cannot be pinned to (absent, offline or outside the
    /// process's cpuset).
    pub fn pin_workers(mut self, cpus: Vec<usize>) -> Self {
        self.worker_cpus = cpus;
        self
    }

    /// Requests go to `front` first (see [`FrontHandler`]).
    pub fn front(mut self, front: Arc<dyn FrontHandler>) -> Self {
        self.front = Some(front);
        self
    }

    /// Serves [`PANIC_ROUTE`] (any method), whose handler panics: how an operator checks
    /// that panics are answered 500 and reach the error reporting (`error_reporting.
    /// panic_route`; off by default).
    pub fn panic_route(mut self, on: bool) -> Self {
        if on {
            self.http = self.http.route(
                PANIC_ROUTE,
                axum::routing::any(|| async { induced_panic() }),
            );
        }
        self
    }

    /// Adds HTTP routes (merged with those already added).
    pub fn http(mut self, router: Router) -> Self {
        self.http = self.http.merge(router);
        self
    }

    /// Adds a gRPC service; it is reported SERVING by the gRPC health service while up.
    pub fn grpc<S>(mut self, svc: S) -> Self
    where
        S: Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.grpc_names.push(S::NAME);
        self.grpc = self.grpc.add_service(svc);
        self
    }

    /// Registers an encoded `FileDescriptorSet` for gRPC server reflection.
    pub fn reflection(mut self, encoded_fds: &'static [u8]) -> Self {
        self.descriptor_sets.push(encoded_fds);
        self
    }

    pub fn health_check(mut self, check: Arc<dyn HealthCheck>) -> Self {
        self.checks.push(check);
        self
    }

    /// A function run before each `/metrics` render (to refresh gauges).
    pub fn metrics_collector(mut self, collector: Collector) -> Self {
        self.collectors.push(collector);
        self
    }

    /// Binds the listener (use port 0 in tests) and assembles the service stack. A TLS
    /// setting that cannot be used (unreadable file, key not fitting the certificate) is an
    /// `InvalidInput` error naming its key.
    pub async fn bind(self, addr: SocketAddr) -> std::io::Result<BoundHost> {
        let tls = self
            .tls
            .load("server.tls")
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        // Each CPU must take a thread now, not fail in a worker later.
        let mut cpus = self.worker_cpus.clone();
        cpus.sort_unstable();
        cpus.dedup();
        for cpu in cpus {
            std::thread::scope(|s| {
                s.spawn(|| crate::affinity::pin_current_thread(&[cpu]))
                    .join()
                    .unwrap_or_else(|_| Err(std::io::Error::other("the probing thread panicked")))
            })
            .map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("cannot pin a worker thread to CPU {cpu}: {e}"),
                )
            })?;
        }
        let listeners = bind_listeners(addr, self.workers)?;
        let local_addr = listeners[0].local_addr()?;
        let _ = metrics::handle();
        let readiness = Readiness::new(self.checks, self.readiness_timeout);

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        health_reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        for name in &self.grpc_names {
            health_reporter
                .set_service_status(*name, tonic_health::ServingStatus::Serving)
                .await;
        }
        let mut grpc = self.grpc.add_service(health_service);
        if !self.descriptor_sets.is_empty() {
            let mut v1 = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
            let mut v1alpha = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
            for fds in &self.descriptor_sets {
                v1 = v1.register_encoded_file_descriptor_set(fds);
                v1alpha = v1alpha.register_encoded_file_descriptor_set(fds);
            }
            // List only what this host serves, not every service in the descriptor sets.
            let health_name = "grpc.health.v1.Health";
            for name in self.grpc_names.iter().copied().chain([health_name]) {
                v1 = v1.with_service_name(name);
                v1alpha = v1alpha.with_service_name(name);
            }
            grpc = grpc
                .add_service(v1.build_v1().map_err(std::io::Error::other)?)
                .add_service(v1alpha.build_v1alpha().map_err(std::io::Error::other)?);
        }
        let grpc_router = grpc
            .into_axum_router()
            .layer(axum::middleware::from_fn_with_state(
                self.name.clone(),
                metrics::track_grpc,
            ));

        let collectors: Arc<[Collector]> = self.collectors.into();
        let ready = readiness.clone();
        let http_router = self
            .http
            .route("/healthz", get(|| async { liveness() }))
            .route(
                "/readyz",
                get(move || {
                    let ready = ready.clone();
                    async move { ready.response().await }
                }),
            )
            .route(
                "/metrics",
                get(move || {
                    let collectors = collectors.clone();
                    async move { metrics::response(&collectors) }
                }),
            )
            .layer(axum::middleware::from_fn_with_state(
                self.name.clone(),
                metrics::track_http,
            ))
            .layer(DefaultBodyLimit::max(self.body_limit));

        let mux = Mux {
            grpc: grpc_router,
            http: http_router,
        };
        let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
        let service = self.name.clone();
        let app = Router::new().fallback_service(mux).layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(move |req: &Request| {
                            let request_id = req
                                .headers()
                                .get(REQUEST_ID_HEADER)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("-");
                            let span = tracing::info_span!(
                                "request",
                                service = %service,
                                method = %req.method(),
                                path = %req.uri().path(),
                                request_id = %request_id,
                                trace_id = tracing::field::Empty,
                                otel.name = %req.method(),
                                otel.kind = "server",
                            );
                            crate::trace::continue_from(&span, req.headers());
                            crate::trace::server_attributes(&span, req);
                            span
                        })
                        .on_response(|resp: &Response, latency: Duration, span: &tracing::Span| {
                            crate::trace::server_status(span, resp.status());
                            DefaultOnResponse::new()
                                .level(Level::INFO)
                                .on_response(resp, latency, span)
                        })
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::new(request_id)),
        );
        Ok(BoundHost {
            name: self.name,
            listeners,
            local_addr,
            app,
            readiness,
            health_reporter,
            shutdown_timeout: self.shutdown_timeout,
            front: self.front,
            worker_cpus: self.worker_cpus,
            tls,
        })
    }
}

fn induced_panic() -> &'static str {
    panic!("induced panic ({PANIC_ROUTE}, error_reporting.panic_route)")
}

/// The route of [`ServiceHost::panic_route`].
pub const PANIC_ROUTE: &str = "/plt/debug/panic";

/// A host bound to its port, ready to run.
pub struct BoundHost {
    name: Arc<str>,
    listeners: Vec<TcpListener>,
    local_addr: SocketAddr,
    app: Router,
    readiness: Readiness,
    health_reporter: tonic_health::server::HealthReporter,
    shutdown_timeout: Duration,
    front: Option<Arc<dyn FrontHandler>>,
    worker_cpus: Vec<usize>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl BoundHost {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Whether the port serves TLS (clients then use `https://`).
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves until `shutdown` completes, then stops accepting, marks itself not ready and
    /// NOT_SERVING, and waits for in-flight requests up to the shutdown timeout.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let name = self.name.clone();
        let tls = self.tls.clone();
        tracing::info!(service = %name, addr = %self.local_addr, workers = self.listeners.len(), tls = tls.is_some(), "listening (gRPC and HTTP)");
        // Leaked once per host: spans and reports name it on every request without counting
        // references.
        let service: &'static str = Box::leak(name.to_string().into_boxed_str());
        let front = Front {
            front: self.front,
            app: self.app,
            service,
            peer: None,
            conn: None,
        };
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let mut served = Vec::new();
        let mut listeners = self.listeners;
        if listeners.len() == 1 && self.worker_cpus.is_empty() {
            let listener = listeners.remove(0);
            let (tx, rx) = tokio::sync::oneshot::channel();
            let stop = stop.clone();
            tokio::spawn(async move {
                let _ = tx.send(serve(listener, tls, front, stop).await);
            });
            served.push(rx);
        } else {
            for (i, listener) in listeners.into_iter().enumerate() {
                let listener = listener.into_std()?;
                let (front, stop, tls) = (front.clone(), stop.clone(), tls.clone());
                let (tx, rx) = tokio::sync::oneshot::channel();
                let cpu = (!self.worker_cpus.is_empty())
                    .then(|| self.worker_cpus[i % self.worker_cpus.len()]);
                std::thread::Builder::new()
                    .name(format!("http-{}", i + 1))
                    .spawn(move || {
                        WORKER.with(|w| w.set(i + 1));
                        if let Some(cpu) = cpu
                            && let Err(e) = crate::affinity::pin_current_thread(&[cpu])
                        {
                            tracing::error!(
                                worker = i + 1,
                                cpu,
                                error = %e,
                                "cannot pin the worker thread; it does not serve"
                            );
                            let _ = tx.send(Err(std::io::Error::new(
                                e.kind(),
                                format!("pinning worker {} to CPU {cpu}: {e}", i + 1),
                            )));
                            return;
                        }
                        let rt = match tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                        {
                            Ok(rt) => rt,
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        };
                        let result = rt.block_on(async move {
                            serve(TcpListener::from_std(listener)?, tls, front, stop).await
                        });
                        let _ = tx.send(result);
                    })?;
                served.push(rx);
            }
        }
        shutdown.await;
        self.readiness.set_draining();
        self.health_reporter
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        let _ = stop_tx.send(true);
        let deadline = self.shutdown_timeout;
        let all = async {
            let mut result = Ok(());
            for rx in served {
                match rx.await {
                    Ok(Err(e)) => result = Err(e),
                    Ok(Ok(())) => {}
                    Err(_) => result = Err(std::io::Error::other("a server worker failed")),
                }
            }
            result
        };
        match tokio::time::timeout(deadline, all).await {
            Ok(result) => {
                tracing::info!(service = %name, "stopped");
                result
            }
            Err(_) => {
                tracing::warn!(service = %name, ?deadline, "shutdown deadline passed; abandoning requests still in flight");
                Ok(())
            }
        }
    }
}

/// `n` listening sockets on `addr`: one plainly bound, or `n` sharing the port with
/// `SO_REUSEPORT` (port 0: the port the first one got).
fn bind_listeners(addr: SocketAddr, n: usize) -> std::io::Result<Vec<TcpListener>> {
    let mut out = Vec::with_capacity(n);
    let mut addr = addr;
    for _ in 0..n {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        if n > 1 {
            socket.set_reuseport(true)?;
        }
        socket.bind(addr)?;
        let listener = socket.listen(1024)?;
        addr = listener.local_addr()?;
        out.push(listener);
    }
    Ok(out)
}

/// Serves `listener` (over TLS with `tls`) until `stop` turns true, then until its
/// connections have finished.
async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    front: Front,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Some(config) = tls {
        // The oversized-head guard sits on the decrypted stream, as on plaintext.
        let listener =
            crate::oversize::GuardedListener::new(crate::tls::TlsListener::new(listener, config));
        return axum::serve(listener, front)
            .with_graceful_shutdown(stopped)
            .await;
    }
    // TCP_NODELAY: small gRPC/HTTP answers must not wait for the peer's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    // An oversized request head: 431 problem+json, then a clean close (see `oversize`).
    let listener = crate::oversize::GuardedListener::new(listener);
    axum::serve(listener, front)
        .with_graceful_shutdown(stopped)
        .await
}

/// The service of one connection: the front handler (told the peer's address), else the
/// host's stack (the peer's address in the request's extensions, as axum's `ConnectInfo`).
#[derive(Clone)]
struct Front {
    front: Option<Arc<dyn FrontHandler>>,
    app: Router,
    /// The host's service name (spans and error reports).
    service: &'static str,
    peer: Option<SocketAddr>,
    /// Shared with the connection's IO: the 431s the service answers itself.
    conn: Option<Arc<crate::oversize::ConnState>>,
}

impl<'a, L, IO> Service<axum::serve::IncomingStream<'a, L>> for Front
where
    L: axum::serve::Listener<Io = crate::oversize::Guarded<IO>, Addr = SocketAddr>,
{
    type Response = Front;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Front, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, stream: axum::serve::IncomingStream<'a, L>) -> Self::Future {
        let mut conn = self.clone();
        conn.peer = Some(*stream.remote_addr());
        conn.conn = Some(stream.io().state().clone());
        std::future::ready(Ok(conn))
    }
}

/// A response from the front handler or from the host's stack. Each poll runs marked for
/// the host's service (traces) inside the request's scope (error reports); a panic while
/// handling the request is answered 500 (gRPC: `internal`) instead of dropping the
/// connection, after the panic hook reported it.
struct FrontResponse {
    from: Origin,
    conn: Option<Arc<crate::oversize::ConnState>>,
    service: &'static str,
    scope: Option<crate::report::RequestScope>,
    grpc: bool,
}

enum Origin {
    Front(FrontFuture),
    Stack(std::pin::Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>),
    /// The handler panicked; its future is gone.
    Done,
}

/// The problem+json body answering a request whose handler panicked.
const PANICKED_BODY: &str = concat!(
    r#"{"type":"urn:plt:problem:internal","title":"Internal error","status":500,"#,
    r#""detail":"internal error","code":"internal"}"#
);

/// The answer to a request whose handler panicked: 500 problem+json, or gRPC `internal`.
fn panicked(grpc: bool) -> Response {
    let mut resp = if grpc {
        let mut r = Response::new(Body::empty());
        let h = r.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/grpc"),
        );
        h.insert("grpc-status", http::HeaderValue::from_static("13"));
        h.insert(
            "grpc-message",
            http::HeaderValue::from_static("internal%20error"),
        );
        r
    } else {
        let mut r = Response::new(Body::from(PANICKED_BODY));
        *r.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/problem+json"),
        );
        r
    };
    resp.headers_mut().insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

impl Future for FrontResponse {
    type Output = Result<Response, Infallible>;

    fn poll(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let _mark = crate::trace::ServiceMark::enter(this.service);
        let from = &mut this.from;
        let polled = crate::report::within(&mut this.scope, || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match from {
                Origin::Front(f) => f.as_mut().poll(cx).map(Ok),
                Origin::Stack(f) => f.as_mut().poll(cx),
                Origin::Done => Poll::Ready(Ok(panicked(false))),
            }))
        });
        let resp = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(resp))) => resp,
            Err(_) => {
                this.from = Origin::Done;
                let request_id = this.scope.as_ref().and_then(|s| s.request_id.as_deref());
                let mut resp = panicked(this.grpc);
                if let Some(v) = request_id.and_then(|id| http::HeaderValue::from_str(id).ok()) {
                    resp.headers_mut().insert(REQUEST_ID_HEADER, v);
                }
                resp
            }
        };
        if resp.status() == http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            && let Some(conn) = &this.conn
        {
            conn.app_answered_431();
        }
        Poll::Ready(Ok(resp))
    }
}

impl Service<Request<Body>> for Front {
    type Response = Response;
    type Error = Infallible;
    type Future = FrontResponse;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // The request id, kept when the caller sent one, is known from here on: the panic
        // report and its 500 carry it as the handler's logs do.
        let request_id = match req.headers().get(REQUEST_ID_HEADER) {
            Some(v) => v.to_str().ok().map(str::to_owned),
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                if let Ok(v) = http::HeaderValue::from_str(&id) {
                    req.headers_mut().insert(REQUEST_ID_HEADER, v);
                }
                Some(id)
            }
        };
        let scope = Some(crate::report::RequestScope {
            service: self.service,
            request_id,
            user_id: None,
        });
        let grpc = is_grpc(&req);
        let mut req = match &self.front {
            Some(front) => match front.serve(req, self.peer) {
                Ok(fut) => {
                    return FrontResponse {
                        from: Origin::Front(fut),
                        conn: self.conn.clone(),
                        service: self.service,
                        scope,
                        grpc,
                    };
                }
                Err(req) => req,
            },
            None => req,
        };
        if let Some(peer) = self.peer {
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
        }
        FrontResponse {
            from: Origin::Stack(Box::pin(self.app.clone().oneshot(req))),
            conn: self.conn.clone(),
            service: self.service,
            scope,
            grpc,
        }
    }
}

/// Whether `req` is a gRPC call (content type `application/grpc*`): what the host's gRPC
/// routes serve.
pub fn is_grpc(req: &Request) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Dispatches on content type: gRPC to the tonic routes, everything else to the HTTP router.
#[derive(Clone)]
struct Mux {
    grpc: Router,
    http: Router,
}

impl Service<Request<Body>> for Mux {
    type Response = Response;
    type Error = Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let router = if is_grpc(&req) {
            self.grpc.clone()
        } else {
            self.http.clone()
        };
        Box::pin(async move { router.oneshot(req).await })
    }
}
