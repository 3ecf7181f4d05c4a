//! The service host over real sockets: health and readiness (K4), request ids (K2), metrics
//! (K5), gRPC and HTTP on one port, and graceful shutdown (K3).

use async_trait::async_trait;
use axum::{Router, body::Bytes, http::HeaderMap, routing::get, routing::post};
use plt_kernel::{HealthCheck, REQUEST_ID_HEADER, Readiness, ServiceHost, config::ServerConfig};
use serde_json::Value;
use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{sync::Notify, sync::oneshot, task::JoinHandle, time::timeout};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// Upper bound for anything that should be quick; only reached when a test fails.
const PATIENCE: Duration = Duration::from_secs(10);

fn server_config() -> ServerConfig {
    ServerConfig {
        shutdown_timeout: Duration::from_secs(30),
        body_limit_bytes: 1024,
        readiness_timeout: Duration::from_millis(300),
        tls: Default::default(),
    }
}

/// A host running on 127.0.0.1:<ephemeral> in the background.
struct Running {
    addr: SocketAddr,
    readiness: Readiness,
    shutdown: Option<oneshot::Sender<()>>,
    run: JoinHandle<std::io::Result<()>>,
}

impl Running {
    async fn start(host: ServiceHost) -> Self {
        let bound = host
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind an ephemeral port");
        let addr = bound.local_addr();
        assert_ne!(addr.port(), 0);
        let readiness = bound.readiness();
        let (tx, rx) = oneshot::channel::<()>();
        let run = tokio::spawn(bound.run(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            readiness,
            shutdown: Some(tx),
            run,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts the graceful shutdown (like SIGTERM would).
    fn trigger_shutdown(&mut self) {
        self.shutdown
            .take()
            .expect("shutdown triggered once")
            .send(())
            .expect("host still running");
    }

    /// Waits for `run()` to return.
    async fn stopped(&mut self) -> std::io::Result<()> {
        timeout(PATIENCE, &mut self.run)
            .await
            .expect("run() returns after shutdown")
            .expect("run() does not panic")
    }
}

fn client() -> reqwest::Client {
    plt_kernel::tls::http_client_builder()
        .no_proxy()
        .http1_only()
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

/// The body of a GET as text, whatever the status.
async fn get_text(url: &str) -> String {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn get_json(url: &str) -> (reqwest::StatusCode, Value) {
    let resp = client().get(url).send().await.expect("request");
    let status = resp.status();
    let body = resp.json::<Value>().await.expect("JSON body");
    (status, body)
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A readiness check with a fixed name whose outcome the test controls.
struct Switch {
    name: &'static str,
    healthy: AtomicBool,
}

impl Switch {
    fn new(name: &'static str, healthy: bool) -> Arc<Self> {
        Arc::new(Self {
            name,
            healthy: AtomicBool::new(healthy),
        })
    }
}

#[async_trait]
impl HealthCheck for Switch {
    fn name(&self) -> &str {
        self.name
    }

    async fn check(&self) -> Result<(), String> {
        if self.healthy.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err(format!("{} is down", self.name))
        }
    }
}

/// A readiness check that never answers in time.
struct Hangs;

#[async_trait]
impl HealthCheck for Hangs {
    fn name(&self) -> &str {
        "slow-dependency"
    }

    async fn check(&self) -> Result<(), String> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// K4 health
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn healthz_and_readyz_are_ok_without_checks() {
    let host = Running::start(ServiceHost::new("health-ok", &server_config())).await;

    let (status, body) = get_json(&host.url("/healthz")).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");

    let (status, body) = get_json(&host.url("/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["failing"], serde_json::json!([]));
}

#[tokio::test]
async fn a_failing_check_makes_readyz_503_naming_it_while_healthz_stays_200() {
    let database = Switch::new("database", false);
    let cache = Switch::new("cache", true);
    let host = Running::start(
        ServiceHost::new("health-failing", &server_config())
            .health_check(database.clone())
            .health_check(cache.clone()),
    )
    .await;

    let (status, body) = get_json(&host.url("/readyz")).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["failing"], serde_json::json!(["database"]));
    assert_eq!(body["checks"]["database"]["status"], "failing");
    assert_eq!(body["checks"]["database"]["reason"], "database is down");
    assert_eq!(body["checks"]["cache"]["status"], "ok");

    // Liveness does not depend on dependencies.
    let (status, _) = get_json(&host.url("/healthz")).await;
    assert_eq!(status, 200);

    // Checks run on every request: recovery is seen at once.
    database.healthy.store(true, Ordering::SeqCst);
    let (status, body) = get_json(&host.url("/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["database"]["status"], "ok");
}

#[tokio::test]
async fn a_check_slower_than_readiness_timeout_counts_as_failing() {
    let config = ServerConfig {
        readiness_timeout: Duration::from_millis(200),
        ..server_config()
    };
    let host = Running::start(
        ServiceHost::new("health-hangs", &config)
            .health_check(Arc::new(Hangs))
            .health_check(Switch::new("fine", true)),
    )
    .await;

    let started = Instant::now();
    let (status, body) = get_json(&host.url("/readyz")).await;
    let took = started.elapsed();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["failing"], serde_json::json!(["slow-dependency"]));
    let reason = body["checks"]["slow-dependency"]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("no answer"), "{reason}");
    assert_eq!(body["checks"]["fine"]["status"], "ok");
    // The hanging check is cut off near the timeout, not after its 60 s.
    assert!(took < Duration::from_secs(5), "/readyz took {took:?}");
}

// ---------------------------------------------------------------------------------------
// K2 request ids
// ---------------------------------------------------------------------------------------

/// A route that answers with the request id it was handed.
fn echo_request_id() -> Router {
    Router::new().route(
        "/whoami",
        get(|headers: HeaderMap| async move {
            headers
                .get(REQUEST_ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("<none>")
                .to_owned()
        }),
    )
}

#[tokio::test]
async fn every_response_carries_a_generated_request_id_that_the_handler_also_sees() {
    let host =
        Running::start(ServiceHost::new("request-id", &server_config()).http(echo_request_id()))
            .await;
    let client = client();

    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp = client.get(host.url("/whoami")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        let id = resp
            .headers()
            .get(REQUEST_ID_HEADER)
            .expect("x-request-id on the response")
            .to_str()
            .unwrap()
            .to_owned();
        uuid::Uuid::parse_str(&id).expect("generated ids are UUIDs");
        // The handler (and so its log span) saw the same id the client got.
        assert_eq!(resp.text().await.unwrap(), id);
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "each request gets its own id");

    // Also on built-in routes and on 404s.
    for path in ["/healthz", "/readyz", "/metrics", "/no-such-route"] {
        let resp = client.get(host.url(path)).send().await.unwrap();
        assert!(
            resp.headers().contains_key(REQUEST_ID_HEADER),
            "{path} has no request id"
        );
    }
}

#[tokio::test]
async fn a_client_sent_request_id_is_echoed_back_unchanged() {
    let host = Running::start(
        ServiceHost::new("request-id-echo", &server_config()).http(echo_request_id()),
    )
    .await;
    let resp = client()
        .get(host.url("/whoami"))
        .header(REQUEST_ID_HEADER, "client-chosen-id-42")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get(REQUEST_ID_HEADER).unwrap(),
        "client-chosen-id-42"
    );
    assert_eq!(resp.text().await.unwrap(), "client-chosen-id-42");
}

// ---------------------------------------------------------------------------------------
// K5 metrics
// ---------------------------------------------------------------------------------------

/// The value of the first sample line of `metric` whose labels include all of `labels`.
fn sample(text: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

#[tokio::test]
async fn metrics_count_http_requests_by_service_and_route_template() {
    // Only this test uses the service name "test-svc", so its counts are exact.
    let routes = Router::new().route(
        "/items/{id}",
        get(|axum::extract::Path(id): axum::extract::Path<u32>| async move { id.to_string() }),
    );
    let host = Running::start(ServiceHost::new("test-svc", &server_config()).http(routes)).await;
    let client = client();
    for id in [1, 2] {
        let resp = client
            .get(host.url(&format!("/items/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = client
        .get(host.url("/items/not-a-number"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = client
        .get(host.url("/no/such/path-8f3a91"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    let resp = client.get(host.url("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = resp.text().await.unwrap();

    assert!(
        text.contains("# HELP http_server_requests_total "),
        "{text}"
    );
    assert!(
        text.contains("# TYPE http_server_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE http_server_request_duration_seconds histogram"),
        "{text}"
    );
    let svc = r#"service="test-svc""#;
    let route = r#"route="/items/{id}""#;
    assert_eq!(
        sample(
            &text,
            "http_server_requests_total",
            &[svc, route, r#"method="GET""#, r#"status="200""#]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "http_server_requests_total",
            &[svc, route, r#"status="400""#]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "http_server_request_duration_seconds_count",
            &[svc, route]
        )
        .is_some_and(|n| n >= 3.0),
        "{text}"
    );
    // Raw paths never become label values (unbounded cardinality).
    assert!(!text.contains("path-8f3a91"), "{text}");
    assert!(!text.contains("not-a-number"), "{text}");
    assert!(!text.contains(r#"route="/items/1""#), "{text}");
}

// ---------------------------------------------------------------------------------------
// gRPC and HTTP on one port
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn grpc_and_http_are_served_on_the_same_port() {
    let host = Running::start(ServiceHost::new("one-port", &server_config())).await;

    let channel = within(
        "gRPC connect",
        tonic::transport::Endpoint::from_shared(host.url(""))
            .unwrap()
            .connect(),
    )
    .await
    .expect("gRPC channel to the host's port");
    let mut health = HealthClient::new(channel);

    let resp = within(
        "gRPC Check",
        health.check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("Health/Check answers");
    assert!(
        resp.metadata().contains_key(REQUEST_ID_HEADER),
        "gRPC responses carry a request id too"
    );
    assert_eq!(resp.into_inner().status(), ServingStatus::Serving);

    let status = within(
        "gRPC Check unknown",
        health.check(HealthCheckRequest {
            service: "no.such.Service".into(),
        }),
    )
    .await
    .expect_err("unknown service");
    assert_eq!(status.code(), tonic::Code::NotFound);

    // Plain HTTP/1.1 on the very same address.
    let resp = client().get(host.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);

    // gRPC calls are measured per method and code, apart from HTTP.
    let text = get_text(&host.url("/metrics")).await;
    let svc = r#"service="one-port""#;
    let check = [
        svc,
        r#"grpc_service="grpc.health.v1.Health""#,
        r#"grpc_method="Check""#,
    ];
    assert_eq!(
        sample(
            &text,
            "grpc_server_handled_total",
            &[check[0], check[1], check[2], r#"grpc_code="Ok""#]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "grpc_server_handled_total",
            &[check[0], check[1], check[2], r#"grpc_code="NotFound""#]
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "http_server_requests_total",
            &[svc, r#"route="/healthz""#]
        )
        .is_some(),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// Body limit
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn request_bodies_above_body_limit_bytes_are_refused() {
    let routes = Router::new().route(
        "/echo",
        post(|body: Bytes| async move { body.len().to_string() }),
    );
    let host = Running::start(ServiceHost::new("body-limit", &server_config()).http(routes)).await;
    let client = client();

    let resp = client
        .post(host.url("/echo"))
        .body(vec![b'a'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "1024");

    let resp = client
        .post(host.url("/echo"))
        .body(vec![b'a'; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
}

// ---------------------------------------------------------------------------------------
// K3 graceful shutdown
// ---------------------------------------------------------------------------------------

/// `/slow` signals `entered`, then waits for `release` (or for `hold`) before answering.
fn slow_route(entered: Arc<Notify>, release: Arc<Notify>, hold: Duration) -> Router {
    Router::new().route(
        "/slow",
        get(move || {
            let (entered, release) = (entered.clone(), release.clone());
            async move {
                entered.notify_one();
                tokio::select! {
                    () = release.notified() => {}
                    () = tokio::time::sleep(hold) => {}
                }
                "done"
            }
        }),
    )
}

async fn connection_refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::net::TcpStream::connect(addr).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_in_flight_request_finish_and_stops_accepting() {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let mut host = Running::start(ServiceHost::new("drain", &server_config()).http(slow_route(
        entered.clone(),
        release.clone(),
        Duration::from_secs(1),
    )))
    .await;
    assert!(host.readiness.report().await.ready);

    let url = host.url("/slow");
    let request = tokio::spawn(async move {
        let resp = client().get(url).send().await?;
        let status = resp.status();
        Ok::<_, reqwest::Error>((status, resp.text().await?))
    });
    within("request reaches the handler", entered.notified()).await;

    host.trigger_shutdown();

    // Draining: readiness fails, naming the shutdown…
    within("readiness reports draining", async {
        while !host.readiness.report().await.draining {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let readyz = host.readiness.response().await;
    assert_eq!(readyz.status(), 503);
    let body = axum::body::to_bytes(readyz.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        body["failing"]
            .as_array()
            .unwrap()
            .contains(&Value::from("shutdown")),
        "{body}"
    );
    // …and the port no longer accepts connections, while the request is still in flight.
    within("listener closes", async {
        while !connection_refused(host.addr).await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        !request.is_finished(),
        "request finished before it was released"
    );

    release.notify_one();
    let (status, text) = within("in-flight request", request)
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(status, 200);
    assert_eq!(text, "done");

    host.stopped().await.expect("run() returns Ok");
    assert!(connection_refused(host.addr).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_a_request_sleeping_one_second() {
    let entered = Arc::new(Notify::new());
    let never = Arc::new(Notify::new());
    let mut host = Running::start(
        ServiceHost::new("drain-sleep", &server_config()).http(slow_route(
            entered.clone(),
            never,
            Duration::from_secs(1),
        )),
    )
    .await;
    let url = host.url("/slow");
    let request = tokio::spawn(async move { client().get(url).send().await });
    within("request reaches the handler", entered.notified()).await;
    let triggered = Instant::now();
    host.trigger_shutdown();

    let resp = within("in-flight request", request)
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(resp.status(), 200);
    host.stopped().await.expect("run() returns Ok");
    // It waited for the request (about 1 s), not for the 30 s shutdown timeout.
    let waited = triggered.elapsed();
    assert!(waited >= Duration::from_millis(800), "{waited:?}");
    assert!(waited < Duration::from_secs(8), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_do_not_hold_up_shutdown() {
    let mut host = Running::start(ServiceHost::new("idle", &server_config())).await;
    // A pooled keep-alive connection and an open gRPC (HTTP/2) channel, both idle.
    let client = client();
    let resp = client.get(host.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let channel = tonic::transport::Endpoint::from_shared(host.url(""))
        .unwrap()
        .connect()
        .await
        .unwrap();
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest::default())
        .await
        .unwrap();

    let triggered = Instant::now();
    host.trigger_shutdown();
    host.stopped().await.expect("run() returns Ok");
    // Well under the 30 s shutdown timeout: idle connections are closed, not waited for.
    let waited = triggered.elapsed();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    drop((client, channel));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_timeout_bounds_the_wait_for_slow_requests() {
    let config = ServerConfig {
        shutdown_timeout: Duration::from_millis(200),
        ..server_config()
    };
    let entered = Arc::new(Notify::new());
    let mut host = Running::start(ServiceHost::new("deadline", &config).http(slow_route(
        entered.clone(),
        Arc::new(Notify::new()),
        Duration::from_secs(5),
    )))
    .await;
    let url = host.url("/slow");
    let _request = tokio::spawn(async move { client().get(url).send().await });
    within("request reaches the handler", entered.notified()).await;

    let triggered = Instant::now();
    host.trigger_shutdown();
    host.stopped()
        .await
        .expect("run() returns Ok after the deadline");
    let waited = triggered.elapsed();
    // Correctness bound, not a performance claim: it must not wait for the 5 s handler.
    assert!(waited < Duration::from_secs(4), "run() took {waited:?}");
    assert!(waited >= Duration::from_millis(150), "{waited:?}");
}

// ---------------------------------------------------------------------------------------
// Worker threads and the front handler
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_threads_share_the_port_and_drain_on_shutdown() {
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Notify::new());
    let router = slow_route(entered.clone(), release.clone(), Duration::from_secs(5)).route(
        "/worker",
        get(|| async { plt_kernel::worker_index().to_string() }),
    );
    let mut host = Running::start(
        ServiceHost::new("workers", &server_config())
            .workers(3)
            .http(router),
    )
    .await;
    // New connections are spread over the three workers; each is served by one of them.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let text = get_text(&host.url("/worker")).await;
        let n: usize = text.parse().unwrap();
        assert!((1..=3).contains(&n), "worker {n}");
        seen.insert(n);
    }
    assert!(seen.len() > 1, "connections all went to {seen:?}");
    let (status, _) = get_json(&host.url("/healthz")).await;
    assert_eq!(status, 200);

    // Graceful shutdown as with one runtime: the in-flight request finishes, the port closes.
    let url = host.url("/slow");
    let request = tokio::spawn(async move { client().get(url).send().await?.text().await });
    within("request reaches the handler", entered.notified()).await;
    host.trigger_shutdown();
    within("listener closes", async {
        while !connection_refused(host.addr).await {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(!request.is_finished());
    release.notify_one();
    let text = within("in-flight request", request)
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(text, "done");
    host.stopped().await.expect("run() returns Ok");
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn pinned_workers_run_on_their_cpu_even_a_single_one() {
    let allowed = plt_kernel::affinity::allowed_cpus().unwrap();
    let cpu = *allowed.last().unwrap();
    let router = Router::new().route(
        "/where",
        get(|| async {
            let cpus = plt_kernel::affinity::allowed_cpus().unwrap();
            format!("{} {cpus:?}", plt_kernel::worker_index())
        }),
    );
    // One worker, pinned: served on a thread of its own (worker 1), not the ambient runtime.
    let mut host = Running::start(
        ServiceHost::new("pinned", &server_config())
            .workers(1)
            .pin_workers(vec![cpu])
            .http(router),
    )
    .await;
    let text = get_text(&host.url("/where")).await;
    assert_eq!(text, format!("1 [{cpu}]"));
    host.trigger_shutdown();
    host.stopped().await.expect("run() returns Ok");

    // A CPU no thread can be pinned to is refused when binding, naming it.
    // The first CPU number this machine cannot have.
    let possible = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    let beyond = 1 + possible
        .trim()
        .rsplit([',', '-'])
        .next()
        .unwrap()
        .parse::<usize>()
        .unwrap();
    let err = match ServiceHost::new("pinned", &server_config())
        .workers(2)
        .pin_workers(vec![cpu, beyond])
        .bind("127.0.0.1:0".parse().unwrap())
        .await
    {
        Ok(_) => panic!("CPU {beyond} accepted"),
        Err(e) => e,
    };
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    let msg = err.to_string();
    assert!(msg.contains(&format!("CPU {beyond}:")), "{msg}");
}

/// Serves `/front/*` itself (with the peer's address it is given); hands the rest on.
struct Front;

impl plt_kernel::FrontHandler for Front {
    fn serve(
        &self,
        req: axum::extract::Request,
        peer: Option<SocketAddr>,
    ) -> Result<plt_kernel::FrontFuture, axum::extract::Request> {
        if !req.uri().path().starts_with("/front/") {
            return Err(req);
        }
        let peer = peer.map(|p| p.ip().to_string()).unwrap_or_default();
        Ok(Box::pin(async move {
            axum::response::IntoResponse::into_response(format!("front {peer}"))
        }))
    }
}

#[tokio::test]
async fn the_front_handler_sees_requests_first_and_hands_on_the_rest() {
    let host = Running::start(
        ServiceHost::new("front", &server_config())
            .front(Arc::new(Front))
            .http(Router::new().route("/front/x", get(|| async { "router" }))),
    )
    .await;
    let c = client();
    let resp = c.get(host.url("/front/x")).send().await.unwrap();
    // Nothing of the host's stack: no generated request id.
    assert!(resp.headers().get(REQUEST_ID_HEADER).is_none());
    assert_eq!(resp.text().await.unwrap(), "front 127.0.0.1");
    let resp = c.get(host.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().get(REQUEST_ID_HEADER).is_some());
}
