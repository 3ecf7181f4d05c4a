//! What travels with every call between services besides its arguments: the request id
//! (for logs across services) and the caller's credentials.

use http::HeaderMap;
use plt_kernel::{REQUEST_ID_HEADER, Secret};
use std::net::SocketAddr;

#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The id of the originating request, propagated as `x-request-id`.
    pub request_id: Option<String>,
    /// The caller's `Authorization` header value, forwarded as is.
    pub authorization: Option<Secret<String>>,
    /// The TCP peer of the incoming connection (server side only; never forwarded).
    pub peer: Option<SocketAddr>,
    /// The raw `X-Forwarded-For` header of the incoming request (server side only). Whether
    /// to believe it is the receiving service's decision (its trusted-proxy list).
    pub forwarded_for: Option<String>,
}

impl RequestContext {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
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
            forwarded_for: text("x-forwarded-for"),
        }
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
    }

    /// Builds a tonic request carrying this context in its metadata.
    pub fn grpc_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut headers = HeaderMap::new();
        self.write_headers(&mut headers);
        let mut req = tonic::Request::new(message);
        *req.metadata_mut() = tonic::metadata::MetadataMap::from_headers(headers);
        req
    }

    /// Reads the context of an incoming tonic request.
    pub fn from_grpc<T>(req: &tonic::Request<T>) -> Self {
        Self::from_parts(&req.metadata().clone().into_headers(), req.extensions())
    }
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
