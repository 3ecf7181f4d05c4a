//! A registered instance is discoverable only while its `/readyz` passes: identity on real
//! PostgreSQL behind a fault proxy leaves the registry when the database is refused (its
//! database gate fails readiness) and comes back by itself when the database does.

use identity_service::Identity;
use plt_registry::{ServiceRegistry, memory::MemoryRegistry};
use plt_runtime::testing::{Backend, TestOptions, TestService};
use plt_testkit::{FaultProxy, Mode};
use std::{net::ToSocketAddrs, sync::Arc, time::Duration};

async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ready(addr: std::net::SocketAddr) -> u16 {
    plt_kernel::tls::http_client()
        .get(format!("http://{addr}/readyz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_instance_leaves_discovery_while_not_ready_and_comes_back() {
    let Some(url) = std::env::var("PLT_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("SKIPPED registration following readiness: PLT_TEST_POSTGRES_URL is not set");
        return;
    };
    let mut proxied = reqwest::Url::parse(&url).expect("PLT_TEST_POSTGRES_URL is a URL");
    let upstream = (
        proxied.host_str().unwrap().to_owned(),
        proxied.port().unwrap_or(5432),
    )
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = FaultProxy::start("postgres", upstream).await.unwrap();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied.set_port(Some(proxy.addr().port())).unwrap();
    let registry = MemoryRegistry::new();
    let svc = TestService::start_with::<Identity>(
        Backend::Postgres,
        TestOptions {
            vars: vec![
                ("PLT_DATABASE__URL".into(), proxied.to_string()),
                ("PLT_REGISTRY__TTL".into(), "1s".into()),
            ],
            registry: Some(Arc::new(registry.clone())),
            ..Default::default()
        },
    )
    .await
    .expect("PLT_TEST_POSTGRES_URL is set");
    let found = async || registry.discover("identity").await.unwrap().len();
    eventually("registered", Duration::from_secs(3), async || {
        found().await == 1
    })
    .await;

    proxy.set(Mode::Refuse);
    eventually("/readyz fails", Duration::from_secs(3), async || {
        ready(svc.addr).await == 503
    })
    .await;
    eventually(
        "the unready instance left discovery",
        Duration::from_secs(2),
        async || found().await == 0,
    )
    .await;
    // Heartbeats go on (the process is alive) but do not bring it back while unready.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(found().await, 0, "discovered while /readyz fails");

    proxy.set(Mode::Pass);
    eventually("/readyz passes again", Duration::from_secs(5), async || {
        ready(svc.addr).await == 200
    })
    .await;
    eventually("back in discovery", Duration::from_secs(2), async || {
        found().await == 1
    })
    .await;
    svc.stop().await;
}
