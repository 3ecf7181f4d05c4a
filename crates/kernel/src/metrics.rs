//! K5 metrics: one Prometheus recorder per process, rendered at `GET /metrics` in the text
//! exposition format. Every series carries a `service` label so that several services in
//! one process (development mode) stay apart.
//!
//! Series:
//! - `http_server_requests_total{service,method,route,status}`
//! - `http_server_request_duration_seconds{service,method,route}` (histogram)
//! - `grpc_server_handled_total{service,grpc_service,grpc_method,grpc_code}`
//! - `grpc_server_handling_seconds{service,grpc_service,grpc_method}` (histogram)
//! - `db_pool_connections{service,state}` and `db_pool_max_connections{service}` (gauges)
//!
//! Errors are the requests whose `status` is 5xx (HTTP) or whose `grpc_code` is not `Ok`.

use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus handle, installing the recorder on first use. `None` when
/// another recorder was installed first by someone else.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .install_recorder()
                .ok()?;
            describe();
            // Histograms keep their samples until upkeep folds them into buckets; without it
            // memory grows with traffic whenever /metrics is not scraped.
            let upkeep = recorder.clone();
            let _ = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            Some(recorder)
        })
        .as_ref()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "http_server_requests_total",
        "HTTP requests handled, by route and status."
    );
    describe_histogram!(
        "http_server_request_duration_seconds",
        Unit::Seconds,
        "Time to produce the HTTP response head."
    );
    describe_counter!(
        "grpc_server_handled_total",
        "gRPC calls handled, by method and code."
    );
    describe_histogram!(
        "grpc_server_handling_seconds",
        Unit::Seconds,
        "Time to produce the gRPC response head."
    );
    describe_gauge!(
        "db_pool_connections",
        "Database pool connections by state (idle, in_use)."
    );
    describe_gauge!(
        "db_pool_max_connections",
        "Configured maximum size of the database pool."
    );
    // Calls to other services (plt-client).
    describe_counter!(
        "rpc_client_requests_total",
        "Calls to other services, by target, method and code."
    );
    describe_histogram!(
        "rpc_client_duration_seconds",
        Unit::Seconds,
        "Duration of calls to other services, retries included."
    );
    describe_counter!(
        "rpc_client_retries_total",
        "Calls to other services retried on another instance."
    );
    // The transactional outbox (plt-outbox).
    describe_gauge!(
        "outbox_pending",
        "Outbox messages not yet delivered, by topic."
    );
    describe_gauge!(
        "outbox_oldest_age_seconds",
        "Age of the oldest undelivered outbox message, by topic."
    );
    describe_counter!(
        "outbox_delivered_total",
        "Outbox messages delivered and removed, by topic."
    );
    describe_counter!(
        "outbox_delivery_failures_total",
        "Failed outbox deliveries, by topic and reason (retry, rejected)."
    );
    // Sessions ended before expiry (plt-authn), and auth's shared throttle.
    describe_gauge!(
        "plt_revocations_staleness_seconds",
        "Seconds since the revocation feed last answered."
    );
    describe_counter!(
        "auth_throttle_fallback_total",
        "Sign-in throttle decisions made in memory because Redis was unusable."
    );
}

/// A function run just before each render to refresh gauges (for example pool sizes).
pub type Collector = Arc<dyn Fn() + Send + Sync>;

/// Renders all series after running `collectors`.
pub fn render(collectors: &[Collector]) -> String {
    for c in collectors {
        c();
    }
    handle().map(|h| h.render()).unwrap_or_default()
}

/// The `/metrics` response.
pub fn response(collectors: &[Collector]) -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render(collectors),
    )
        .into_response()
}

