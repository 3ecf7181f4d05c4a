//! The request path through the gateway:
//!
//! ```text
//! path check ─► route (longest prefix; 404) ─► client address ─► rate limit per client (429)
//!   ─► access token (401 on a private route) ─► rate limit per user (429)
//!   ─► permission via authz (403; 503 when authz cannot answer) ─► body limit (413)
//!   ─► upstream through the pool (retries, breakers; 503, 504) ─► response + RateLimit-*
//! ```
//!
//! Every refusal is RFC 9457 problem+json from `plt_contracts`, with generic details: nothing
//! about instances, addresses or upstream errors reaches the client.

use crate::{
    SERVICE_NAME,
    edge::Caller,
    ratelimit::{Decision, Scope},
    routes::Route,
    upstream::{BodyState, LimitedBody, Outgoing, UpstreamBody},
};
use axum::{
    body::Body,
    extract::Request,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header, request::Parts};
use http_body::Body as _;
use plt_contracts::{Error, ErrorCode, RequestContext, http_api::problem_response};
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{Arc, atomic::Ordering},
    time::Instant,
};
use uuid::Uuid;

/// Everything a request needs, shared by the handlers.
pub struct Gateway {
    pub(crate) routes: Arc<crate::routes::Routes>,
    pub(crate) upstreams: crate::upstream::Upstreams,
    pub(crate) auth: crate::edge::Authenticator,
    pub(crate) authz: crate::edge::Authorizer,
    pub(crate) limiter: crate::ratelimit::RateLimiter,
    pub(crate) trusted: crate::net::TrustedProxies,
    pub(crate) vouch: Arc<crate::vouch::Vouch>,
    /// Whether authz's last answer was a failure (its outage is logged once).
    pub(crate) authz_failing: std::sync::atomic::AtomicBool,
    pub(crate) body_limit: usize,
    pub(crate) retry_buffer: usize,
    pub(crate) openapi: Arc<crate::docs::Docs>,
    /// The document's paths and methods (405 before authentication).
    pub(crate) documented: crate::openapi::Documented,
}

impl Gateway {
    /// The instance ids now in `service`'s pool (tests, diagnostics).
    pub fn instances(&self, service: &str) -> Vec<String> {
        self.upstreams.instances(service)
    }

    pub fn routes(&self) -> Arc<crate::routes::RouteTable> {
        self.routes.current()
    }
}

