//! Counting survives its consumer going away, on SQLite and on PostgreSQL (when
//! PLT_TEST_POSTGRES_URL is set): one database and one embedded bus, the service started
//! again and again on them.
//!
//! 1. **Stopped and restarted** (graceful: the consumer commits what it handled): events
//!    published while it is down are counted once it is back, each exactly once. The embedded
//!    bus keeps the group's committed offsets in the bus object (as Kafka keeps them in the
//!    broker), across members leaving and joining: a member joining after the stop is handed
//!    only what was published since.
//! 2. **Killed** between counting an event and committing its offset (the consumer's task
//!    aborted, nothing committed): the event is delivered again after the restart and the
//!    inbox makes the repeat change nothing.
//! 3. **Replayed from the earliest message** (offsets lost: a new bus holding the same
//!    messages, as after an offset reset): every event is delivered again, and nothing counts
//!    twice.

use analytics_contract::{AnalyticsServiceClient, AnalyticsServiceHttpClient, pb};
use analytics_service::{Analytics, GROUP, core::Counter, store::CountStore};
use chrono::{DateTime, NaiveDate, Utc};
use plt_contracts::events as platform;
use plt_events::{
    Bus, Event, HandlerError, Outgoing, Publisher, Received, Start, Subscription, memory::MemoryBus,
};
use plt_runtime::testing::{Backend, TestOptions, TestService};
use std::{path::PathBuf, sync::Arc, time::Duration};
use uuid::Uuid;

const READ: &str = "analytics.stats.read";
/// One key per topic: each topic's events share a partition, so a later event is handled
/// after every earlier one (what the sentinels rely on).
const KEY: &str = "k";

fn at(d: &str, minutes: i64) -> DateTime<Utc> {
    NaiveDate::parse_from_str(d, "%Y-%m-%d")
        .expect("a test date")
        .and_hms_opt(12, 0, 0)
        .expect("noon")
        .and_utc()
        + chrono::Duration::minutes(minutes)
}

fn event(event_type: &str, time: DateTime<Utc>) -> Event {
    let (service, data) = if event_type == platform::USER_CREATED {
        (
            "identity",
            serde_json::json!({"user": {"id": Uuid::now_v7()}}),
        )
    } else {
        (
            "auth",
            serde_json::json!({"user_id": Uuid::now_v7(), "session_id": "s", "at": time}),
        )
    };
    let mut e = Publisher::new(service, true).event(event_type, "user/x", data);
    e.time = time;
    e
}

async fn publish(bus: &dyn Bus, events: &[&Event]) {
    let messages: Vec<Outgoing> = events
        .iter()
        .map(|e| e.to_message(&e.event_type, KEY))
        .collect();
    for r in bus.publish(&messages).await {
        r.expect("published");
    }
}

/// Signups and sessions on `day` as `n` events of each, at successive minutes.
fn batch(day: &str, n: i64) -> Vec<Event> {
    (0..n)
        .flat_map(|i| {
            [
                event(platform::USER_CREATED, at(day, i)),
                event(platform::SESSION_STARTED, at(day, i)),
            ]
        })
        .collect()
}

struct Place {
    dir: PathBuf,
    schema: String,
    backend: Backend,
    _tmp: tempfile::TempDir,
}

impl Place {
    fn new(backend: Backend) -> Self {
        let tmp = tempfile::tempdir().expect("temporary directory");
        Self {
            dir: tmp.path().to_path_buf(),
            schema: plt_db::testing::unique_schema("analytics"),
            backend,
            _tmp: tmp,
        }
    }

    /// The service on this database (the same one every time), on `bus` (none: it serves
    /// the API but runs no consumer).
    async fn start(&self, bus: Option<Arc<dyn Bus>>) -> Option<TestService> {
        TestService::start_with::<Analytics>(
            self.backend,
            TestOptions {
                schema: Some(self.schema.clone()),
                data_dir: Some(self.dir.clone()),
                events: bus,
                ..Default::default()
            },
        )
        .await
    }
}

/// (signups, sessions) from `from` to `to`.
async fn counts(svc: &TestService, from: &str, to: &str) -> (i64, i64) {
    let (_, ctx) = svc.user_with(&[READ]);
    let client = AnalyticsServiceHttpClient::new(plt_kernel::tls::http_client(), &svc.url(""));
    let t = client
        .get_totals(
            &ctx,
            pb::GetTotalsRequest {
                from: from.into(),
                to: to.into(),
            },
        )
        .await
        .expect("totals");
    let of = |m: &str| {
        t.totals
            .iter()
            .find(|t| t.metric == m)
            .map_or(0, |t| t.count)
    };
    (of("signups"), of("sessions"))
}

async fn wait_for(svc: &TestService, from: &str, to: &str, want: (i64, i64)) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = counts(svc, from, to).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "(signups, sessions) {from}..{to}: got {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Counts like the service's own handler, but never returns from event `hang_on` once it
/// counted it: the consumer can then be killed between the effect and the commit.
struct HangAfter {
    inner: Counter,
    hang_on: String,
}

