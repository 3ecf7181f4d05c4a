//! K7 error reporting: panics and internal errors, with the context of the request they
//! happened in (service, request id, trace id, the signed-in user when known), are logged
//! and, when `error_reporting.dsn` is set, sent to a Sentry-compatible server through the
//! Sentry client (`sentry-core`) over the kernel's own HTTPS client. Never a secret: an
//! event carries the message and those ids, no headers, bodies or tokens.
//!
//! The host polls each request inside a [`RequestScope`] (a thread-local set while its
//! future runs), so a panic hook and [`internal_error`] know which request they belong to.

use crate::{ConfigError, Secret};
use sentry_core::{
    ClientOptions, Transport,
    protocol::{Event, Exception, Level, Value},
    types::Dsn,
};
use serde::{Deserialize, Serialize};
use std::{
    borrow::Cow,
    cell::RefCell,
    str::FromStr as _,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// The `error_reporting` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ErrorReportingConfig {
    /// A Sentry DSN (`https://<key>@<host>/<project>`). Empty: errors are only logged.
    pub dsn: Secret<String>,
    /// Serve `/plt/debug/panic`, which panics (to check the reporting end to end).
    pub panic_route: bool,
}

impl ErrorReportingConfig {
    pub fn check(&self, prefix: &str) -> Result<(), ConfigError> {
        // `config print` shows a set DSN as the redaction placeholder: a printed
        // configuration loads back (without reporting until the DSN is given again).
        let dsn = self.dsn.expose();
        if !dsn.is_empty() && dsn != crate::secret::REDACTED && Dsn::from_str(dsn).is_err() {
            return Err(ConfigError::new(
                format!("{prefix}.dsn"),
                "not a valid DSN (https://<key>@<host>/<project id>)",
            ));
        }
        Ok(())
    }
}

/// What is known about the request being handled on this thread.
#[derive(Debug, Clone, Default)]
pub struct RequestScope {
    pub service: &'static str,
    pub request_id: Option<String>,
    pub user_id: Option<String>,
}

thread_local! {
    static SCOPE: RefCell<Option<RequestScope>> = const { RefCell::new(None) };
}

/// Runs `f` with `scope` as the thread's request scope; what `f` adds to it (the user) is
/// kept in `scope` for the next poll.
pub fn within<R>(scope: &mut Option<RequestScope>, f: impl FnOnce() -> R) -> R {
    let outer = SCOPE.with(|s| s.replace(scope.take()));
    struct Restore<'a> {
        scope: &'a mut Option<RequestScope>,
        outer: Option<RequestScope>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            *self.scope = SCOPE.with(|s| s.replace(self.outer.take()));
        }
    }
    let _restore = Restore { scope, outer };
    f()
}

/// Records the signed-in user of the request being handled (the runtime's access guard
/// calls it once it admitted a user).
pub fn set_user(user_id: &str) {
    SCOPE.with(|s| {
        if let Some(scope) = s.borrow_mut().as_mut()
            && scope.user_id.as_deref() != Some(user_id)
        {
            scope.user_id = Some(user_id.to_owned());
        }
    });
}

/// The request scope of this thread, if a request is being handled.
pub fn current_scope() -> Option<RequestScope> {
    SCOPE.with(|s| s.borrow().clone())
}

struct Reporter {
    client: sentry_core::Client,
    service: String,
}

static REPORTER: OnceLock<Reporter> = OnceLock::new();

/// Sets reporting up for this process (once; later calls are ignored) and installs the
/// panic hook. `service` names the process when no request scope says otherwise.
pub fn init(cfg: &ErrorReportingConfig, env: &str, service: &str) {
    install_panic_hook();
    if cfg.dsn.is_empty() {
        return;
    }
    let Ok(dsn) = Dsn::from_str(cfg.dsn.expose()) else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("error reporting needs a tokio runtime; reports are only logged");
        return;
    };
    let transport = Arc::new(HttpTransport::new(dsn.clone(), runtime));
    let mut options = ClientOptions::default();
    options.dsn = Some(dsn);
    options.release = Some(Cow::Owned(format!("plt@{}", env!("CARGO_PKG_VERSION"))));
    options.environment = Some(Cow::Owned(env.to_owned()));
    options.server_name = hostname().map(Cow::Owned);
    options.default_integrations = false;
    options.transport = Some(Arc::new(move |_: &ClientOptions| {
        transport.clone() as Arc<dyn Transport>
    }));
    let _ = REPORTER.set(Reporter {
        client: sentry_core::Client::from_config(options),
        service: service.to_owned(),
    });
}

