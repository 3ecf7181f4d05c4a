//! The registry contract suite, run against the in-memory registry, Consul (the in-repo API
//! server), and a real etcd when `PLT_TEST_ETCD_URL` is set; plus static and Kubernetes DNS.

use plt_registry::{
    HealthSpec, Instance, RegistryError, ServiceRegistry, consul::ConsulRegistry,
    consul::testserver::ConsulTestServer, etcd::EtcdRegistry, kubernetes::KubernetesDnsRegistry,
    memory::MemoryRegistry, static_registry::StaticRegistry,
};
use std::{collections::BTreeMap, time::Duration};

fn instance(service: &str, n: u16) -> Instance {
    Instance {
        id: format!("{service}-{n}"),
        service: service.to_owned(),
        address: format!("127.0.0.1:{}", 9000 + n),
        version: "1.2.3".into(),
        tags: vec!["grpc".into(), "http".into()],
        metadata: BTreeMap::from([
            ("protocols".to_owned(), "grpc,http".to_owned()),
            (
                "routes".to_owned(),
                "/v1/users,/v1/password-reset".to_owned(),
            ),
        ]),
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `death_bound`: how long a crashed instance may stay visible (its TTL plus the backend's
/// expiry granularity).
async fn suite(r: &dyn ServiceRegistry, death_bound: Duration) {
    let svc = unique("identity");
    let health = HealthSpec {
        ttl: Duration::from_secs(1),
        ready: None,
    };
    assert!(r.discover(&svc).await.unwrap().is_empty());
    let mut watch = r.watch(&svc).await.unwrap();
    assert!(watch.borrow().is_empty());

    let a = r.register(instance(&svc, 1), health.clone()).await.unwrap();
    let b = r.register(instance(&svc, 2), health.clone()).await.unwrap();
    eventually(
        "both instances discovered",
        Duration::from_secs(3),
        async || r.discover(&svc).await.unwrap().len() == 2,
    )
    .await;
    let found = r.discover(&svc).await.unwrap();
    assert_eq!(
        found,
        vec![instance(&svc, 1), instance(&svc, 2)],
        "metadata must round-trip"
    );
    // Other services are not mixed in.
    assert!(r.discover(&unique("other")).await.unwrap().is_empty());

    // The watch sees the set.
    tokio::time::timeout(Duration::from_secs(5), watch.wait_for(|s| s.len() == 2))
        .await
        .expect("watch saw both")
        .unwrap();

    // Heartbeats keep instances alive past their TTL.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        r.discover(&svc).await.unwrap().len(),
        2,
        "heartbeats did not keep instances alive"
    );

    // Graceful deregistration.
    a.deregister().await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), watch.wait_for(|s| s.len() == 1))
        .await
        .expect("watch saw the deregistration")
        .unwrap();
    assert_eq!(r.discover(&svc).await.unwrap(), vec![instance(&svc, 2)]);

    // A crash: heartbeats stop without deregistering; the instance goes within the bound.
    let crashed_at = tokio::time::Instant::now();
    b.abandon();
    tokio::time::timeout(
        death_bound + Duration::from_secs(1),
        watch.wait_for(|s| s.is_empty()),
    )
    .await
    .expect("crashed instance left the watch")
    .unwrap();
    assert!(crashed_at.elapsed() <= death_bound + Duration::from_secs(1));
    assert!(r.discover(&svc).await.unwrap().is_empty());

    // Invalid instances are refused.
    let mut bad = instance(&svc, 3);
    bad.address = "no-port".into();
    assert!(matches!(
        r.register(bad, health.clone()).await,
        Err(RegistryError::Invalid(_))
    ));
    let mut bad = instance(&svc, 4);
    bad.id = "has space".into();
    assert!(matches!(
        r.register(bad, health).await,
        Err(RegistryError::Invalid(_))
    ));
}

