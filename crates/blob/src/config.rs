//! The `blob` configuration section: which backend holds a service's blobs, and how to reach
//! it. Every key has a default ([`BlobConfig::default`]: a local directory under `./data`),
//! so a service that stores nothing needs no settings.
//!
//! ```yaml
//! blob:
//!   backend: local            # local | s3
//!   timeout: 10s              # bound of every backend call
//!   max_object_bytes: 26214400
//!   local:
//!     dir: ./data/blobs
//!     public_base_url: ""     # e.g. http://127.0.0.1:8080/blobs; empty: no presigned URLs
//!     signing_secret: ""      # empty: a key generated once in `dir`
//!   s3:
//!     endpoint: https://s3.eu-west-1.amazonaws.com
//!     region: eu-west-1
//!     bucket: my-bucket
//!     access_key_id: AKIA…
//!     secret_access_key: ""   # secret: prefer PLT_BLOB__S3__SECRET_ACCESS_KEY_FILE
//!     path_style: true
//! ```

use plt_kernel::{ConfigError, Secret, config::Validate};
use serde::{Deserialize, Serialize};
use std::{path::PathBuf, time::Duration};

/// Which backend holds the blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Files under `blob.local.dir` (`plt dev`, tests).
    Local,
    /// An S3-compatible server (`blob.s3.*`).
    S3,
}

/// The `blob` section.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlobConfig {
    pub backend: Backend,
    pub local: LocalConfig,
    pub s3: S3Config,
    /// The longest any one backend call may take (connecting, sending, reading the answer);
    /// a slower call fails as unavailable.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// The largest object `put` (and the local backend's presigned PUT) accepts, and `get`
    /// reads.
    pub max_object_bytes: u64,
}

impl Default for BlobConfig {
    fn default() -> Self {
        Self {
            backend: Backend::Local,
            local: LocalConfig::default(),
            s3: S3Config::default(),
            timeout: Duration::from_secs(10),
            max_object_bytes: 25 * 1024 * 1024,
        }
    }
}

/// `blob.local`: files under a directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalConfig {
    /// Where the objects live (created when missing).
    pub dir: PathBuf,
    /// The URL under which the service serves this store's signed URLs
    /// (`http://127.0.0.1:8080/blobs`: the routes answer under its path, `/blobs/{key}`).
    /// Empty: presigned URLs are refused and no routes are served.
    pub public_base_url: String,
    /// The HMAC-SHA256 key of the signed URLs, at least 32 bytes. Empty: a random key kept in
    /// `dir` (`signing-key`), made on first use and shared by every process using `dir`.
    pub signing_secret: Secret<String>,
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("./data/blobs"),
            public_base_url: String::new(),
            signing_secret: Secret::default(),
        }
    }
}

/// `blob.s3`: an S3-compatible server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct S3Config {
    /// The server's URL (`https://s3.eu-west-1.amazonaws.com`, `http://127.0.0.1:9000`);
    /// presigned URLs point there too.
    pub endpoint: String,
    /// The region signed into every request (`us-east-1` for most non-AWS servers).
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: Secret<String>,
    /// Path-style URLs (`{endpoint}/{bucket}/{key}`) rather than virtual-hosted ones
    /// (`{bucket}.{endpoint host}/{key}`): what most S3-compatible servers, and any endpoint
    /// given by IP address, need.
    pub path_style: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: "us-east-1".into(),
            bucket: String::new(),
            access_key_id: String::new(),
            secret_access_key: Secret::default(),
            path_style: true,
        }
    }
}

/// The largest object one S3 `PutObject` takes.
const MAX_OBJECT_BYTES_LIMIT: u64 = 5 * 1024 * 1024 * 1024;

impl Validate for BlobConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{p}.{k}");
        if self.timeout < Duration::from_millis(100) || self.timeout > Duration::from_secs(300) {
            return Err(ConfigError::new(
                key("timeout"),
                "must be between 100ms and 5m",
            ));
        }
        if self.max_object_bytes == 0 || self.max_object_bytes > MAX_OBJECT_BYTES_LIMIT {
            return Err(ConfigError::new(
                key("max_object_bytes"),
                "must be between 1 and 5368709120 (5 GiB, S3's single-request limit)",
            ));
        }
        match self.backend {
            Backend::Local => self.local.validate_in(&key),
            Backend::S3 => self.s3.validate_in(&key),
        }
    }
}

impl LocalConfig {
    fn validate_in(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        if self.dir.as_os_str().is_empty() {
            return Err(ConfigError::new(key("local.dir"), "must not be empty"));
        }
        if !self.public_base_url.is_empty() {
            route_path(&self.public_base_url)
                .map_err(|why| ConfigError::new(key("local.public_base_url"), why))?;
        }
        if !self.signing_secret.is_empty() && self.signing_secret.expose().len() < 32 {
            return Err(ConfigError::new(
                key("local.signing_secret"),
                "must be at least 32 bytes (or empty: a key generated in local.dir)",
            ));
        }
        Ok(())
    }
}

/// The path the local routes answer under, from `public_base_url`
/// (`http://host:port/blobs/` → `/blobs`), or why the URL cannot be used.
pub(crate) fn route_path(public_base_url: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(public_base_url)
        .map_err(|e| format!("{public_base_url:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{public_base_url:?} must be an http:// or https:// URL with a host"
        ));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
        return Err(format!(
            "{public_base_url:?} must have no query, fragment or user name"
        ));
    }
    let path = url.path().trim_end_matches('/');
    let simple = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'))
    };
    if path.is_empty() || !path[1..].split('/').all(simple) {
        return Err(format!(
            "{public_base_url:?} must have a path of its own (like /blobs: the routes answer \
             under it), of letters, digits, '-', '_', '.' and '~'"
        ));
    }
    Ok(path.to_owned())
}

