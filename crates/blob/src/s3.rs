//! The S3 backend: any server speaking the S3 API (AWS S3, MinIO, Ceph RGW, Garage, moto…).
//!
//! Requests are presigned with AWS Signature Version 4 by `rusty-s3` (sans-IO: it builds
//! URLs, this module sends them) and sent with the reqwest client of
//! [`plt_kernel::tls::http_client_builder`], so `client_tls` (extra roots, a client
//! certificate) applies. Each call — connecting, sending, reading the whole answer — is
//! bounded by `blob.timeout`; a refused connection, a timeout, or a 5xx/429 answer is
//! [`BlobError::Unavailable`].

use crate::{
    BlobConfig, BlobError, BlobStore, ListEntry, ListPage, Object, ObjectInfo, PresignedUrl,
    bounded, config::check_bucket_name, validate_content_type, validate_expiry, validate_key,
    validate_page, validate_prefix,
};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use reqwest::{Method, StatusCode, Url, header};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle, actions::ListObjectsV2};
use std::time::{Duration, SystemTime};

/// How long the URL of one of our own requests stays valid: the call's timeout plus room for
/// clock skew between this host and the server.
const REQUEST_URL_SLACK: Duration = Duration::from_secs(300);

/// The largest answer that is not an object (a listing of 1000 long keys, an error).
const MAX_DOCUMENT_BYTES: u64 = 16 * 1024 * 1024;

/// A bucket on an S3-compatible server (see the module documentation).
pub struct S3Store {
    bucket: Bucket,
    credentials: Credentials,
    client: reqwest::Client,
    timeout: Duration,
    max_object_bytes: u64,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket.name())
            .field("endpoint", &self.bucket.base_url().as_str())
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// A store for `config.s3` (`config.backend` is not looked at). Sends nothing: the server
    /// may be down while the store is made.
    pub fn new(config: &BlobConfig) -> Result<Self, BlobError> {
        let s3 = &config.s3;
        let bad = |what: &str, why: String| BlobError::Backend(format!("blob.s3.{what}: {why}"));
        let endpoint = Url::parse(&s3.endpoint)
            .map_err(|e| bad("endpoint", format!("{:?} is not a URL: {e}", s3.endpoint)))?;
        check_bucket_name(&s3.bucket).map_err(|why| bad("bucket", why))?;
        let style = if s3.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(endpoint, style, s3.bucket.clone(), s3.region.clone())
            .map_err(|e| bad("endpoint", format!("cannot address the bucket: {e:?}")))?;
        let credentials = Credentials::new(
            s3.access_key_id.clone(),
            s3.secret_access_key.expose().clone(),
        );
        let client = plt_kernel::tls::http_client_builder()
            .connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .timeout(config.timeout)
            .build()
            .map_err(|e| BlobError::Backend(format!("building the S3 HTTP client: {e}")))?;
        Ok(Self {
            bucket,
            credentials,
            client,
            timeout: config.timeout,
            max_object_bytes: config.max_object_bytes,
        })
    }

    /// Creates the bucket (tests, development servers). A bucket this account already owns
    /// is fine.
    pub async fn create_bucket(&self) -> Result<(), BlobError> {
        let action = self.bucket.create_bucket(&self.credentials);
        let body = action.body();
        let url = action.sign(self.url_lifetime());
        let answer = self
            .send("create bucket", Method::PUT, url, |r| {
                // An empty body is sent without a length otherwise, which S3 refuses (411).
                r.header(header::CONTENT_LENGTH, body.len()).body(body)
            })
            .await?;
        if answer.status.is_success() {
            return Ok(());
        }
        if answer.status == StatusCode::CONFLICT
            && answer.code().as_deref() == Some("BucketAlreadyOwnedByYou")
        {
            return Ok(());
        }
        Err(answer.error("create bucket", self.bucket.name()))
    }

    fn url_lifetime(&self) -> Duration {
        self.timeout + REQUEST_URL_SLACK
    }

    /// Sends one request and reads its whole answer, within the timeout. The answer of a
    /// `get` may be an object (at most `max_object_bytes`); any other is a small document.
    async fn send(
        &self,
        op: &str,
        method: Method,
        url: Url,
        build: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<Answer, BlobError> {
        let limit = if op == "get" {
            self.max_object_bytes.max(MAX_DOCUMENT_BYTES)
        } else {
            MAX_DOCUMENT_BYTES
        };
        bounded(self.timeout, &format!("S3 {op}"), async {
            let unavailable =
                |e: reqwest::Error| BlobError::Unavailable(format!("S3 {op}: {}", e.without_url()));
            let mut response = build(self.client.request(method, url))
                .send()
                .await
                .map_err(unavailable)?;
            let status = response.status();
            let headers = response.headers().clone();
            let too_large = |size: u64| {
                if op == "get" {
                    BlobError::TooLarge {
                        size,
                        max: self.max_object_bytes,
                    }
                } else {
                    BlobError::Backend(format!("S3 {op}: an answer of over {limit} bytes"))
                }
            };
            if let Some(n) = response.content_length().filter(|n| *n > limit) {
                return Err(too_large(n));
            }
            let mut body = BytesMut::new();
            while let Some(chunk) = response.chunk().await.map_err(unavailable)? {
                let size = (body.len() + chunk.len()) as u64;
                if size > limit {
                    return Err(too_large(size));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Answer {
                status,
                headers,
                body: body.freeze(),
            })
        })
        .await
    }

    fn presign(
        &self,
        method: &'static str,
        key: &str,
        expires_in: Duration,
    ) -> Result<PresignedUrl, BlobError> {
        validate_key(key)?;
        validate_expiry(expires_in)?;
        let url = if method == "PUT" {
            self.bucket
                .put_object(Some(&self.credentials), key)
                .sign(expires_in)
        } else {
            self.bucket
                .get_object(Some(&self.credentials), key)
                .sign(expires_in)
        };
        Ok(PresignedUrl {
            url: url.into(),
            method,
            expires_at: SystemTime::now() + Duration::from_secs(expires_in.as_secs()),
        })
    }
}

/// A server's whole answer.
struct Answer {
    status: StatusCode,
    headers: header::HeaderMap,
    body: Bytes,
}

impl Answer {
    /// The `<Code>` of an S3 error document.
    fn code(&self) -> Option<String> {
        xml_text(&self.body, "Code")
    }

    fn etag(&self) -> String {
        self.headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_start_matches("W/").trim_matches('"').to_owned())
            .unwrap_or_default()
    }

    /// The error this answer means, for an answer that is not a success.
    fn error(&self, op: &str, bucket: &str) -> BlobError {
        let code = self.code().unwrap_or_default();
        let message = xml_text(&self.body, "Message").unwrap_or_default();
        let detail = format!("S3 {op}: {} {code} {message}", self.status);
        let detail = detail.trim_end().to_owned();
        if self.status.is_server_error()
            || self.status == StatusCode::TOO_MANY_REQUESTS
            || code == "SlowDown"
        {
            BlobError::Unavailable(detail)
        } else if code == "NoSuchBucket" {
            BlobError::NotFound(format!("S3 bucket {bucket:?} does not exist"))
        } else {
            BlobError::Backend(detail)
        }
    }
}