/// Registrations follow readiness: an instance whose readiness fails leaves discovery (and
/// is not brought back by its heartbeats), returns when ready again, and one registered not
/// ready is found only once it is ready. `bound`: how long each change may take to show.
async fn readiness_suite(r: &dyn ServiceRegistry, bound: Duration) {
    let svc = unique("ready");
    let (ready_a, rx_a) = tokio::sync::watch::channel(true);
    let (ready_b, rx_b) = tokio::sync::watch::channel(false);
    let health = |rx| HealthSpec {
        ttl: Duration::from_secs(1),
        ready: Some(rx),
    };
    let mut watch = r.watch(&svc).await.unwrap();
    let a = r.register(instance(&svc, 1), health(rx_a)).await.unwrap();
    let b = r.register(instance(&svc, 2), health(rx_b)).await.unwrap();
    let only_a = [format!("{svc}-1")];
    eventually("the ready instance is discovered", bound, async || {
        ids(r, &svc).await == only_a
    })
    .await;
    // The one not ready stays out, although it heartbeats.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        ids(r, &svc).await,
        only_a,
        "an unready instance was discovered"
    );

    // Readiness fails: out of discovery and of watches, and kept out past the TTL.
    ready_a.send_replace(false);
    eventually("the failing instance left", bound, async || {
        ids(r, &svc).await.is_empty()
    })
    .await;
    tokio::time::timeout(bound, watch.wait_for(|s| s.is_empty()))
        .await
        .expect("the watch saw it leave")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        ids(r, &svc).await.is_empty(),
        "heartbeats brought an unready instance back"
    );

    // Ready again (and the other one ready at last): both come back.
    ready_a.send_replace(true);
    ready_b.send_replace(true);
    eventually("both instances are back", bound, async || {
        ids(r, &svc).await.len() == 2
    })
    .await;
    tokio::time::timeout(bound, watch.wait_for(|s| s.len() == 2))
        .await
        .expect("the watch saw them back")
        .unwrap();
    // Heartbeats keep them.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(ids(r, &svc).await.len(), 2);

    // Deregistering works in either state.
    ready_b.send_replace(false);
    eventually("b left", bound, async || ids(r, &svc).await == only_a).await;
    b.deregister().await.unwrap();
    a.deregister().await.unwrap();
    assert!(ids(r, &svc).await.is_empty());
}

#[tokio::test]
async fn memory() {
    suite(&MemoryRegistry::new(), Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn memory_follows_readiness() {
    readiness_suite(&MemoryRegistry::new(), Duration::from_millis(500)).await;
}

#[tokio::test]
async fn consul_follows_readiness() {
    let (_server, url) = ConsulTestServer::start().await.unwrap();
    let r = ConsulRegistry::new(plt_kernel::tls::http_client(), &url);
    readiness_suite(&r, Duration::from_millis(1000)).await;
}

#[tokio::test]
async fn etcd_follows_readiness() {
    let Some(url) = etcd_url() else {
        eprintln!("SKIPPED etcd readiness: PLT_TEST_ETCD_URL is not set");
        return;
    };
    let prefix = format!("/plt-test/{}", uuid::Uuid::new_v4().simple());
    let r = EtcdRegistry::new(plt_kernel::tls::http_client(), &url, &prefix);
    readiness_suite(&r, Duration::from_millis(1500)).await;
}

#[tokio::test]
async fn consul_api() {
    let (server, url) = ConsulTestServer::start().await.unwrap();
    let mut r = ConsulRegistry::new(plt_kernel::tls::http_client(), &url);
    r.deregister_critical_after = Duration::from_secs(1);
    suite(&r, Duration::from_millis(1500)).await;
    // The crashed instance was also reaped after DeregisterCriticalServiceAfter.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(server.registered().is_empty(), "{:?}", server.registered());
}

#[tokio::test]
async fn etcd() {
    let Some(url) = std::env::var("PLT_TEST_ETCD_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("SKIPPED etcd registry suite: PLT_TEST_ETCD_URL is not set");
        return;
    };
    let prefix = format!("/plt-test/{}", uuid::Uuid::new_v4().simple());
    let r = EtcdRegistry::new(plt_kernel::tls::http_client(), &url, &prefix);
    // etcd expires leases on its own schedule (TTL, checked about every 500 ms).
    suite(&r, Duration::from_millis(2000)).await;
}

#[tokio::test]
async fn etcd_unreachable_keeps_the_last_known_set() {
    // A watch whose registry goes away keeps its last set (no endpoint: refused at once).
    let r = EtcdRegistry::new(plt_kernel::tls::http_client(), "http://127.0.0.1:1", "/plt");
    assert!(matches!(
        r.discover("x").await,
        Err(RegistryError::Unavailable(_))
    ));
}

#[tokio::test]
async fn static_lists_configured_instances() {
    let r = StaticRegistry::new(&BTreeMap::from([(
        "identity".to_owned(),
        vec!["127.0.0.1:8082".to_owned(), "10.0.0.2:8082".to_owned()],
    )]))
    .unwrap();
    let found = r.discover("identity").await.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].address, "127.0.0.1:8082");
    assert!(r.discover("auth").await.unwrap().is_empty());
    assert_eq!(r.watch("identity").await.unwrap().borrow().len(), 2);
    assert!(
        StaticRegistry::new(&BTreeMap::from([("x".to_owned(), vec!["nope".to_owned()])])).is_err()
    );
}

