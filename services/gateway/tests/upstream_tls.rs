//! The gateway's upstream clients reach instances that serve TLS (registered with
//! `scheme: https`), trusting the platform CA through `client_tls`: in-memory bodies through
//! plt-h1 (twice, the second on a pooled connection), streamed bodies through hyper's
//! client; without that trust, nothing is sent. (One test: outbound TLS is per process.)

use api_gateway::{
    config::UpstreamConfig,
    upstream::{BodyState, Outgoing, UpstreamBody, Upstreams},
};
use axum::body::Body;
use bytes::Bytes;
use http::Method;
use plt_contracts::{ErrorCode, RequestContext};
use plt_kernel::{
    ServiceHost,
    config::ServerConfig,
    testing::TestCa,
    tls::{ClientTls, ClientTlsConfig, ServerTlsConfig, set_client},
};
use plt_registry::{HealthSpec, Instance, SCHEME_KEY, ServiceRegistry, memory::MemoryRegistry};
use std::{sync::Arc, sync::Mutex, time::Duration};

fn upstream_config() -> UpstreamConfig {
    UpstreamConfig {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        pool_idle_timeout: Duration::from_secs(30),
        max_attempts: 1,
        retry_budget_ratio: 0.2,
        breaker_failures: 100,
        breaker_open_for: Duration::from_millis(100),
        retry_buffer_bytes: 65536,
    }
}

fn request(method: Method, body: UpstreamBody) -> Outgoing {
    Outgoing {
        method,
        path_and_query: "/echo?x=1".into(),
        headers: vec![(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        )],
        body,
        body_state: BodyState::default(),
    }
}

async fn text(resp: http::Response<Body>) -> String {
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn upstreams_that_serve_tls_are_reached_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "platform");
    let files = ca.server("echo", &["127.0.0.1"]);
    let host = ServiceHost::new(
        "echo-tls",
        &ServerConfig {
            shutdown_timeout: Duration::from_millis(200),
            body_limit_bytes: 1 << 20,
            readiness_timeout: Duration::from_secs(1),
            tls: ServerTlsConfig {
                cert_path: files.cert,
                key_path: files.key,
                ..Default::default()
            },
        },
    )
    .http(axum::Router::new().route(
        "/echo",
        axum::routing::any(|method: Method, body: Bytes| async move {
            format!("{method} {}", String::from_utf8_lossy(&body))
        }),
    ))
    .bind("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let addr = host.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(host.run(async move {
        let _ = stopped.await;
    }));
    let memory = MemoryRegistry::new();
    let _registration = memory
        .register(
            Instance {
                id: "echo-1".into(),
                service: "echo".into(),
                address: addr.to_string(),
                version: String::new(),
                tags: vec![],
                metadata: [(SCHEME_KEY.to_owned(), "https".to_owned())].into(),
            },
            HealthSpec::default(),
        )
        .await
        .unwrap();
    let registry: Arc<dyn ServiceRegistry> = Arc::new(memory);
    let ctx = RequestContext::new();

    set_client(
        ClientTls::load(
            &ClientTlsConfig {
                ca_path: ca.ca_file(),
                ..Default::default()
            },
            "client_tls",
        )
        .unwrap(),
    );
    let upstreams = Upstreams::new(
        &registry,
        ["echo".to_owned()],
        &upstream_config(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    for i in 0..2 {
        let resp = upstreams
            .forward(
                "echo",
                &ctx,
                request(
                    Method::POST,
                    UpstreamBody::Buffered(Bytes::from(format!("buffered {i}"))),
                ),
            )
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(text(resp).await, format!("POST buffered {i}"));
    }
    let resp = upstreams
        .forward(
            "echo",
            &ctx,
            request(
                Method::PUT,
                UpstreamBody::Streamed(Mutex::new(Some(Body::from("streamed")))),
            ),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(text(resp).await, "PUT streamed");

    // Not trusting the platform CA: both clients fail before anything is sent.
    set_client(ClientTls::system());
    let untrusting = Upstreams::new(
        &registry,
        ["echo".to_owned()],
        &upstream_config(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let e = untrusting
        .forward(
            "echo",
            &ctx,
            request(Method::GET, UpstreamBody::Buffered(Bytes::new())),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");
    let e = untrusting
        .forward(
            "echo",
            &ctx,
            request(
                Method::PUT,
                UpstreamBody::Streamed(Mutex::new(Some(Body::from("streamed")))),
            ),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
