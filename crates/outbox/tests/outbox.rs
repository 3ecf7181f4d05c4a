//! The outbox on SQLite and on the real PostgreSQL (`PLT_TEST_POSTGRES_URL`, a fresh schema
//! per test): a rolled-back enqueue delivers nothing; committed rows are delivered at least
//! once by a relay whose destination fails first; a refused message is kept; two relays on
//! one PostgreSQL schema deliver each row once; a local enqueue wakes the relay at once.

use async_trait::async_trait;
use plt_db::{Db, Migrations, testing::Backend};
use plt_kernel::{
    Secret,
    config::{DatabaseConfig, DatabaseDriver},
};
use plt_outbox::{Delivery, DeliveryError, Destination, Message, Outbox, OutboxConfig, enqueue};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::watch;
use uuid::Uuid;

static POSTGRES: sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations/postgres");
static SQLITE: sqlx::migrate::Migrator = sqlx::migrate!("tests/migrations/sqlite");
/// A service's own migrations (a `things` table), beside the platform's outbox.
static MIGRATIONS: Migrations = Migrations {
    postgres: &POSTGRES,
    sqlite: &SQLITE,
};

/// A database of `backend` for one test (`None`: PostgreSQL is not configured).
struct TestDb {
    db: Db,
    schema: String,
    _dir: tempfile::TempDir,
}

impl TestDb {
    async fn open(backend: Backend, name: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let (driver, url) = match backend {
            Backend::Sqlite => (DatabaseDriver::Sqlite, String::new()),
            Backend::Postgres => match plt_db::testing::postgres_url() {
                Some(u) => (DatabaseDriver::Postgres, u),
                None => {
                    plt_db::testing::skipped(name);
                    return None;
                }
            },
        };
        let cfg = DatabaseConfig {
            driver,
            url: Secret::new(url),
            data_dir: dir.path().to_path_buf(),
            max_connections: 8,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
        };
        let schema = plt_db::testing::unique_schema("outbox");
        let db = Db::open(&cfg, &schema, MIGRATIONS)
            .await
            .expect("opening the test database");
        Some(Self {
            db,
            schema,
            _dir: dir,
        })
    }

    /// A second pool on the same schema (another instance of the service).
    async fn another_instance(&self) -> Db {
        let cfg = DatabaseConfig {
            driver: DatabaseDriver::Postgres,
            url: Secret::new(plt_db::testing::postgres_url().unwrap()),
            data_dir: self._dir.path().to_path_buf(),
            max_connections: 8,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
        };
        Db::open(&cfg, &self.schema, MIGRATIONS).await.unwrap()
    }

    async fn close(self) {
        self.db.close().await;
        plt_db::testing::drop_schema(&self.schema).await;
    }
}

/// A thing and its messages, in one transaction, committed or rolled back.
async fn change(db: &Db, commit: bool, messages: &[Message]) {
    let id = Uuid::now_v7();
    match db {
        Db::Postgres(p) => {
            let mut tx = p.begin().await.unwrap();
            sqlx::query("INSERT INTO things (id, name) VALUES ($1, 'a')")
                .bind(id)
                .execute(&mut *tx)
                .await
                .unwrap();
            enqueue(&mut *tx, messages).await.unwrap();
            if commit {
                tx.commit().await.unwrap()
            } else {
                tx.rollback().await.unwrap()
            }
        }
        Db::Sqlite(p) => {
            let mut tx = p.begin().await.unwrap();
            sqlx::query("INSERT INTO things (id, name) VALUES ($1, 'a')")
                .bind(id)
                .execute(&mut *tx)
                .await
                .unwrap();
            enqueue(&mut *tx, messages).await.unwrap();
            if commit {
                tx.commit().await.unwrap()
            } else {
                tx.rollback().await.unwrap()
            }
        }
    }
}

/// Records what it was given; fails the first `fail_first` calls, refuses ids in `refuse`.
#[derive(Default)]
struct Recorder {
    calls: Mutex<u32>,
    fail_first: u32,
    refuse: Mutex<Vec<Uuid>>,
    seen: Mutex<HashMap<Uuid, (u32, serde_json::Value)>>,
    delay: Duration,
}

impl Recorder {
    fn failing(n: u32) -> Arc<Self> {
        Arc::new(Self {
            fail_first: n,
            ..Default::default()
        })
    }

