//! The bus contract, the same on the embedded bus and on a real Kafka-protocol broker
//! (`PLT_TEST_KAFKA_BROKERS`, host:port; every test runs against it when it is set): events
//! round-trip in CloudEvents binary mode, one key's events are handled in order, failures are
//! retried, poison messages go to the dead-letter topic and the partition moves on, what a
//! killed consumer did not commit is delivered again (and the inbox makes its effect happen
//! once), and a stopping consumer finishes its handler and commits.

use async_trait::async_trait;
use plt_events::{
    Bus, Event, Handler, HandlerError, Outgoing, Received, Start, Subscription,
    bridge::BridgeBus,
    config::{ConsumerConfig, KafkaConfig},
    consumer::{self, dead_letter_topic},
    kafka::KafkaBus,
    memory::MemoryBus,
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::watch;

/// An embedded bus served over its HTTP bridge, as `plt dev` serves its bus to feature
/// services in other processes, and used through [`BridgeBus`].
fn bridged() -> Arc<dyn Bus> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let app = plt_events::bridge::routes(Arc::new(MemoryBus::new()));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Arc::new(BridgeBus::new(&format!("http://{addr}")).unwrap())
}

/// The buses under test: the embedded one, the same through its bridge, and Kafka when
/// configured.
fn buses(test: &str) -> Vec<Arc<dyn Bus>> {
    let mut v: Vec<Arc<dyn Bus>> = vec![Arc::new(MemoryBus::new()), bridged()];
    match std::env::var("PLT_TEST_KAFKA_BROKERS") {
        Ok(brokers) if !brokers.is_empty() => {
            let cfg = KafkaConfig {
                brokers,
                publish_timeout: Duration::from_secs(10),
                ..KafkaConfig::default()
            };
            v.push(Arc::new(KafkaBus::new(&cfg, "plt-events-test").unwrap()));
        }
        _ => eprintln!("{test}: PLT_TEST_KAFKA_BROKERS is not set; the embedded bus only"),
    }
    v
}

fn unique(what: &str) -> String {
    format!("test.{what}.{}", uuid::Uuid::now_v7().simple())
}

fn fast() -> ConsumerConfig {
    ConsumerConfig {
        max_attempts: 3,
        retry_initial_backoff: Duration::from_millis(10),
        retry_max_backoff: Duration::from_millis(50),
        batch_size: 50,
    }
}

