//! The host over TLS: HTTP/1.1 and gRPC (health) on one TLS port for clients trusting the
//! test CA, refused for clients that do not; mutual TLS refusing clients without a
//! certificate the client CA signed; worker threads serving TLS; bad files named by key.

#[path = "../src/test_ca.rs"]
mod test_ca;

use plt_kernel::{
    ServiceHost,
    config::ServerConfig,
    tls::{Alpn, ClientTls, ClientTlsConfig, ServerTlsConfig},
};
use std::{net::SocketAddr, path::Path, time::Duration};
use test_ca::TestCa;
use tokio::{sync::oneshot, task::JoinHandle};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const PATIENCE: Duration = Duration::from_secs(10);

fn server_config(tls: ServerTlsConfig) -> ServerConfig {
    ServerConfig {
        shutdown_timeout: Duration::from_secs(5),
        body_limit_bytes: 1024,
        readiness_timeout: Duration::from_millis(300),
        tls,
    }
}

struct Host {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    run: JoinHandle<std::io::Result<()>>,
}

impl Host {
    async fn start(tls: ServerTlsConfig, workers: usize) -> Self {
        let bound = ServiceHost::new("tls-test", &server_config(tls))
            .workers(workers)
            .bind("127.0.0.1:0".parse().unwrap())
            .await
            .expect("bind");
        assert!(bound.is_tls());
        let addr = bound.local_addr();
        let (tx, rx) = oneshot::channel::<()>();
        let run = tokio::spawn(bound.run(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            stop: Some(tx),
            run,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(PATIENCE, &mut self.run)
            .await
            .expect("stops")
            .expect("no panic")
            .expect("stopped cleanly");
    }
}

/// Server TLS with a certificate for 127.0.0.1 and localhost signed by `ca`.
fn server_tls(ca: &TestCa, client_ca: Option<&Path>) -> ServerTlsConfig {
    let files = ca.server("server", &["localhost", "127.0.0.1"]);
    ServerTlsConfig {
        cert_path: files.cert,
        key_path: files.key,
        client_ca_path: client_ca.map(Path::to_path_buf).unwrap_or_default(),
    }
}

fn trusting(ca: &TestCa) -> ClientTls {
    ClientTls::load(
        &ClientTlsConfig {
            ca_path: ca.ca_file(),
            ..Default::default()
        },
        "client_tls",
    )
    .expect("client TLS")
}

fn http(tls: &ClientTls) -> reqwest::Client {
    tls.http_client_builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .unwrap()
}

async fn grpc_health(tls: &ClientTls, addr: SocketAddr) -> Result<ServingStatus, String> {
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .timeout(PATIENCE)
        .connect_with_connector(tls.connector(Alpn::H2))
        .await
        .map_err(|e| format!("connect: {e:?}"))?;
    let resp = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|e| format!("check: {e:?}"))?;
    Ok(resp.into_inner().status())
}

#[tokio::test]
async fn http1_and_grpc_share_the_tls_port_for_clients_trusting_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "platform");
    let host = Host::start(server_tls(&ca, None), 1).await;
    let tls = trusting(&ca);

    let resp = http(&tls).get(host.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);

    assert_eq!(
        grpc_health(&tls, host.addr).await,
        Ok(ServingStatus::Serving)
    );

    // A client trusting only the system's roots refuses the server's certificate.
    let untrusting = ClientTls::system();
    let err = http(&untrusting)
        .get(host.url("/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert!(
        format!("{err:?}").contains("UnknownIssuer"),
        "an unknown issuer: {err:?}"
    );
    assert!(grpc_health(&untrusting, host.addr).await.is_err());

    // Another CA's client does not trust it either.
    let other = TestCa::new(dir.path(), "other");
    assert!(
        http(&trusting(&other))
            .get(host.url("/healthz"))
            .send()
            .await
            .is_err()
    );

    // Plaintext on the TLS port gets no answer.
    let plain = plt_kernel::tls::http_client_builder()
        .no_proxy()
        .timeout(PATIENCE)
        .build()
        .unwrap();
    assert!(
        plain
            .get(format!("http://{}/healthz", host.addr))
            .send()
            .await
            .is_err()
    );

    // The server still serves after all those failed handshakes.
    let resp = http(&tls).get(host.url("/readyz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    host.stop().await;
}

#[tokio::test]
async fn worker_threads_serve_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "platform");
    let host = Host::start(server_tls(&ca, None), 2).await;
    let tls = trusting(&ca);
    let client = http(&tls);
    for _ in 0..8 {
        // A new connection each time, so both workers' sockets take some.
        let resp = http(&tls).get(host.url("/healthz")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
    }
    let resp = client.get(host.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        grpc_health(&tls, host.addr).await,
        Ok(ServingStatus::Serving)
    );
    host.stop().await;
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_the_client_ca_signed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "platform");
    let clients = TestCa::new(dir.path(), "clients");
    let host = Host::start(server_tls(&ca, Some(&clients.ca_file())), 1).await;

    // Trusting the server, but no certificate of its own: refused.
    let anonymous = trusting(&ca);
    let err = http(&anonymous)
        .get(host.url("/healthz"))
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("CertificateRequired")
            || format!("{err:?}").contains("HandshakeFailure"),
        "refused for want of a certificate: {err:?}"
    );
    assert!(grpc_health(&anonymous, host.addr).await.is_err());

    // A certificate signed by another CA: refused.
    let stranger_ca = TestCa::new(dir.path(), "stranger");
    let stranger = stranger_ca.client("stranger", "mallory");
    let stranger = ClientTls::load(
        &ClientTlsConfig {
            ca_path: ca.ca_file(),
            cert_path: stranger.cert,
            key_path: stranger.key,
        },
        "client_tls",
    )
    .unwrap();
    assert!(
        http(&stranger)
            .get(host.url("/healthz"))
            .send()
            .await
            .is_err()
    );
    assert!(grpc_health(&stranger, host.addr).await.is_err());

    // A certificate the client CA signed: admitted, over HTTP/1.1 and gRPC.
    let identity = clients.client("identity", "identity");
    let admitted = ClientTls::load(
        &ClientTlsConfig {
            ca_path: ca.ca_file(),
            cert_path: identity.cert,
            key_path: identity.key,
        },
        "client_tls",
    )
    .unwrap();
    let resp = http(&admitted)
        .get(host.url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        grpc_health(&admitted, host.addr).await,
        Ok(ServingStatus::Serving)
    );
    host.stop().await;
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let old_ca = TestCa::new(dir.path(), "old");
    let new_ca = TestCa::new(dir.path(), "new");
    let host = Host::start(server_tls(&old_ca, None), 1).await;
    let (old, new) = (trusting(&old_ca), trusting(&new_ca));
    assert_eq!(
        http(&old)
            .get(host.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // An unusable renewal (a key that is not PEM) is not taken: the old one stays.
    let renewed = new_ca.server("renewed", &["localhost", "127.0.0.1"]);
    let served = dir.path().join("server-key.pem");
    std::fs::write(&served, "half-written").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // (A fresh client each time: a session resumed from before would skip the certificate.)
    assert_eq!(
        http(&trusting(&old_ca))
            .get(host.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // The renewal written in place (as certificate managers do): served within a second or so.
    std::fs::copy(&renewed.cert, dir.path().join("server.pem")).unwrap();
    std::fs::copy(&renewed.key, &served).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match http(&new).get(host.url("/healthz")).send().await {
            Ok(r) if r.status() == 200 => break,
            other => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the renewed certificate is served: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    // A fresh client (no session to resume from before the renewal) trusting only the old
    // CA now refuses the server.
    let old_only = trusting(&old_ca);
    assert!(
        http(&old_only)
            .get(host.url("/healthz"))
            .send()
            .await
            .is_err()
    );
    host.stop().await;
}

async fn bind_error(tls: ServerTlsConfig) -> String {
    match ServiceHost::new("tls-test", &server_config(tls))
        .bind("127.0.0.1:0".parse().unwrap())
        .await
    {
        Ok(_) => panic!("bound with unusable TLS settings"),
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
            e.to_string()
        }
    }
}

#[tokio::test]
async fn unusable_tls_settings_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "platform");
    let good = ca.server("server", &["127.0.0.1"]);
    let other = ca.server("other", &["127.0.0.1"]);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM at all").unwrap();

    let e = bind_error(ServerTlsConfig {
        cert_path: dir.path().join("missing.pem"),
        key_path: good.key.clone(),
        ..Default::default()
    })
    .await;
    assert!(
        e.contains("server.tls.cert_path") && e.contains("missing.pem"),
        "{e}"
    );

    let e = bind_error(ServerTlsConfig {
        cert_path: garbage.clone(),
        key_path: good.key.clone(),
        ..Default::default()
    })
    .await;
    assert!(e.contains("server.tls.cert_path"), "{e}");

    let e = bind_error(ServerTlsConfig {
        cert_path: good.cert.clone(),
        key_path: garbage.clone(),
        ..Default::default()
    })
    .await;
    assert!(e.contains("server.tls.key_path"), "{e}");

    // A key of another certificate.
    let e = bind_error(ServerTlsConfig {
        cert_path: good.cert.clone(),
        key_path: other.key.clone(),
        ..Default::default()
    })
    .await;
    assert!(e.contains("server.tls.key_path"), "{e}");

    let e = bind_error(ServerTlsConfig {
        cert_path: good.cert.clone(),
        ..Default::default()
    })
    .await;
    assert!(e.contains("server.tls.key_path"), "{e}");

    let e = bind_error(ServerTlsConfig {
        client_ca_path: ca.ca_file(),
        ..Default::default()
    })
    .await;
    assert!(e.contains("server.tls.client_ca_path"), "{e}");

    let e = bind_error(ServerTlsConfig {
        cert_path: good.cert.clone(),
        key_path: good.key.clone(),
        client_ca_path: garbage.clone(),
    })
    .await;
    assert!(e.contains("server.tls.client_ca_path"), "{e}");

    // The client side names its keys too.
    let e = ClientTls::load(
        &ClientTlsConfig {
            ca_path: garbage,
            ..Default::default()
        },
        "client_tls",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("client_tls.ca_path"), "{e}");
    let e = ClientTls::load(
        &ClientTlsConfig {
            cert_path: good.cert.clone(),
            key_path: other.key,
            ..Default::default()
        },
        "client_tls",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("client_tls.key_path"), "{e}");
}
