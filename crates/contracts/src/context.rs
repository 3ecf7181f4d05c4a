//! What travels with every call between services besides its arguments: the request id
//! (for logs across services) and the caller's credentials.

use http::HeaderMap;
use plt_kernel::{REQUEST_ID_HEADER, Secret};

#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// The id of the originating request, propagated as `x-request-id`.
    pub request_id: Option<String>,
    /// The caller's `Authorization` header value, forwarded as is.
    pub authorization: Option<Secret<String>>,
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
        }
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
        Self::from_headers(&req.metadata().clone().into_headers())
    }
}
