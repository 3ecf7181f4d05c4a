//! The series a store made by `connect` counts (README of the crate: `blob_operations_total`,
//! `blob_bytes_total`).

use bytes::Bytes;
use plt_blob::{BlobConfig, LocalConfig};
use std::time::Duration;

#[test]
fn calls_are_counted_by_store_op_and_outcome() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let dir = tempfile::tempdir().unwrap();
    metrics::with_local_recorder(&recorder, || {
        plt_blob::describe_metrics();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = plt_blob::connect(&BlobConfig {
                local: LocalConfig {
                    dir: dir.path().to_path_buf(),
                    ..Default::default()
                },
                ..Default::default()
            })
            .unwrap();
            store
                .put("a", Bytes::from_static(b"12345"), "text/plain")
                .await
                .unwrap();
            store.get("a").await.unwrap().unwrap();
            assert!(store.get("missing").await.unwrap().is_none());
            store.get("../x").await.unwrap_err();
            store.list("", None, 10).await.unwrap();
            store.delete("a").await.unwrap();
            // No public URL: presigning is a setup error.
            store.presign_get("a", Duration::from_secs(60)).unwrap_err();
        });
    });
    let text = handle.render();
    for line in [
        r#"blob_operations_total{store="local",op="put",outcome="ok"} 1"#,
        r#"blob_operations_total{store="local",op="get",outcome="ok"} 1"#,
        r#"blob_operations_total{store="local",op="get",outcome="not_found"} 1"#,
        r#"blob_operations_total{store="local",op="get",outcome="invalid"} 1"#,
        r#"blob_operations_total{store="local",op="list",outcome="ok"} 1"#,
        r#"blob_operations_total{store="local",op="delete",outcome="ok"} 1"#,
        r#"blob_operations_total{store="local",op="presign_get",outcome="error"} 1"#,
        r#"blob_bytes_total{store="local",op="put"} 5"#,
        r#"blob_bytes_total{store="local",op="get"} 5"#,
        "# HELP blob_operations_total",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
}
