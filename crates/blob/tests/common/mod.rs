//! What the blob tests share: stores of each backend, fresh for each test.

#![allow(dead_code)]

use plt_blob::{Backend, BlobConfig, BlobStore, LocalConfig, S3Config, s3::S3Store};
use plt_kernel::Secret;
use std::{sync::Arc, time::Duration};

/// The largest object the test stores take.
pub const MAX_OBJECT_BYTES: u64 = 1024 * 1024;

/// A store under test, with what must live as long as it.
pub struct Fixture {
    pub store: Arc<dyn BlobStore>,
    pub config: BlobConfig,
    _dir: Option<tempfile::TempDir>,
    _server: Option<Server>,
}

/// A server task, stopped when dropped.
pub struct Server(pub tokio::task::JoinHandle<()>);

impl Drop for Server {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A local store in a fresh directory, its signed-URL routes served on a loopback port.
pub async fn local() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = BlobConfig {
        backend: Backend::Local,
        local: LocalConfig {
            dir: dir.path().to_path_buf(),
            public_base_url: format!("http://{addr}/blobs"),
            ..Default::default()
        },
        timeout: Duration::from_secs(5),
        max_object_bytes: MAX_OBJECT_BYTES,
        ..Default::default()
    };
    let store = plt_blob::connect(&config).unwrap();
    let routes = store
        .routes()
        .expect("a local store with a public URL has routes");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, routes).await;
    });
    Fixture {
        store,
        config,
        _dir: Some(dir),
        _server: Some(Server(server)),
    }
}

/// `PLT_TEST_S3_URL`, or a skip line for `test` and `None` when it is not set.
pub fn s3_url(test: &str) -> Option<String> {
    match std::env::var("PLT_TEST_S3_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("SKIPPED {test} on S3: PLT_TEST_S3_URL is not set");
            None
        }
    }
}

/// The configuration of a fresh bucket on the S3 server at `url` (credentials from
/// `PLT_TEST_S3_ACCESS_KEY`/`PLT_TEST_S3_SECRET_KEY`, anything for moto).
pub fn s3_config(url: &str) -> BlobConfig {
    let var = |name: &str, default: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_owned())
    };
    BlobConfig {
        backend: Backend::S3,
        s3: S3Config {
            endpoint: url.to_owned(),
            region: var("PLT_TEST_S3_REGION", "us-east-1"),
            bucket: format!("plt-test-{}", uuid::Uuid::new_v4().simple()),
            access_key_id: var("PLT_TEST_S3_ACCESS_KEY", "plt-test"),
            secret_access_key: Secret::new(var("PLT_TEST_S3_SECRET_KEY", "plt-test-secret")),
            path_style: true,
        },
        timeout: Duration::from_secs(10),
        max_object_bytes: MAX_OBJECT_BYTES,
        ..Default::default()
    }
}

/// A store on a fresh bucket of the S3 server at `PLT_TEST_S3_URL`; `None` (after a skip
/// line) when the variable is not set.
pub async fn s3(test: &str) -> Option<Fixture> {
    let url = s3_url(test)?;
    let config = s3_config(&url);
    S3Store::new(&config)
        .unwrap()
        .create_bucket()
        .await
        .unwrap_or_else(|e| panic!("creating bucket {} at {url}: {e}", config.s3.bucket));
    let store = plt_blob::connect(&config).unwrap();
    Some(Fixture {
        store,
        config,
        _dir: None,
        _server: None,
    })
}

/// A plain HTTP client (no credentials).
pub fn http() -> reqwest::Client {
    plt_kernel::tls::http_client()
}
