//! The local backend: objects as files under `blob.local.dir` (for `plt dev` and tests).
//!
//! Layout, under `{dir}/objects/`: a key's segments before the last are directories named
//! `{segment}.d`, its last segment a file `{segment}.blob` (so `a` and `a/b` never collide).
//! A segment longer than 200 bytes, or starting with `~`, is named `~{sha256 hex}` instead.
//! Each `.blob` file holds a header — `PLTBLOB1`, a 4-byte big-endian length, a JSON object
//! with the key, content type and ETag — then the object's bytes. Writes go to a temporary
//! file in the same directory and are renamed into place: readers see the old object or the
//! new one, whole. Listing walks the directories under the prefix and reads the headers: fine
//! for development, not meant for millions of objects.
//!
//! Presigned URLs are `{public_base_url}/{key}?expires=<unix seconds>&sig=<hex>`, where `sig`
//! is HMAC-SHA256 over `"{METHOD}\n{expires}\n{key}"` with `blob.local.signing_secret` (or a
//! random key kept in `{dir}/signing-key`). [`routes`] serves them: `GET` (and `HEAD`) and
//! `PUT` with a valid, unexpired signature for that method; `403` otherwise.

use crate::{
    BlobConfig, BlobError, BlobStore, ListEntry, ListPage, Object, ObjectInfo, PresignedUrl,
    bounded, config::route_path, hex, unhex, validate_content_type, validate_expiry, validate_key,
    validate_page, validate_prefix,
};
use async_trait::async_trait;
use axum::{
    Router,
    body::Body,
    extract::{Path as UrlPath, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use plt_kernel::Secret;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAGIC: &[u8; 8] = b"PLTBLOB1";
/// The largest header accepted when reading (a key of 1024 bytes fits many times over).
const MAX_HEADER: u32 = 64 * 1024;
/// Segments longer than this are stored under their hash (file names stop at 255 bytes).
const MAX_PLAIN_SEGMENT: usize = 200;
const BLOB_SUFFIX: &str = ".blob";
const DIR_SUFFIX: &str = ".d";
const SIGNING_KEY_FILE: &str = "signing-key";

/// Characters of a key segment left as they are in a URL path.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Objects in a local directory (see the module documentation). Cheap to clone.
#[derive(Clone)]
pub struct LocalStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// `{dir}/objects`.
    root: PathBuf,
    /// `public_base_url` without its trailing `/`, and the path of it the routes answer
    /// under; `None` when no URL is configured.
    public: Option<(String, String)>,
    secret: Secret<Vec<u8>>,
    timeout: Duration,
    max_object_bytes: u64,
}

/// What the header of a `.blob` file holds.
#[derive(Serialize, Deserialize)]
struct Meta {
    key: String,
    content_type: String,
    etag: String,
}

impl LocalStore {
    /// A store in `config.local.dir` (created when missing, with its signing key when
    /// `config.local.signing_secret` is empty). `config.backend` is not looked at.
    pub fn new(config: &BlobConfig) -> Result<Self, BlobError> {
        let local = &config.local;
        let dir = &local.dir;
        let root = dir.join("objects");
        std::fs::create_dir_all(&root)
            .map_err(|e| BlobError::Backend(format!("cannot create {}: {e}", root.display())))?;
        let public = if local.public_base_url.is_empty() {
            None
        } else {
            let path = route_path(&local.public_base_url)
                .map_err(|why| BlobError::Backend(format!("blob.local.public_base_url: {why}")))?;
            Some((local.public_base_url.trim_end_matches('/').to_owned(), path))
        };
        let secret = if local.signing_secret.is_empty() {
            signing_key(dir)?
        } else {
            local.signing_secret.expose().as_bytes().to_vec()
        };
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                public,
                secret: Secret::new(secret),
                timeout: config.timeout,
                max_object_bytes: config.max_object_bytes,
            }),
        })
    }

    /// The `.blob` file of `key` (already validated).
    fn file_of(&self, key: &str) -> PathBuf {
        let mut path = self.inner.root.clone();
        let mut segments = key.split('/').peekable();
        while let Some(s) = segments.next() {
            let name = segment_name(s);
            if segments.peek().is_some() {
                path.push(format!("{name}{DIR_SUFFIX}"));
            } else {
                path.push(format!("{name}{BLOB_SUFFIX}"));
            }
        }
        path
    }

    /// HMAC-SHA256 of what a URL for `method` on `key` until `expires` grants.
    fn signature(&self, method: &str, expires: u64, key: &str) -> Result<Hmac<Sha256>, BlobError> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.inner.secret.expose())
            .map_err(|_| BlobError::Backend("unusable signing key".into()))?;
        mac.update(method.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac.update(b"\n");
        mac.update(key.as_bytes());
        Ok(mac)
    }

    fn presign(
        &self,
        method: &'static str,
        key: &str,
        expires_in: Duration,
    ) -> Result<PresignedUrl, BlobError> {
        validate_key(key)?;
        validate_expiry(expires_in)?;
        let Some((base, _)) = &self.inner.public else {
            return Err(BlobError::Backend(
                "presigned URLs need blob.local.public_base_url (the service's URL the blob \
                 routes answer under)"
                    .into(),
            ));
        };
        let expires = unix_now().saturating_add(expires_in.as_secs());
        let sig = hex(&self
            .signature(method, expires, key)?
            .finalize()
            .into_bytes());
        let path = key
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect::<Vec<_>>()
            .join("/");
        Ok(PresignedUrl {
            url: format!("{base}/{path}?expires={expires}&sig={sig}"),
            method,
            expires_at: UNIX_EPOCH + Duration::from_secs(expires),
        })
    }

    /// Whether `query` (`expires=…&sig=…`) grants `method` on `key` now.
    fn verify(&self, method: &str, key: &str, query: Option<&str>) -> bool {
        let (mut expires, mut sig) = (None, None);
        for pair in query.unwrap_or("").split('&') {
            match pair.split_once('=') {
                Some(("expires", v)) => expires = v.parse::<u64>().ok(),
                Some(("sig", v)) => sig = unhex(v),
                _ => {}
            }
        }
        let (Some(expires), Some(sig)) = (expires, sig) else {
            return false;
        };
        if unix_now() > expires {
            return false;
        }
        self.signature(method, expires, key)
            .is_ok_and(|mac| mac.verify_slice(&sig).is_ok())
    }

    async fn put_file(
        &self,
        key: &str,
        bytes: &Bytes,
        content_type: &str,
    ) -> Result<ObjectInfo, BlobError> {
        let etag = hex(&Sha256::digest(bytes)[..16]);
        let meta = serde_json::to_vec(&Meta {
            key: key.to_owned(),
            content_type: content_type.to_owned(),
            etag: etag.clone(),
        })
        .map_err(|e| BlobError::Backend(format!("encoding the object header: {e}")))?;
        let meta_len = u32::try_from(meta.len())
            .map_err(|_| BlobError::Backend("object header too large".into()))?;
        let path = self.file_of(key);
        let dir = path
            .parent()
            .ok_or_else(|| BlobError::Backend("object path without a directory".into()))?;
        // A delete may remove an emptied directory between creating it and writing into it:
        // try again then.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let tmp = dir.join(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
            let written = async {
                tokio::fs::create_dir_all(dir).await?;
                let mut f = tokio::fs::File::create(&tmp).await?;
                f.write_all(MAGIC).await?;
                f.write_all(&meta_len.to_be_bytes()).await?;
                f.write_all(&meta).await?;
                f.write_all(bytes).await?;
                f.sync_data().await?;
                drop(f);
                tokio::fs::rename(&tmp, &path).await
            }
            .await;
            match written {
                Ok(()) => break,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    if e.kind() == io::ErrorKind::NotFound && attempt < 3 {
                        continue;
                    }
                    return Err(io_error("writing", &path, &e));
                }
            }
        }
        Ok(ObjectInfo {
            key: key.to_owned(),
            size: bytes.len() as u64,
            etag,
            content_type: content_type.to_owned(),
        })
    }

    async fn get_file(&self, key: &str) -> Result<Option<Object>, BlobError> {
        let path = self.file_of(key);
        let data = match tokio::fs::read(&path).await {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("reading", &path, &e)),
        };
        let (meta, body_at) = parse_header(&data)
            .ok_or_else(|| BlobError::Backend(format!("{} is not a blob file", path.display())))?;
        let bytes = Bytes::from(data).slice(body_at..);
        Ok(Some(Object {
            info: ObjectInfo {
                key: meta.key,
                size: bytes.len() as u64,
                etag: meta.etag,
                content_type: meta.content_type,
            },
            bytes,
        }))
    }

    async fn delete_file(&self, key: &str) -> Result<(), BlobError> {
        let path = self.file_of(key);
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("removing", &path, &e)),
        }
        // Emptied directories go too (best effort: a directory that is not empty stays).
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.inner.root || tokio::fs::remove_dir(d).await.is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    async fn list_files(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ListPage, BlobError> {
        // Start at the directory of the prefix's complete segments.
        let mut start = self.inner.root.clone();
        if let Some((dirs, _)) = prefix.rsplit_once('/') {
            for s in dirs.split('/') {
                start.push(format!("{}{DIR_SUFFIX}", segment_name(s)));
            }
        }
        let mut entries = Vec::new();
        let mut pending = vec![start];
        while let Some(dir) = pending.pop() {
            let mut read = match tokio::fs::read_dir(&dir).await {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error("listing", &dir, &e)),
            };
            while let Some(item) = read
                .next_entry()
                .await
                .map_err(|e| io_error("listing", &dir, &e))?
            {
                let name = item.file_name();
                let name = name.to_string_lossy();
                let path = item.path();
                if name.ends_with(DIR_SUFFIX) {
                    pending.push(path);
                } else if name.ends_with(BLOB_SUFFIX) {
                    let Some((meta, size)) = read_header(&path).await? else {
                        continue;
                    };
                    if meta.key.starts_with(prefix) && cursor.is_none_or(|c| meta.key.as_str() > c)
                    {
                        entries.push(ListEntry {
                            key: meta.key,
                            size,
                            etag: meta.etag,
                        });
                    }
                }
            }
        }
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        let limit = limit as usize;
        let next_cursor = if entries.len() > limit {
            entries.truncate(limit);
            entries.last().map(|e| e.key.clone())
        } else {
            None
        };
        Ok(ListPage {
            entries,
            next_cursor,
        })
    }
}