/// axum middleware counting and timing HTTP requests per matched route.
pub async fn track_http(State(service): State<Arc<str>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let span = tracing::Span::current();
    crate::trace::set_name(&span, format!("{method} {route}"));
    crate::trace::set_attribute(&span, "http.route", route.clone());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let svc = service.to_string();
    metrics::counter!("http_server_requests_total", "service" => svc.clone(), "method" => method.clone(), "route" => route.clone(), "status" => status).increment(1);
    metrics::histogram!("http_server_request_duration_seconds", "service" => svc, "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

/// axum middleware counting and timing gRPC calls. The code is read from the response head
/// (`grpc-status`, present on every error, which tonic sends as trailers-only); a head
/// without it is a call that went on to stream its answer, counted as `Ok`.
pub async fn track_grpc(State(service): State<Arc<str>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let path = req.uri().path().trim_start_matches('/');
    let (grpc_service, grpc_method) = match path.split_once('/') {
        Some((s, m)) => (s.to_owned(), m.to_owned()),
        None => ("unknown".to_owned(), path.to_owned()),
    };
    let span = tracing::Span::current();
    crate::trace::set_name(&span, path.to_owned());
    crate::trace::set_attribute(&span, "rpc.system", "grpc");
    crate::trace::set_attribute(&span, "rpc.service", grpc_service.clone());
    crate::trace::set_attribute(&span, "rpc.method", grpc_method.clone());
    let response = next.run(req).await;
    let status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    crate::trace::set_attribute(&span, "rpc.grpc.status_code", i64::from(status));
    if matches!(status, 2 | 4 | 12 | 13 | 14 | 15) {
        // Server errors (Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable,
        // DataLoss), as the semantic conventions count them.
        crate::trace::set_error(&span, format!("{:?}", tonic::Code::from_i32(status)));
    }
    let code = format!("{:?}", tonic::Code::from_i32(status));
    let svc = service.to_string();
    metrics::counter!("grpc_server_handled_total", "service" => svc.clone(), "grpc_service" => grpc_service.clone(), "grpc_method" => grpc_method.clone(), "grpc_code" => code).increment(1);
    metrics::histogram!("grpc_server_handling_seconds", "service" => svc, "grpc_service" => grpc_service, "grpc_method" => grpc_method)
        .record(start.elapsed().as_secs_f64());
    response
}

/// Metric handles (counters, histograms) by a small key, registered on first use, so that a
/// hot path does not build label sets and look the series up in the registry on every
/// event. Reads take no lock: the handles sit in write-once slots scanned in order (meant
/// for a handful of keys per site: methods, statuses); past `SLOTS` keys, handles are made
/// each time and not kept.
pub struct HandleCache<K, H> {
    slots: [OnceLock<(K, H)>; 32],
}

impl<K, H> Default for HandleCache<K, H> {
    fn default() -> Self {
        Self {
            slots: std::array::from_fn(|_| OnceLock::new()),
        }
    }
}

impl<K, H> std::fmt::Debug for HandleCache<K, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandleCache")
    }
}

impl<K: PartialEq + Clone, H: Clone> HandleCache<K, H> {
    /// The handle for `key`, made by `make` the first time. Call it after the recorder is
    /// installed (at request time): a handle made before is a no-op one.
    pub fn get(&self, key: &K, make: impl FnOnce() -> H) -> H {
        let mut made: Option<H> = None;
        let mut make = Some(make);
        for slot in &self.slots {
            if slot.get().is_none() {
                // A free slot: take it for this key (unless another thread takes it first).
                let h = made
                    .take()
                    .unwrap_or_else(|| (make.take().expect("made once"))());
                let mut mine = Some((key.clone(), h.clone()));
                slot.get_or_init(|| mine.take().expect("once"));
                if mine.is_none() {
                    return h;
                }
                made = Some(h);
            }
            if let Some((k, h)) = slot.get()
                && k == key
            {
                return h.clone();
            }
        }
        made.unwrap_or_else(|| (make.take().expect("made once"))())
    }
}

#[cfg(test)]
mod handle_cache_tests {
    use super::HandleCache;
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };

    #[test]
    fn one_handle_per_key_made_once_even_past_the_slots() {
        let cache: HandleCache<u32, Arc<u32>> = HandleCache::default();
        let made = AtomicUsize::new(0);
        let get = |k: u32| {
            cache.get(&k, || {
                made.fetch_add(1, Ordering::Relaxed);
                Arc::new(k)
            })
        };
        let first: Vec<Arc<u32>> = (0..40).map(get).collect();
        assert_eq!(made.load(Ordering::Relaxed), 40);
        for k in 0..32 {
            assert!(Arc::ptr_eq(&first[k as usize], &get(k)), "key {k} kept");
        }
        assert_eq!(
            made.load(Ordering::Relaxed),
            40,
            "kept keys are not made again"
        );
        assert_eq!(*get(39), 39, "past the slots: made each time, still right");
    }

    #[test]
    fn racing_threads_agree_on_one_handle() {
        let cache: Arc<HandleCache<u32, Arc<u32>>> = Arc::default();
        let handles: Vec<Arc<u32>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| {
                    let cache = cache.clone();
                    s.spawn(move || cache.get(&7, || Arc::new(7)))
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let kept = cache.get(&7, || Arc::new(0));
        assert_eq!(*kept, 7);
        assert!(handles.iter().all(|h| **h == 7));
    }
}