/// A path the gateway refuses to route: dot segments (also percent-encoded), which some
/// upstreams would resolve after the gateway matched the unresolved path, and backslashes.
fn suspicious_path(path: &str) -> bool {
    let b = path.as_bytes();
    if b.contains(&b'\\')
        || b.windows(3)
            .any(|w| w[0] == b'%' && w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c'))
    {
        return true;
    }
    path.split('/').any(dot_segment)
}

/// `.` or `..`, each dot possibly written `%2e` / `%2E`.
fn dot_segment(seg: &str) -> bool {
    let mut rest = seg.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        if rest[0] == b'.' {
            rest = &rest[1..];
        } else if rest.len() >= 3
            && rest[0] == b'%'
            && rest[1] == b'2'
            && rest[2].eq_ignore_ascii_case(&b'e')
        {
            rest = &rest[3..];
        } else {
            return false;
        }
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
}

fn secs_ceil(d: std::time::Duration) -> u64 {
    d.as_micros().div_ceil(1_000_000) as u64
}

fn set_rate_headers(h: &mut HeaderMap, d: &Decision) {
    static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
    static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
    static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
    h.insert(LIMIT.clone(), HeaderValue::from(d.limit));
    h.insert(REMAINING.clone(), HeaderValue::from(d.remaining));
    h.insert(RESET.clone(), HeaderValue::from(secs_ceil(d.reset)));
}

/// The more restrictive of two decisions (for the headers).
fn tighter(a: Option<Decision>, b: Decision) -> Decision {
    match a {
        Some(a) if a.remaining < b.remaining => a,
        _ => b,
    }
}

/// Marks an answer that came from the upstream (which read the request's body).
#[derive(Clone, Copy)]
struct FromUpstream;

/// Whether a request says it has a body.
fn declares_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// What the handler produced, for metrics.
struct Outcome {
    /// The matched route; `Err` with why none was.
    route: Result<Arc<Route>, &'static str>,
    response: Response,
}

fn problem(err: Error, rid: &Option<String>) -> Response {
    problem_response(&err, rid.clone())
}

/// 405 with `Allow`, as problem+json. The platform has no error code of its own for it:
/// like the services' HTTP clients read a bare 405, it is `invalid_argument`.
fn method_not_allowed(
    method: &http::Method,
    allowed: &[http::Method],
    rid: &Option<String>,
) -> Response {
    let info = ErrorCode::InvalidArgument.info();
    let body = plt_contracts::error::Problem {
        type_uri: format!("urn:plt:problem:{}", info.slug),
        title: "Method not allowed".into(),
        status: 405,
        detail: format!("{method} is not allowed here"),
        code: info.slug.into(),
        errors: vec![],
        request_id: rid.clone(),
    };
    let allow = allowed
        .iter()
        .map(http::Method::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    let mut r = (
        StatusCode::METHOD_NOT_ALLOWED,
        [(
            header::CONTENT_TYPE,
            plt_contracts::error::PROBLEM_CONTENT_TYPE,
        )],
        serde_json::to_vec(&body).unwrap_or_default(),
    )
        .into_response();
    if let Ok(v) = HeaderValue::from_str(&allow) {
        r.headers_mut().insert(header::ALLOW, v);
    }
    r
}

fn unauthenticated(rid: &Option<String>, invalid: bool) -> Response {
    let (msg, challenge) = if invalid {
        (
            "invalid or expired access token",
            r#"Bearer realm="plt", error="invalid_token""#,
        )
    } else {
        ("an access token is required", r#"Bearer realm="plt""#)
    };
    let mut r = problem(Error::unauthenticated(msg), rid);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

fn auth_failure(reason: &'static str) {
    metrics::counter!("gateway_auth_failures_total", "service" => SERVICE_NAME, "reason" => reason)
        .increment(1);
}

/// The bearer token of an `Authorization` header, if it is one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
        .filter(|t| !t.is_empty())
}

/// Where a request came from, as the gateway determined it.
struct Origin<'a> {
    /// The TCP peer.
    peer: Option<SocketAddr>,
    /// The client (the peer, or the client behind a trusted proxy).
    client_ip: IpAddr,
    /// The verified user, if any.
    caller: Option<&'a Caller>,
}

/// Everything the gateway forwards: served, then counted and timed per route.
/// `started`: when the request arrived (its time in the rate limits and caches, too).
pub async fn handle(
    gw: &Gateway,
    req: Request,
    rid: &Option<String>,
    peer: Option<SocketAddr>,
    started: Instant,
) -> Response {
    let method = req.method().clone();
    let has_body = declares_body(req.headers());
    let Outcome {
        route,
        mut response,
    } = gw.serve(req, rid, peer, started).await;
    // Refused with its body (perhaps) unread: the connection is closed after this answer,
    // so the client must not send another request on it.
    if has_body && response.extensions().get::<FromUpstream>().is_none() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = response.status().as_u16();
    let elapsed = started.elapsed().as_secs_f64();
    let requests = |label: &str| metrics::counter!("gateway_requests_total", "service" => SERVICE_NAME, "route" => label.to_owned(), "method" => method.as_str().to_owned(), "status" => status.to_string());
    let durations = |label: &str| metrics::histogram!("gateway_request_duration_seconds", "service" => SERVICE_NAME, "route" => label.to_owned(), "method" => method.as_str().to_owned());
    match &route {
        Ok(r) => {
            let span = tracing::Span::current();
            plt_kernel::trace::set_name(&span, format!("{method} {}", r.label()));
            plt_kernel::trace::set_attribute(&span, "http.route", r.label().to_owned());
            let m = &r.metrics;
            m.requests
                .get(&(method.clone(), status), || requests(r.label()))
                .increment(1);
            m.durations
                .get(&method, || durations(r.label()))
                .record(elapsed);
        }
        Err(label) => {
            requests(label).increment(1);
            durations(label).record(elapsed);
        }
    }
    response
}

impl Gateway {
    async fn serve(
        &self,
        req: Request,
        rid: &Option<String>,
        peer: Option<SocketAddr>,
        at: Instant,
    ) -> Outcome {
        let (parts, body) = req.into_parts();
        // A cheap handle on the path (shared bytes), so that `parts` can move on.
        let uri = parts.uri.clone();
        let path = uri.path();
        if suspicious_path(path) {
            return Outcome {
                route: Err("invalid"),
                response: problem(
                    Error::invalid("path", "must not contain dot segments or backslashes"),
                    rid,
                ),
            };
        }
        let table = self.routes.current();
        let Some(route) = table.find(&parts.method, path).filter(|r| !r.blocked) else {
            let allowed = table.allowed_methods(path);
            if !allowed.is_empty() {
                return Outcome {
                    route: Err("unmatched"),
                    response: method_not_allowed(&parts.method, &allowed, rid),
                };
            }
            return Outcome {
                route: Err("unmatched"),
                response: problem(Error::new(ErrorCode::NotFound, "no such route"), rid),
            };
        };
        // A method the document does not give this path: 405 as documented, whoever asks.
        if let Some(methods) = self.documented.methods(path)
            && !methods.contains(&parts.method)
        {
            return Outcome {
                route: Ok(route),
                response: method_not_allowed(&parts.method, methods, rid),
            };
        }
        let client_ip = self.client_ip(&parts, peer);
        let mut admission = Admission {
            route: &route,
            parts: &parts,
            client_ip,
            path,
            rid,
            at,
            rate: None,
        };
        let admitted = self.admit(&mut admission).await;
        let rate = admission.rate;
        let response = match admitted {
            Ok(caller) => {
                let from = Origin {
                    peer,
                    client_ip,
                    caller: caller.as_deref(),
                };
                self.forward(&route, parts, body, from, rid).await
            }
            Err(refusal) => refusal,
        };
        let mut response = response;
        if let Some(d) = &rate {
            set_rate_headers(response.headers_mut(), d);
        }

        Outcome {
            route: Ok(route),
            response,
        }
    }

    /// Rate limits, authentication and authorisation: the caller (if any) when the request
    /// may go on, else the refusal. The tightest rate decision is left in `a.rate`.
    async fn admit(&self, a: &mut Admission<'_>) -> Result<Option<Arc<Caller>>, Response> {
        let Admission {
            route,
            parts,
            client_ip,
            path,
            rid,
            at,
            ..
        } = *a;
        let rate = &mut a.rate;
        if self.limiter.enabled() {
            let (bucket, limit) = match &route.client_limit {
                Some(l) => (route.prefix.as_str(), *l),
                None => ("default", self.limiter.client),
            };
            let d = self
                .limiter
                .check(Scope::Client, bucket, &client_ip, &limit, at)
                .await;
            *rate = Some(d);
            if !d.allowed {
                return Err(self.too_many(route, Scope::Client, &d, rid));
            }
        }
        let caller = match bearer(&parts.headers) {
            None => None,
            Some(token) => match self.auth.authenticate(token, at).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::debug!(reason = %e, "access token refused");
                    if route.public {
                        // Not used: the request goes on anonymously (see RouteConfig::public).
                        auth_failure("invalid_token_ignored");
                        None
                    } else {
                        auth_failure("invalid_token");
                        return Err(unauthenticated(rid, true));
                    }
                }
            },
        };
        if !route.public && caller.is_none() {
            auth_failure("missing_token");
            return Err(unauthenticated(rid, false));
        }
        if let Some(c) = &caller
            && self.limiter.enabled()
        {
            let (bucket, limit) = match &route.user_limit {
                Some(l) => (route.prefix.as_str(), *l),
                None => ("default", self.limiter.user),
            };
            let d = self
                .limiter
                .check(Scope::User, bucket, &c.user_id, &limit, at)
                .await;
            *rate = Some(tighter(*rate, d));
            if !d.allowed {
                *rate = Some(d);
                return Err(self.too_many(route, Scope::User, &d, rid));
            }
        }
        if let Some(c) = &caller
            && let Some(permission) = route.required_permission(path, &c.user_id)
        {
            let Ok(user) = Uuid::parse_str(&c.user_id) else {
                auth_failure("forbidden");
                return Err(problem(
                    Error::new(ErrorCode::PermissionDenied, "permission denied"),
                    rid,
                ));
            };
            let ctx = || {
                let mut ctx = RequestContext::new().with_timeout(route.timeout);
                ctx.request_id = rid.clone();
                ctx
            };
            let decision = self.authz.allowed(ctx, user, permission, at).await;
            match &decision {
                Ok(_) if self.authz_failing.swap(false, Ordering::Relaxed) => {
                    tracing::info!("authz answering again");
                }
                Err(e) if !self.authz_failing.swap(true, Ordering::Relaxed) => {
                    // Once per outage; each refused request is counted in
                    // gateway_auth_failures_total{reason="authz_unavailable"}.
                    tracing::warn!(error = %e, permission, "authz gave no decision; refusing until it does");
                }
                _ => {}
            }
            match decision {
                Ok(true) => {}
                Ok(false) => {
                    auth_failure("forbidden");
                    return Err(problem(
                        Error::new(ErrorCode::PermissionDenied, "permission denied"),
                        rid,
                    ));
                }
                Err(e) => {
                    tracing::debug!(error = %e, permission, "authz gave no decision; refusing");
                    auth_failure("authz_unavailable");
                    return Err(problem(
                        Error::unavailable("authorization is unavailable; try again later"),
                        rid,
                    ));
                }
            }
        }
        Ok(caller)
    }

    fn too_many(
        &self,
        route: &Route,
        scope: Scope,
        d: &Decision,
        rid: &Option<String>,
    ) -> Response {
        metrics::counter!("gateway_ratelimit_rejected_total", "service" => SERVICE_NAME, "scope" => scope.as_str(), "route" => route.label().to_owned())
            .increment(1);
        let mut r = problem(
            Error::new(
                ErrorCode::ResourceExhausted,
                "rate limit exceeded; retry later",
            ),
            rid,
        );
        let retry = secs_ceil(d.retry_after).max(1);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry));
        r
    }

    fn client_ip(&self, parts: &Parts, peer: Option<SocketAddr>) -> IpAddr {
        let peer = peer
            .map(|p| p.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        self.trusted.client_ip_from_headers(peer, &parts.headers)
    }

    /// The headers sent upstream ([`crate::headers::for_upstream`]), with what the gateway
    /// vouches for: its own credential for `service` and the client's address.
    fn upstream_headers(
        &self,
        service: &str,
        parts: &Parts,
        from: &Origin<'_>,
    ) -> Vec<(HeaderName, HeaderValue)> {
        let peer = from.peer.map(|p| crate::net::canonical(p.ip()));
        let trusted_peer = peer.is_some_and(|p| self.trusted.is_trusted(p));
        let vouched = self.vouch.token(service).map(|t| (t, from.client_ip));
        crate::headers::for_upstream(parts, peer, trusted_peer, from.caller, vouched)
    }

    async fn forward(
        &self,
        route: &Route,
        parts: Parts,
        body: Body,
        from: Origin<'_>,
        rid: &Option<String>,
    ) -> Response {
        let too_large = || {
            problem(
                Error::new(ErrorCode::PayloadTooLarge, "request body is too large"),
                rid,
            )
        };
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.body_limit as u64) {
            return too_large();
        }
        // The deadline only: the request id travels in the forwarded headers.
        let ctx = RequestContext::new().with_timeout(route.timeout);
        let exact = body.size_hint().exact();
        let body_state = BodyState::default();
        let upstream_body =
            match exact {
                Some(n) if n <= self.retry_buffer as u64 && n <= self.body_limit as u64 => {
                    let left = ctx.remaining().unwrap_or(route.timeout);
                    match tokio::time::timeout(left, axum::body::to_bytes(body, self.retry_buffer))
                        .await
                    {
                        Ok(Ok(b)) => UpstreamBody::Buffered(b),
                        Ok(Err(_)) => {
                            return problem(Error::invalid("body", "could not be read"), rid);
                        }
                        Err(_) => {
                            return problem(
                                Error::new(
                                    ErrorCode::DeadlineExceeded,
                                    "request body not received in time",
                                ),
                                rid,
                            );
                        }
                    }
                }
                _ => UpstreamBody::Streamed(std::sync::Mutex::new(Some(Body::new(
                    LimitedBody::new(body, self.body_limit, body_state.clone()),
                )))),
            };
        let rest = route.upstream_path(parts.uri.path());
        let path_and_query = match parts.uri.query() {
            Some(q) => format!("{rest}?{q}"),
            None => rest,
        };
        let out = Outgoing {
            method: parts.method.clone(),
            path_and_query,
            headers: self.upstream_headers(&route.service, &parts, &from),
            body: upstream_body,
            body_state,
        };
        match self.upstreams.forward(&route.service, &ctx, out).await {
            Ok(mut resp) => {
                resp.extensions_mut().insert(FromUpstream);
                resp
            }
            Err(e) => {
                let (code, msg) = match e.code {
                    ErrorCode::DeadlineExceeded => (
                        ErrorCode::DeadlineExceeded,
                        "the service did not answer in time",
                    ),
                    ErrorCode::PayloadTooLarge => return too_large(),
                    ErrorCode::InvalidArgument => {
                        return problem(Error::invalid("body", "could not be read"), rid);
                    }
                    ErrorCode::Unavailable => (
                        ErrorCode::Unavailable,
                        "the service is unavailable; try again later",
                    ),
                    _ => {
                        tracing::error!(error = %e, service = %route.service, "forwarding failed");
                        (ErrorCode::Internal, "internal error")
                    }
                };
                problem(Error::new(code, msg), rid)
            }
        }
    }
}

