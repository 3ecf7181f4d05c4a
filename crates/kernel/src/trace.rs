//! K6 tracing: `tracing` spans become OpenTelemetry spans (tracing-opentelemetry), exported
//! over OTLP (gRPC or HTTP/protobuf) when `tracing.endpoint` is set. W3C trace context
//! (`traceparent`, `tracestate`) is read from every incoming request ([`continue_from`]) and
//! written into every outgoing call ([`inject_current`]), so one trace follows a request from
//! the gateway through the services and the event bus. Without an endpoint nothing is
//! exported, but the context still travels and every log line of a request carries its
//! `trace_id`.
//!
//! Sampling is parent-based: a request arriving with a sampled `traceparent` is traced, one
//! arriving without is traced with probability `tracing.sampling_ratio`.
//!
//! Several services in one process (`plt dev`) each export under their own `service.name`:
//! the host marks the thread while it polls a request ([`ServiceMark`]) and spans started
//! there are routed to that service's exporter.

use crate::{ConfigError, Secret};
use bytes::Bytes;
use http::HeaderMap;
use opentelemetry::{
    Context, KeyValue,
    propagation::TextMapPropagator,
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_http::{HeaderExtractor, HeaderInjector, HttpClient, HttpError};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanProcessor},
};
use serde::{Deserialize, Serialize};
use std::{cell::Cell, collections::BTreeMap, fmt, time::Duration};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `tracing` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// Where spans are sent: `http://collector:4317` (grpc) or
    /// `http://collector:4318/v1/traces` (http). Empty: nothing is exported.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Sent with every export (e.g. an `authorization` header of a hosted collector).
    pub headers: BTreeMap<String, Secret<String>>,
    /// The share of new traces recorded (0.0–1.0); a caller's sampling decision is followed.
    pub sampling_ratio: f64,
    /// Longest wait for one export.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            protocol: OtlpProtocol::Grpc,
            headers: BTreeMap::new(),
            sampling_ratio: 1.0,
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OtlpProtocol {
    /// OTLP/gRPC (usually port 4317).
    Grpc,
    /// OTLP/HTTP with protobuf bodies (usually port 4318, path `/v1/traces`).
    Http,
}

impl TracingConfig {
    pub fn check(&self, prefix: &str) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sampling_ratio) {
            return Err(ConfigError::new(
                format!("{prefix}.sampling_ratio"),
                "must be between 0.0 and 1.0",
            ));
        }
        if !self.endpoint.is_empty() {
            let ok = http::Uri::try_from(self.endpoint.as_str())
                .ok()
                .is_some_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                });
            if !ok {
                return Err(ConfigError::new(
                    format!("{prefix}.endpoint"),
                    "must be an http:// or https:// URL (or empty to export nothing)",
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new(
                format!("{prefix}.timeout"),
                "must be greater than 0",
            ));
        }
        for name in self.headers.keys() {
            if http::HeaderName::try_from(name.as_str()).is_err() {
                return Err(ConfigError::new(
                    format!("{prefix}.headers.{name}"),
                    "not a valid header name",
                ));
            }
        }
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        !self.endpoint.is_empty()
    }
}

thread_local! {
    /// The service whose request this thread is polling (several services in one process).
    static CURRENT_SERVICE: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// Marks the current thread as working for `service` until dropped (restoring the previous
/// mark). The host holds one while it polls a request.
pub struct ServiceMark(Option<&'static str>);

impl ServiceMark {
    pub fn enter(service: &'static str) -> Self {
        Self(CURRENT_SERVICE.with(|c| c.replace(Some(service))))
    }
}

impl Drop for ServiceMark {
    fn drop(&mut self) {
        CURRENT_SERVICE.with(|c| c.set(self.0));
    }
}

/// The service the current thread is marked for, if any.
pub fn current_service() -> Option<&'static str> {
    CURRENT_SERVICE.with(Cell::get)
}

/// Runs `fut` marked for `service` (each poll), so the spans it starts are that service's.
pub async fn marked<F: std::future::Future>(service: Option<&'static str>, fut: F) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(move |cx| {
        let _mark = service.map(ServiceMark::enter);
        fut.as_mut().poll(cx)
    })
    .await
}

/// `fut` marked for the service the current thread is marked for: what a task spawned on
/// behalf of a service runs as (a background loop's spans are its service's).
pub fn inherit_mark<F: std::future::Future>(
    fut: F,
) -> impl std::future::Future<Output = F::Output> {
    marked(current_service(), fut)
}

/// The attribute routing a span to its service's exporter (removed before export).
const ROUTE_KEY: &str = "plt.route.service";

