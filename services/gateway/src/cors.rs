//! CORS (the Fetch standard's CORS protocol) from configuration. Preflights — `OPTIONS` with
//! `Origin` and `Access-Control-Request-Method` — are answered by the gateway itself: 204
//! with the allowed methods and headers, or 403 problem+json when the origin, method or a
//! requested header is not allowed. Other requests from an allowed origin get
//! `Access-Control-Allow-Origin` (and the exposed headers) on whatever answer they get,
//! errors included, so that a browser page can read them. No configured origin: CORS off.

use crate::config::CorsConfig;
use axum::{
    extract::Request,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use plt_contracts::{Error, ErrorCode, http_api::problem_response};
use plt_kernel::REQUEST_ID_HEADER;
use std::{collections::HashSet, sync::Arc};

pub struct Cors {
    any_origin: bool,
    origins: HashSet<String>,
    methods: HashSet<String>,
    methods_value: HeaderValue,
    headers: HashSet<String>,
    headers_value: Option<HeaderValue>,
    expose_value: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

fn join(list: &[String]) -> Option<HeaderValue> {
    if list.is_empty() {
        return None;
    }
    HeaderValue::from_str(&list.join(", ")).ok()
}

impl Cors {
    /// `None` when no origin is configured (CORS off).
    pub fn new(cfg: &CorsConfig) -> Option<Arc<Self>> {
        if cfg.allowed_origins.is_empty() {
            return None;
        }
        Some(Arc::new(Self {
            any_origin: cfg.allowed_origins.iter().any(|o| o == "*"),
            origins: cfg.allowed_origins.iter().cloned().collect(),
            methods: cfg.allowed_methods.iter().cloned().collect(),
            methods_value: join(&cfg.allowed_methods).unwrap_or(HeaderValue::from_static("")),
            headers: cfg
                .allowed_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            headers_value: join(&cfg.allowed_headers),
            expose_value: join(&cfg.exposed_headers),
            credentials: cfg.allow_credentials,
            max_age: HeaderValue::from(cfg.max_age.as_secs()),
        }))
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin || self.origins.contains(origin)
    }

    /// `Access-Control-Allow-Origin` (and credentials) for an allowed origin.
    fn allow_origin(&self, headers: &mut HeaderMap, origin: &HeaderValue) {
        if self.any_origin && !self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        } else {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.append(header::VARY, HeaderValue::from_static("origin"));
        }
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    fn refuse(&self, why: &str, request_id: Option<String>) -> Response {
        problem_response(
            &Error::new(
                ErrorCode::PermissionDenied,
                format!("CORS preflight refused: {why}"),
            ),
            request_id,
        )
    }

    fn preflight(&self, req: &Request, origin: &HeaderValue) -> Response {
        let rid = req
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let Ok(origin_str) = origin.to_str() else {
            return self.refuse("origin not allowed", rid);
        };
        if !self.origin_allowed(origin_str) {
            return self.refuse("origin not allowed", rid);
        }
        let method = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !self.methods.contains(method) {
            return self.refuse("method not allowed", rid);
        }
        let requested: Vec<String> = req
            .headers()
            .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|h| h.trim().to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        if let Some(h) = requested.iter().find(|h| !self.headers.contains(*h)) {
            return self.refuse(&format!("header {h} not allowed"), rid);
        }
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        self.allow_origin(h, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            self.methods_value.clone(),
        );
        if let Some(v) = &self.headers_value {
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v.clone());
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        h.append(
            header::VARY,
            HeaderValue::from_static(
                "access-control-request-method, access-control-request-headers",
            ),
        );
        resp
    }
}

/// Answers a preflight itself; otherwise `next` answers `req` and the answer is decorated.
pub async fn apply<F, Fut>(cors: &Cors, req: Request, next: F) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let origin = req.headers().get(header::ORIGIN).cloned();
    let Some(origin) = origin else {
        return next(req).await;
    };
    let is_preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if is_preflight {
        return cors.preflight(&req, &origin);
    }
    let allowed = origin.to_str().is_ok_and(|o| cors.origin_allowed(o));
    let mut resp = next(req).await;
    let h = resp.headers_mut();
    // What an upstream said about CORS does not count: the gateway decides.
    for name in [
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
    ] {
        h.remove(name);
    }
    if allowed {
        cors.allow_origin(h, &origin);
        if let Some(v) = &cors.expose_value {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
    resp
}
