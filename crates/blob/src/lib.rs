//! plt-blob: the platform's blob store — files that feature services keep next to their rows
//! (a blog's post images and attachments), behind one trait, [`BlobStore`].
//!
//! Two backends, chosen by the `blob` section ([`BlobConfig`], built by [`connect`]):
//!
//! - **local** ([`local::LocalStore`]): files under a directory, for `plt dev` and tests. Each
//!   object is one file holding a small header (its key, content type and ETag) and the bytes,
//!   written to a temporary file and renamed into place, so a reader sees the old object or
//!   the new one, never half of one. Presigned URLs are HMAC-SHA256-signed URLs of the
//!   service itself (`{public_base_url}/{key}?expires=<unix>&sig=<hex>`), served by
//!   [`local::routes`], which the service mounts (see [`BlobStore::routes`]).
//! - **s3** ([`s3::S3Store`]): the S3 API of any S3-compatible server (AWS, MinIO, Ceph,
//!   moto…), requests signed with AWS Signature Version 4 by `rusty-s3` and sent through
//!   [`plt_kernel::tls::http_client_builder`] (the process's outbound TLS).
//!
//! Every call is bounded by `blob.timeout`: a backend that is down or silent fails the call
//! with [`BlobError::Unavailable`] (map it to 503), never a hang. Keys are checked by
//! [`validate_key`] on every call, by every backend.
//!
//! # Metrics
//!
//! Stores made by [`connect`] count their calls (call [`describe_metrics`] once to give the
//! series their help text):
//!
//! - `blob_operations_total{store, op, outcome}` — calls, by backend (`local`, `s3`),
//!   operation (`put`, `get`, `delete`, `list`, `presign_get`, `presign_put`) and outcome
//!   (`ok`; `not_found`: a `get` of a missing object, or a missing bucket; `invalid`: the
//!   caller's input was refused; `unavailable`: the backend was unreachable or too slow;
//!   `error`: the backend refused the call or answered something unexpected).
//! - `blob_bytes_total{store, op}` — object bytes moved by successful `put`s and `get`s.

pub mod config;
pub mod local;
pub mod s3;

pub use config::{Backend, BlobConfig, LocalConfig, S3Config};

use async_trait::async_trait;
use bytes::Bytes;
use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

/// The longest key, in bytes (S3's limit).
pub const MAX_KEY_BYTES: usize = 1024;
/// The most entries one [`BlobStore::list`] call returns (S3's page size).
pub const MAX_LIST_LIMIT: u32 = 1000;
/// The shortest and longest lifetime of a presigned URL (S3 allows 1 s to 7 days).
pub const MIN_PRESIGN_EXPIRY: Duration = Duration::from_secs(1);
/// See [`MIN_PRESIGN_EXPIRY`].
pub const MAX_PRESIGN_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// The content type stored when a `put` names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";
/// The longest continuation cursor accepted by [`BlobStore::list`].
const MAX_CURSOR_BYTES: usize = 4096;

/// What is known of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// An opaque version tag of the content, without quotes (S3's ETag; the local backend's
    /// is a hash of the bytes). Equal tags mean equal content within one backend.
    pub etag: String,
    /// The content type given when the object was written.
    pub content_type: String,
}

/// An object read by [`BlobStore::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub info: ObjectInfo,
    pub bytes: Bytes,
}

/// One object of a [`ListPage`]. (S3 listings carry no content type; [`BlobStore::get`]
/// gives it.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    pub key: String,
    pub size: u64,
    /// As [`ObjectInfo::etag`].
    pub etag: String,
}

/// A page of [`BlobStore::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    /// The objects of this page, in ascending key order (byte order).
    pub entries: Vec<ListEntry>,
    /// Pass this to the next `list` call (same prefix) for the next page; `None` when this
    /// page is the last. Opaque: a key for the local backend, a continuation token for S3.
    pub next_cursor: Option<String>,
}

/// A URL that lets its holder read or write one object without credentials until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedUrl {
    pub url: String,
    /// The HTTP method the URL is for: `GET` or `PUT`.
    pub method: &'static str,
    /// When the URL stops working (to the second).
    pub expires_at: SystemTime,
}

/// Why a blob store call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlobError {
    /// The key breaks a rule of [`validate_key`]. (`key` is shortened for messages.)
    #[error("invalid blob key {key:?}: {reason}")]
    InvalidKey { key: String, reason: &'static str },
    /// Another argument cannot be used (a list limit, cursor or prefix, a presign expiry, a
    /// content type).
    #[error("invalid blob request: {0}")]
    InvalidInput(String),
    /// The object is larger than `blob.max_object_bytes`.
    #[error("blob too large: {size} bytes, at most {max} allowed")]
    TooLarge { size: u64, max: u64 },
    /// What the call needs does not exist: the S3 bucket. (A missing object is not an error:
    /// `get` answers `None`, `delete` succeeds.)
    #[error("not found: {0}")]
    NotFound(String),
    /// The backend could not be reached or did not answer within `blob.timeout`, or said it
    /// is overloaded: try again later (HTTP 503).
    #[error("blob store unavailable: {0}")]
    Unavailable(String),
    /// The backend refused the call (credentials, permissions) or answered something
    /// unexpected, or the store is not set up for the call: not the caller's fault (500).
    #[error("blob store error: {0}")]
    Backend(String),
}

