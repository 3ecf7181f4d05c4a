//! An S3 server that is gone or silent: the store is still made, and every call fails with
//! `Unavailable` — at once for a closed port, within `blob.timeout` for a silent server —
//! never hangs. A missing bucket on the real server (`PLT_TEST_S3_URL`) is `NotFound`.

mod common;

use bytes::Bytes;
use plt_blob::{BlobConfig, BlobError, BlobStore};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

fn config(endpoint: String, timeout: Duration) -> BlobConfig {
    let mut c = common::s3_config(&endpoint);
    c.timeout = timeout;
    c
}

/// One store call, its answer dropped.
type Call<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(), BlobError>> + Send + 'a>>;

/// Every data call of `store`, each checked to fail with `Unavailable` within `within`.
async fn all_unavailable(store: &Arc<dyn BlobStore>, within: Duration) {
    let calls: Vec<(&str, Call<'_>)> = vec![
        (
            "put",
            Box::pin(async {
                store
                    .put("k", Bytes::from_static(b"v"), "text/plain")
                    .await
                    .map(drop)
            }),
        ),
        ("get", Box::pin(async { store.get("k").await.map(drop) })),
        ("delete", Box::pin(store.delete("k"))),
        (
            "list",
            Box::pin(async { store.list("", None, 10).await.map(drop) }),
        ),
    ];
    for (op, call) in calls {
        let started = Instant::now();
        let r = tokio::time::timeout(within + Duration::from_secs(5), call)
            .await
            .unwrap_or_else(|_| panic!("{op} hung"));
        let took = started.elapsed();
        let e = r.expect_err(op);
        assert!(e.is_unavailable(), "{op}: {e}");
        assert_eq!(e.http_status(), 503);
        assert!(took <= within, "{op} took {took:?}");
    }
}

#[tokio::test]
async fn a_closed_port_fails_fast_with_unavailable() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let store = plt_blob::connect(&config(
        format!("http://127.0.0.1:{port}"),
        Duration::from_secs(5),
    ))
    .expect("the store is made while the server is down");
    all_unavailable(&store, Duration::from_secs(1)).await;
    // Presigning needs no server.
    store.presign_get("k", Duration::from_secs(60)).unwrap();
}

#[tokio::test]
async fn a_silent_server_fails_within_the_timeout() {
    // Accepts connections (the kernel's backlog does) and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = listener.accept().await {
            conns.push(c);
        }
    });
    let store = plt_blob::connect(&config(
        format!("http://{addr}"),
        Duration::from_millis(500),
    ))
    .unwrap();
    all_unavailable(&store, Duration::from_millis(1500)).await;
    held.abort();
}

#[tokio::test]
async fn a_missing_bucket_is_not_found() {
    let Some(url) = common::s3_url("a_missing_bucket_is_not_found") else {
        return;
    };
    // A fresh bucket name, never created.
    let store = plt_blob::connect(&common::s3_config(&url)).unwrap();
    let e = store
        .put("k", Bytes::from_static(b"v"), "text/plain")
        .await
        .unwrap_err();
    assert!(matches!(e, BlobError::NotFound(_)), "{e}");
    let e = store.get("k").await.unwrap_err();
    assert!(matches!(e, BlobError::NotFound(_)), "{e}");
    let e = store.list("", None, 10).await.unwrap_err();
    assert!(matches!(e, BlobError::NotFound(_)), "{e}");
}