impl S3Config {
    fn validate_in(&self, key: &dyn Fn(&str) -> String) -> Result<(), ConfigError> {
        let url = reqwest::Url::parse(&self.endpoint).map_err(|e| {
            ConfigError::new(
                key("s3.endpoint"),
                format!("{:?} is not a URL: {e}", self.endpoint),
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(ConfigError::new(
                key("s3.endpoint"),
                "must be an http:// or https:// URL with a host",
            ));
        }
        let by_ip = url.host_str().is_some_and(|h| {
            h.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok()
        });
        if !self.path_style && by_ip {
            return Err(ConfigError::new(
                key("s3.path_style"),
                "must be true when s3.endpoint is an IP address (a bucket cannot be a subdomain of it)",
            ));
        }
        if self.region.trim().is_empty() {
            return Err(ConfigError::new(
                key("s3.region"),
                "must not be empty (us-east-1 for most S3-compatible servers)",
            ));
        }
        if let Err(why) = check_bucket_name(&self.bucket) {
            return Err(ConfigError::new(key("s3.bucket"), why));
        }
        if self.access_key_id.trim().is_empty() {
            return Err(ConfigError::new(
                key("s3.access_key_id"),
                "must not be empty when blob.backend is s3",
            ));
        }
        if self.secret_access_key.is_empty() {
            return Err(ConfigError::new(
                key("s3.secret_access_key"),
                "must not be empty when blob.backend is s3",
            ));
        }
        Ok(())
    }
}

/// S3's bucket naming rules (3 to 63 of `a-z0-9.-`, starting and ending with a letter or
/// digit).
pub(crate) fn check_bucket_name(name: &str) -> Result<(), String> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a bucket name: 3 to 63 lower-case letters, digits, '.' and '-', \
             starting and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> BlobConfig {
        BlobConfig {
            backend: Backend::S3,
            s3: S3Config {
                endpoint: "http://127.0.0.1:9000".into(),
                bucket: "plt-blobs".into(),
                access_key_id: "key".into(),
                secret_access_key: Secret::new("secret".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn err(c: &BlobConfig) -> String {
        c.validate("blob").unwrap_err().to_string()
    }

    #[test]
    fn the_defaults_and_a_complete_s3_section_are_valid() {
        BlobConfig::default().validate("blob").unwrap();
        s3().validate("blob").unwrap();
    }

    #[test]
    fn configuration_errors_name_their_key() {
        let c = BlobConfig {
            timeout: Duration::ZERO,
            ..Default::default()
        };
        assert!(err(&c).contains("blob.timeout"));
        let c = BlobConfig {
            max_object_bytes: 0,
            ..Default::default()
        };
        assert!(err(&c).contains("blob.max_object_bytes"));
        let mut c = BlobConfig::default();
        c.local.public_base_url = "http://127.0.0.1:8080".into();
        assert!(err(&c).contains("blob.local.public_base_url"));
        c.local.public_base_url = "ftp://x/blobs".into();
        assert!(err(&c).contains("blob.local.public_base_url"));
        c.local.public_base_url = "http://127.0.0.1:8080/blobs/".into();
        c.validate("blob").unwrap();
        c.local.signing_secret = Secret::new("short".into());
        assert!(err(&c).contains("blob.local.signing_secret"));
        let mut c = BlobConfig::default();
        c.local.dir = PathBuf::new();
        assert!(err(&c).contains("blob.local.dir"));

        let mut c = s3();
        c.s3.endpoint = "127.0.0.1:9000".into();
        assert!(err(&c).contains("blob.s3.endpoint"));
        let mut c = s3();
        c.s3.path_style = false;
        assert!(err(&c).contains("blob.s3.path_style"));
        let mut c = s3();
        c.s3.bucket = "Bad_Bucket".into();
        assert!(err(&c).contains("blob.s3.bucket"));
        let mut c = s3();
        c.s3.region = String::new();
        assert!(err(&c).contains("blob.s3.region"));
        let mut c = s3();
        c.s3.access_key_id = String::new();
        assert!(err(&c).contains("blob.s3.access_key_id"));
        let mut c = s3();
        c.s3.secret_access_key = Secret::default();
        assert!(err(&c).contains("blob.s3.secret_access_key"));
    }

    #[test]
    fn the_section_reads_from_yaml_and_never_prints_secrets() {
        let c: BlobConfig = serde_json::from_value(serde_json::json!({
            "backend": "s3",
            "timeout": "2s",
            "s3": {"endpoint": "http://127.0.0.1:9000", "bucket": "b-1", "access_key_id": "k",
                   "secret_access_key": "hunter2hunter2"}
        }))
        .unwrap();
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert!(c.s3.path_style);
        c.validate("blob").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&c).unwrap().contains("hunter2"));
        let unknown = serde_json::from_value::<BlobConfig>(serde_json::json!({"bakend": "s3"}));
        assert!(unknown.is_err());
    }

    #[test]
    fn route_paths_come_from_the_public_url() {
        assert_eq!(route_path("http://h:1/blobs").unwrap(), "/blobs");
        assert_eq!(route_path("https://h/a/b/").unwrap(), "/a/b");
        assert!(route_path("http://h/").is_err());
        assert!(route_path("http://h/a?x=1").is_err());
    }
}
