//! One error type for every service boundary. Each [`ErrorCode`] maps through one table to
//! a gRPC status code and to an HTTP status with an RFC 9457 `application/problem+json`
//! body, so a caller sees the same error over either protocol.
//!
//! Messages are for clients: generic, no internals. [`Error::internal`] logs the cause with
//! its chain (inside the current request span, so with the request id) and hides it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The stable error codes of the platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidArgument,
    Unauthenticated,
    PermissionDenied,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    PayloadTooLarge,
    ResourceExhausted,
    DeadlineExceeded,
    Unavailable,
    Unimplemented,
    Internal,
}

/// One row of the mapping table.
#[derive(Debug, Clone, Copy)]
pub struct CodeInfo {
    pub code: ErrorCode,
    pub slug: &'static str,
    pub title: &'static str,
    pub grpc: tonic::Code,
    pub http: u16,
}

/// The table: error code → wire name, title, gRPC code, HTTP status.
pub const ERROR_TABLE: &[CodeInfo] = &[
    row(
        ErrorCode::InvalidArgument,
        "invalid_argument",
        "Invalid argument",
        tonic::Code::InvalidArgument,
        400,
    ),
    row(
        ErrorCode::Unauthenticated,
        "unauthenticated",
        "Unauthenticated",
        tonic::Code::Unauthenticated,
        401,
    ),
    row(
        ErrorCode::PermissionDenied,
        "permission_denied",
        "Permission denied",
        tonic::Code::PermissionDenied,
        403,
    ),
    row(
        ErrorCode::NotFound,
        "not_found",
        "Not found",
        tonic::Code::NotFound,
        404,
    ),
    row(
        ErrorCode::AlreadyExists,
        "already_exists",
        "Already exists",
        tonic::Code::AlreadyExists,
        409,
    ),
    row(
        ErrorCode::FailedPrecondition,
        "failed_precondition",
        "Failed precondition",
        tonic::Code::FailedPrecondition,
        412,
    ),
    row(
        ErrorCode::PayloadTooLarge,
        "payload_too_large",
        "Payload too large",
        tonic::Code::OutOfRange,
        413,
    ),
    row(
        ErrorCode::ResourceExhausted,
        "resource_exhausted",
        "Too many requests",
        tonic::Code::ResourceExhausted,
        429,
    ),
    row(
        ErrorCode::DeadlineExceeded,
        "deadline_exceeded",
        "Deadline exceeded",
        tonic::Code::DeadlineExceeded,
        504,
    ),
    row(
        ErrorCode::Unavailable,
        "unavailable",
        "Service unavailable",
        tonic::Code::Unavailable,
        503,
    ),
    row(
        ErrorCode::Unimplemented,
        "unimplemented",
        "Not implemented",
        tonic::Code::Unimplemented,
        501,
    ),
    row(
        ErrorCode::Internal,
        "internal",
        "Internal error",
        tonic::Code::Internal,
        500,
    ),
];

const fn row(
    code: ErrorCode,
    slug: &'static str,
    title: &'static str,
    grpc: tonic::Code,
    http: u16,
) -> CodeInfo {
    CodeInfo {
        code,
        slug,
        title,
        grpc,
        http,
    }
}

impl ErrorCode {
    pub fn info(self) -> &'static CodeInfo {
        ERROR_TABLE
            .iter()
            .find(|r| r.code == self)
            .expect("every error code has a row in ERROR_TABLE")
    }

    pub fn from_slug(slug: &str) -> Option<Self> {
        ERROR_TABLE.iter().find(|r| r.slug == slug).map(|r| r.code)
    }

    /// The code for a gRPC status (codes with no row of their own become `Internal`,
    /// `Aborted` and `Cancelled` become `Unavailable`).
    pub fn from_grpc(code: tonic::Code) -> Self {
        if let Some(r) = ERROR_TABLE.iter().find(|r| r.grpc == code) {
            return r.code;
        }
        match code {
            tonic::Code::Aborted | tonic::Code::Cancelled => ErrorCode::Unavailable,
            _ => ErrorCode::Internal,
        }
    }

    /// The code for an HTTP status without a problem body.
    pub fn from_http(status: u16) -> Self {
        if let Some(r) = ERROR_TABLE.iter().find(|r| r.http == status) {
            return r.code;
        }
        match status {
            405 | 415 | 422 => ErrorCode::InvalidArgument,
            408 => ErrorCode::DeadlineExceeded,
            502 => ErrorCode::Unavailable,
            _ if status < 500 => ErrorCode::InvalidArgument,
            _ => ErrorCode::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.info().slug)
    }
}