/// Builds the tracer provider: exporting when `cfg.endpoint` is set, else only propagating.
/// `services` names the services of this process: the first is the default `service.name`;
/// with more than one, spans go to the exporter of the service marked when they started.
pub(crate) fn provider(
    cfg: &TracingConfig,
    services: &[&str],
    instance: &str,
) -> Result<SdkTracerProvider, String> {
    let propagating_only = || {
        SdkTracerProvider::builder()
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOff)))
            .build()
    };
    if !cfg.enabled() {
        return Ok(propagating_only());
    }
    let resource = |service: &str| {
        opentelemetry_sdk::Resource::builder()
            .with_service_name(service.to_owned())
            .with_attribute(KeyValue::new("service.instance.id", instance.to_owned()))
            .with_attribute(KeyValue::new("service.namespace", "plt"))
            .build()
    };
    let default = services.first().copied().unwrap_or("plt");
    set_sampling_ratio(cfg.sampling_ratio);
    let builder = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(SharedRatio)))
        .with_resource(resource(default));
    if services.len() <= 1 {
        return Ok(builder.with_batch_exporter(exporter(cfg)?).build());
    }
    // One batch processor (and exporter) per service, each with its service's resource.
    let mut routes = Vec::with_capacity(services.len());
    for service in services {
        let mut processor = BatchSpanProcessor::builder(exporter(cfg)?).build();
        processor.set_resource(&resource(service));
        routes.push(((*service).to_owned(), processor));
    }
    Ok(builder.with_span_processor(Router { routes }).build())
}

fn exporter(cfg: &TracingConfig) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let built = match cfg.protocol {
        OtlpProtocol::Grpc => {
            let mut metadata = tonic::metadata::MetadataMap::new();
            for (k, v) in &cfg.headers {
                let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes())
                    .map_err(|e| format!("tracing.headers.{k}: {e}"))?;
                let value = v
                    .expose()
                    .parse()
                    .map_err(|_| format!("tracing.headers.{k}: not a valid header value"))?;
                metadata.insert(key, value);
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(cfg.endpoint.clone())
                .with_timeout(cfg.timeout)
                .with_metadata(metadata)
                .build()
        }
        OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(cfg.endpoint.clone())
            .with_timeout(cfg.timeout)
            .with_headers(
                cfg.headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose().clone()))
                    .collect(),
            )
            .with_http_client(ExportClient::new(cfg.timeout)?)
            .build(),
    };
    built.map_err(|e| format!("tracing: building the OTLP exporter: {e}"))
}

/// The share of new traces recorded, as `f64` bits ([`set_sampling_ratio`]).
static SAMPLING_RATIO: std::sync::atomic::AtomicU64 =
    std::sync::atomic::AtomicU64::new(0x3FF0_0000_0000_0000); // 1.0

/// Changes the share of new traces recorded (0.0–1.0, clamped) while the process runs; the
/// configuration's `tracing.sampling_ratio` sets it at start. (A benchmark compares ratios
/// in one process with it.)
pub fn set_sampling_ratio(ratio: f64) {
    let r = if ratio.is_nan() {
        0.0
    } else {
        ratio.clamp(0.0, 1.0)
    };
    SAMPLING_RATIO.store(r.to_bits(), std::sync::atomic::Ordering::Relaxed);
}

/// The root sampler: trace-id ratio based, at the current [`set_sampling_ratio`].
#[derive(Debug, Clone)]
struct SharedRatio;

impl opentelemetry_sdk::trace::ShouldSample for SharedRatio {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        let ratio = f64::from_bits(SAMPLING_RATIO.load(std::sync::atomic::Ordering::Relaxed));
        Sampler::TraceIdRatioBased(ratio).should_sample(
            parent_context,
            trace_id,
            name,
            span_kind,
            attributes,
            links,
        )
    }
}

/// Routes each finished span to the batch processor of the service it started under.
#[derive(Debug)]
struct Router {
    routes: Vec<(String, BatchSpanProcessor)>,
}

impl SpanProcessor for Router {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, _cx: &Context) {
        if let Some(service) = current_service() {
            use opentelemetry::trace::Span as _;
            span.set_attribute(KeyValue::new(ROUTE_KEY, service));
        }
    }

    fn on_end(&self, mut span: SpanData) {
        let mut to = 0;
        if let Some(i) = span
            .attributes
            .iter()
            .position(|kv| kv.key.as_str() == ROUTE_KEY)
        {
            let kv = span.attributes.swap_remove(i);
            let name = kv.value.as_str();
            if let Some(j) = self.routes.iter().position(|(s, _)| *s == *name) {
                to = j;
            }
        }
        self.routes[to].1.on_end(span);
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        for (_, p) in &self.routes {
            p.force_flush()?;
        }
        Ok(())
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        for (_, p) in &self.routes {
            p.shutdown_with_timeout(timeout)?;
        }
        Ok(())
    }
}

