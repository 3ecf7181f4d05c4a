//! Helpers for the HTTP/JSON side of every service: errors as problem+json, a JSON body
//! extractor whose failures name the field, and a problem+json 404 fallback.

use crate::{
    RequestContext,
    error::{Error, ErrorCode, PROBLEM_CONTENT_TYPE, Problem},
};
use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use plt_kernel::REQUEST_ID_HEADER;
use serde::de::DeserializeOwned;

/// An [`Error`] answered over HTTP as RFC 9457 problem+json.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        problem_response(&self.0, None)
    }
}

/// The problem+json response for `err`; the request id is added by the host's layer as a
/// header, and repeated in the body when known.
pub fn problem_response(err: &Error, request_id: Option<String>) -> Response {
    let problem = err.to_problem(request_id);
    let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = serde_json::to_vec(&problem).unwrap_or_default();
    (status, [(header::CONTENT_TYPE, PROBLEM_CONTENT_TYPE)], body).into_response()
}

/// The fallback for unknown routes: 404 problem+json.
pub async fn not_found_fallback(headers: HeaderMap) -> Response {
    let rid = headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    problem_response(&Error::new(ErrorCode::NotFound, "no such route"), rid)
}

/// A JSON request body. Unlike `axum::Json`, every failure is a problem+json answer naming
/// the offending field: wrong content type (415 → invalid_argument), body over the limit
/// (413), malformed JSON, unknown or missing fields, wrong types (400).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Error::invalid("content-type", "must be application/json").into());
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::new(ErrorCode::PayloadTooLarge, "request body is too large")
            } else {
                Error::invalid("body", "could not be read")
            }
        })?;
        parse_json(&bytes).map(ApiJson).map_err(ApiError)
    }
}

/// Whether the request says its body is JSON (`application/json` or `application/*+json`).
pub fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|ct| {
            let ct = ct
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            ct == "application/json" || (ct.starts_with("application/") && ct.ends_with("+json"))
        })
        .unwrap_or(false)
}

/// Parses a JSON object (every request body of the platform is one), reporting the path of
/// the field that failed. Checked first because serde's derived structs also accept a JSON
/// array (fields by position), which no documented body is.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if let Some(first) = bytes.iter().find(|b| !b.is_ascii_whitespace())
        && *first != b'{'
    {
        return Err(Error::invalid("body", "must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." || path.is_empty() {
            "body".to_owned()
        } else {
            path
        };
        let reason = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                format!("malformed JSON: {inner}")
            }
            _ => strip_position(&inner.to_string()),
        };
        Error::invalid(field, reason)
    })
}

fn strip_position(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_owned(),
        None => msg.to_owned(),
    }
}

/// A JSON response with the given status.
pub fn json_response<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => ApiError(Error::internal("serialising response", &e)).into_response(),
    }
}

/// The HTTP side of a contract client: requests carrying the [`RequestContext`], answers
/// parsed as JSON, errors read back from problem+json. Cheap to clone; connections pooled.
#[derive(Clone)]
pub struct JsonClient {
    http: reqwest::Client,
    base: String,
    service: &'static str,
}

impl JsonClient {
    pub fn new(http: reqwest::Client, base_url: &str, service: &'static str) -> Self {
        Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            service,
        }
    }

    pub fn request(
        &self,
        ctx: &RequestContext,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        let mut headers = HeaderMap::new();
        ctx.write_headers(&mut headers);
        self.http
            .request(method, format!("{}{path}", self.base))
            .headers(headers)
    }

    /// Sends; a non-2xx answer becomes its [`Error`].
    pub async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response, Error> {
        let resp = rb.send().await.map_err(|e| {
            let msg = format!("{} unreachable: {}", self.service, without_url(&e));
            if e.is_connect() && crate::error::is_connection_refused(std::error::Error::source(&e))
            {
                Error::not_sent(msg)
            } else {
                Error::unavailable(msg)
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        Err(error_from_response(resp).await)
    }

    /// Sends and parses the JSON answer.
    pub async fn json<T: DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> Result<T, Error> {
        let resp = self.send(rb).await?;
        let bytes = resp.bytes().await.map_err(|e| {
            Error::unavailable(format!(
                "reading {} response: {}",
                self.service,
                without_url(&e)
            ))
        })?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::new(
                ErrorCode::Internal,
                format!("unexpected {} response: {e}", self.service),
            )
        })
    }
}

/// The error without its URL (which may carry query parameters such as an e-mail address).
fn without_url(e: &reqwest::Error) -> String {
    let mut msg = e.to_string();
    if let Some(url) = e.url() {
        msg = msg.replace(url.as_str(), "<url>");
    }
    msg
}

/// Turns a non-2xx answer into an [`Error`], from its problem+json body when it has one.
pub async fn error_from_response(resp: reqwest::Response) -> Error {
    let status = resp.status().as_u16();
    match resp.bytes().await {
        Ok(body) => match serde_json::from_slice::<Problem>(&body) {
            Ok(p) => Error::from_problem(p),
            Err(_) => Error::new(ErrorCode::from_http(status), format!("HTTP {status}")),
        },
        Err(_) => Error::new(ErrorCode::from_http(status), format!("HTTP {status}")),
    }
}
