//! Policy changes travel on the event bus: two authz instances on one database; a grant, a
//! role change and a revoke committed on A are published (`plt.authz.policy.changed.v1`,
//! through A's outbox) and B drops its cached decisions when it sees them — well within a
//! second, where the poller alone (every `staleness_bound / 2` = 2.5 s here) would take up
//! to 2.5 s. On the embedded bus always; on a real Kafka-protocol broker when
//! `PLT_TEST_KAFKA_BROKERS` is set. Also: every change is published with its CloudEvents
//! attributes (`plt.authz.role.granted.v1` carries who got which role).

mod common;

use common::{Backend, Running, Setup, ctx, start_with};
use plt_contracts::authz::{AuthzServiceClient, Permission, Role};
use plt_events::{Bus, Start, memory::MemoryBus};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use uuid::Uuid;

/// Polls B until `has_permission` answers `want`; how long it took (fails past 2 s).
async fn visible_on(b: &Running, user: Uuid, perm: &str, want: bool) -> Duration {
    let start = Instant::now();
    loop {
        if b.core.has_permission(&ctx(), user, perm).await.unwrap() == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "B still answers {} for {perm} after 2s",
            !want
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn policy_changes_reach_the_other_instance(setup: impl Fn() -> Setup, bus_name: &str) {
    let a = start_with(setup()).await.unwrap();
    let b = start_with(setup().beside(&a)).await.unwrap();
    let perm = "evt.things.read".to_owned();
    a.core
        .register_permissions(
            &ctx(),
            "evt",
            vec![Permission {
                name: perm.clone(),
                description: String::new(),
                ..Default::default()
            }],
        )
        .await
        .unwrap();
    let role = a
        .core
        .create_role(
            &a.admin,
            Role {
                name: "evt-readers".into(),
                description: String::new(),
                permissions: vec![perm.clone()],
                built_in: false,
            },
        )
        .await
        .unwrap();
    // B's consumer joins its group from the newest event on: wait until a change reaches
    // it through the bus (a group join takes a few seconds on Kafka) before measuring.
    let joined = Instant::now();
    loop {
        let warm = Uuid::new_v4();
        // Cached as "no" on B first, so that only an invalidation can make it "yes".
        assert!(!b.core.has_permission(&ctx(), warm, &perm).await.unwrap());
        a.core.grant_role(&a.admin, warm, &role.name).await.unwrap();
        let seen = Instant::now();
        while seen.elapsed() < Duration::from_millis(500) {
            if b.core.has_permission(&ctx(), warm, &perm).await.unwrap() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if b.core.has_permission(&ctx(), warm, &perm).await.unwrap()
            && seen.elapsed() < Duration::from_millis(500)
        {
            eprintln!(
                "{bus_name}: B's consumer in place after {:?}",
                joined.elapsed()
            );
            break;
        }
        assert!(
            joined.elapsed() < Duration::from_secs(30),
            "B's consumer never joined"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let mut took = Vec::new();
    for _ in 0..5 {
        let user = Uuid::new_v4();
        // B caches the user's (empty) grants…
        assert!(!b.core.has_permission(&ctx(), user, &perm).await.unwrap());
        // …a grant on A reaches B through the bus.
        a.core.grant_role(&a.admin, user, &role.name).await.unwrap();
        took.push(visible_on(&b, user, &perm, true).await);
        a.core
            .revoke_role(&a.admin, user, &role.name)
            .await
            .unwrap();
        took.push(visible_on(&b, user, &perm, false).await);
    }
    took.sort();
    let max = *took.last().unwrap();
    eprintln!(
        "{bus_name}: grant/revoke visible on B after p50 {:?}, max {max:?} ({} changes)",
        took[took.len() / 2],
        took.len()
    );
    assert!(
        max < Duration::from_secs(1),
        "{bus_name}: a change took {max:?} to reach B"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_reach_the_other_instance_on_the_embedded_bus() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let setup = move || {
        let mut s = Setup::new(Backend::Sqlite);
        s.events = Some(bus.clone());
        s
    };
    policy_changes_reach_the_other_instance(setup, "memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_changes_reach_the_other_instance_on_kafka() {
    let Some(brokers) = std::env::var("PLT_TEST_KAFKA_BROKERS")
        .ok()
        .filter(|b| !b.is_empty())
    else {
        eprintln!("PLT_TEST_KAFKA_BROKERS is not set: skipping the Kafka run");
        return;
    };
    let setup = move || {
        Setup::new(Backend::Sqlite)
            .var("PLT_EVENTS__BACKEND", "kafka")
            .var("PLT_EVENTS__KAFKA__BROKERS", &brokers)
    };
    policy_changes_reach_the_other_instance(setup, "kafka").await;
}

/// A grant is published as `plt.authz.role.granted.v1`, CloudEvents attributes and data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_are_published_as_cloudevents() {
    let bus: Arc<dyn Bus> = Arc::new(MemoryBus::new());
    let mut s = Setup::new(Backend::Sqlite);
    s.events = Some(bus.clone());
    let a = start_with(s).await.unwrap();
    let user = Uuid::new_v4();
    a.core.grant_role(&a.admin, user, "admin").await.unwrap();
    let mut c = bus
        .join(
            "reader",
            &[plt_contracts::events::ROLE_GRANTED.to_owned()],
            Start::Earliest,
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        let got = c.poll(100, Duration::from_millis(200)).await.unwrap();
        if let Some(m) = got
            .into_iter()
            .find(|m| m.key_str() == Some(user.to_string().as_str()))
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "no role.granted event for {user}"
        );
    };
    assert_eq!(found.header("ce_specversion"), Some("1.0"));
    assert_eq!(
        found.header("ce_type"),
        Some(plt_contracts::events::ROLE_GRANTED)
    );
    assert_eq!(found.header("ce_source"), Some("/plt/authz"));
    assert_eq!(
        found.header("ce_subject"),
        Some(format!("user/{user}").as_str())
    );
    assert_eq!(found.header("content-type"), Some("application/json"));
    let data: plt_contracts::events::RoleEvent =
        serde_json::from_slice(&found.value).expect("the data matches its contract");
    assert_eq!(data.user_id, user);
    assert_eq!(data.role, "admin");
    assert_eq!(data.by, a.admin_id.to_string());
    a.stop().await;
}