/// OTLP/HTTP through the kernel's reqwest client. The exporter runs on its own thread, so
/// each request is spawned onto the runtime that built the exporter.
struct ExportClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

impl ExportClient {
    fn new(timeout: Duration) -> Result<Self, String> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "tracing: the HTTP exporter needs a tokio runtime".to_owned())?;
        let client = crate::tls::http_client_builder()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("tracing: building the HTTP client: {e}"))?;
        Ok(Self { client, runtime })
    }
}

impl fmt::Debug for ExportClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ExportClient")
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let call = async move {
            let (parts, body) = request.into_parts();
            let resp = client
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await?;
            let status = resp.status();
            let headers = resp.headers().clone();
            let body = resp.bytes().await?;
            let mut out = http::Response::new(body);
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok::<_, reqwest::Error>(out)
        };
        match self.runtime.spawn(call).await {
            Ok(r) => r.map_err(|e| Box::new(e) as HttpError),
            Err(e) => Err(Box::new(e) as HttpError),
        }
    }
}

/// The W3C trace context propagator.
fn propagator() -> &'static TraceContextPropagator {
    static P: std::sync::OnceLock<TraceContextPropagator> = std::sync::OnceLock::new();
    P.get_or_init(TraceContextPropagator::new)
}

/// The trace context a request's headers (or gRPC metadata, or event headers) carry.
pub fn extract(headers: &HeaderMap) -> Context {
    propagator().extract(&HeaderExtractor(headers))
}

/// Makes `span` a child of the caller's span named by `headers`' `traceparent` (when there
/// is one) and records its trace id in the span's `trace_id` field (for the log lines).
pub fn continue_from(span: &tracing::Span, headers: &HeaderMap) {
    if headers.contains_key("traceparent") {
        let _ = span.set_parent(extract(headers));
    }
    record_trace_id(span);
}

/// Makes `span` a child of the span a `traceparent` value names (an event's), and records
/// its trace id.
pub fn continue_from_traceparent(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(tp) = traceparent
        && let Ok(v) = http::HeaderValue::from_str(tp)
    {
        let mut h = HeaderMap::new();
        h.insert("traceparent", v);
        let _ = span.set_parent(extract(&h));
    }
    record_trace_id(span);
}

/// Records `span`'s trace id in its `trace_id` field (declared `Empty` where it was made).
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id.as_str());
    }
}

/// The trace id of `span`, as 32 lowercase hex digits (`None` without tracing).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The trace id of the current span.
pub fn current_trace_id() -> Option<String> {
    trace_id(&tracing::Span::current())
}

/// Writes the current span's trace context (`traceparent`, `tracestate`) into `headers`,
/// replacing what was there.
pub fn inject_current(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    inject(&cx, headers);
}

/// Writes `cx`'s trace context into `headers` (removing stale ones when `cx` has none).
pub fn inject(cx: &Context, headers: &mut HeaderMap) {
    headers.remove("traceparent");
    headers.remove("tracestate");
    if cx.span().span_context().is_valid() {
        propagator().inject_context(cx, &mut HeaderInjector(headers));
    }
}

/// The current span's `traceparent` value (for an event's headers).
pub fn current_traceparent() -> Option<String> {
    traceparent_of(&tracing::Span::current())
}

/// `span`'s `traceparent` value.
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let mut h = HeaderMap::new();
    inject(&span.context(), &mut h);
    h.get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Marks `span` as failed (status ERROR) with a short description.
pub fn set_error(span: &tracing::Span, description: impl Into<std::borrow::Cow<'static, str>>) {
    span.set_status(opentelemetry::trace::Status::error(description));
}

/// Sets an OpenTelemetry attribute on `span` (not a log field).
pub fn set_attribute(
    span: &tracing::Span,
    key: &'static str,
    value: impl Into<opentelemetry::Value>,
) {
    span.set_attribute(key, value);
}

/// The process's tracer, for the `tracing` layer.
pub(crate) fn tracer(provider: &SdkTracerProvider) -> opentelemetry_sdk::trace::Tracer {
    provider.tracer("plt")
}

/// The semantic-convention attributes of a server span, from the request.
pub fn server_attributes<B>(span: &tracing::Span, req: &http::Request<B>) {
    set_attribute(
        span,
        "http.request.method",
        req.method().as_str().to_owned(),
    );
    set_attribute(span, "url.path", req.uri().path().to_owned());
    if let Some(ua) = req
        .headers()
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        set_attribute(span, "user_agent.original", ua.to_owned());
    }
}

