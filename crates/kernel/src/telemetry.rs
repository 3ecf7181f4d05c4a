//! K2 logging: `tracing` with JSON lines in production and readable lines in development.
//! Every line written while a request is handled carries that request's id, because the
//! host opens a `request` span with a `request_id` field around each request.

use crate::config::{LogConfig, LogFormat};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber. Returns `false` if one was already installed (tests
/// that build several apps in one process), which is not an error.
pub fn init(log: &LogConfig) -> bool {
    let filter = EnvFilter::try_new(&log.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match log.format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_target(true),
            )
            .try_init(),
        LogFormat::Pretty => registry
            .with(fmt::layer().compact().with_target(true))
            .try_init(),
    };
    result.is_ok()
}

/// For tests: readable logs at `warn` (or `RUST_LOG`), installed once.
pub fn init_for_tests() {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::registry()
        .with(EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("warn")))
        .with(fmt::layer().compact().with_test_writer())
        .try_init();
}
