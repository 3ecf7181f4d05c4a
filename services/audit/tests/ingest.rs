//! Audit ingests records from the bus: services' outbox rows published as
//! `plt.audit.record.v1` (what `Context::audit_destination` does with a bus) are recorded by
//! audit's consumer group through the group-commit writer; a repeat (the same record id)
//! writes nothing twice; a record audit refuses ends in `plt.dlq.audit` and the rest go on.
//! On the embedded bus always, on a real broker when `PLT_TEST_KAFKA_BROKERS` is set.

mod common;

use common::{SERVICES, ctx};
use plt_contracts::audit::{AuditQuery, AuditServiceClient, NewAuditEntry, Outcome};
use plt_events::{
    Bus, Start,
    config::KafkaConfig,
    consumer::dead_letter_topic,
    kafka::KafkaBus,
    memory::MemoryBus,
    outbox::{AUDIT_RECORD, TopicDestination},
};
use plt_outbox::{Delivery, Destination};
use plt_runtime::testing::{Backend, TestOptions, TestService};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};

fn record(actor: &str, action: &str) -> serde_json::Value {
    serde_json::to_value(NewAuditEntry {
        id: None,
        actor: actor.into(),
        action: action.into(),
        resource: "user/x".into(),
        outcome: Outcome::Success,
        metadata: serde_json::Map::new(),
        source_ip: String::new(),
        user_agent: String::new(),
        trace_id: String::new(),
    })
    .unwrap()
}

fn delivery(payload: serde_json::Value) -> Delivery {
    Delivery {
        id: uuid::Uuid::now_v7(),
        topic: "audit".into(),
        payload,
        created_at: chrono::Utc::now(),
        attempts: 1,
    }
}

async fn entries(core: &Arc<dyn AuditServiceClient>, actor: &str) -> usize {
    core.query(
        &ctx(),
        AuditQuery {
            actor: Some(actor.into()),
            page_size: 1000,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .entries
    .len()
}

async fn ingest(bus: Arc<dyn Bus>, vars: &[(&str, &str)]) {
    plt_kernel::telemetry::init_for_tests();
    let mut opts = TestOptions::vars(vars);
    opts.authority = Some(SERVICES.clone());
    if bus.backend() == "memory" {
        opts.events = Some(bus.clone());
    }
    let svc = TestService::start_with::<audit_service::Audit>(Backend::Sqlite, opts)
        .await
        .unwrap();
    svc.authz.grant(common::AUDITOR, "audit.logs.read");
    let core = svc.get::<Arc<dyn AuditServiceClient>>().unwrap();
    let actor = format!("svc-{}", uuid::Uuid::now_v7().simple());
    let dest = TopicDestination::new(bus.clone(), AUDIT_RECORD, "identity");
    let batch: Vec<Delivery> = (0..50)
        .map(|i| delivery(record(&actor, &format!("test.thing{i}"))))
        .collect();
    for r in dest.deliver(&batch).await {
        r.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while entries(&core, &actor).await < 50 {
        assert!(Instant::now() < deadline, "{}: 50 records", bus.backend());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The same records again (a relay that died before deleting its rows): nothing new.
    // A refused one (an empty action) goes to the dead-letter topic; a good one after it
    // is still recorded.
    let mut again = batch[..10].to_vec();
    again.push(delivery(record(&actor, "")));
    let last = delivery(record(&actor, "test.after"));
    again.push(last);
    for r in dest.deliver(&again).await {
        r.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while entries(&core, &actor).await < 51 {
        assert!(
            Instant::now() < deadline,
            "{}: the record after",
            bus.backend()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        entries(&core, &actor).await,
        51,
        "{}: repeats absorbed",
        bus.backend()
    );
    let mut dlq = bus
        .join(
            &format!("dlq-reader-{}", uuid::Uuid::now_v7().simple()),
            &[dead_letter_topic("audit")],
            Start::Earliest,
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        let got = dlq.poll(100, Duration::from_millis(300)).await.unwrap();
        if let Some(m) = got
            .into_iter()
            .find(|m| String::from_utf8_lossy(&m.value).contains(&actor))
        {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "{}: the refused record",
            bus.backend()
        );
    };
    assert!(
        refused
            .header("plt_dlq_error")
            .unwrap_or_default()
            .contains("action"),
        "{:?}",
        refused.header("plt_dlq_error")
    );
    dlq.close().await;
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_arrive_through_the_embedded_bus() {
    ingest(Arc::new(MemoryBus::new()), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_records_arrive_through_kafka() {
    let Some(brokers) = std::env::var("PLT_TEST_KAFKA_BROKERS")
        .ok()
        .filter(|b| !b.is_empty())
    else {
        eprintln!("PLT_TEST_KAFKA_BROKERS is not set: skipping the Kafka run");
        return;
    };
    let bus = Arc::new(
        KafkaBus::new(
            &KafkaConfig {
                brokers: brokers.clone(),
                ..KafkaConfig::default()
            },
            "audit-ingest-test",
        )
        .unwrap(),
    );
    ingest(
        bus,
        &[
            ("PLT_EVENTS__BACKEND", "kafka"),
            ("PLT_EVENTS__KAFKA__BROKERS", &brokers),
        ],
    )
    .await;
}