/// A segment's file name (without suffix).
fn segment_name(segment: &str) -> String {
    if segment.len() > MAX_PLAIN_SEGMENT || segment.starts_with('~') {
        format!("~{}", hex(&Sha256::digest(segment.as_bytes())))
    } else {
        segment.to_owned()
    }
}

/// The header of a blob file's bytes and where the object starts.
fn parse_header(data: &[u8]) -> Option<(Meta, usize)> {
    let rest = data.strip_prefix(MAGIC)?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
    if len > MAX_HEADER {
        return None;
    }
    let end = 4 + len as usize;
    let meta = serde_json::from_slice(rest.get(4..end)?).ok()?;
    Some((meta, MAGIC.len() + end))
}

/// The header of the blob file at `path` and the object's size; `None` when the file is gone
/// (deleted meanwhile) or not a blob file.
async fn read_header(path: &Path) -> Result<Option<(Meta, u64)>, BlobError> {
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("reading", path, &e)),
    };
    let total = f
        .metadata()
        .await
        .map_err(|e| io_error("reading", path, &e))?
        .len();
    let mut head = [0u8; 12];
    if f.read_exact(&mut head).await.is_err() || &head[..8] != MAGIC {
        return Ok(None);
    }
    let len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
    if len > MAX_HEADER {
        return Ok(None);
    }
    let mut meta = vec![0u8; len as usize];
    if f.read_exact(&mut meta).await.is_err() {
        return Ok(None);
    }
    let Ok(meta) = serde_json::from_slice::<Meta>(&meta) else {
        return Ok(None);
    };
    let size = total.saturating_sub(12 + u64::from(len));
    Ok(Some((meta, size)))
}