/// The response status on a server span (an error status for 5xx).
pub fn server_status(span: &tracing::Span, status: http::StatusCode) {
    set_attribute(
        span,
        "http.response.status_code",
        i64::from(status.as_u16()),
    );
    if status.is_server_error() {
        set_error(span, status.as_str().to_owned());
    }
}

/// Renames `span` once more is known (a server span's route after routing).
pub fn set_name(span: &tracing::Span, name: impl Into<std::borrow::Cow<'static, str>>) {
    span.context().span().update_name(name.into());
}

/// Database query spans: sqlx reports each statement it ran as an event (target
/// `sqlx::query`, with its summary, text, rows and time taken); this layer turns each one
/// made inside a sampled span into a client span of that span, timed as the query was.
/// Installed only when traces are exported.
pub(crate) struct QuerySpans {
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
    dispatch: std::sync::OnceLock<tracing::dispatcher::WeakDispatch>,
}

impl QuerySpans {
    pub(crate) fn new(provider: &SdkTracerProvider) -> Self {
        Self {
            tracer: Some(tracer(provider)),
            dispatch: std::sync::OnceLock::new(),
        }
    }
}

impl From<Option<QuerySpans>> for QuerySpans {
    fn from(q: Option<QuerySpans>) -> Self {
        q.unwrap_or(Self {
            tracer: None,
            dispatch: std::sync::OnceLock::new(),
        })
    }
}

/// The service a span was started for (see [`ServiceMark`]).
struct Mark(&'static str);

/// The fields of a `sqlx::query` event.
#[derive(Default)]
struct QueryFields {
    summary: String,
    statement: String,
    rows_returned: i64,
    rows_affected: i64,
    elapsed_secs: f64,
}

impl tracing::field::Visit for QueryFields {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        match field.name() {
            "summary" => self.summary = value.to_owned(),
            "db.statement" => self.statement = value.trim().to_owned(),
            _ => {}
        }
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        let v = i64::try_from(value).unwrap_or(i64::MAX);
        match field.name() {
            "rows_returned" => self.rows_returned = v,
            "rows_affected" => self.rows_affected = v,
            _ => {}
        }
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        if field.name() == "elapsed_secs" {
            self.elapsed_secs = value;
        }
    }
    fn record_debug(&mut self, _field: &tracing::field::Field, _value: &dyn fmt::Debug) {}
}

impl<S> tracing_subscriber::Layer<S> for QuerySpans
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_new_span(
        &self,
        _attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        // Which service a span belongs to, for queries run on another thread (SQLite's
        // worker) within it.
        if self.tracer.is_some()
            && let Some(service) = current_service()
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(Mark(service));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        use opentelemetry::trace::{Span as _, SpanKind, Tracer as _};
        let Some(tracer) = &self.tracer else {
            return;
        };
        if event.metadata().target() != "sqlx::query" {
            return;
        }
        let Some((parent, mark)) = ctx.event_span(event).map(|s| {
            let mark = s
                .scope()
                .find_map(|s| s.extensions().get::<Mark>().map(|m| m.0));
            (s.id(), mark)
        }) else {
            return;
        };
        let _mark = match current_service() {
            None => mark.map(ServiceMark::enter),
            Some(_) => None,
        };
        let Some(dispatch) = self.dispatch.get().and_then(|d| d.upgrade()) else {
            return;
        };
        let Some(parent_cx) = tracing_opentelemetry::get_otel_context(&parent, &dispatch) else {
            return;
        };
        if !parent_cx.span().span_context().is_sampled() {
            return;
        }
        let mut f = QueryFields::default();
        event.record(&mut f);
        let end = std::time::SystemTime::now();
        let start = end
            .checked_sub(Duration::from_secs_f64(f.elapsed_secs.max(0.0)))
            .unwrap_or(end);
        let summary = f.summary.trim_end_matches(" …").to_owned();
        let operation = summary
            .split_whitespace()
            .next()
            .unwrap_or("query")
            .to_uppercase();
        let text = if f.statement.is_empty() {
            summary.clone()
        } else {
            f.statement
        };
        let mut span = tracer
            .span_builder(operation.clone())
            .with_kind(SpanKind::Client)
            .with_start_time(start)
            .with_attributes([
                KeyValue::new("db.operation.name", operation),
                KeyValue::new("db.query.summary", summary),
                KeyValue::new("db.query.text", text),
                KeyValue::new("db.response.returned_rows", f.rows_returned),
                KeyValue::new("db.response.affected_rows", f.rows_affected),
            ])
            .start_with_context(tracer, &parent_cx);
        span.end_with_timestamp(end);
    }
}
