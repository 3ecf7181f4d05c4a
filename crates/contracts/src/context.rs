//! What travels with every call between services besides its arguments: the request id
//! (for logs across services), the trace context (`traceparent` of the current span) and
//! the caller's credentials.

use crate::service_identity::SERVICE_TOKEN_HEADER;
use http::HeaderMap;
use plt_kernel::{REQUEST_ID_HEADER, Secret};
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

/// The HTTP header carrying the caller's remaining deadline, in milliseconds (gRPC uses
/// `grpc-timeout`).
pub const TIMEOUT_HEADER: &str = "x-plt-timeout-ms";

/// The header (HTTP) and metadata key (gRPC) carrying the caller's idempotency key for a
/// mutating call: repeats with one key have one effect and get one answer (see the
/// `plt-idempotency` crate).
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";

#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The id of the originating request, propagated as `x-request-id`.
    pub request_id: Option<String>,
    /// The caller's `Authorization` header value, forwarded as is.
    pub authorization: Option<Secret<String>>,
    /// The TCP peer of the incoming connection (server side only; never forwarded).
    pub peer: Option<SocketAddr>,
    /// The incoming request's `X-Forwarded-For`, every line in order as one list (server side
    /// only; [`plt_kernel::net::forwarded_for`]). Whether to believe it is the receiving
    /// service's decision (its trusted-proxy list, `TrustedProxies::client_ip`).
    pub forwarded_for: Option<String>,
    /// The client address a platform caller (the gateway) states it determined
    /// (`x-plt-client-ip`, server side only). Believed only together with that caller's
    /// verified service token.
    pub client_ip: Option<std::net::IpAddr>,
    /// The end user's `User-Agent` (server side only: read from the request, never forwarded;
    /// the gateway passes the client's on). For audit records.
    pub user_agent: Option<String>,
    /// The calling service's service token ([`crate::service_identity`]). On the server side
    /// it is what the caller presented, to be verified by the callee; outgoing, the client
    /// factory replaces it with this service's own token for the callee (a received token is
    /// never passed on).
    pub service_token: Option<Secret<String>>,
    /// When the originating caller stops waiting. Outgoing calls carry the time left
    /// (`grpc-timeout` / `x-plt-timeout-ms`), and a callee never extends it.
    pub deadline: Option<Instant>,
    /// Who the service runtime admitted for this call (server side only; set by the
    /// generated adapters after the method's access rule passed, never read from the wire).
    pub principal: Option<crate::access::Principal>,
    /// The caller's idempotency key (`Idempotency-Key` / gRPC `idempotency-key`), as sent;
    /// forwarded on outgoing calls made with this context. Validating it is the callee's
    /// business (`plt-idempotency`).
    pub idempotency_key: Option<String>,
}

