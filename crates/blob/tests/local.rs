//! The local backend's signed URLs: refused when expired, altered, made for another method or
//! key, or missing; bodies over the limit refused; the generated signing key shared by every
//! store on the directory; no routes and no URLs without a public URL.

mod common;

use bytes::Bytes;
use common::{MAX_OBJECT_BYTES, http, local};
use plt_blob::{BlobConfig, BlobError, LocalConfig, local::LocalStore};
use std::time::Duration;

/// `url` with its `sig` parameter's last hex digit changed.
fn tamper_sig(url: &str) -> String {
    let mut s = url.to_owned();
    let last = s.pop().unwrap();
    s.push(if last == '0' { '1' } else { '0' });
    s
}

/// The status of a `GET target` sent as it is to `addr`.
async fn raw_get(addr: &str, target: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    c.write_all(
        format!("GET {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer}"))
}

#[tokio::test]
async fn altered_expired_or_misused_urls_are_refused() {
    let f = local().await;
    let s = &f.store;
    s.put("a/secret.txt", Bytes::from_static(b"secret"), "text/plain")
        .await
        .unwrap();
    s.put("a/other.txt", Bytes::from_static(b"other"), "text/plain")
        .await
        .unwrap();
    let good = s
        .presign_get("a/secret.txt", Duration::from_secs(60))
        .unwrap();
    assert_eq!(http().get(&good.url).send().await.unwrap().status(), 200);
    let forbidden = |u: String| async move {
        let r = http().get(&u).send().await.unwrap();
        assert_eq!(r.status(), 403, "{u}");
    };
    // Another signature, another key, another expiry, missing or malformed parameters.
    forbidden(tamper_sig(&good.url)).await;
    forbidden(good.url.replace("secret.txt", "other.txt")).await;
    let (base, query) = good.url.split_once('?').unwrap();
    forbidden(base.to_owned()).await;
    forbidden(format!("{base}?{}", query.split('&').nth(1).unwrap())).await;
    let expires: u64 = query
        .split('&')
        .find_map(|p| p.strip_prefix("expires="))
        .unwrap()
        .parse()
        .unwrap();
    forbidden(good.url.replace(
        &format!("expires={expires}"),
        &format!("expires={}", expires + 3600),
    ))
    .await;
    forbidden(good.url.replace("sig=", "sig=zz")).await;
    // A GET URL does not allow PUT, nor a PUT URL GET.
    let r = http().put(&good.url).body("x").send().await.unwrap();
    assert_eq!(r.status(), 403);
    let put = s
        .presign_put("a/secret.txt", Duration::from_secs(60))
        .unwrap();
    forbidden(put.url.clone()).await;
    assert_eq!(
        s.get("a/secret.txt").await.unwrap().unwrap().bytes,
        Bytes::from_static(b"secret")
    );
    // Paths that leave the key space get nowhere (sent raw: HTTP clients resolve `..`).
    let addr = f
        .config
        .local
        .public_base_url
        .trim_start_matches("http://")
        .trim_end_matches("/blobs")
        .to_owned();
    for path in [
        "../objects/a.d/secret.txt.blob",
        "a/../a/secret.txt",
        "a/./secret.txt",
        "a//secret.txt",
        "%2e%2e/a/secret.txt",
    ] {
        let status = raw_get(&addr, &format!("/blobs/{path}?{query}")).await;
        assert!(matches!(status, 400 | 403 | 404), "{path}: {status}");
    }

    // An expired URL: valid for one second.
    let short = s
        .presign_get("a/secret.txt", Duration::from_secs(1))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    forbidden(short.url).await;
    let r = http()
        .put(
            s.presign_put("a/new", Duration::from_secs(1))
                .unwrap()
                .url
                .replace("sig=", "sig=0"),
        )
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(s.get("a/new").await.unwrap(), None);
}

