//! Benchmarks of plt-events: `cargo bench -p plt-events --bench events`.
//!
//! Prints one table, every row measured in the same run, all on a tokio runtime with one
//! worker thread (librdkafka, SQLite and PostgreSQL work on threads and processes of their own):
//!
//! 1. publish throughput: ~100-byte CloudEvents published in batches of [`BATCH`], [`IN_FLIGHT`]
//!    batches in flight, against the goal of [`GOAL`] messages/s on one core;
//! 2. outbox relay throughput: [`RELAY_EVENTS`] events enqueued, then drained by an ordered relay
//!    to the bus, beside row 1 on the same bus;
//! 3. latency from commit to handler: events committed into the outbox at half the rate of row 2,
//!    relayed, and handled by a consumer group that records now − the stamp the event carries.
//!
//! Buses: the embedded one always, Kafka when `PLT_BENCH_KAFKA_BROKERS` (host:port) is set
//! (`PLT_BENCH_KAFKA_LABEL` names the broker in the table, `PLT_BENCH_KAFKA_FETCH_WAIT` sets the
//! consumers' `events.kafka.fetch_wait`). Row 1 also reports the CPU time
//! this process used, so a broker that is the bottleneck does not hide the publishing side's
//! cost per message; run it under `taskset -c N` to hold the whole process to one core.
//! Stores: SQLite in a temporary directory always, PostgreSQL when `PLT_BENCH_POSTGRES_URL` is
//! set (a fresh schema, dropped at the end). Topics and groups are unique per run.

use async_trait::async_trait;
use plt_db::{Db, Migrations};
use plt_events::{
    Bus, Event, Handler, HandlerError, Outgoing, Received, Subscription,
    config::{ConsumerConfig, KafkaConfig},
    consumer,
    kafka::KafkaBus,
    memory::MemoryBus,
    outbox::{BusDestination, TOPIC},
};
use plt_kernel::{
    Secret,
    config::{DatabaseConfig, DatabaseDriver},
};
use plt_outbox::{Message, Outbox, OutboxConfig};
use serde_json::json;
use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::watch;
use uuid::Uuid;

/// The goal: small messages published per second on one core.
const GOAL: f64 = 100_000.0;
/// Messages per `publish` call and per outbox transaction (row 2).
const BATCH: usize = 1000;
/// Publishes in flight at once (row 1).
const IN_FLIGHT: usize = 4;
/// Row 1 stops after this many messages or this long, whichever comes first.
const PUBLISH_MAX: usize = 200_000;
const PUBLISH_TIME: Duration = Duration::from_secs(15);
/// Row 2: events in the outbox, and the longest the relay may take to drain them.
const RELAY_EVENTS: usize = 20_000;
const RELAY_TIME: Duration = Duration::from_secs(30);
/// Row 3: how long events are committed at a steady rate, how often, and how long the last
/// ones may take to be handled afterwards.
const PACED_TIME: Duration = Duration::from_secs(8);
const PACE_TICK: Duration = Duration::from_millis(5);
const DRAIN_TIME: Duration = Duration::from_secs(15);
/// How long a consumer group may take to join and handle its warm-up event.
const JOIN_TIME: Duration = Duration::from_secs(30);

/// The service's own migrations: none (the outbox is a platform table).
static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;
static MIGRATIONS: Migrations = Migrations {
    postgres: &NO_MIGRATIONS,
    sqlite: &NO_MIGRATIONS,
};

type Res<T> = Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn unique(what: &str) -> String {
    format!("bench.{what}.{}", Uuid::now_v7().simple())
}

/// A small event (~100 bytes of JSON data) of type `topic`; `sent_ns`: the stamp latency is
/// measured from (nanoseconds since [`Recorder::base`]).
fn event(topic: &str, seq: usize, sent_ns: Option<u64>) -> (Event, String) {
    let user = Uuid::now_v7().to_string();
    let mut data = json!({"user_id": user, "email": format!("user{seq}@example.com"), "seq": seq});
    if let Some(ns) = sent_ns {
        data["sent_ns"] = json!(ns);
    }
    let e = Event::new(topic, "bench", data).with_subject(format!("user/{user}"));
    (e, user)
}

fn message(topic: &str, seq: usize) -> Outgoing {
    let (e, key) = event(topic, seq, None);
    e.to_message(topic, &key)
}

