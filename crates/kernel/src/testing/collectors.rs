//! Receivers for tests of what leaves a process for operators: an OTLP receiver (gRPC and
//! HTTP/protobuf, as a collector serves them) keeping the spans it was sent, and a
//! Sentry-compatible receiver decoding the envelopes a Sentry client posts.

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
    trace_service_server::{TraceService, TraceServiceServer},
};
use prost::Message as _;
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// One span as a collector received it.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.name` of the resource it came with.
    pub service: String,
    pub name: String,
    /// `SPAN_KIND_SERVER`, `SPAN_KIND_CLIENT`, …
    pub kind: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// Attributes, values rendered as text.
    pub attributes: Vec<(String, String)>,
    /// `STATUS_CODE_ERROR` when the span failed.
    pub status: String,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// An OTLP receiver on loopback: `grpc_endpoint()` for `tracing.protocol: grpc`,
/// `http_endpoint()` for `http`.
#[derive(Clone)]
pub struct OtlpReceiver {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    grpc: SocketAddr,
    http: SocketAddr,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn value_text(v: &opentelemetry_proto::tonic::common::v1::AnyValue) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match &v.value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn keep(spans: &Mutex<Vec<ReceivedSpan>>, req: ExportTraceServiceRequest) {
    let mut out = spans.lock().unwrap();
    for rs in req.resource_spans {
        let service = rs
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref())
            .map(value_text)
            .unwrap_or_default();
        for ss in rs.scope_spans {
            for s in ss.spans {
                out.push(ReceivedSpan {
                    service: service.clone(),
                    kind: opentelemetry_proto::tonic::trace::v1::span::SpanKind::try_from(s.kind)
                        .map(|k| k.as_str_name().to_owned())
                        .unwrap_or_default(),
                    name: s.name,
                    trace_id: hex(&s.trace_id),
                    span_id: hex(&s.span_id),
                    parent_span_id: hex(&s.parent_span_id),
                    attributes: s
                        .attributes
                        .iter()
                        .map(|kv| {
                            (
                                kv.key.clone(),
                                kv.value.as_ref().map(value_text).unwrap_or_default(),
                            )
                        })
                        .collect(),
                    status: s
                        .status
                        .map(|st| {
                            opentelemetry_proto::tonic::trace::v1::status::StatusCode::try_from(
                                st.code,
                            )
                            .map(|c| c.as_str_name().to_owned())
                            .unwrap_or_default()
                        })
                        .unwrap_or_default(),
                });
            }
        }
    }
}

struct Grpc(Arc<Mutex<Vec<ReceivedSpan>>>);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        keep(&self.0, request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let svc = TraceServiceServer::new(Grpc(spans.clone()));
        tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming(tokio_stream_listener(grpc_listener))
                .await;
        });
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = http_listener.local_addr().unwrap();
        let kept = spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    match ExportTraceServiceRequest::decode(body) {
                        Ok(req) => {
                            keep(&kept, req);
                            (
                                http::StatusCode::OK,
                                [(http::header::CONTENT_TYPE, "application/x-protobuf")],
                                ExportTraceServiceResponse {
                                    partial_success: None,
                                }
                                .encode_to_vec(),
                            )
                        }
                        Err(_) => (
                            http::StatusCode::BAD_REQUEST,
                            [(http::header::CONTENT_TYPE, "text/plain")],
                            b"not an ExportTraceServiceRequest".to_vec(),
                        ),
                    }
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(http_listener, app).await;
        });
        Self { spans, grpc, http }
    }

    /// `http://127.0.0.1:<port>` (OTLP/gRPC).
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// `http://127.0.0.1:<port>/v1/traces` (OTLP/HTTP, protobuf).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}/v1/traces", self.http)
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for spans satisfying `done`, returning all spans seen.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let until = Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || Instant::now() >= until {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn tokio_stream_listener(
    l: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(l, |l| async move {
        let r = l.accept().await.map(|(s, _)| s);
        Some((r, l))
    })
}

/// A Sentry-compatible receiver: `POST /api/<project>/envelope/`, each envelope's event
/// items decoded to JSON. The DSN is `http://<key>@127.0.0.1:<port>/<project>`.
#[derive(Clone)]
pub struct SentryReceiver {
    events: Arc<Mutex<Vec<serde_json::Value>>>,
    /// The `X-Sentry-Auth` headers received.
    auths: Arc<Mutex<Vec<String>>>,
    addr: SocketAddr,
}

impl SentryReceiver {
    pub async fn start() -> Self {
        let events = Arc::new(Mutex::new(Vec::new()));
        let auths = Arc::new(Mutex::new(Vec::new()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (kept, kept_auth) = (events.clone(), auths.clone());
        let app = axum::Router::new().route(
            "/api/{project}/envelope/",
            axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
                let (kept, kept_auth) = (kept.clone(), kept_auth.clone());
                async move {
                    if let Some(a) = headers.get("x-sentry-auth").and_then(|v| v.to_str().ok()) {
                        kept_auth.lock().unwrap().push(a.to_owned());
                    }
                    match decode_envelope(&body) {
                        Some(found) => {
                            kept.lock().unwrap().extend(found);
                            http::StatusCode::OK
                        }
                        None => http::StatusCode::BAD_REQUEST,
                    }
                }
            }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            events,
            auths,
            addr,
        }
    }

    pub fn dsn(&self) -> String {
        format!("http://testkey@{}/42", self.addr)
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        self.events.lock().unwrap().clone()
    }

    pub fn auths(&self) -> Vec<String> {
        self.auths.lock().unwrap().clone()
    }

    /// Waits up to `timeout` for an event satisfying `found`.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        found: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<serde_json::Value> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| found(e)) {
                return Some(e);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The event items of an envelope: a header line, then per item a header line (with the
/// payload's `length`, or none: the payload runs to the next newline) and its payload.
fn decode_envelope(body: &[u8]) -> Option<Vec<serde_json::Value>> {
    fn line<'a>(rest: &mut &'a [u8]) -> &'a [u8] {
        let all: &'a [u8] = rest;
        let end = all.iter().position(|&b| b == b'\n').unwrap_or(all.len());
        let (l, r) = all.split_at(end);
        *rest = r.get(1..).unwrap_or(&[]);
        l
    }
    let mut rest = body;
    let _header: serde_json::Value = serde_json::from_slice(line(&mut rest)).ok()?;
    let mut events = Vec::new();
    while !rest.is_empty() {
        let item_header = line(&mut rest);
        if item_header.is_empty() {
            continue;
        }
        let h: serde_json::Value = serde_json::from_slice(item_header).ok()?;
        let payload = match h.get("length").and_then(|l| l.as_u64()) {
            Some(n) => {
                let n = usize::try_from(n).ok()?.min(rest.len());
                let (p, r) = rest.split_at(n);
                rest = r.strip_prefix(b"\n").unwrap_or(r);
                p
            }
            None => line(&mut rest),
        };
        if h.get("type").and_then(|t| t.as_str()) == Some("event") {
            events.push(serde_json::from_slice(payload).ok()?);
        }
    }
    Some(events)
}
