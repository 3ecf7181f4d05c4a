//! K2 logging, K6 traces, K7 error reporting, set up once per process.
//!
//! Logs: `tracing` with JSON lines in production and readable lines in development. Every
//! line written while a request is handled carries that request's id and trace id, because
//! the host opens a `request` span with `request_id` and `trace_id` fields around each
//! request. Traces: the same spans, through the OpenTelemetry layer ([`crate::trace`]).
//! Errors: panics and internal errors with their request's context ([`crate::report`]).

use crate::{
    KernelConfig,
    config::{LogConfig, LogFormat},
};
use std::time::Duration;
use tracing_subscriber::{EnvFilter, Layer, filter::LevelFilter, fmt, prelude::*};

/// What [`init`] set up; [`Telemetry::shutdown`] sends what is still buffered (call it
/// before the process exits).
#[must_use = "call shutdown() before exiting so buffered spans and reports are sent"]
pub struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes spans and error reports (bounded: a collector that is away does not hold
    /// the exit up for long).
    pub fn shutdown(self) {
        if let Some(p) = self.provider {
            let flush = move || {
                let _ = p.shutdown_with_timeout(Duration::from_secs(5));
            };
            match tokio::runtime::Handle::try_current() {
                Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                    tokio::task::block_in_place(flush)
                }
                _ => flush(),
            }
        }
        crate::report::flush(Duration::from_secs(2));
    }
}

/// Installs logging, tracing and error reporting for a process running `services` (the
/// first names the process; `plt dev` runs several). If a subscriber was already installed
/// (tests that build several apps in one process), logging stays as it was.
pub fn init(kernel: &KernelConfig, services: &[&str]) -> Telemetry {
    let name = services.first().copied().unwrap_or("plt");
    crate::report::init(&kernel.error_reporting, &kernel.env, name);
    let instance = format!(
        "{}-{}",
        crate::report::hostname().unwrap_or_else(|| "localhost".into()),
        std::process::id()
    );
    let provider = match crate::trace::provider(&kernel.tracing, services, &instance) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("{name}: {e}; traces are not exported");
            None
        }
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(crate::trace::tracer(p))
            .with_location(false)
            .with_target(false)
            .with_threads(false)
    });
    let queries = provider
        .as_ref()
        .filter(|_| kernel.tracing.enabled())
        .map(crate::trace::QuerySpans::new);
    let installed = install(&kernel.log, otel, queries);
    if installed && kernel.tracing.enabled() {
        tracing::info!(
            endpoint = %kernel.tracing.endpoint,
            protocol = ?kernel.tracing.protocol,
            sampling_ratio = kernel.tracing.sampling_ratio,
            "exporting traces"
        );
    }
    Telemetry { provider }
}

fn install<L>(log: &LogConfig, otel: Option<L>, queries: Option<crate::trace::QuerySpans>) -> bool
where
    L: Layer<tracing_subscriber::Registry> + Send + Sync,
{
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt_layer = match log.format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_target(true)
            .boxed(),
        LogFormat::Pretty => fmt::layer().compact().with_target(true).boxed(),
    };
    // Spans reach the trace layer at INFO whatever the log level says.
    tracing_subscriber::registry()
        .with(otel.map(|l| l.with_filter(LevelFilter::INFO)))
        .with(fmt_layer.with_filter(filter))
        // sqlx reports statements at DEBUG: only this layer asks for them, when it has a
        // tracer. (Not an `Option` layer: that would not hand it the dispatcher.)
        // It sees the spans too (INFO): a filtered layer is only shown the spans its filter
        // enables, and a query's parent is one of them.
        .with({
            let filter = match &queries {
                Some(_) => EnvFilter::new("info,sqlx::query=debug"),
                None => EnvFilter::new("off"),
            };
            crate::trace::QuerySpans::from(queries).with_filter(filter)
        })
        .try_init()
        .is_ok()
}

/// Logging only, from a log section (commands that serve nothing).
pub fn init_logs(log: &LogConfig) -> bool {
    install::<tracing_opentelemetry::OpenTelemetryLayer<_, opentelemetry_sdk::trace::Tracer>>(
        log, None, None,
    )
}

/// For tests: readable logs at `warn` (or `RUST_LOG`), with the trace layer (propagation
/// only, nothing exported), installed once.
pub fn init_for_tests() {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let provider = crate::trace::provider(&Default::default(), &["test"], "test").ok();
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(crate::trace::tracer(p)));
    let _ = tracing_subscriber::registry()
        .with(otel.map(|l| l.with_filter(LevelFilter::INFO)))
        .with(
            fmt::layer()
                .compact()
                .with_test_writer()
                .with_filter(EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("warn"))),
        )
        .try_init();
}