fn outbox_message(topic: &str, seq: usize, sent_ns: Option<u64>) -> Message {
    let (e, key) = event(topic, seq, sent_ns);
    plt_events::outbox::message(&e, &key)
}

/// Publishes a few messages with distinct keys in one call (creating the topic, connecting
/// the producer, reaching every partition once before the measured traffic).
async fn warm_up(bus: &dyn Bus, topic: &str) -> Res<()> {
    let e = Event::new(topic, "bench", json!({"warmup": true}));
    let batch: Vec<Outgoing> = (0..32)
        .map(|k| e.to_message(topic, &format!("warmup-{k}")))
        .collect();
    for r in bus.publish(&batch).await {
        r.map_err(|e| format!("warm-up publish: {e}"))?;
    }
    Ok(())
}

/// A rate measured: messages that made it, failures, time.
#[derive(Clone, Copy)]
struct Measured {
    ok: usize,
    failed: usize,
    secs: f64,
    /// CPU seconds this process used meanwhile (all threads: tokio's, librdkafka's), when known.
    cpu: Option<f64>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.secs.max(1e-9)
    }

    /// Messages per CPU-second of this process: what one core of it could publish if the
    /// other side kept up.
    fn per_core(&self) -> Option<f64> {
        self.cpu.map(|c| self.ok as f64 / c.max(1e-9))
    }
}