/// The text of the first `<tag>` element of a small XML document (an S3 error), unescaped
/// for the five predefined entities; `None` when there is none.
fn xml_text(body: &[u8], tag: &str) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let open = format!("<{tag}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&format!("</{tag}>"))?;
    let raw = &text[start..end];
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&"),
    )
}

#[async_trait]
impl BlobStore for S3Store {
    fn kind(&self) -> &'static str {
        "s3"
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
        if size > self.max_object_bytes {
            return Err(BlobError::TooLarge {
                size,
                max: self.max_object_bytes,
            });
        }
        let mut action = self.bucket.put_object(Some(&self.credentials), key);
        action.headers_mut().insert("content-type", content_type);
        let url = action.sign(self.url_lifetime());
        let answer = self
            .send("put", Method::PUT, url, |r| {
                r.header(header::CONTENT_TYPE, content_type)
                    .header(header::CONTENT_LENGTH, size)
                    .body(bytes)
            })
            .await?;
        if !answer.status.is_success() {
            return Err(answer.error("put", self.bucket.name()));
        }
        Ok(ObjectInfo {
            key: key.to_owned(),
            size,
            etag: answer.etag(),
            content_type: content_type.to_owned(),
        })
    }

    async fn get(&self, key: &str) -> Result<Option<Object>, BlobError> {
        validate_key(key)?;
        let url = self
            .bucket
            .get_object(Some(&self.credentials), key)
            .sign(self.url_lifetime());
        let answer = self.send("get", Method::GET, url, |r| r).await?;
        if answer.status == StatusCode::NOT_FOUND
            && answer.code().as_deref() != Some("NoSuchBucket")
        {
            return Ok(None);
        }
        if !answer.status.is_success() {
            return Err(answer.error("get", self.bucket.name()));
        }
        let content_type = answer
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(crate::DEFAULT_CONTENT_TYPE)
            .to_owned();
        if answer.body.len() as u64 > self.max_object_bytes {
            return Err(BlobError::TooLarge {
                size: answer.body.len() as u64,
                max: self.max_object_bytes,
            });
        }
        Ok(Some(Object {
            info: ObjectInfo {
                key: key.to_owned(),
                size: answer.body.len() as u64,
                etag: answer.etag(),
                content_type,
            },
            bytes: answer.body,
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        validate_key(key)?;
        let url = self
            .bucket
            .delete_object(Some(&self.credentials), key)
            .sign(self.url_lifetime());
        let answer = self.send("delete", Method::DELETE, url, |r| r).await?;
        if answer.status.is_success()
            || (answer.status == StatusCode::NOT_FOUND
                && answer.code().as_deref() != Some("NoSuchBucket"))
        {
            return Ok(());
        }
        Err(answer.error("delete", self.bucket.name()))
    }

    async fn list(
        &self,
        prefix: &str,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<ListPage, BlobError> {
        validate_prefix(prefix)?;
        validate_page(cursor, limit)?;
        let mut action = self.bucket.list_objects_v2(Some(&self.credentials));
        if !prefix.is_empty() {
            action.with_prefix(prefix);
        }
        if let Some(c) = cursor {
            action.with_continuation_token(c);
        }
        action.with_max_keys(limit as usize);
        let url = action.sign(self.url_lifetime());
        let answer = self.send("list", Method::GET, url, |r| r).await?;
        if !answer.status.is_success() {
            return Err(answer.error("list", self.bucket.name()));
        }
        let text = std::str::from_utf8(&answer.body)
            .map_err(|_| BlobError::Backend("S3 list: the answer is not UTF-8".into()))?;
        let parsed = ListObjectsV2::parse_response(text)
            .map_err(|e| BlobError::Backend(format!("S3 list: unreadable answer: {e}")))?;
        let entries = parsed
            .contents
            .into_iter()
            .map(|c| ListEntry {
                key: c.key,
                size: c.size.unwrap_or(0),
                etag: c
                    .etag
                    .unwrap_or_default()
                    .trim_start_matches("W/")
                    .trim_matches('"')
                    .to_owned(),
            })
            .collect();
        Ok(ListPage {
            entries,
            next_cursor: parsed.next_continuation_token,
        })
    }

    fn presign_get(&self, key: &str, expires_in: Duration) -> Result<PresignedUrl, BlobError> {
        self.presign("GET", key, expires_in)
    }

    fn presign_put(&self, key: &str, expires_in: Duration) -> Result<PresignedUrl, BlobError> {
        self.presign("PUT", key, expires_in)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Backend, S3Config};
    use plt_kernel::Secret;

    fn store() -> S3Store {
        S3Store::new(&BlobConfig {
            backend: Backend::S3,
            s3: S3Config {
                endpoint: "http://127.0.0.1:9".into(),
                bucket: "plt-blobs".into(),
                access_key_id: "AKIDEXAMPLE".into(),
                secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into()),
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn presigned_urls_address_the_object_and_hide_the_secret() {
        let s = store();
        let u = s
            .presign_get("posts/1/a b.png", Duration::from_secs(60))
            .unwrap();
        assert!(
            u.url
                .starts_with("http://127.0.0.1:9/plt-blobs/posts/1/a%20b.png?"),
            "{}",
            u.url
        );
        assert!(u.url.contains("X-Amz-Expires=60"));
        assert!(u.url.contains("X-Amz-Signature="));
        assert!(!u.url.contains("wJalrXUtnFEMI"));
        assert!(!format!("{s:?}").contains("wJalrXUtnFEMI"));
        assert_eq!(
            s.presign_put("k", Duration::from_secs(5)).unwrap().method,
            "PUT"
        );
        assert!(s.presign_get("../x", Duration::from_secs(5)).is_err());
        assert!(s.presign_get("x", Duration::ZERO).is_err());
    }

    #[test]
    fn error_documents_are_read() {
        let a = Answer {
            status: StatusCode::NOT_FOUND,
            headers: header::HeaderMap::new(),
            body: Bytes::from_static(
                b"<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>a &amp; b</Message></Error>",
            ),
        };
        assert_eq!(a.code().as_deref(), Some("NoSuchBucket"));
        assert!(matches!(a.error("get", "b"), BlobError::NotFound(_)));
        assert_eq!(xml_text(&a.body, "Message").as_deref(), Some("a & b"));
        let busy = Answer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            headers: header::HeaderMap::new(),
            body: Bytes::new(),
        };
        assert!(busy.error("put", "b").is_unavailable());
        let denied = Answer {
            status: StatusCode::FORBIDDEN,
            headers: header::HeaderMap::new(),
            body: Bytes::from_static(b"<Error><Code>AccessDenied</Code></Error>"),
        };
        assert!(matches!(denied.error("put", "b"), BlobError::Backend(_)));
    }
}
