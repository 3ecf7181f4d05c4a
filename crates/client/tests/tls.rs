//! Calls through the client factory to an instance that serves TLS (registered with
//! `scheme: https`), over gRPC and HTTP, with mutual TLS: admitted with this process's
//! client certificate (`client_tls`), refused without it. One test: the outbound TLS is
//! per process.

use plt_client::{ClientConfig, ClientFactory, Protocol};
use plt_contracts::{
    ErrorCode, RequestContext,
    identity::{IdentityServiceClient, grpc::IdentityGrpcServer},
    testsuite::fakes::FakeIdentity,
};
use plt_kernel::{
    ServiceHost,
    config::ServerConfig,
    testing::TestCa,
    tls::{ClientTls, ClientTlsConfig, ServerTlsConfig, set_client},
};
use plt_registry::{HealthSpec, Instance, SCHEME_KEY, ServiceRegistry, memory::MemoryRegistry};
use std::{sync::Arc, time::Duration};

fn config(protocol: Protocol) -> ClientConfig {
    ClientConfig {
        protocol,
        timeout: Duration::from_secs(5),
        max_attempts: 1,
        retry_budget_ratio: 0.2,
        breaker_failures: 100,
        breaker_open_for: Duration::from_millis(100),
    }
}

#[tokio::test]
async fn factory_clients_reach_an_https_instance_with_mutual_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "platform");
    let server = ca.server("identity", &["127.0.0.1"]);
    let users = FakeIdentity::default();
    let alice = users.add_user("alice@example.com", "pw");
    let svc: Arc<dyn IdentityServiceClient> = Arc::new(users.clone());
    let host = ServiceHost::new(
        "identity-tls",
        &ServerConfig {
            shutdown_timeout: Duration::from_millis(200),
            body_limit_bytes: 1 << 20,
            readiness_timeout: Duration::from_secs(1),
            tls: ServerTlsConfig {
                cert_path: server.cert,
                key_path: server.key,
                // Services present certificates of the same CA.
                client_ca_path: ca.ca_file(),
            },
        },
    )
    .grpc(IdentityGrpcServer::new(svc.clone()))
    .http(plt_contracts::identity::http::routes(svc))
    .bind("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let addr = host.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(host.run(async move {
        let _ = stopped.await;
    }));
    let registry = MemoryRegistry::new();
    let _registration = registry
        .register(
            Instance {
                id: "identity-tls-1".into(),
                service: "identity".into(),
                address: addr.to_string(),
                version: String::new(),
                tags: vec![],
                metadata: [(SCHEME_KEY.to_owned(), "https".to_owned())].into(),
            },
            HealthSpec::default(),
        )
        .await
        .unwrap();
    let registry: Arc<dyn ServiceRegistry> = Arc::new(registry);
    let ctx = RequestContext::new();

    // This process trusts the platform CA and presents a certificate it signed.
    let me = ca.client("auth", "auth");
    set_client(
        ClientTls::load(
            &ClientTlsConfig {
                ca_path: ca.ca_file(),
                cert_path: me.cert,
                key_path: me.key,
            },
            "client_tls",
        )
        .unwrap(),
    );
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let client = ClientFactory::new(registry.clone())
            .identity(&config(protocol))
            .await
            .unwrap();
        let found = client.get_user(&ctx, alice.id).await.unwrap_or_else(|e| {
            panic!("{protocol:?} over TLS: {e}");
        });
        assert_eq!(found.email, "alice@example.com");
    }

    // Without a client certificate: refused by the server, whatever the protocol.
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
    for protocol in [Protocol::Grpc, Protocol::Http] {
        let client = ClientFactory::new(registry.clone())
            .identity(&config(protocol))
            .await
            .unwrap();
        let e = client.get_user(&ctx, alice.id).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unavailable, "{protocol:?}: {e}");
    }

    // Not trusting the server's CA: refused by this side.
    set_client(ClientTls::system());
    let client = ClientFactory::new(registry.clone())
        .identity(&config(Protocol::Grpc))
        .await
        .unwrap();
    let e = client.get_user(&ctx, alice.id).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable, "{e}");

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