/// Which input was wrong and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct FieldViolation {
    pub field: String,
    pub reason: String,
}

/// The error of every contract method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: ErrorCode,
    pub message: String,
    pub violations: Vec<FieldViolation>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        for v in &self.violations {
            write!(f, "; {}: {}", v.field, v.reason)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl Error {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            violations: Vec::new(),
        }
    }

    /// Invalid input in one field.
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        let field = field.into();
        let reason = reason.into();
        Self {
            code: ErrorCode::InvalidArgument,
            message: format!("invalid {field}: {reason}"),
            violations: vec![FieldViolation { field, reason }],
        }
    }

    /// Several invalid fields at once.
    pub fn invalid_fields(violations: Vec<FieldViolation>) -> Self {
        let fields: Vec<&str> = violations.iter().map(|v| v.field.as_str()).collect();
        Self {
            code: ErrorCode::InvalidArgument,
            message: format!("invalid input: {}", fields.join(", ")),
            violations,
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, format!("{} not found", what.into()))
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::AlreadyExists, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthenticated, message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unavailable, message)
    }

    /// An internal failure: logged here with its cause, reported to the client generically.
    pub fn internal(context: &str, cause: &(dyn std::error::Error + 'static)) -> Self {
        let mut chain = cause.to_string();
        let mut source = cause.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(context, error = %chain, "internal error");
        plt_kernel::report::internal_error(&format!("{context}: {chain}"));
        Self::new(ErrorCode::Internal, "internal error")
    }

    /// A dependency this service needs (`what`: "the database") cannot be reached: reported
    /// to the client as `unavailable` (503), which it may retry later. Logged here at debug
    /// only: the outage itself is reported once where it is detected (the database gate, a
    /// client's breaker), not once per request.
    pub fn dependency_unavailable(
        what: &str,
        context: &str,
        cause: &(dyn std::error::Error + 'static),
    ) -> Self {
        tracing::debug!(context, error = %cause, "{what} unavailable");
        Self::new(
            ErrorCode::Unavailable,
            format!("{what} is unavailable; try again later"),
        )
    }

    /// Whether the request provably never reached the server (the connection was refused),
    /// so that even a non-idempotent call may be retried elsewhere.
    pub fn never_sent(&self) -> bool {
        self.code == ErrorCode::Unavailable && self.message.starts_with(NOT_SENT_PREFIX)
    }

    /// An Unavailable error for a request that was never sent.
    pub fn not_sent(detail: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Unavailable, format!("{NOT_SENT_PREFIX}{detail}"))
    }

    pub fn with_violation(mut self, field: impl Into<String>, reason: impl Into<String>) -> Self {
        self.violations.push(FieldViolation {
            field: field.into(),
            reason: reason.into(),
        });
        self
    }
}

/// Message prefix of errors for requests that never left the client (see [`Error::never_sent`]).
pub const NOT_SENT_PREFIX: &str = "not sent: ";

/// Whether an error chain contains a refused TCP connection.
pub fn is_connection_refused(mut e: Option<&(dyn std::error::Error + 'static)>) -> bool {
    while let Some(err) = e {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return true;
        }
        e = err.source();
    }
    false
}

/// RFC 9457 problem details, as served with `application/problem+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Problem {
    /// `urn:plt:problem:<code>`
    #[serde(rename = "type")]
    pub type_uri: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// The stable error code (`invalid_argument`, `not_found`, …).
    pub code: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldViolation>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

impl Error {
    pub fn to_problem(&self, request_id: Option<String>) -> Problem {
        let info = self.code.info();
        Problem {
            type_uri: format!("urn:plt:problem:{}", info.slug),
            title: info.title.to_owned(),
            status: info.http,
            detail: self.message.clone(),
            code: info.slug.to_owned(),
            errors: self.violations.clone(),
            request_id,
        }
    }