#[tokio::test]
async fn kubernetes_dns_resolves_a_headless_name() {
    // `localhost` stands in for `<service>.<namespace>.svc.cluster.local`.
    let r = KubernetesDnsRegistry::new("localhost", 8082);
    let found = r.discover("identity").await.unwrap();
    assert!(!found.is_empty());
    assert!(
        found
            .iter()
            .all(|i| i.address.ends_with(":8082") && i.service == "identity")
    );
    let r = KubernetesDnsRegistry::new("{service}.invalid", 8082);
    assert!(matches!(
        r.discover("identity").await,
        Err(RegistryError::Unavailable(_))
    ));
}

/// The instance ids `r` finds for `svc`.
async fn ids(r: &dyn ServiceRegistry, svc: &str) -> Vec<String> {
    r.discover(svc)
        .await
        .map(|v| v.into_iter().map(|i| i.id).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn consul_registration_comes_back_after_the_agent_forgot_it() {
    let (server, url) = ConsulTestServer::start().await.unwrap();
    let r = ConsulRegistry::new(plt_kernel::tls::http_client(), &url);
    let svc = unique("identity");
    let health = HealthSpec {
        ttl: Duration::from_secs(1),
        ready: None,
    };
    let reg = r.register(instance(&svc, 1), health).await.unwrap();
    eventually("registered", Duration::from_secs(3), async || {
        ids(&r, &svc).await == [format!("{svc}-1")]
    })
    .await;
    server.forget_all();
    assert!(ids(&r, &svc).await.is_empty());
    eventually(
        "re-registered after the agent lost it",
        Duration::from_secs(3),
        async || ids(&r, &svc).await == [format!("{svc}-1")],
    )
    .await;
    reg.deregister().await.unwrap();
    assert!(ids(&r, &svc).await.is_empty());
}

fn etcd_url() -> Option<String> {
    std::env::var("PLT_TEST_ETCD_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// A raw etcd v3 JSON call.
async fn etcd_call(url: &str, path: &str, body: serde_json::Value) -> serde_json::Value {
    plt_kernel::tls::http_client()
        .post(format!("{url}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn etcd_registration_comes_back_after_its_lease_or_key_is_gone() {
    use base64::Engine as _;
    let Some(url) = etcd_url() else {
        eprintln!("SKIPPED etcd re-registration: PLT_TEST_ETCD_URL is not set");
        return;
    };
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let prefix = format!("/plt-test/{}", uuid::Uuid::new_v4().simple());
    let r = EtcdRegistry::new(plt_kernel::tls::http_client(), &url, &prefix);
    let svc = unique("identity");
    let health = HealthSpec {
        ttl: Duration::from_secs(1),
        ready: None,
    };
    let reg = r.register(instance(&svc, 1), health).await.unwrap();
    let key = format!("{prefix}/{svc}/{svc}-1");
    let expected = [format!("{svc}-1")];

    // The lease expires (revoked here, as an etcd outage longer than the TTL would).
    let kv = etcd_call(&url, "/v3/kv/range", serde_json::json!({"key": b64(&key)})).await;
    let lease = kv["kvs"][0]["lease"].as_str().unwrap().to_owned();
    etcd_call(&url, "/v3/lease/revoke", serde_json::json!({"ID": lease})).await;
    assert!(
        ids(&r, &svc).await.is_empty(),
        "the key went with its lease"
    );
    eventually(
        "re-registered under a new lease",
        Duration::from_secs(3),
        async || ids(&r, &svc).await == expected,
    )
    .await;
    let kv = etcd_call(&url, "/v3/kv/range", serde_json::json!({"key": b64(&key)})).await;
    assert_ne!(kv["kvs"][0]["lease"].as_str().unwrap(), lease);

    // The key is deleted while the lease lives on.
    etcd_call(
        &url,
        "/v3/kv/deleterange",
        serde_json::json!({"key": b64(&key)}),
    )
    .await;
    assert!(ids(&r, &svc).await.is_empty());
    eventually(
        "re-registered after the key was removed",
        Duration::from_secs(3),
        async || ids(&r, &svc).await == expected,
    )
    .await;
    reg.deregister().await.unwrap();
    assert!(ids(&r, &svc).await.is_empty());
}

/// A private etcd on free ports that the test can stop and start again with its data.
struct OwnEtcd {
    dir: tempfile::TempDir,
    client: u16,
    peer: u16,
    child: Option<tokio::process::Child>,
}

impl OwnEtcd {
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn start() -> Self {
        let mut e = Self {
            dir: tempfile::tempdir().unwrap(),
            client: Self::free_port(),
            peer: Self::free_port(),
            child: None,
        };
        e.resume().await;
        e
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client)
    }

    async fn resume(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let child = tokio::process::Command::new("etcd")
            .args(["--name", "t", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .arg("--initial-cluster")
            .arg(format!("t={peer}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("etcd on PATH (Debian's etcd-server) when PLT_TEST_ETCD_URL is set");
        self.child = Some(child);
        let url = self.url();
        eventually("etcd up", Duration::from_secs(20), async || {
            plt_kernel::tls::http_client()
                .post(format!("{url}/v3/kv/range"))
                .json(&serde_json::json!({"key": "AA=="}))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
    }

    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().await.unwrap();
        }
    }
}

#[tokio::test]
async fn etcd_outage_keeps_registrations_and_watches() {
    if etcd_url().is_none() {
        eprintln!("SKIPPED etcd outage: PLT_TEST_ETCD_URL is not set");
        return;
    }
    let mut etcd = OwnEtcd::start().await;
    let r = EtcdRegistry::new(plt_kernel::tls::http_client(), &etcd.url(), "/plt")
        .with_grace(Duration::from_secs(3));
    let svc = unique("identity");
    let health = HealthSpec {
        ttl: Duration::from_secs(1),
        ready: None,
    };
    let reg = r.register(instance(&svc, 1), health).await.unwrap();
    let watch = r.watch(&svc).await.unwrap();
    let expected = vec![format!("{svc}-1")];
    let seen =
        |w: &plt_registry::Watch| w.borrow().iter().map(|i| i.id.clone()).collect::<Vec<_>>();
    eventually("watched", Duration::from_secs(3), async || {
        seen(&watch) == expected
    })
    .await;

    // Down for several TTLs: the watch keeps the last set throughout.
    etcd.stop().await;
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(seen(&watch), expected, "kept while etcd is down");
    }
    etcd.resume().await;
    // Back: the registration is (again) in etcd, and the watch never went empty.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(seen(&watch), expected, "kept after etcd came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ids(&r, &svc).await, expected, "registered in etcd again");
    reg.deregister().await.unwrap();
    eventually("deregistered", Duration::from_secs(3), async || {
        seen(&watch).is_empty()
    })
    .await;
}