#[tokio::test]
async fn signed_answers_are_hardened_and_bodies_bounded() {
    let f = local().await;
    let s = &f.store;
    s.put(
        "page.html",
        Bytes::from_static(b"<script>1</script>"),
        "text/html",
    )
    .await
    .unwrap();
    let url = s.presign_get("page.html", Duration::from_secs(60)).unwrap();
    let r = http().get(&url.url).send().await.unwrap();
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["content-security-policy"], "sandbox");
    assert!(r.headers().contains_key("etag"));
    let head = http().head(&url.url).send().await.unwrap();
    assert_eq!(head.status(), 200);

    let put = s.presign_put("up/big", Duration::from_secs(60)).unwrap();
    let r = http()
        .put(&put.url)
        .body(vec![0u8; MAX_OBJECT_BYTES as usize + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(s.get("up/big").await.unwrap(), None);
    // Without a content type: the default.
    let r = http().put(&put.url).body("raw").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let o = s.get("up/big").await.unwrap().unwrap();
    assert_eq!(o.info.content_type, "application/octet-stream");
    assert_eq!(
        r.headers()["etag"].to_str().unwrap(),
        format!("\"{}\"", o.info.etag)
    );
    // A bad content type is the uploader's mistake.
    let r = http()
        .put(&put.url)
        .header("content-type", "nonsense")
        .body("raw")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn stores_on_one_directory_share_the_generated_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = BlobConfig {
        local: LocalConfig {
            dir: dir.path().to_path_buf(),
            public_base_url: "http://127.0.0.1:1/blobs".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let a = LocalStore::new(&config).unwrap();
    let b = LocalStore::new(&config).unwrap();
    use plt_blob::BlobStore;
    let url_a = a.presign_get("k", Duration::from_secs(60)).unwrap();
    let url_b = b.presign_get("k", Duration::from_secs(60)).unwrap();
    // Same key, same second: the same signature (unless the second turned in between).
    let sig = |u: &str| u.rsplit_once("sig=").unwrap().1.to_owned();
    if url_a.expires_at == url_b.expires_at {
        assert_eq!(sig(&url_a.url), sig(&url_b.url));
    }
    // A configured secret is used instead.
    let mut configured = config.clone();
    configured.local.signing_secret = "0123456789abcdef0123456789abcdef".to_owned().into();
    let c = LocalStore::new(&configured).unwrap();
    let url_c = c.presign_get("k", Duration::from_secs(60)).unwrap();
    if url_a.expires_at == url_c.expires_at {
        assert_ne!(sig(&url_a.url), sig(&url_c.url));
    }
}

#[tokio::test]
async fn without_a_public_url_there_are_no_routes_and_no_urls() {
    let dir = tempfile::tempdir().unwrap();
    let store = plt_blob::connect(&BlobConfig {
        local: LocalConfig {
            dir: dir.path().to_path_buf(),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    assert!(store.routes().is_none());
    let e = store.presign_get("k", Duration::from_secs(60)).unwrap_err();
    assert!(matches!(e, BlobError::Backend(_)));
    assert!(e.to_string().contains("public_base_url"), "{e}");
    // The store works otherwise.
    store
        .put("k", Bytes::from_static(b"v"), "text/plain")
        .await
        .unwrap();
    assert!(store.get("k").await.unwrap().is_some());
}

#[tokio::test]
async fn concurrent_writers_leave_one_whole_object() {
    let f = local().await;
    let mut tasks = Vec::new();
    for i in 0..16u8 {
        let s = f.store.clone();
        tasks.push(tokio::spawn(async move {
            let body = Bytes::from(vec![i; 10_000]);
            s.put("shared/obj", body, "application/octet-stream").await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let o = f.store.get("shared/obj").await.unwrap().unwrap();
    assert_eq!(o.bytes.len(), 10_000);
    assert!(o.bytes.iter().all(|b| *b == o.bytes[0]));
    // Writers leave no temporary files visible to listing.
    let page = f.store.list("shared/", None, 100).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    // Deleting the last object of a directory and writing into it again, concurrently.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = f.store.clone();
        tasks.push(tokio::spawn(async move {
            if i % 2 == 0 {
                s.delete("d/e/f").await.map(drop)
            } else {
                s.put("d/e/f", Bytes::from_static(b"x"), "text/plain")
                    .await
                    .map(drop)
            }
        }));
    }
    for t in tasks {
        let r: Result<(), BlobError> = t.await.unwrap();
        r.unwrap();
    }
}
