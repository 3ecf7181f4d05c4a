//! Audit started by the runtime with `server.tls` and mutual TLS (`client_ca_path`), and
//! `client_tls` presenting a certificate of the platform CA: registered as `https`, the
//! contract suite passes over gRPC and HTTP, directly and through the client factory; a
//! client without a certificate is refused. (The outbound TLS is per process, so this
//! binary holds this one test.)

mod common;

use common::Backend;
use plt_client::{ClientConfig, ClientFactory, Protocol};
use plt_contracts::{
    audit::{AuditServiceClient, grpc::AuditGrpcClient, http::AuditHttpClient},
    testsuite::audit::{AuditFixture, run_all},
};
use plt_kernel::{
    testing::TestCa,
    tls::{ClientTls, ClientTlsConfig, set_client},
};
use std::sync::Arc;

#[tokio::test]
async fn the_contract_suite_passes_over_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "platform");
    let server = ca.server("audit", &["localhost", "127.0.0.1"]);
    let me = ca.client("authz", "authz");
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    let (cert, key, ca_file) = (path(&server.cert), path(&server.key), path(&ca.ca_file()));
    let (my_cert, my_key) = (path(&me.cert), path(&me.key));
    let vars = [
        ("PLT_SERVER__TLS__CERT_PATH", cert.as_str()),
        ("PLT_SERVER__TLS__KEY_PATH", key.as_str()),
        ("PLT_SERVER__TLS__CLIENT_CA_PATH", ca_file.as_str()),
        ("PLT_CLIENT_TLS__CA_PATH", ca_file.as_str()),
        ("PLT_CLIENT_TLS__CERT_PATH", my_cert.as_str()),
        ("PLT_CLIENT_TLS__KEY_PATH", my_key.as_str()),
    ];
    for via in ["grpc", "http", "factory grpc", "factory http"] {
        let svc = common::start_with(Backend::Sqlite, &vars).await.unwrap();
        assert!(svc.url().starts_with("https://"), "{}", svc.url());
        let found = svc.registry.discover("audit").await.unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].scheme(), "https");
        let client: Arc<dyn AuditServiceClient> = match via {
            "grpc" => Arc::new(AuditGrpcClient::connect_lazy(&svc.url()).unwrap()),
            "http" => Arc::new(AuditHttpClient::new(
                plt_kernel::tls::http_client(),
                &svc.url(),
            )),
            _ => ClientFactory::new(svc.registry.clone())
                .with_credentials(common::SERVICES.credentials("authz"))
                .audit(&ClientConfig {
                    protocol: if via == "factory grpc" {
                        Protocol::Grpc
                    } else {
                        Protocol::Http
                    },
                    ..Default::default()
                })
                .await
                .unwrap(),
        };
        let fixture = AuditFixture {
            service: if via.starts_with("factory") {
                common::auditor_ctx()
            } else {
                common::ctx()
            },
            client,
            max_metadata_bytes: svc.cfg.service.max_metadata_bytes,
            max_page_size: svc.cfg.service.max_page_size,
        };
        run_all(&fixture).await;

        if via == "factory http" {
            // The same process without its certificate: refused during the handshake.
            set_client(
                ClientTls::load(
                    &ClientTlsConfig {
                        ca_path: ca.ca_file(),
                        ..Default::default()
                    },
                    "client_tls",
                )
                .unwrap(),
            );
            let refused = plt_kernel::tls::http_client()
                .get(svc.svc.url("/healthz"))
                .send()
                .await;
            assert!(refused.is_err(), "{refused:?}");
        } else {
            let healthz = plt_kernel::tls::http_client()
                .get(svc.svc.url("/healthz"))
                .send()
                .await
                .unwrap();
            assert_eq!(healthz.status(), 200);
        }
        svc.stop().await;
    }
}