    pub fn from_problem(p: Problem) -> Self {
        let code = ErrorCode::from_slug(&p.code).unwrap_or_else(|| ErrorCode::from_http(p.status));
        Self {
            code,
            message: p.detail,
            violations: p.errors,
        }
    }
}

/// The gRPC metadata key carrying the exact platform code (several codes may share a gRPC
/// code in the future; this keeps the round trip exact).
pub const GRPC_CODE_METADATA: &str = "plt-error-code";

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        use tonic_types::{ErrorDetails, StatusExt};
        let info = e.code.info();
        let mut status = if e.violations.is_empty() {
            tonic::Status::new(info.grpc, e.message)
        } else {
            let mut details = ErrorDetails::new();
            for v in &e.violations {
                details.add_bad_request_violation(v.field.clone(), v.reason.clone());
            }
            tonic::Status::with_error_details(info.grpc, e.message, details)
        };
        if let Ok(v) = info.slug.parse() {
            status.metadata_mut().insert(GRPC_CODE_METADATA, v);
        }
        status
    }
}

impl From<tonic::Status> for Error {
    fn from(s: tonic::Status) -> Self {
        use tonic_types::StatusExt;
        let code = s
            .metadata()
            .get(GRPC_CODE_METADATA)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::from_slug)
            .unwrap_or_else(|| ErrorCode::from_grpc(s.code()));
        let violations = s
            .get_details_bad_request()
            .map(|br| {
                br.field_violations
                    .into_iter()
                    .map(|v| FieldViolation {
                        field: v.field,
                        reason: v.description,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if code == ErrorCode::Unavailable && is_connection_refused(std::error::Error::source(&s)) {
            return Self::not_sent(s.message());
        }
        // A TLS session the instance refused (its client CA does not know this process's
        // certificate) or this process refused: the instance is unusable, not the request.
        if plt_kernel::tls::is_tls_failure(std::error::Error::source(&s)) {
            return Self::unavailable(format!("TLS: {}", s.message()));
        }
        Self {
            code,
            message: s.message().to_owned(),
            violations,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_complete_and_unambiguous() {
        let all = [
            ErrorCode::InvalidArgument,
            ErrorCode::Unauthenticated,
            ErrorCode::PermissionDenied,
            ErrorCode::NotFound,
            ErrorCode::AlreadyExists,
            ErrorCode::FailedPrecondition,
            ErrorCode::PayloadTooLarge,
            ErrorCode::ResourceExhausted,
            ErrorCode::DeadlineExceeded,
            ErrorCode::Unavailable,
            ErrorCode::Unimplemented,
            ErrorCode::Internal,
        ];
        assert_eq!(all.len(), ERROR_TABLE.len());
        for code in all {
            let info = code.info();
            assert_eq!(ErrorCode::from_slug(info.slug), Some(code));
            assert_eq!(ErrorCode::from_grpc(info.grpc), code, "grpc code of {code}");
            assert_eq!(
                ErrorCode::from_http(info.http),
                code,
                "http status of {code}"
            );
        }
    }

    #[test]
    fn grpc_round_trip_keeps_code_and_violations() {
        let e = Error::invalid("email", "must contain @");
        let back = Error::from(tonic::Status::from(e.clone()));
        assert_eq!(back, e);
    }

    #[test]
    fn the_hosts_431_body_is_a_problem_of_this_table() {
        // Built in plt-kernel (which cannot depend on this crate): the same shape and a code
        // of this table, the one it gives the status.
        let p: Problem =
            serde_json::from_str(plt_kernel::oversize::HEADERS_TOO_LARGE_BODY).unwrap();
        assert_eq!(p.status, 431);
        let code = ErrorCode::from_http(p.status);
        assert_eq!(p.code, code.info().slug);
        assert_eq!(p.type_uri, format!("urn:plt:problem:{}", code.info().slug));
        assert_eq!(Error::from_problem(p).code, code);
    }

    #[test]
    fn problem_round_trip() {
        let e = Error::not_found("user").with_violation("id", "no such user");
        let p = e.to_problem(Some("r1".into()));
        assert_eq!(p.status, 404);
        assert_eq!(p.type_uri, "urn:plt:problem:not_found");
        assert_eq!(Error::from_problem(p), e);
    }
}