async fn eventually(what: &str, within: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn publish(bus: &dyn Bus, topic: &str, events: &[(String, Event)]) {
    let msgs: Vec<Outgoing> = events.iter().map(|(k, e)| e.to_message(topic, k)).collect();
    for r in bus.publish(&msgs).await {
        r.expect("published");
    }
}

/// Records events; fails according to the event's data: `fail` attempts per event, `poison`.
#[derive(Default)]
struct Recorder {
    handled: Mutex<Vec<(String, i64)>>,
    attempts: Mutex<HashMap<String, u64>>,
    delay: Duration,
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, event: &Event, msg: &Received) -> Result<(), HandlerError> {
        let n = {
            let mut a = self.attempts.lock().unwrap();
            let n = a.entry(event.id.clone()).or_default();
            *n += 1;
            *n
        };
        if event.data["poison"].as_bool() == Some(true) {
            return Err(HandlerError::Permanent("cannot read this event".into()));
        }
        if n <= event.data["fail"].as_u64().unwrap_or(0) {
            return Err(HandlerError::Retry(format!("attempt {n} fails")));
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        self.handled.lock().unwrap().push((
            msg.key_str().unwrap_or_default().to_owned(),
            event.data["seq"].as_i64().unwrap_or(-1),
        ));
        Ok(())
    }
}

fn ev(seq: i64, data: serde_json::Value) -> Event {
    let mut d = data;
    d["seq"] = seq.into();
    Event::new("plt.test.thing.happened.v1", "test", d).with_subject(format!("thing/{seq}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_round_trip_in_key_order() {
    for bus in buses("events_round_trip_in_key_order") {
        let topic = unique("order");
        // 5 keys × 40 events, interleaved; one of them fails twice before it works.
        let mut events = Vec::new();
        for i in 0..200i64 {
            let data = if i == 17 {
                serde_json::json!({"fail": 2})
            } else {
                serde_json::json!({})
            };
            events.push((format!("k{}", i % 5), ev(i, data)));
        }
        let rec = Arc::new(Recorder::default());
        let (stop, stopping) = watch::channel(false);
        let sub = Subscription::new(&unique("group"), &[&topic], rec.clone()).config(fast());
        let running = consumer::spawn(bus.clone(), sub, stopping);
        publish(&*bus, &topic, &events).await;
        eventually("200 handled", Duration::from_secs(30), || {
            rec.handled.lock().unwrap().len() >= 200
        })
        .await;
        let handled = rec.handled.lock().unwrap().clone();
        assert_eq!(handled.len(), 200, "{}: each once", bus.backend());
        for k in 0..5 {
            let seqs: Vec<i64> = handled
                .iter()
                .filter(|(key, _)| *key == format!("k{k}"))
                .map(|(_, s)| *s)
                .collect();
            let mut sorted = seqs.clone();
            sorted.sort();
            assert_eq!(seqs, sorted, "{}: key k{k} in order", bus.backend());
            assert_eq!(seqs.len(), 40);
        }
        assert_eq!(
            running
                .stats
                .retried
                .load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        stop.send(true).unwrap();
        running.task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_goes_to_the_dead_letter_topic_and_the_partition_moves_on() {
    for bus in buses("poison_goes_to_the_dead_letter_topic") {
        let topic = unique("poison");
        let group = unique("group");
        let events = vec![
            ("k".to_owned(), ev(1, serde_json::json!({}))),
            ("k".to_owned(), ev(2, serde_json::json!({"poison": true}))),
            ("k".to_owned(), ev(3, serde_json::json!({"fail": 99}))),
            ("k".to_owned(), ev(4, serde_json::json!({}))),
        ];
        let rec = Arc::new(Recorder::default());
        let (stop, stopping) = watch::channel(false);
        let sub = Subscription::new(&group, &[&topic], rec.clone()).config(fast());
        let running = consumer::spawn(bus.clone(), sub, stopping);
        // A malformed message (not CloudEvents) is dead-lettered too.
        let mut broken = ev(5, serde_json::json!({})).to_message(&topic, "k");
        broken.value = b"{not json".to_vec();
        publish(&*bus, &topic, &events).await;
        bus.publish(&[broken]).await.pop().unwrap().unwrap();
        eventually("1 and 4 handled", Duration::from_secs(30), || {
            rec.handled.lock().unwrap().len() >= 2
        })
        .await;
        eventually("3 dead letters", Duration::from_secs(30), || {
            running
                .stats
                .dead_lettered
                .load(std::sync::atomic::Ordering::Relaxed)
                >= 3
        })
        .await;
        let seqs: Vec<i64> = rec
            .handled
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(seqs, vec![1, 4], "{}", bus.backend());
        // The dead-letter topic holds them with their error and coordinates.
        let seen: Vec<(String, String, String, String)> =
            read_raw(&*bus, &dead_letter_topic(&group), 3)
                .await
                .iter()
                .map(|m| {
                    let seq = serde_json::from_slice::<serde_json::Value>(&m.value)
                        .ok()
                        .and_then(|v| v["seq"].as_i64())
                        .map_or("-".to_owned(), |s| s.to_string());
                    (
                        seq,
                        m.header("plt_dlq_error").unwrap_or_default().to_owned(),
                        m.header("plt_dlq_topic").unwrap_or_default().to_owned(),
                        m.header("plt_dlq_attempts").unwrap_or_default().to_owned(),
                    )
                })
                .collect();
        assert_eq!(seen[0].0, "2");
        assert_eq!(seen[0].1, "cannot read this event");
        assert_eq!(seen[0].2, topic);
        assert_eq!(seen[0].3, "1", "poison: one attempt");
        assert_eq!(seen[1].0, "3");
        assert_eq!(seen[1].3, "3", "retried up to max_attempts");
        assert!(seen[2].1.contains("not JSON"), "{}", seen[2].1);
        stop.send(true).unwrap();
        running.task.await.unwrap();
    }
}

/// The first `n` messages of `topic`, read raw by a group of its own (in partition order;
/// the dead letters of one key share a partition).
async fn read_raw(bus: &dyn Bus, topic: &str, n: usize) -> Vec<Received> {
    let mut c = bus
        .join(&unique("raw"), &[topic.to_owned()], Start::Earliest)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "{n} messages on {topic}: got {}",
            out.len()
        );
        out.extend(c.poll(n, Duration::from_millis(500)).await.unwrap());
    }
    c.close().await;
    out
}

/// A consumer killed mid-batch (its task aborted: nothing committed) loses nothing: the
/// group's next member gets everything not committed. The inbox (in SQLite here, in the
/// same transaction as the effect) makes each effect happen once despite the repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_consumer_loses_nothing_and_the_inbox_absorbs_repeats() {
    for bus in buses("a_killed_consumer_loses_nothing") {
        let dir = tempfile::tempdir().unwrap();
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .connect_with(
                sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(dir.path().join("inbox.db"))
                    .create_if_missing(true),
            )
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE inbox (consumer TEXT NOT NULL, event_id TEXT NOT NULL, \
             handled_at TEXT NOT NULL, PRIMARY KEY (consumer, event_id)); \
             CREATE TABLE effects (seq INTEGER NOT NULL)",
        )
        .execute(&pool)
        .await
        .unwrap();
        let topic = unique("kill");
        let group = unique("group");
        let events: Vec<(String, Event)> = (0..60)
            .map(|i| (format!("k{}", i % 3), ev(i, serde_json::json!({}))))
            .collect();
        publish(&*bus, &topic, &events).await;
        let handler = Arc::new(Effects {
            pool: pool.clone(),
            calls: Mutex::new(0),
            delay: Duration::from_millis(5),
        });
        // The first member is killed after some handling, before its batch is committed.
        let (_stop, stopping) = watch::channel(false);
        let first = consumer::spawn(
            bus.clone(),
            Subscription::new(&group, &[&topic], handler.clone()).config(fast()),
            stopping.clone(),
        );
        eventually("some handled", Duration::from_secs(30), || {
            *handler.calls.lock().unwrap() >= 10
        })
        .await;
        first.task.abort();
        let _ = first.task.await;
        let (stop, stopping) = watch::channel(false);
        let second = consumer::spawn(
            bus.clone(),
            Subscription::new(&group, &[&topic], handler.clone()).config(fast()),
            stopping,
        );
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(DISTINCT seq) FROM effects")
                .fetch_one(&pool)
                .await
                .unwrap();
            if n == 60 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: {n} of 60 effects",
                bus.backend()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM effects")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(total, 60, "{}: every effect once", bus.backend());
        stop.send(true).unwrap();
        second.task.await.unwrap();
    }
}

/// Applies an effect (a row) once per event, through the inbox.
struct Effects {
    pool: sqlx::SqlitePool,
    calls: Mutex<u32>,
    delay: Duration,
}

#[async_trait]
impl Handler for Effects {
    async fn handle(&self, event: &Event, _: &Received) -> Result<(), HandlerError> {
        *self.calls.lock().unwrap() += 1;
        tokio::time::sleep(self.delay).await;
        let retry = |e: sqlx::Error| HandlerError::Retry(e.to_string());
        let mut tx = self.pool.begin().await.map_err(retry)?;
        if plt_events::inbox::first_time(&mut *tx, "effects", &event.id)
            .await
            .map_err(retry)?
        {
            sqlx::query("INSERT INTO effects (seq) VALUES ($1)")
                .bind(event.data["seq"].as_i64())
                .execute(&mut *tx)
                .await
                .map_err(retry)?;
        }
        tx.commit().await.map_err(retry)
    }
}

/// Stopping waits for the handler in flight and commits it: a member that joins after sees
/// only what was not handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_consumer_finishes_its_handlers_and_commits() {
    for bus in buses("a_stopping_consumer_finishes_its_handlers_and_commits") {
        let topic = unique("stop");
        let group = unique("group");
        let events: Vec<(String, Event)> = (0..5)
            .map(|i| ("k".to_owned(), ev(i, serde_json::json!({}))))
            .collect();
        publish(&*bus, &topic, &events[..1]).await;
        let slow = Arc::new(Recorder {
            delay: Duration::from_millis(500),
            ..Default::default()
        });
        let (stop, stopping) = watch::channel(false);
        let first = consumer::spawn(
            bus.clone(),
            Subscription::new(&group, &[&topic], slow.clone()).config(fast()),
            stopping,
        );
        eventually("the handler started", Duration::from_secs(30), || {
            !slow.attempts.lock().unwrap().is_empty()
        })
        .await;
        stop.send(true).unwrap();
        first.task.await.unwrap();
        assert_eq!(slow.handled.lock().unwrap().len(), 1, "finished in flight");
        publish(&*bus, &topic, &events[1..]).await;
        let rec = Arc::new(Recorder::default());
        let (stop, stopping) = watch::channel(false);
        let second = consumer::spawn(
            bus.clone(),
            Subscription::new(&group, &[&topic], rec.clone()).config(fast()),
            stopping,
        );
        eventually("4 handled", Duration::from_secs(30), || {
            rec.handled.lock().unwrap().len() >= 4
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seqs: Vec<i64> = rec
            .handled
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| *s)
            .collect();
        assert_eq!(
            seqs,
            vec![1, 2, 3, 4],
            "{}: the first was committed",
            bus.backend()
        );
        stop.send(true).unwrap();
        second.task.await.unwrap();
    }
}

/// A process that dies without leaving its group (no `leave`, no more polls) is taken out by
/// the bridge after the member time-out: the group's other member then gets its partitions
/// and reads what it had not committed.
#[tokio::test]
async fn the_bridge_takes_a_silent_member_out_of_its_group() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let app =
        plt_events::bridge::routes_with(Arc::new(MemoryBus::new()), Duration::from_millis(400));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let topic = unique("bridge");
    let http = plt_kernel::tls::http_client();
    // The "dead" member: joined through the bridge, never polls again.
    let r = http
        .post(format!("{url}/plt/bus/join"))
        .json(&serde_json::json!({"group": "g", "topics": [topic.clone()], "latest": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let bus = BridgeBus::new(&url).unwrap();
    let mut alive = bus
        .join("g", std::slice::from_ref(&topic), Start::Earliest)
        .await
        .unwrap();
    let sent: Vec<Outgoing> = (0..20)
        .map(|i| Outgoing {
            topic: topic.clone(),
            key: Some(format!("k{i}").into_bytes()),
            headers: Vec::new(),
            value: vec![i],
        })
        .collect();
    assert!(bus.publish(&sent).await.iter().all(Result::is_ok));
    // Until the dead member is taken out, half the partitions are its own; then all are the
    // live member's (from the committed offsets: what it read before may come again).
    let mut values = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while values.len() < sent.len() {
        assert!(
            Instant::now() < deadline,
            "got {} of {}",
            values.len(),
            sent.len()
        );
        for m in alive.poll(100, Duration::from_millis(200)).await.unwrap() {
            values.insert(m.value[0]);
        }
    }
    assert_eq!(values, (0..20).collect());
    // The dead member is gone: polling as it answers 404.
    let r = http
        .post(format!("{url}/plt/bus/poll"))
        .json(&serde_json::json!({"member": 1, "max": 1, "wait_ms": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A member's lag: what its group has not committed of the partitions it reads, falling to
/// zero once it commits everything it read (the embedded bus and Kafka; through the bridge
/// it cannot tell).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_reports_what_its_group_has_not_committed() {
    for (i, bus) in buses("lag").into_iter().enumerate() {
        if i == 1 {
            continue; // the bridge: no lag to report
        }
        let topic = unique("lag");
        let events: Vec<(String, Event)> = (0..5)
            .map(|n| {
                (
                    format!("k{n}"),
                    Event::new("plt.test.lag.v1", "test", serde_json::json!({ "n": n })),
                )
            })
            .collect();
        publish(bus.as_ref(), &topic, &events).await;
        let mut c = bus
            .join(
                &unique("lag-group"),
                std::slice::from_ref(&topic),
                Start::Earliest,
            )
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut read = Vec::new();
        while read.len() < 5 {
            assert!(Instant::now() < deadline, "5 messages, got {}", read.len());
            read.extend(c.poll(5, Duration::from_millis(500)).await.unwrap());
        }
        let total: i64 = c.lag().await.iter().map(|(_, _, l)| *l).sum();
        assert_eq!(total, 5, "{}: nothing committed yet", bus.backend());
        let mut last: HashMap<i32, i64> = HashMap::new();
        for m in &read {
            let e = last.entry(m.partition).or_insert(m.offset);
            *e = (*e).max(m.offset);
        }
        let positions: Vec<plt_events::Position> = last
            .iter()
            .map(|(p, o)| plt_events::Position {
                topic: topic.clone(),
                partition: *p,
                next: o + 1,
            })
            .collect();
        c.commit(&positions).await.unwrap();
        let total: i64 = c.lag().await.iter().map(|(_, _, l)| *l).sum();
        assert_eq!(total, 0, "{}: everything committed", bus.backend());
        c.close().await;
    }
}