/// This machine's host name (reports' server name, traces' instance id).
pub(crate) fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

/// Waits up to `timeout` for reports still being sent (at exit).
pub fn flush(timeout: Duration) {
    if let Some(r) = REPORTER.get() {
        r.client.flush(Some(timeout));
    }
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let message = match info.payload().downcast_ref::<&str>() {
                Some(s) => (*s).to_owned(),
                None => info
                    .payload()
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "panic".to_owned()),
            };
            let location = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let scope = current_scope();
            tracing::error!(
                panic = %message,
                location = %location,
                request_id = scope.as_ref().and_then(|s| s.request_id.as_deref()),
                "panic"
            );
            report(Level::Fatal, "panic", &message, Some(&location), scope);
            previous(info);
        }));
    });
}

/// Reports an internal error (a failure the client sees as 500 `internal`): logged with
/// the request's ids by the caller, sent here when reporting is configured. `message` must
/// not contain secrets: it is the error's internal description.
pub fn internal_error(message: &str) {
    report(Level::Error, "internal", message, None, current_scope());
}

fn report(
    level: Level,
    kind: &str,
    message: &str,
    location: Option<&str>,
    scope: Option<RequestScope>,
) {
    let Some(r) = REPORTER.get() else {
        return;
    };
    let mut event = Event {
        level,
        message: Some(message.to_owned()),
        logger: Some("plt".into()),
        ..Default::default()
    };
    event.exception.values.push(Exception {
        ty: kind.to_owned(),
        value: Some(message.to_owned()),
        module: location.map(str::to_owned),
        ..Default::default()
    });
    let service = scope
        .as_ref()
        .map(|s| s.service)
        .filter(|s| !s.is_empty())
        .unwrap_or(&r.service);
    event.tags.insert("service".into(), service.to_owned());
    if let Some(scope) = &scope {
        if let Some(id) = &scope.request_id {
            event.tags.insert("request_id".into(), id.clone());
        }
        if let Some(user) = &scope.user_id {
            event.user = Some(sentry_core::protocol::User {
                id: Some(user.clone()),
                ..Default::default()
            });
        }
    }
    if let Some(trace_id) = crate::trace::current_trace_id() {
        event.tags.insert("trace_id".into(), trace_id.clone());
        event
            .extra
            .insert("trace_id".into(), Value::String(trace_id));
    }
    if let Some(location) = location {
        event
            .extra
            .insert("location".into(), Value::String(location.to_owned()));
    }
    r.client.capture_event(event, None);
}

/// Sends envelopes to the DSN's envelope endpoint with the kernel's HTTP client, on the
/// runtime the reporter was set up on. At most [`QUEUE`] reports in flight; more are
/// dropped (and counted) rather than piling up while the server is away.
struct HttpTransport {
    client: reqwest::Client,
    url: String,
    auth: String,
    runtime: tokio::runtime::Handle,
    in_flight: Arc<AtomicUsize>,
}

const QUEUE: usize = 64;

impl HttpTransport {
    fn new(dsn: Dsn, runtime: tokio::runtime::Handle) -> Self {
        let agent = format!("plt/{}", env!("CARGO_PKG_VERSION"));
        Self {
            client: crate::tls::http_client_builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_else(|_| crate::tls::http_client()),
            url: dsn.envelope_api_url().to_string(),
            auth: dsn.to_auth(Some(&agent)).to_string(),
            runtime,
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl Transport for HttpTransport {
    fn send_envelope(&self, envelope: sentry_core::Envelope) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= QUEUE {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            metrics::counter!("error_reports_dropped_total").increment(1);
            return;
        }
        let mut body = Vec::new();
        if envelope.to_writer(&mut body).is_err() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let request = self
            .client
            .post(&self.url)
            .header("x-sentry-auth", &self.auth)
            .header(http::header::CONTENT_TYPE, "application/x-sentry-envelope")
            .body(body);
        let in_flight = self.in_flight.clone();
        self.runtime.spawn(async move {
            let outcome = match request.send().await {
                Ok(resp) if resp.status().is_success() => "sent",
                Ok(resp) => {
                    tracing::warn!(status = resp.status().as_u16(), "error report refused");
                    "refused"
                }
                Err(e) => {
                    tracing::warn!(error = %e, "error report not sent");
                    "failed"
                }
            };
            metrics::counter!("error_reports_total", "outcome" => outcome).increment(1);
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }

    fn flush(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while self.in_flight.load(Ordering::Acquire) > 0 {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}