    fn times(&self, id: Uuid) -> u32 {
        self.seen.lock().unwrap().get(&id).map(|s| s.0).unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

#[async_trait]
impl Destination for Recorder {
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let call = {
            let mut c = self.calls.lock().unwrap();
            *c += 1;
            *c
        };
        if call <= self.fail_first {
            return vec![Err(DeliveryError::Retry("destination down".into())); batch.len()];
        }
        let refuse = self.refuse.lock().unwrap().clone();
        batch
            .iter()
            .map(|d| {
                if refuse.contains(&d.id) {
                    return Err(DeliveryError::Rejected("malformed".into()));
                }
                let mut seen = self.seen.lock().unwrap();
                let e = seen.entry(d.id).or_insert((0, d.payload.clone()));
                e.0 += 1;
                Ok(())
            })
            .collect()
    }
}

fn fast() -> OutboxConfig {
    OutboxConfig {
        poll_interval: Duration::from_millis(100),
        batch_size: 10,
        timeout: Duration::from_secs(2),
        lease: Duration::from_secs(5),
        retry_initial_backoff: Duration::from_millis(20),
        retry_max_backoff: Duration::from_millis(200),
    }
}

async fn eventually(what: &str, within: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn things(db: &Db) -> i64 {
    match db {
        Db::Postgres(p) => sqlx::query_scalar("SELECT COUNT(*) FROM things")
            .fetch_one(&**p)
            .await
            .unwrap(),
        Db::Sqlite(p) => sqlx::query_scalar("SELECT COUNT(*) FROM things")
            .fetch_one(&**p)
            .await
            .unwrap(),
    }
}

/// A transaction's messages — many at once, of two topics (PostgreSQL writes them in one
/// statement) — are written with it or not at all, and arrive whole.
async fn rolled_back_enqueue_delivers_nothing(backend: Backend) {
    let Some(t) = TestDb::open(backend, "outbox rollback").await else {
        return;
    };
    let outbox = Outbox::new(&t.db, "test");
    let dest = Recorder::failing(0);
    let relay = outbox.relay("audit", dest.clone(), &fast());
    let gone: Vec<Message> = (0..5)
        .map(|n| Message::new("audit", serde_json::json!({ "gone": n })))
        .collect();
    change(&t.db, false, &gone).await;
    assert_eq!(things(&t.db).await, 0, "the change rolled back");
    assert_eq!(
        outbox.pending("audit").await.unwrap().0,
        0,
        "and its messages with it"
    );
    let kept: Vec<Message> = (0..30)
        .map(|n| {
            let topic = if n % 3 == 2 { "events" } else { "audit" };
            Message::new(topic, serde_json::json!({ "n": n, "text": "ä \"q\"" }))
        })
        .collect();
    change(&t.db, true, &kept).await;
    assert_eq!(things(&t.db).await, 1);
    let audit: Vec<&Message> = kept.iter().filter(|m| m.topic == "audit").collect();
    let (n, oldest) = outbox.pending("audit").await.unwrap();
    assert_eq!((n, oldest), (20, Some(audit[0].created_at)));
    assert_eq!(outbox.pending("events").await.unwrap().0, 10);
    let mut delivered = 0;
    while delivered < 20 {
        let round = relay.round(Duration::from_millis(10)).await.unwrap();
        assert!(round.delivered > 0, "a round delivered nothing");
        delivered += round.delivered;
    }
    assert_eq!(delivered, 20);
    for m in &audit {
        assert_eq!(dest.times(m.id), 1);
        assert_eq!(dest.seen.lock().unwrap()[&m.id].1, m.payload);
    }
    for m in &gone {
        assert_eq!(dest.times(m.id), 0);
    }
    assert_eq!(
        outbox.pending("audit").await.unwrap().0,
        0,
        "delivered rows are deleted"
    );
    assert_eq!(
        outbox.pending("events").await.unwrap().0,
        10,
        "another topic's rows wait"
    );
    t.close().await;
}

async fn committed_rows_survive_a_failing_destination(backend: Backend) {
    let Some(t) = TestDb::open(backend, "outbox at least once").await else {
        return;
    };
    let outbox = Outbox::new(&t.db, "test");
    // Down for the first three attempts.
    let dest = Recorder::failing(3);
    let relay = outbox.relay("audit", dest.clone(), &fast());
    let stats = relay.stats();
    let (stop, stopping) = watch::channel(false);
    let task = tokio::spawn(relay.run(stopping));
    let mut ids = Vec::new();
    for i in 0..25 {
        let m = Message::new("audit", serde_json::json!({"n": i}));
        ids.push(m.id);
        change(&t.db, true, std::slice::from_ref(&m)).await;
        outbox.wake();
    }
    // Another topic is not this relay's.
    outbox
        .enqueue_alone(&[Message::new("events", serde_json::json!({}))])
        .await
        .unwrap();
    eventually(
        "every committed row delivered",
        Duration::from_secs(10),
        || dest.total() == ids.len(),
    )
    .await;
    for id in &ids {
        assert!(dest.times(*id) >= 1);
    }
    assert!(stats.failures.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while outbox.pending("audit").await.unwrap().0 > 0 {
        assert!(Instant::now() < deadline, "delivered rows deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(outbox.pending("events").await.unwrap().0, 1);
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the relay stops")
        .unwrap();
    t.close().await;
}

async fn refused_messages_are_kept(backend: Backend) {
    let Some(t) = TestDb::open(backend, "outbox refused").await else {
        return;
    };
    let outbox = Outbox::new(&t.db, "test");
    let dest = Recorder::failing(0);
    let bad = Message::new("audit", serde_json::json!({"bad": true}));
    let good = Message::new("audit", serde_json::json!({"bad": false}));
    dest.refuse.lock().unwrap().push(bad.id);
    outbox
        .enqueue_alone(&[bad.clone(), good.clone()])
        .await
        .unwrap();
    let relay = outbox.relay("audit", dest.clone(), &fast());
    let r = relay.round(Duration::from_millis(10)).await.unwrap();
    assert_eq!((r.claimed, r.delivered, r.rejected), (2, 1, 1));
    assert_eq!(dest.times(good.id), 1);
    // Kept, and not due again before the longest back-off.
    assert_eq!(outbox.pending("audit").await.unwrap().0, 1);
    assert_eq!(
        relay
            .round(Duration::from_millis(10))
            .await
            .unwrap()
            .claimed,
        0
    );
    tokio::time::sleep(fast().retry_max_backoff).await;
    dest.refuse.lock().unwrap().clear();
    let r = relay.round(Duration::from_millis(10)).await.unwrap();
    assert_eq!(r.delivered, 1, "delivered once the destination takes it");
    t.close().await;
}

async fn a_local_enqueue_wakes_the_relay(backend: Backend) {
    let Some(t) = TestDb::open(backend, "outbox wake").await else {
        return;
    };
    let outbox = Outbox::new(&t.db, "test");
    let dest = Recorder::failing(0);
    // Polling alone would take a minute.
    let cfg = OutboxConfig {
        poll_interval: Duration::from_secs(60),
        ..fast()
    };
    let (stop, stopping) = watch::channel(false);
    let task = tokio::spawn(outbox.relay("audit", dest.clone(), &cfg).run(stopping));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let m = Message::new("audit", serde_json::json!({}));
    let started = Instant::now();
    outbox
        .enqueue_alone(std::slice::from_ref(&m))
        .await
        .unwrap();
    eventually(
        "delivered after the wake-up",
        Duration::from_secs(2),
        || dest.times(m.id) == 1,
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    let _ = stop.send(true);
    task.await.unwrap();
    t.close().await;
}

#[tokio::test]
async fn sqlite_rolled_back_enqueue_delivers_nothing() {
    rolled_back_enqueue_delivers_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_rolled_back_enqueue_delivers_nothing() {
    rolled_back_enqueue_delivers_nothing(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite_committed_rows_survive_a_failing_destination() {
    committed_rows_survive_a_failing_destination(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_committed_rows_survive_a_failing_destination() {
    committed_rows_survive_a_failing_destination(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite_refused_messages_are_kept() {
    refused_messages_are_kept(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_refused_messages_are_kept() {
    refused_messages_are_kept(Backend::Postgres).await;
}

#[tokio::test]
async fn sqlite_a_local_enqueue_wakes_the_relay() {
    a_local_enqueue_wakes_the_relay(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_a_local_enqueue_wakes_the_relay() {
    a_local_enqueue_wakes_the_relay(Backend::Postgres).await;
}

/// Two instances of a service, each with its relay, on one PostgreSQL schema: every row is
/// delivered, and each exactly once (the claims are disjoint: FOR UPDATE SKIP LOCKED).
#[tokio::test]
async fn postgres_two_relays_deliver_each_row_once() {
    let Some(t) = TestDb::open(Backend::Postgres, "outbox two relays").await else {
        return;
    };
    let other = t.another_instance().await;
    let a = Outbox::new(&t.db, "test");
    let b = Outbox::new(&other, "test");
    // One destination seen by both (the audit service), slow enough that claims overlap.
    let dest = Arc::new(Recorder {
        delay: Duration::from_millis(20),
        ..Default::default()
    });
    let cfg = OutboxConfig {
        batch_size: 5,
        ..fast()
    };
    let (stop, stopping) = watch::channel(false);
    let ra = a.relay("audit", dest.clone(), &cfg);
    let rb = b.relay("audit", dest.clone(), &cfg);
    let (sa, sb) = (ra.stats(), rb.stats());
    let ta = tokio::spawn(ra.run(stopping.clone()));
    let tb = tokio::spawn(rb.run(stopping));
    let n = 200;
    for i in 0..n {
        let m = Message::new("audit", serde_json::json!({"n": i}));
        // Both instances enqueue.
        if i % 2 == 0 {
            a.enqueue_alone(&[m]).await.unwrap();
        } else {
            b.enqueue_alone(&[m]).await.unwrap();
        }
    }
    eventually("every row delivered", Duration::from_secs(20), || {
        dest.total() == n
    })
    .await;
    // Acknowledged rows are deleted (and counted) after the destination saw them.
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.pending("audit").await.unwrap().0 > 0 {
        assert!(Instant::now() < deadline, "delivered rows deleted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = dest.seen.lock().unwrap().clone();
    let twice: Vec<_> = seen.iter().filter(|(_, (k, _))| *k != 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    let by_a = sa.delivered.load(std::sync::atomic::Ordering::Relaxed);
    let by_b = sb.delivered.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(by_a + by_b, n as u64);
    assert!(by_a > 0 && by_b > 0, "both relays worked: {by_a} + {by_b}");
    let _ = stop.send(true);
    ta.await.unwrap();
    tb.await.unwrap();
    other.close().await;
    t.close().await;
}

/// Records the order of first deliveries; fails every message whose payload has `"fail": n`
/// for its first `n` attempts, and keeps order within a batch: after a failure, the rest of
/// the batch fails too (as a bus destination does for the failed message's key).
#[derive(Default)]
struct OrderRecorder {
    order: Mutex<Vec<Uuid>>,
}

#[async_trait]
impl Destination for OrderRecorder {
    async fn deliver(&self, batch: &[Delivery]) -> Vec<Result<(), DeliveryError>> {
        let mut failed = false;
        batch
            .iter()
            .map(|d| {
                let fail = d.payload["fail"].as_u64().unwrap_or(0);
                if failed || u64::from(d.attempts) <= fail {
                    failed = true;
                    return Err(DeliveryError::Retry("not yet".into()));
                }
                let mut order = self.order.lock().unwrap();
                if !order.contains(&d.id) {
                    order.push(d.id);
                }
                Ok(())
            })
            .collect()
    }
}

/// An ordered relay hands nothing newer to the destination while an older message waits:
/// the third message fails twice, and the ones after it are delivered only after it, in id
/// order (across several rounds: batch size 10). On PostgreSQL two instances relay, and
/// still every message arrives in order (one holds the lock, the other stands by).
async fn ordered_relays_keep_commit_order(backend: Backend) {
    let Some(t) = TestDb::open(backend, "ordered_relays_keep_commit_order").await else {
        return;
    };
    let mut ids = Vec::new();
    for i in 0..25u64 {
        let m = Message::new(
            "events",
            serde_json::json!({ "n": i, "fail": if i == 2 { 2 } else { 0 } }),
        );
        ids.push(m.id);
        change(&t.db, true, std::slice::from_ref(&m)).await;
    }
    let dest = Arc::new(OrderRecorder::default());
    let (stop, stopping) = watch::channel(false);
    let outbox = Outbox::new(&t.db, "svc");
    let relay = outbox.relay("events", dest.clone(), &fast()).ordered();
    let mut tasks = vec![tokio::spawn(relay.run(stopping.clone()))];
    let other_db = match backend {
        Backend::Postgres => {
            let db = t.another_instance().await;
            let other = Outbox::new(&db, "svc")
                .relay("events", dest.clone(), &fast())
                .ordered();
            tasks.push(tokio::spawn(other.run(stopping.clone())));
            Some(db)
        }
        Backend::Sqlite => None,
    };
    eventually("all 25 delivered", Duration::from_secs(20), || {
        dest.order.lock().unwrap().len() == 25
    })
    .await;
    assert_eq!(
        *dest.order.lock().unwrap(),
        ids,
        "delivered in commit order"
    );
    stop.send(true).unwrap();
    for task in tasks {
        task.await.unwrap();
    }
    if let Some(db) = other_db {
        db.close().await;
    }
    t.close().await;
}

#[tokio::test]
async fn sqlite_ordered_relays_keep_commit_order() {
    ordered_relays_keep_commit_order(Backend::Sqlite).await
}

#[tokio::test]
async fn postgres_ordered_relays_keep_commit_order() {
    ordered_relays_keep_commit_order(Backend::Postgres).await
}