#[async_trait::async_trait]
impl plt_events::Handler for HangAfter {
    async fn handle(&self, event: &Event, message: &Received) -> Result<(), HandlerError> {
        self.inner.handle(event, message).await?;
        if event.id == self.hang_on {
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

async fn restart(backend: Backend) {
    let place = Place::new(backend);
    let bus = Arc::new(MemoryBus::new());
    let topics = [platform::USER_CREATED, platform::SESSION_STARTED];

    // 1. Counting, stopped, events while down, started again.
    let Some(svc) = place.start(Some(bus.clone())).await else {
        return;
    };
    let first = batch("2026-12-01", 3);
    publish(bus.as_ref(), &first.iter().collect::<Vec<_>>()).await;
    wait_for(&svc, "", "", (3, 3)).await;
    svc.stop().await;
    let second = batch("2026-12-02", 2);
    // A repeat of an event counted before the stop, as a publisher's outbox may send.
    let mut while_down: Vec<&Event> = vec![&first[0]];
    while_down.extend(second.iter());
    publish(bus.as_ref(), &while_down).await;
    // The group's offsets outlived its member: a member joining now is handed exactly what
    // was published since (it commits nothing and leaves).
    {
        let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
        let mut probe = bus
            .join(GROUP, &topics, Start::Earliest)
            .await
            .expect("joining");
        let pending = probe
            .poll(1000, Duration::from_millis(500))
            .await
            .expect("polling");
        assert_eq!(pending.len(), while_down.len(), "{pending:?}");
        probe.close().await;
    }
    let Some(svc) = place.start(Some(bus.clone())).await else {
        return;
    };
    wait_for(&svc, "2026-12-02", "2026-12-02", (2, 2)).await;
    // The repeat came before the day-2 signups in their partition: handled, not counted.
    assert_eq!(counts(&svc, "", "").await, (5, 5));
    svc.stop().await;

    // 2. Killed between counting and committing.
    let Some(svc) = place.start(None).await else {
        return;
    };
    let store: Arc<dyn CountStore> = svc.get().expect("the store is exported");
    let third = batch("2026-12-03", 2);
    let hang_on = third[2].id.clone();
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let killed = plt_events::consumer::spawn(
        bus.clone(),
        Subscription::new(
            GROUP,
            &topics,
            Arc::new(HangAfter {
                inner: Counter::new(store),
                hang_on: hang_on.clone(),
            }),
        ),
        stopping,
    );
    publish(bus.as_ref(), &third.iter().collect::<Vec<_>>()).await;
    // Day 3: the first signup and session, then the second signup, which hangs after it was
    // counted; the second session (in the other topic) is counted too.
    wait_for(&svc, "2026-12-03", "2026-12-03", (2, 2)).await;
    killed.task.abort();
    let _ = killed.task.await;
    drop(stop_tx);
    svc.stop().await;
    let sentinel = event(platform::USER_CREATED, at("2026-12-04", 0));
    publish(bus.as_ref(), &[&sentinel]).await;
    let Some(svc) = place.start(Some(bus.clone())).await else {
        return;
    };
    // The hung event is delivered again (never committed), before the sentinel.
    wait_for(&svc, "2026-12-04", "2026-12-04", (1, 0)).await;
    assert_eq!(counts(&svc, "2026-12-03", "2026-12-03").await, (2, 2));
    assert_eq!(counts(&svc, "", "").await, (8, 7));
    svc.stop().await;

    // 3. Every message again, from the earliest, on a bus whose group has no offsets.
    let fresh = Arc::new(MemoryBus::new());
    let mut all = Vec::new();
    for t in topics {
        all.extend(bus.read_all(t).into_iter().map(|m| Outgoing {
            topic: m.topic,
            key: m.key,
            headers: m.headers,
            value: m.value,
        }));
    }
    let replayed = all.len();
    for r in fresh.publish(&all).await {
        r.expect("republished");
    }
    let last = event(platform::SESSION_STARTED, at("2026-12-05", 0));
    let last_signup = event(platform::USER_CREATED, at("2026-12-05", 0));
    publish(fresh.as_ref(), &[&last, &last_signup]).await;
    let Some(svc) = place.start(Some(fresh.clone())).await else {
        return;
    };
    wait_for(&svc, "2026-12-05", "2026-12-05", (1, 1)).await;
    assert_eq!(replayed, 16, "messages replayed");
    assert_eq!(counts(&svc, "", "").await, (9, 8));
    svc.stop().await;
    plt_db::testing::drop_schema(&place.schema).await;
}

#[tokio::test]
async fn counts_survive_stop_kill_and_replay_on_sqlite() {
    restart(Backend::Sqlite).await;
}

#[tokio::test]
async fn counts_survive_stop_kill_and_replay_on_postgres() {
    restart(Backend::Postgres).await;
}