fn cpu_now() -> Option<f64> {
    plt_kernel::affinity::process_cpu_time()
        .ok()
        .map(|d| d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// Row 1: publishing

async fn publish_throughput(bus: Arc<dyn Bus>) -> Res<Measured> {
    let topic = unique("publish");
    warm_up(&*bus, &topic).await?;
    // Built beforehand (and published again and again): the row measures publishing.
    let batches: Vec<Arc<Vec<Outgoing>>> = (0..IN_FLIGHT)
        .map(|b| Arc::new((0..BATCH).map(|i| message(&topic, b * BATCH + i)).collect()))
        .collect();
    let claimed = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let cpu_start = cpu_now();
    let start = Instant::now();
    let deadline = start + PUBLISH_TIME;
    let tasks: Vec<_> = batches
        .into_iter()
        .map(|batch| {
            let (bus, claimed, ok, failed, first_error) = (
                bus.clone(),
                claimed.clone(),
                ok.clone(),
                failed.clone(),
                first_error.clone(),
            );
            tokio::spawn(async move {
                while claimed.fetch_add(1, Ordering::Relaxed) < PUBLISH_MAX / BATCH
                    && Instant::now() < deadline
                {
                    for r in bus.publish(&batch).await {
                        match r {
                            Ok(()) => ok.fetch_add(1, Ordering::Relaxed),
                            Err(e) => {
                                first_error
                                    .lock()
                                    .unwrap()
                                    .get_or_insert_with(|| e.to_string());
                                failed.fetch_add(1, Ordering::Relaxed)
                            }
                        };
                    }
                    // The embedded bus never waits: let the other publishers in.
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.map_err(err)?;
    }
    let m = Measured {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        secs: start.elapsed().as_secs_f64(),
        cpu: cpu_now().zip(cpu_start).map(|(b, a)| b - a),
    };
    if m.ok == 0 {
        return Err(format!(
            "nothing published: {}",
            first_error.lock().unwrap().clone().unwrap_or_default()
        ));
    }
    Ok(m)
}

// ---------------------------------------------------------------------------------------------
// Stores

struct Store {
    name: &'static str,
    db: Db,
    /// PostgreSQL: the URL and the schema to drop at the end.
    postgres: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Store {
    async fn open(name: &'static str, postgres_url: Option<String>) -> Res<Self> {
        let dir = tempfile::tempdir().map_err(err)?;
        let schema = format!("bench_{}", Uuid::new_v4().simple());
        let cfg = DatabaseConfig {
            driver: if postgres_url.is_some() {
                DatabaseDriver::Postgres
            } else {
                DatabaseDriver::Sqlite
            },
            url: Secret::new(postgres_url.clone().unwrap_or_default()),
            data_dir: dir.path().to_path_buf(),
            max_connections: 8,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(10),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
        };
        let db = Db::open(&cfg, &schema, MIGRATIONS).await.map_err(err)?;
        Ok(Self {
            name,
            db,
            postgres: postgres_url.map(|u| (u, schema)),
            _dir: dir,
        })
    }

    /// Leaves the outbox empty (rows a stopped relay did not deliver).
    async fn clear(&self) {
        let _ = match &self.db {
            Db::Postgres(p) => sqlx::query("DELETE FROM outbox")
                .execute(&**p)
                .await
                .map(drop),
            Db::Sqlite(p) => sqlx::query("DELETE FROM outbox")
                .execute(&**p)
                .await
                .map(drop),
        };
    }

    async fn close(self) {
        self.db.close().await;
        if let Some((url, schema)) = self.postgres {
            match sqlx::PgPool::connect(&url).await {
                Ok(pool) => {
                    let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
                    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await {
                        eprintln!("cannot drop schema {schema}: {e}");
                    }
                    pool.close().await;
                }
                Err(e) => eprintln!("cannot drop schema {schema}: {e}"),
            }
        }
    }
}

fn relay_config() -> OutboxConfig {
    OutboxConfig {
        poll_interval: Duration::from_millis(25),
        batch_size: BATCH as u32,
        timeout: Duration::from_secs(10),
        lease: Duration::from_secs(30),
        retry_initial_backoff: Duration::from_millis(50),
        retry_max_backoff: Duration::from_secs(1),
    }
}

// ---------------------------------------------------------------------------------------------
// Row 2: the outbox relay

struct RelayRun {
    relay: Measured,
    /// Enqueue rate (transactions of BATCH rows).
    enqueue: f64,
}

async fn relay_throughput(store: &Store, bus: Arc<dyn Bus>) -> Res<RelayRun> {
    let topic = unique("relay");
    warm_up(&*bus, &topic).await?;
    let outbox = Outbox::new(&store.db, "bench");
    let start = Instant::now();
    for b in 0..RELAY_EVENTS / BATCH {
        let batch: Vec<Message> = (0..BATCH)
            .map(|i| outbox_message(&topic, b * BATCH + i, None))
            .collect();
        outbox.enqueue_alone(&batch).await.map_err(err)?;
    }
    let enqueue = RELAY_EVENTS as f64 / start.elapsed().as_secs_f64();

    let (stop_tx, stop_rx) = watch::channel(false);
    let relay = outbox
        .relay(TOPIC, Arc::new(BusDestination::new(bus)), &relay_config())
        .ordered();
    let stats = relay.stats();
    let start = Instant::now();
    let task = tokio::spawn(relay.run(stop_rx));
    while (stats.delivered.load(Ordering::Relaxed) as usize) < RELAY_EVENTS
        && start.elapsed() < RELAY_TIME
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    stopped("the relay", task).await?;
    store.clear().await;
    let delivered = stats.delivered.load(Ordering::Relaxed) as usize;
    Ok(RelayRun {
        relay: Measured {
            ok: delivered,
            failed: RELAY_EVENTS - delivered.min(RELAY_EVENTS),
            secs,
            cpu: None,
        },
        enqueue,
    })
}

// ---------------------------------------------------------------------------------------------
// Row 3: latency from commit to handler

/// Records, per handled event, now − its `sent_ns` stamp.
struct Recorder {
    base: Instant,
    warm: AtomicBool,
    /// (seq, latency in ns)
    seen: Mutex<Vec<(u64, u64)>>,
}

impl Recorder {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
}

#[async_trait]
impl Handler for Recorder {
    async fn handle(&self, event: &Event, _: &Received) -> Result<(), HandlerError> {
        let now = self.now_ns();
        match (event.data["seq"].as_u64(), event.data["sent_ns"].as_u64()) {
            (Some(seq), Some(sent)) => self
                .seen
                .lock()
                .unwrap()
                .push((seq, now.saturating_sub(sent))),
            _ => self.warm.store(true, Ordering::Relaxed),
        }
        Ok(())
    }
}

struct LatencyRun {
    committed: usize,
    handled: usize,
    /// Committed but not yet handled when the commits stopped.
    backlog: usize,
    rate: f64,
    secs: f64,
    p50: f64,
    p99: f64,
    max: f64,
}

async fn latency(store: &Store, bus: Arc<dyn Bus>, rate: f64) -> Res<LatencyRun> {
    let topic = unique("latency");
    let rec = Arc::new(Recorder {
        base: Instant::now(),
        warm: AtomicBool::new(false),
        seen: Mutex::new(Vec::new()),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let result = async {
        // The group is ready once it handled a warm-up event published before it joined.
        warm_up(&*bus, &topic).await?;
        let sub =
            Subscription::new(&unique("group"), &[&topic], rec.clone()).config(ConsumerConfig {
                batch_size: BATCH as u32,
                ..ConsumerConfig::default()
            });
        let running = consumer::spawn(bus.clone(), sub, stop_rx.clone());
        let joined = Instant::now();
        while !rec.warm.load(Ordering::Relaxed) {
            if joined.elapsed() > JOIN_TIME || running.task.is_finished() {
                return Err(format!(
                    "the consumer group did not handle its warm-up event within {JOIN_TIME:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }

        let outbox = Outbox::new(&store.db, "bench");
        let relay = outbox
            .relay(
                TOPIC,
                Arc::new(BusDestination::new(bus.clone())),
                &relay_config(),
            )
            .ordered();
        let relay_task = tokio::spawn(relay.run(stop_rx.clone()));

        // Commits at `rate`: every tick, what is due so far, in one transaction.
        let mut tick = tokio::time::interval(PACE_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let start = Instant::now();
        let mut committed = 0usize;
        while start.elapsed() < PACED_TIME {
            tick.tick().await;
            let due = ((start.elapsed().as_secs_f64() * rate) as usize)
                .saturating_sub(committed)
                .min(BATCH);
            if due == 0 {
                continue;
            }
            let stamp = rec.now_ns();
            let batch: Vec<Message> = (committed..committed + due)
                .map(|seq| outbox_message(&topic, seq, Some(stamp)))
                .collect();
            outbox.enqueue_alone(&batch).await.map_err(err)?;
            committed += due;
        }
        let secs = start.elapsed().as_secs_f64();
        let backlog = committed.saturating_sub(rec.seen.lock().unwrap().len());
        let drained = Instant::now();
        while rec.seen.lock().unwrap().len() < committed && drained.elapsed() < DRAIN_TIME {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let _ = stop_tx.send(true);
        stopped("the relay", relay_task).await?;
        stopped("the consumer", running.task).await?;
        Ok((committed, secs, backlog))
    }
    .await;
    let _ = stop_tx.send(true);
    store.clear().await;
    let (committed, secs, backlog) = result?;

    let seen = std::mem::take(&mut *rec.seen.lock().unwrap());
    let handled = seen.iter().map(|(s, _)| *s).collect::<HashSet<_>>().len();
    let mut lat: Vec<u64> = seen.into_iter().map(|(_, l)| l).collect();
    if lat.is_empty() {
        return Err(format!("none of {committed} committed events was handled"));
    }
    lat.sort_unstable();
    let pct = |q: f64| lat[((lat.len() - 1) as f64 * q).round() as usize] as f64 / 1e6;
    Ok(LatencyRun {
        committed,
        handled,
        backlog,
        rate: committed as f64 / secs,
        secs,
        p50: pct(0.50),
        p99: pct(0.99),
        max: pct(1.0),
    })
}

/// Waits for a background task that was told to stop (a stuck broker must not hang the run).
async fn stopped(what: &str, task: tokio::task::JoinHandle<()>) -> Res<()> {
    match tokio::time::timeout(Duration::from_secs(20), task).await {
        Ok(r) => r.map_err(err),
        Err(_) => Err(format!("{what} did not stop within 20s")),
    }
}

// ---------------------------------------------------------------------------------------------
// Output

/// `1234567.8` as `1,234,568`.
fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

struct Table {
    rows: Vec<[String; 9]>,
}

const COLUMNS: [&str; 9] = [
    "#",
    "measurement",
    "bus",
    "store",
    "msgs",
    "secs",
    "msgs/s",
    "ratio",
    "result",
];
/// Columns of numbers: aligned right.
const NUMERIC: [bool; 9] = [false, false, false, false, true, true, true, true, false];

impl Table {
    #[allow(clippy::too_many_arguments)]
    fn row(
        &mut self,
        n: &str,
        what: &str,
        bus: &str,
        store: &str,
        msgs: String,
        secs: String,
        rate: String,
        ratio: String,
        result: String,
    ) {
        self.rows.push([
            n.into(),
            what.into(),
            bus.into(),
            store.into(),
            msgs,
            secs,
            rate,
            ratio,
            result,
        ]);
    }

    fn skipped(&mut self, n: &str, what: &str, bus: &str, store: &str, why: String) {
        let dash = || "-".to_string();
        self.row(n, what, bus, store, dash(), dash(), dash(), dash(), why);
    }

    fn print(&self) {
        let mut width = COLUMNS.map(str::len);
        for r in &self.rows {
            for (w, c) in width.iter_mut().zip(r) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: [&str; 9]| {
            let mut s = String::new();
            for (i, c) in cells.iter().enumerate() {
                let pad = " ".repeat(width[i] - c.chars().count());
                if i > 0 {
                    s.push_str("  ");
                }
                if NUMERIC[i] {
                    s.push_str(&pad);
                    s.push_str(c);
                } else {
                    s.push_str(c);
                    if i + 1 < cells.len() {
                        s.push_str(&pad);
                    }
                }
            }
            println!("{s}");
        };
        line(COLUMNS);
        let rule = width.map(|w| "-".repeat(w));
        line(rule.each_ref().map(String::as_str));
        for r in &self.rows {
            line(r.each_ref().map(String::as_str));
        }
    }
}

// ---------------------------------------------------------------------------------------------

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

const NO_KAFKA: &str = "skipped: set PLT_BENCH_KAFKA_BROKERS";
const NO_POSTGRES: &str = "skipped: set PLT_BENCH_POSTGRES_URL";

struct BusUnder {
    name: &'static str,
    bus: Result<Arc<dyn Bus>, String>,
    /// Row 1's rate on this bus.
    direct: Option<f64>,
}

async fn bench() {
    let started = Instant::now();
    let sample = message("bench.sample", 123_456);
    let header_bytes: usize = sample.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    println!(
        "plt-events bench (tokio runtime with one worker thread; librdkafka, SQLite and PostgreSQL \
         work on threads/processes of their own). Events: {} bytes of JSON data + {header_bytes} bytes \
         of CloudEvents headers.",
        sample.value.len()
    );
    if let Ok(cpus) = plt_kernel::affinity::allowed_cpus() {
        println!(
            "  this process may run on CPU(s) {}.",
            plt_kernel::affinity::format_list(&cpus)
        );
    }
    println!(
        "  1 publish: prebuilt batches of {BATCH} via Bus::publish, {IN_FLIGHT} in flight, up to {} msgs or {}s; \
         ratio = msgs/s / goal of {} msgs/s on one core (PASS if >= 1).",
        thousands(PUBLISH_MAX as f64),
        PUBLISH_TIME.as_secs(),
        thousands(GOAL)
    );
    println!(
        "  2 outbox relay: {} events enqueued ({BATCH} per transaction), then drained by an ordered relay \
         (batch {BATCH}) to the bus; ratio = relay msgs/s / row 1 on the same bus.",
        thousands(RELAY_EVENTS as f64)
    );
    println!(
        "  3 latency: events committed into the outbox for {}s at up to half of row 2's rate \
         (an eighth, a quarter, a half, upwards while the pipeline keeps up: the ratio column says which) (every {}ms, what is due, \
         stamped as the transaction starts), relayed, handled by a consumer group; now - stamp at the handler.",
        PACED_TIME.as_secs(),
        PACE_TICK.as_millis()
    );
    println!();

    let mut buses = vec![BusUnder {
        name: "memory",
        bus: Ok(Arc::new(MemoryBus::new())),
        direct: None,
    }];
    // The consumers' fetch wait: the platform's default unless `PLT_BENCH_KAFKA_FETCH_WAIT`
    // (e.g. `10ms`) says otherwise. A broker that holds every fetch for the whole wait, as
    // tansu 0.6 does, adds it to every delivery.
    let fetch_wait = match env("PLT_BENCH_KAFKA_FETCH_WAIT")
        .map(|v| humantime_serde::re::humantime::parse_duration(&v))
    {
        None => KafkaConfig::default().fetch_wait,
        Some(Ok(d)) => d,
        Some(Err(e)) => {
            eprintln!("PLT_BENCH_KAFKA_FETCH_WAIT: {e}");
            std::process::exit(2);
        }
    };
    buses.push(BusUnder {
        // The broker's name in the table (`PLT_BENCH_KAFKA_LABEL`, e.g. `tansu/sqlite`).
        name: env("PLT_BENCH_KAFKA_LABEL").map_or("kafka", |l| {
            Box::leak(format!("kafka ({l})").into_boxed_str())
        }),
        bus: match env("PLT_BENCH_KAFKA_BROKERS") {
            None => Err(NO_KAFKA.to_string()),
            Some(brokers) => KafkaBus::new(
                &KafkaConfig {
                    brokers,
                    linger: Duration::from_millis(5),
                    fetch_wait,
                    ..KafkaConfig::default()
                },
                "plt-bench",
            )
            .map(|b| Arc::new(b) as Arc<dyn Bus>)
            .map_err(|e| format!("error: {e}")),
        },
        direct: None,
    });

    let mut t = Table { rows: Vec::new() };
    let mut summary: Vec<String> = Vec::new();

    // Row 1.
    for b in &mut buses {
        let bus = match &b.bus {
            Ok(bus) => bus.clone(),
            Err(why) => {
                t.skipped("1", "publish (direct)", b.name, "-", why.clone());
                continue;
            }
        };
        eprintln!("1 publish on {} ...", b.name);
        match publish_throughput(bus).await {
            Ok(m) => {
                let ratio = m.rate() / GOAL;
                let verdict = match m.per_core() {
                    _ if ratio >= 1.0 => "PASS",
                    Some(p) if p >= GOAL => "FAIL: the broker is the limit",
                    _ => "FAIL",
                };
                let failed = if m.failed > 0 {
                    format!(" ({} failed)", thousands(m.failed as f64))
                } else {
                    String::new()
                };
                // What it cost this process: with a broker that is the bottleneck, the
                // wall-clock rate says little about the publishing side; this does.
                let cost = match (m.cpu, m.per_core()) {
                    (Some(cpu), Some(per_core)) => format!(
                        "; this process {:.2} cores = {} msgs per core-second ({:.2}x goal)",
                        cpu / m.secs.max(1e-9),
                        thousands(per_core),
                        per_core / GOAL
                    ),
                    _ => String::new(),
                };
                t.row(
                    "1",
                    "publish (direct)",
                    b.name,
                    "-",
                    thousands(m.ok as f64),
                    format!("{:.2}", m.secs),
                    thousands(m.rate()),
                    format!("{ratio:.2}x goal"),
                    format!("{verdict}{failed}{cost}"),
                );
                summary.push(format!(
                    "{} publish {} msgs/s {verdict}",
                    b.name,
                    thousands(m.rate())
                ));
                b.direct = Some(m.rate());
            }
            Err(e) => t.skipped("1", "publish (direct)", b.name, "-", format!("error: {e}")),
        }
    }

    // Rows 2 and 3, per store.
    let mut rows3 = Table { rows: Vec::new() };
    for (store_name, url) in [
        ("sqlite", None),
        ("postgres", env("PLT_BENCH_POSTGRES_URL")),
    ] {
        if store_name == "postgres" && url.is_none() {
            for b in &buses {
                t.skipped("2", "outbox relay", b.name, store_name, NO_POSTGRES.into());
                rows3.skipped(
                    "3",
                    "commit->handler",
                    b.name,
                    store_name,
                    NO_POSTGRES.into(),
                );
            }
            continue;
        }
        let store = match Store::open(store_name, url).await {
            Ok(s) => s,
            Err(e) => {
                for b in &buses {
                    t.skipped(
                        "2",
                        "outbox relay",
                        b.name,
                        store_name,
                        format!("error: {e}"),
                    );
                    rows3.skipped(
                        "3",
                        "commit->handler",
                        b.name,
                        store_name,
                        format!("error: {e}"),
                    );
                }
                continue;
            }
        };
        for b in &buses {
            let bus = match &b.bus {
                Ok(bus) => bus.clone(),
                Err(why) => {
                    t.skipped("2", "outbox relay", b.name, store.name, why.clone());
                    rows3.skipped("3", "commit->handler", b.name, store.name, why.clone());
                    continue;
                }
            };
            eprintln!("2 outbox relay on {}/{} ...", store.name, b.name);
            let relayed = match relay_throughput(&store, bus.clone()).await {
                Ok(r) => {
                    let ratio = b.direct.map_or("-".to_string(), |d| {
                        format!("{:.3}x direct", r.relay.rate() / d)
                    });
                    let result = if r.relay.failed > 0 {
                        format!(
                            "INCOMPLETE: {} not relayed within {}s",
                            thousands(r.relay.failed as f64),
                            RELAY_TIME.as_secs()
                        )
                    } else {
                        format!("enqueue {} msgs/s", thousands(r.enqueue))
                    };
                    t.row(
                        "2",
                        "outbox relay",
                        b.name,
                        store.name,
                        thousands(r.relay.ok as f64),
                        format!("{:.2}", r.relay.secs),
                        thousands(r.relay.rate()),
                        ratio.clone(),
                        result,
                    );
                    summary.push(format!(
                        "relay {}/{} {} msgs/s ({ratio})",
                        store.name,
                        b.name,
                        thousands(r.relay.rate())
                    ));
                    Some(r.relay.rate())
                }
                Err(e) => {
                    t.skipped(
                        "2",
                        "outbox relay",
                        b.name,
                        store.name,
                        format!("error: {e}"),
                    );
                    None
                }
            };
            let Some(relay_rate) = relayed else {
                rows3.skipped(
                    "3",
                    "commit->handler",
                    b.name,
                    store.name,
                    "skipped: no relay rate from row 2".into(),
                );
                continue;
            };
            // Half of row 2's rate is the target. A pipeline that does not keep up there
            // (commits, relay and a consumer on one broker) would measure queueing, not
            // latency, and leave the broker backlogged: so the loads are tried upwards — an
            // eighth, a quarter, a half — and the row reports the highest that kept up (or
            // the eighth, overloaded, if none did). The ratio column says which.
            let mut attempt = None;
            for fraction in [0.125, 0.25, 0.5] {
                eprintln!(
                    "3 latency on {}/{} at {fraction}x relay ...",
                    store.name, b.name
                );
                let r = latency(&store, bus.clone(), relay_rate * fraction).await;
                let keeps_up =
                    matches!(&r, Ok(l) if l.backlog as f64 <= l.rate && l.handled == l.committed);
                if keeps_up || attempt.is_none() {
                    attempt = Some((fraction, r));
                }
                if !keeps_up {
                    break;
                }
            }
            let Some((fraction, result)) = attempt else {
                continue;
            };
            match result {
                Ok(l) => {
                    let lost = if l.handled < l.committed {
                        format!(
                            "  ({} of {} not handled)",
                            thousands((l.committed - l.handled) as f64),
                            thousands(l.committed as f64)
                        )
                    } else {
                        String::new()
                    };
                    // More than a second of commits still waiting when they stopped: the
                    // pipeline did not keep up, and the latency is mostly queueing.
                    let overloaded = if l.backlog as f64 > l.rate {
                        format!(
                            "  OVERLOADED: {} waiting when commits stopped",
                            thousands(l.backlog as f64)
                        )
                    } else {
                        String::new()
                    };
                    rows3.row(
                        "3",
                        "commit->handler",
                        b.name,
                        store.name,
                        thousands(l.handled as f64),
                        format!("{:.2}", l.secs),
                        thousands(l.rate),
                        format!("{fraction}x relay"),
                        format!(
                            "p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms{lost}{overloaded}",
                            l.p50, l.p99, l.max
                        ),
                    );
                    summary.push(format!(
                        "latency {}/{} p50 {:.1} ms p99 {:.1} ms",
                        store.name, b.name, l.p50, l.p99
                    ));
                }
                Err(e) => rows3.skipped(
                    "3",
                    "commit->handler",
                    b.name,
                    store.name,
                    format!("error: {e}"),
                ),
            }
        }
        store.close().await;
    }
    t.rows.append(&mut rows3.rows);
    t.print();
    println!();
    println!(
        "summary ({:.0}s): {}",
        started.elapsed().as_secs_f64(),
        summary.join("; ")
    );
    // Leaves without dropping the Kafka clients: with a broker gone, librdkafka's destroy may
    // block for long.
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    std::process::exit(0);
}

fn main() {
    plt_kernel::telemetry::init_for_tests();
    // `cargo bench` passes `--bench`; there is nothing to choose.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(bench());
}