impl BlobError {
    /// Whether the backend was down or too slow (answer 503 and let the caller retry).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, BlobError::Unavailable(_))
    }

    /// The HTTP status this error maps to: 400 for bad input, 413 too large, 404 not found,
    /// 503 unavailable, 500 otherwise.
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            BlobError::InvalidKey { .. } | BlobError::InvalidInput(_) => S::BAD_REQUEST,
            BlobError::TooLarge { .. } => S::PAYLOAD_TOO_LARGE,
            BlobError::NotFound(_) => S::NOT_FOUND,
            BlobError::Unavailable(_) => S::SERVICE_UNAVAILABLE,
            BlobError::Backend(_) => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `outcome` label of `blob_operations_total`.
    fn outcome(&self) -> &'static str {
        match self {
            BlobError::InvalidKey { .. }
            | BlobError::InvalidInput(_)
            | BlobError::TooLarge { .. } => "invalid",
            BlobError::NotFound(_) => "not_found",
            BlobError::Unavailable(_) => "unavailable",
            BlobError::Backend(_) => "error",
        }
    }

    fn invalid_key(key: &str, reason: &'static str) -> Self {
        BlobError::InvalidKey {
            key: shorten(key, 80),
            reason,
        }
    }
}

/// At most `max` bytes of `s` (on a character boundary), with `…` when cut.
fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// Checks an object key: not empty; at most [`MAX_KEY_BYTES`] bytes; no leading `/`; no
/// control characters; `/`-separated segments that are neither empty (`a//b`, a trailing
/// `/`) nor `.` or `..` (URLs and file systems would resolve those to another object).
pub fn validate_key(key: &str) -> Result<(), BlobError> {
    if key.is_empty() {
        return Err(BlobError::invalid_key(key, "must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(BlobError::invalid_key(key, "must be at most 1024 bytes"));
    }
    if key.starts_with('/') {
        return Err(BlobError::invalid_key(key, "must not start with '/'"));
    }
    if key.chars().any(char::is_control) {
        return Err(BlobError::invalid_key(
            key,
            "must not contain control characters",
        ));
    }
    for segment in key.split('/') {
        match segment {
            "" => {
                return Err(BlobError::invalid_key(
                    key,
                    "must not contain empty segments ('//' or a trailing '/')",
                ));
            }
            "." | ".." => {
                return Err(BlobError::invalid_key(
                    key,
                    "must not contain '.' or '..' segments",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a list prefix: empty (everything) or the start of a key — at most
/// [`MAX_KEY_BYTES`] bytes, no leading `/`, no control characters, no empty, `.` or `..`
/// segment before its last `/`.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), BlobError> {
    let bad = |why: &str| {
        Err(BlobError::InvalidInput(format!(
            "list prefix {:?} {why}",
            shorten(prefix, 80)
        )))
    };
    if prefix.len() > MAX_KEY_BYTES {
        return bad("is longer than 1024 bytes");
    }
    if prefix.starts_with('/') {
        return bad("must not start with '/'");
    }
    if prefix.chars().any(char::is_control) {
        return bad("must not contain control characters");
    }
    if let Some((dirs, _)) = prefix.rsplit_once('/')
        && dirs.split('/').any(|s| matches!(s, "" | "." | ".."))
    {
        return bad("must not contain empty, '.' or '..' segments");
    }
    Ok(())
}

/// Checks a list call's cursor and limit.
pub(crate) fn validate_page(cursor: Option<&str>, limit: u32) -> Result<(), BlobError> {
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(BlobError::InvalidInput(format!(
            "list limit {limit} must be between 1 and {MAX_LIST_LIMIT}"
        )));
    }
    if let Some(c) = cursor
        && (c.is_empty() || c.len() > MAX_CURSOR_BYTES || c.chars().any(char::is_control))
    {
        return Err(BlobError::InvalidInput(
            "list cursor is not one this store gave".into(),
        ));
    }
    Ok(())
}

/// Checks a content type and gives the one to store: [`DEFAULT_CONTENT_TYPE`] for an empty
/// one; otherwise at most 255 bytes of visible ASCII and spaces, with a `/` (`image/png`,
/// `text/plain; charset=utf-8`).
pub fn validate_content_type(content_type: &str) -> Result<&str, BlobError> {
    let ct = content_type.trim();
    if ct.is_empty() {
        return Ok(DEFAULT_CONTENT_TYPE);
    }
    if ct.len() > 255 || !ct.contains('/') || !ct.bytes().all(|b| b == b' ' || b.is_ascii_graphic())
    {
        return Err(BlobError::InvalidInput(format!(
            "content type {:?} is not a media type (type/subtype, visible ASCII, at most 255 bytes)",
            shorten(ct, 80)
        )));
    }
    Ok(ct)
}

/// Checks a presigned URL's lifetime.
pub(crate) fn validate_expiry(expires_in: Duration) -> Result<(), BlobError> {
    if expires_in < MIN_PRESIGN_EXPIRY || expires_in > MAX_PRESIGN_EXPIRY {
        return Err(BlobError::InvalidInput(format!(
            "presigned URL expiry {expires_in:?} must be between 1s and 7 days"
        )));
    }
    Ok(())
}

/// Runs `fut` within `timeout`; too slow is [`BlobError::Unavailable`].
pub(crate) async fn bounded<T>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, BlobError>>,
) -> Result<T, BlobError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(BlobError::Unavailable(format!(
            "{what} did not finish within {timeout:?}"
        ))),
    }
}

/// A blob store: objects (bytes and a content type) under string keys.
///
/// Every method checks its key ([`validate_key`]) and is bounded by the store's timeout.
#[async_trait]
pub trait BlobStore: Send + Sync + 'static {
    /// The backend's name, as in metrics: `local` or `s3`.
    fn kind(&self) -> &'static str;

    /// Writes `bytes` under `key` (replacing what was there) with `content_type` (empty:
    /// [`DEFAULT_CONTENT_TYPE`]). [`BlobError::TooLarge`] beyond `blob.max_object_bytes`.
    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<ObjectInfo, BlobError>;

    /// Reads the object under `key`; `None` when there is none.
    async fn get(&self, key: &str) -> Result<Option<Object>, BlobError>;

    /// Removes the object under `key`. Removing a missing object succeeds (idempotent).
    async fn delete(&self, key: &str) -> Result<(), BlobError>;

    /// The objects whose keys start with `prefix` (empty: all), in ascending key order, at
    /// most `limit` (1 to [`MAX_LIST_LIMIT`]) per page, starting after `cursor` (`None` for
    /// the first page, then the previous page's [`ListPage::next_cursor`]).
    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ListPage, BlobError>;

    /// A URL that reads the object under `key` with a plain `GET` until `expires_in` (1 s to 7
    /// days) has passed.
    fn presign_get(&self, key: &str, expires_in: Duration) -> Result<PresignedUrl, BlobError>;

    /// A URL that writes the object under `key` with a plain `PUT` (the body is the object,
    /// its `Content-Type` header the content type) until `expires_in` has passed. (The local
    /// backend refuses bodies over `blob.max_object_bytes`; S3 cannot limit a presigned PUT.)
    fn presign_put(&self, key: &str, expires_in: Duration) -> Result<PresignedUrl, BlobError>;

    /// HTTP routes the service must serve for this store to work: the local backend's signed
    /// URLs ([`local::routes`]) when `blob.local.public_base_url` is set, `None` otherwise
    /// (S3 serves its own URLs). Merge them into the service's router.
    fn routes(&self) -> Option<axum::Router> {
        None
    }
}

/// The store `config` describes, counting its calls in the metrics above. Local: creates the
/// directory (and its signing key when `blob.local.signing_secret` is empty). S3: builds the
/// client; nothing is sent yet, so the store is made while the server is down.
pub fn connect(config: &BlobConfig) -> Result<Arc<dyn BlobStore>, BlobError> {
    let store: Arc<dyn BlobStore> = match config.backend {
        Backend::Local => Arc::new(local::LocalStore::new(config)?),
        Backend::S3 => Arc::new(s3::S3Store::new(config)?),
    };
    Ok(metered(store))
}

/// `store`, counting its calls in `blob_operations_total` and `blob_bytes_total`.
/// ([`connect`] does this already.)
pub fn metered(store: Arc<dyn BlobStore>) -> Arc<dyn BlobStore> {
    Arc::new(Metered { inner: store })
}

/// Gives the metrics of this crate their help text (once per process, before rendering).
pub fn describe_metrics() {
    metrics::describe_counter!(
        "blob_operations_total",
        "Blob store calls, by backend (store), operation and outcome."
    );
    metrics::describe_counter!(
        "blob_bytes_total",
        metrics::Unit::Bytes,
        "Object bytes written by put and read by get, by backend (store)."
    );
}

struct Metered {
    inner: Arc<dyn BlobStore>,
}

impl Metered {
    fn count<T>(&self, op: &'static str, r: &Result<T, BlobError>, not_found: bool) {
        let store = self.inner.kind();
        let outcome = match r {
            Ok(_) if not_found => "not_found",
            Ok(_) => "ok",
            Err(e) => {
                if matches!(e, BlobError::Unavailable(_) | BlobError::Backend(_)) {
                    tracing::warn!(store, op, error = %e, "blob store call failed");
                }
                e.outcome()
            }
        };
        metrics::counter!("blob_operations_total", "store" => store, "op" => op, "outcome" => outcome)
            .increment(1);
    }

    fn bytes(&self, op: &'static str, n: u64) {
        metrics::counter!("blob_bytes_total", "store" => self.inner.kind(), "op" => op)
            .increment(n);
    }
}

#[async_trait]
impl BlobStore for Metered {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<ObjectInfo, BlobError> {
        let r = self.inner.put(key, bytes, content_type).await;
        self.count("put", &r, false);
        if let Ok(info) = &r {
            self.bytes("put", info.size);
        }
        r
    }

    async fn get(&self, key: &str) -> Result<Option<Object>, BlobError> {
        let r = self.inner.get(key).await;
        self.count("get", &r, matches!(r, Ok(None)));
        if let Ok(Some(o)) = &r {
            self.bytes("get", o.info.size);
        }
        r
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let r = self.inner.delete(key).await;
        self.count("delete", &r, false);
        r
    }

    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ListPage, BlobError> {
        let r = self.inner.list(prefix, cursor, limit).await;
        self.count("list", &r, false);
        r
    }

    fn presign_get(&self, key: &str, expires_in: Duration) -> Result<PresignedUrl, BlobError> {
        let r = self.inner.presign_get(key, expires_in);
        self.count("presign_get", &r, false);
        r
    }

    fn presign_put(&self, key: &str, expires_in: Duration) -> Result<PresignedUrl, BlobError> {
        let r = self.inner.presign_put(key, expires_in);
        self.count("presign_put", &r, false);
        r
    }

    fn routes(&self) -> Option<axum::Router> {
        self.inner.routes()
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// The bytes of lower- or upper-case hex; `None` for anything else.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for ok in [
            "a",
            "posts/12/cover.png",
            "a b/ü/…",
            ".hidden",
            "a/..b/c..",
            "~x",
        ] {
            assert!(validate_key(ok).is_ok(), "{ok}");
        }
        let long = "x".repeat(1025);
        for (bad, why) in [
            ("", "empty"),
            (long.as_str(), "1024"),
            ("/a", "start with '/'"),
            ("a\nb", "control"),
            ("a\u{7f}", "control"),
            ("a/../b", "'..'"),
            ("..", "'..'"),
            ("a/./b", "'.'"),
            ("a//b", "empty segments"),
            ("a/", "empty segments"),
        ] {
            let e = validate_key(bad).unwrap_err();
            assert!(matches!(e, BlobError::InvalidKey { .. }), "{bad:?}");
            assert!(e.to_string().contains(why), "{bad:?}: {e}");
        }
        assert!(validate_key(&"x".repeat(1024)).is_ok());
    }

    #[test]
    fn prefixes_cursors_and_content_types_are_checked() {
        assert!(validate_prefix("").is_ok());
        assert!(validate_prefix("posts/1").is_ok());
        assert!(validate_prefix("posts/").is_ok());
        assert!(validate_prefix("../x").is_err());
        assert!(validate_prefix("/x").is_err());
        assert!(validate_page(None, 0).is_err());
        assert!(validate_page(None, 1001).is_err());
        assert!(validate_page(Some(""), 10).is_err());
        assert!(validate_page(Some("k"), 10).is_ok());
        assert_eq!(validate_content_type("").unwrap(), DEFAULT_CONTENT_TYPE);
        assert_eq!(
            validate_content_type("text/plain; charset=utf-8").unwrap(),
            "text/plain; charset=utf-8"
        );
        assert!(validate_content_type("text").is_err());
        assert!(validate_content_type("text/plain\r\nx: y").is_err());
        assert!(validate_expiry(Duration::ZERO).is_err());
        assert!(validate_expiry(Duration::from_secs(8 * 24 * 3600)).is_err());
        assert!(validate_expiry(Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 0xab, 0xff]), "00abff");
        assert_eq!(unhex("00abFF").unwrap(), vec![0, 0xab, 0xff]);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }

    #[test]
    fn errors_map_to_statuses() {
        assert_eq!(
            BlobError::Unavailable("x".into()).http_status(),
            http::StatusCode::SERVICE_UNAVAILABLE
        );
        assert!(BlobError::Unavailable("x".into()).is_unavailable());
        assert_eq!(
            BlobError::TooLarge { size: 2, max: 1 }.http_status(),
            http::StatusCode::PAYLOAD_TOO_LARGE
        );
    }
}