fn io_error(doing: &str, path: &Path, e: &io::Error) -> BlobError {
    BlobError::Backend(format!("{doing} {}: {e}", path.display()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The signing key kept in `dir`, made (32 random bytes, hex) when missing. Two processes
/// starting together agree: the key is linked into place only if none is there yet.
fn signing_key(dir: &Path) -> Result<Vec<u8>, BlobError> {
    let file = dir.join(SIGNING_KEY_FILE);
    let read = |f: &Path| -> Result<Option<Vec<u8>>, BlobError> {
        match std::fs::read_to_string(f) {
            Ok(s) => unhex(s.trim())
                .filter(|k| k.len() >= 32)
                .map(Some)
                .ok_or_else(|| {
                    BlobError::Backend(format!(
                        "{} does not hold a signing key (remove it to have one made)",
                        f.display()
                    ))
                }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("reading", f, &e)),
        }
    };
    if let Some(key) = read(&file)? {
        return Ok(key);
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)
        .map_err(|e| BlobError::Backend(format!("no randomness for a signing key: {e}")))?;
    let tmp = dir.join(format!(
        ".{SIGNING_KEY_FILE}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    write_private(&tmp, hex(&key).as_bytes()).map_err(|e| io_error("writing", &tmp, &e))?;
    let linked = std::fs::hard_link(&tmp, &file);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key.to_vec()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            read(&file)?.ok_or_else(|| BlobError::Backend(format!("{} vanished", file.display())))
        }
        Err(e) => Err(io_error("creating", &file, &e)),
    }
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[async_trait]
impl BlobStore for LocalStore {
    fn kind(&self) -> &'static str {
        "local"
    }

    async fn put(
        &self,
        key: &str,
        bytes: Bytes,
        content_type: &str,
    ) -> Result<ObjectInfo, BlobError> {
        validate_key(key)?;
        let content_type = validate_content_type(content_type)?;
        let size = bytes.len() as u64;
        if size > self.inner.max_object_bytes {
            return Err(BlobError::TooLarge {
                size,
                max: self.inner.max_object_bytes,
            });
        }
        bounded(
            self.inner.timeout,
            "writing a local blob",
            self.put_file(key, &bytes, content_type),
        )
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Object>, BlobError> {
        validate_key(key)?;
        bounded(
            self.inner.timeout,
            "reading a local blob",
            self.get_file(key),
        )
        .await
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        validate_key(key)?;
        bounded(
            self.inner.timeout,
            "removing a local blob",
            self.delete_file(key),
        )
        .await
    }

    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ListPage, BlobError> {
        validate_prefix(prefix)?;
        validate_page(cursor, limit)?;
        bounded(
            self.inner.timeout,
            "listing local blobs",
            self.list_files(prefix, cursor, limit),
        )
        .await
    }

    fn presign_get(&self, key: &str, expires_in: Duration) -> Result<PresignedUrl, BlobError> {
        self.presign("GET", key, expires_in)
    }

    fn presign_put(&self, key: &str, expires_in: Duration) -> Result<PresignedUrl, BlobError> {
        self.presign("PUT", key, expires_in)
    }

    fn routes(&self) -> Option<Router> {
        self.inner.public.is_some().then(|| routes(self))
    }
}

/// The routes serving `store`'s presigned URLs under the path of `blob.local.public_base_url`
/// (`/blobs/{*key}` for `http://host:port/blobs`): `GET`/`HEAD` answer the object (`404` when
/// missing), `PUT` stores the body with its `Content-Type` (`413` beyond
/// `blob.max_object_bytes`); a missing, altered or expired signature, or one made for another
/// method or key, gets `403`; `503` when the directory does not answer in time. Answers carry
/// `X-Content-Type-Options: nosniff` and `Content-Security-Policy: sandbox`, since the objects
/// are users' files served from the service's own origin. Without a public URL: an empty
/// router.
pub fn routes(store: &LocalStore) -> Router {
    let Some((_, path)) = &store.inner.public else {
        return Router::new();
    };
    Router::new()
        .route(
            &format!("{path}/{{*key}}"),
            axum::routing::get(serve_get).put(serve_put),
        )
        .with_state(store.clone())
}

fn status(code: StatusCode, msg: &'static str) -> Response {
    (code, msg).into_response()
}

fn error_response(e: &BlobError) -> Response {
    let msg = match e {
        BlobError::InvalidKey { .. } | BlobError::InvalidInput(_) | BlobError::TooLarge { .. } => {
            e.to_string()
        }
        BlobError::Unavailable(_) => "blob store unavailable".into(),
        _ => "blob store error".into(),
    };
    if !matches!(
        e,
        BlobError::InvalidKey { .. } | BlobError::InvalidInput(_) | BlobError::TooLarge { .. }
    ) {
        tracing::warn!(error = %e, "serving a signed blob URL failed");
    }
    (e.http_status(), msg).into_response()
}

fn harden(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
}

async fn serve_get(
    State(store): State<LocalStore>,
    UrlPath(key): UrlPath<String>,
    RawQuery(query): RawQuery,
) -> Response {
    if !store.verify("GET", &key, query.as_deref()) {
        return status(StatusCode::FORBIDDEN, "invalid or expired signature");
    }
    let mut response = match store.get(&key).await {
        Ok(Some(o)) => {
            let mut r = Response::new(Body::from(o.bytes));
            let h = r.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&o.info.content_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", o.info.etag)) {
                h.insert(header::ETAG, v);
            }
            r
        }
        Ok(None) => status(StatusCode::NOT_FOUND, "no such object"),
        Err(e) => error_response(&e),
    };
    harden(response.headers_mut());
    response
}

async fn serve_put(
    State(store): State<LocalStore>,
    UrlPath(key): UrlPath<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !store.verify("PUT", &key, query.as_deref()) {
        return status(StatusCode::FORBIDDEN, "invalid or expired signature");
    }
    let max = store.inner.max_object_bytes;
    let too_large = || {
        status(
            StatusCode::PAYLOAD_TOO_LARGE,
            "the body is larger than blob.max_object_bytes",
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return too_large();
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let bytes = match bounded(store.inner.timeout, "receiving the body", async {
        axum::body::to_bytes(body, limit).await.map_err(|e| {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(err) = source {
                if err.is::<http_body_util::LengthLimitError>() {
                    return BlobError::TooLarge {
                        size: max.saturating_add(1),
                        max,
                    };
                }
                source = err.source();
            }
            BlobError::InvalidInput(format!("reading the body: {e}"))
        })
    })
    .await
    {
        Ok(b) => b,
        Err(BlobError::TooLarge { .. }) => return too_large(),
        Err(e) => return error_response(&e),
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut response = match store.put(&key, bytes, content_type).await {
        Ok(info) => {
            let mut r = StatusCode::OK.into_response();
            if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", info.etag)) {
                r.headers_mut().insert(header::ETAG, v);
            }
            r
        }
        Err(e) => error_response(&e),
    };
    harden(response.headers_mut());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_paths_that_never_collide() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(&BlobConfig {
            local: crate::LocalConfig {
                dir: dir.path().into(),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        let root = dir.path().join("objects");
        assert_eq!(store.file_of("a"), root.join("a.blob"));
        assert_eq!(store.file_of("a/b"), root.join("a.d/b.blob"));
        assert_ne!(store.file_of("a.d/b"), store.file_of("a/b"));
        let long = "x".repeat(300);
        let p = store.file_of(&format!("{long}/y"));
        let first = p.strip_prefix(&root).unwrap().iter().next().unwrap();
        assert!(first.to_string_lossy().starts_with('~'));
        assert!(first.len() < 100);
        assert_ne!(store.file_of("~a"), root.join("~a.blob"));
        // The signing key is made once and kept.
        let key = std::fs::read_to_string(dir.path().join(SIGNING_KEY_FILE)).unwrap();
        assert_eq!(key.len(), 64);
        assert_eq!(signing_key(dir.path()).unwrap(), unhex(&key).unwrap());
    }

    #[test]
    fn headers_parse_and_refuse_garbage() {
        let meta = br#"{"key":"k","content_type":"text/plain","etag":"e"}"#;
        let mut data = MAGIC.to_vec();
        data.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        data.extend_from_slice(meta);
        data.extend_from_slice(b"body");
        let (m, at) = parse_header(&data).unwrap();
        assert_eq!(m.key, "k");
        assert_eq!(&data[at..], b"body");
        assert!(parse_header(b"nope").is_none());
        assert!(parse_header(&data[..14]).is_none());
    }
}