/// What deciding whether one request may pass looks at, and the rate decision it leaves.
struct Admission<'a> {
    route: &'a Route,
    parts: &'a Parts,
    client_ip: IpAddr,
    path: &'a str,
    rid: &'a Option<String>,
    at: Instant,
    /// The tightest rate-limit decision taken (for the RateLimit-* headers).
    rate: Option<Decision>,
}

/// `GET /openapi.json` (and `HEAD`); 405 for other methods.
pub fn openapi(gw: &Gateway, method: &http::Method, rid: &Option<String>) -> Response {
    if method != http::Method::GET && method != http::Method::HEAD {
        return method_not_allowed(method, &[http::Method::GET, http::Method::HEAD], rid);
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        gw.openapi.bytes(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_are_refused() {
        for p in [
            "/api/v1/users/../authz",
            "/api/./x",
            "/api/%2e%2E/x",
            "/api/%2e",
            "/a\\b",
            "/a%5Cb",
            "/a%5cb",
            "/api/.%2E/x",
            "/api/%2E.",
        ] {
            assert!(suspicious_path(p), "{p}");
        }
        for p in [
            "/api/v1/users",
            "/api/v1/a.b",
            "/api/...",
            "/api/%2e%2e%2e",
            "/api/%2",
            "/api/%2f",
            "/.well-known/jwks.json",
        ] {
            assert!(!suspicious_path(p), "{p}");
        }
    }
}