impl RequestContext {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }

    /// This context carrying `token` as the caller's service token.
    pub fn with_service_token(mut self, token: Secret<String>) -> Self {
        self.service_token = Some(token);
        self
    }

    /// Reads the context from HTTP headers or gRPC metadata (as headers).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Self {
            request_id: text(REQUEST_ID_HEADER),
            authorization: text(http::header::AUTHORIZATION.as_str()).map(Secret::new),
            peer: None,
            forwarded_for: plt_kernel::net::forwarded_for(headers),
            client_ip: text(plt_kernel::net::CLIENT_IP_HEADER).and_then(|v| v.parse().ok()),
            user_agent: text(http::header::USER_AGENT.as_str()),
            service_token: text(SERVICE_TOKEN_HEADER).map(Secret::new),
            deadline: text("grpc-timeout")
                .and_then(|t| parse_grpc_timeout(&t))
                .or_else(|| {
                    text(TIMEOUT_HEADER)
                        .and_then(|t| t.parse::<u64>().ok())
                        .map(Duration::from_millis)
                })
                .map(|d| Instant::now() + d),
            principal: None,
            idempotency_key: text(IDEMPOTENCY_KEY_HEADER),
        }
    }

    /// The time left before the deadline (zero once passed), if there is one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// This context with a deadline at most `timeout` from now (an earlier one is kept).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        let candidate = Instant::now() + timeout;
        self.deadline = Some(match self.deadline {
            Some(d) if d < candidate => d,
            _ => candidate,
        });
        self
    }

    /// Reads the context from an incoming request's headers and extensions (the host puts
    /// the peer address there as axum's `ConnectInfo`).
    pub fn from_parts(headers: &HeaderMap, extensions: &http::Extensions) -> Self {
        let mut ctx = Self::from_headers(headers);
        ctx.peer = extensions
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        ctx
    }

    /// The signed-in user the runtime admitted, if the caller is one.
    pub fn user_id(&self) -> Option<&str> {
        match &self.principal {
            Some(crate::access::Principal::User(id)) => Some(id),
            _ => None,
        }
    }

    /// The access token of a `Bearer` authorization, if any.
    pub fn bearer_token(&self) -> Option<&str> {
        let auth = self.authorization.as_ref()?.expose();
        let (scheme, token) = auth.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }

    /// Writes the context into outgoing headers.
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        if let Some(id) = &self.request_id
            && let Ok(v) = id.parse()
        {
            headers.insert(REQUEST_ID_HEADER, v);
        }
        if let Some(auth) = &self.authorization
            && let Ok(mut v) = http::HeaderValue::from_str(auth.expose())
        {
            v.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, v);
        }
        if let Some(token) = &self.service_token
            && let Ok(mut v) = http::HeaderValue::from_str(token.expose())
        {
            v.set_sensitive(true);
            headers.insert(SERVICE_TOKEN_HEADER, v);
        }
        if let Some(left) = self.remaining()
            && let Ok(v) = left.as_millis().to_string().parse()
        {
            headers.insert(TIMEOUT_HEADER, v);
        }
        if let Some(key) = &self.idempotency_key
            && let Ok(v) = http::HeaderValue::from_str(key)
        {
            headers.insert(IDEMPOTENCY_KEY_HEADER, v);
        }
        // The trace: the span of this call (the client's span when made through a pool).
        plt_kernel::trace::inject_current(headers);
    }

    /// Builds a tonic request carrying this context in its metadata.
    pub fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut headers = HeaderMap::new();
        self.write_headers(&mut headers);
        headers.remove(TIMEOUT_HEADER);
        let mut req = tonic::Request::new(message);
        *req.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
        if let Some(left) = self.remaining() {
            // Sent as `grpc-timeout`; the client also gives up when it passes.
            req.set_timeout(left);
        }
        req
    }

    /// Reads the context of an incoming tonic request.
    pub fn from_grpc<T>(req: &tonic::Request<T>) -> Self {
        Self::from_parts(&req.metadata().clone().into_headers(), req.extensions())
    }
}

/// Parses a `grpc-timeout` value: digits then one of `H M S m u n`.
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self::from_parts(&parts.headers, &parts.extensions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_agent_is_read_and_never_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(http::header::USER_AGENT, "curl/8.5".parse().unwrap());
        let ctx = RequestContext::from_headers(&h);
        assert_eq!(ctx.user_agent.as_deref(), Some("curl/8.5"));
        let mut out = HeaderMap::new();
        ctx.write_headers(&mut out);
        assert!(out.get(http::header::USER_AGENT).is_none());
        assert_eq!(
            RequestContext::from_headers(&HeaderMap::new()).user_agent,
            None
        );
    }

    #[test]
    fn deadlines_travel_and_never_grow() {
        let ctx = RequestContext::new().with_timeout(Duration::from_secs(2));
        let mut h = HeaderMap::new();
        ctx.write_headers(&mut h);
        let ms: u64 = h[TIMEOUT_HEADER].to_str().unwrap().parse().unwrap();
        assert!((1900..=2000).contains(&ms), "{ms}");
        let callee = RequestContext::from_headers(&h);
        let left = callee.remaining().unwrap();
        assert!(left <= Duration::from_secs(2) && left > Duration::from_millis(1800));
        // A callee asking for more time keeps the caller's deadline.
        let extended = callee.clone().with_timeout(Duration::from_secs(60));
        assert_eq!(extended.deadline, callee.deadline);
        let req = ctx.grpc_request(());
        let t = req
            .metadata()
            .get("grpc-timeout")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            parse_grpc_timeout(&t).unwrap() <= Duration::from_secs(2),
            "{t}"
        );
        assert!(req.metadata().get(TIMEOUT_HEADER).is_none());
    }

    #[test]
    fn the_idempotency_key_is_read_and_forwarded() {
        let mut h = HeaderMap::new();
        h.insert("Idempotency-Key", "order-42".parse().unwrap());
        let ctx = RequestContext::from_headers(&h);
        assert_eq!(ctx.idempotency_key.as_deref(), Some("order-42"));
        let mut out = HeaderMap::new();
        ctx.write_headers(&mut out);
        assert_eq!(out[IDEMPOTENCY_KEY_HEADER], "order-42");
        let req = ctx.grpc_request(());
        assert_eq!(
            req.metadata().get(IDEMPOTENCY_KEY_HEADER).unwrap(),
            "order-42"
        );
        assert_eq!(RequestContext::new().idempotency_key, None);
    }

    #[test]
    fn grpc_timeout_values() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        for bad in ["", "m", "10", "10x", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
