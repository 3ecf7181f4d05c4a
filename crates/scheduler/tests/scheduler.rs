//! The scheduler on SQLite and on the real PostgreSQL (`PLT_TEST_POSTGRES_URL`, a fresh
//! schema per test), with several instances (each its own pool) on one database: every
//! interval occurrence runs exactly once, with no gap; missed occurrences are caught up by
//! policy; a failing handler is retried and recorded; an instance killed mid-run is taken
//! over when its lease ends and its late completion records nothing; stopping finishes the
//! run in flight. Waits poll generously; nothing asserts exact timings.

use chrono::{DateTime, Duration as ChronoDuration, DurationRound, Utc};
use plt_db::{Db, testing::Backend};
use plt_kernel::{
    Secret,
    config::{DatabaseConfig, DatabaseDriver},
};
use plt_scheduler::{CatchUp, Job, Retry, Run, Schedule, Scheduler, SchedulerConfig};
use std::{
    collections::HashSet,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{sync::watch, task::JoinHandle};

/// One database shared by the "instances" of a test.
struct TestDb {
    backend: Backend,
    schema: String,
    dir: tempfile::TempDir,
    pools: Mutex<Vec<Db>>,
}

impl TestDb {
    async fn open(backend: Backend, name: &str) -> Option<Self> {
        if backend == Backend::Postgres && plt_db::testing::postgres_url().is_none() {
            plt_db::testing::skipped(name);
            return None;
        }
        Some(Self {
            backend,
            schema: plt_db::testing::unique_schema("sched"),
            dir: tempfile::tempdir().expect("a temporary directory"),
            pools: Mutex::new(Vec::new()),
        })
    }

    /// A pool of its own, as another instance of the service has.
    async fn instance(&self) -> Db {
        let (driver, url) = match self.backend {
            Backend::Sqlite => (DatabaseDriver::Sqlite, String::new()),
            Backend::Postgres => (
                DatabaseDriver::Postgres,
                plt_db::testing::postgres_url().unwrap_or_default(),
            ),
        };
        let cfg = DatabaseConfig {
            driver,
            url: Secret::new(url),
            data_dir: self.dir.path().to_path_buf(),
            max_connections: 4,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
        };
        let db = Db::connect(&cfg, &self.schema)
            .await
            .expect("connecting to the test database");
        self.pools.lock().unwrap().push(db.clone());
        db
    }

    async fn close(self) {
        let pools = std::mem::take(&mut *self.pools.lock().unwrap());
        for p in pools {
            p.close().await;
        }
        plt_db::testing::drop_schema(&self.schema).await;
    }
}

/// Runs a test body on SQLite and on PostgreSQL.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name(plt_db::testing::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name(plt_db::testing::Backend::Postgres).await
                }
            }
        )*
    };
}

on_both!(
    every_occurrence_runs_once_across_instances,
    skip_runs_missed_occurrences_once,
    all_runs_each_missed_occurrence,
    failing_runs_are_retried_and_recorded,
    a_killed_instance_is_taken_over_and_its_late_end_is_fenced,
    stopping_finishes_the_run_in_flight,
);

fn config() -> SchedulerConfig {
    SchedulerConfig {
        enabled: true,
        poll_interval: Duration::from_millis(100),
        lease: Duration::from_secs(3),
    }
}

/// Waits until `f` holds, at most `within`.
async fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`eventually`] for a condition that reads the database.
async fn eventually_async<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts `scheduler` as a background job; its stop switch and task.
fn start(scheduler: &Scheduler) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (stop, stopping) = watch::channel(false);
    (stop, tokio::spawn(scheduler.clone().run(stopping)))
}

async fn stop(stop: watch::Sender<bool>, task: JoinHandle<()>) {
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the scheduler stops")
        .expect("the scheduler task ends cleanly");
}

/// Moves `job`'s pending occurrence to `at`, as if no instance had run since.
async fn seed(db: &Db, job: &str, at: DateTime<Utc>) {
    const SQL: &str = "UPDATE plt_schedule SET next_run_at = $2 WHERE name = $1";
    let n = match db {
        Db::Postgres(p) => sqlx::query(SQL)
            .bind(job)
            .bind(at)
            .execute(&**p)
            .await
            .map(|r| r.rows_affected()),
        Db::Sqlite(p) => sqlx::query(SQL)
            .bind(job)
            .bind(at)
            .execute(&**p)
            .await
            .map(|r| r.rows_affected()),
    }
    .expect("seeding the schedule");
    assert_eq!(n, 1, "the job's row exists");
}

type Seen = Arc<Mutex<Vec<(Run, usize)>>>;

/// Three instances on one database run an interval job for a few seconds: each
/// occurrence ran once (no duplicate), one interval after the previous (no gap), with a
/// growing fence; the metrics and the status show it.
async fn every_occurrence_runs_once_across_instances(backend: Backend) {
    let Some(t) = TestDb::open(backend, "every_occurrence_runs_once_across_instances").await else {
        return;
    };
    let metrics = plt_kernel::metrics::handle();
    let job_name = format!("tick_{}", t.schema);
    let every = Duration::from_millis(300);
    let seen: Seen = Arc::default();
    let overlapping = Arc::new(AtomicBool::new(false));
    let in_flight = Arc::new(AtomicU32::new(0));
    let mut instances = Vec::new();
    for i in 0..3 {
        let db = t.instance().await;
        let seen = seen.clone();
        let in_flight = in_flight.clone();
        let overlapping = overlapping.clone();
        let job = Job::new(
            job_name.clone(),
            Schedule::every(every).unwrap(),
            move |run: Run| {
                let seen = seen.clone();
                let in_flight = in_flight.clone();
                let overlapping = overlapping.clone();
                async move {
                    if in_flight.fetch_add(1, Ordering::SeqCst) > 0 {
                        overlapping.store(true, Ordering::SeqCst);
                    }
                    seen.lock().unwrap().push((run, i));
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    Ok::<(), String>(())
                }
            },
        )
        // Under load an instance may be late: catching up runs every occurrence anyway.
        .catch_up(CatchUp::all());
        let s = Scheduler::new(&db, &config())
            .owner(format!("instance-{i}"))
            .job(job)
            .unwrap();
        instances.push((s.clone(), start(&s)));
    }
    eventually("ten occurrences", Duration::from_secs(30), || {
        seen.lock().unwrap().len() >= 10
    })
    .await;
    let status_of = instances[0].0.clone();
    for (_, (s, task)) in instances {
        stop(s, task).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert!(!overlapping.load(Ordering::SeqCst), "two runs overlapped");
    let mut times: Vec<DateTime<Utc>> = seen.iter().map(|(r, _)| r.scheduled_for).collect();
    let distinct: HashSet<_> = times.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        times.len(),
        "an occurrence ran twice: {seen:?}"
    );
    times.sort();
    for w in times.windows(2) {
        assert_eq!(
            w[1] - w[0],
            ChronoDuration::milliseconds(300),
            "a gap between occurrences: {times:?}"
        );
    }
    // Each claim moved the fence; runs in occurrence order hold growing fences.
    let mut by_time = seen.clone();
    by_time.sort_by_key(|(r, _)| r.scheduled_for);
    for w in by_time.windows(2) {
        assert!(
            w[1].0.fence > w[0].0.fence,
            "fences out of order: {by_time:?}"
        );
        assert_eq!(w[1].0.attempt, 1);
    }
    let status = status_of.status().await.unwrap();
    assert_eq!(status.len(), 1);
    let st = &status[0];
    assert_eq!(st.schedule, "@every 300ms");
    assert_eq!(st.last_outcome.as_deref(), Some("ok"));
    assert_eq!(st.last_scheduled_for, times.last().copied());
    assert_eq!(
        st.next_run_at,
        times.last().map(|t| *t + ChronoDuration::milliseconds(300))
    );
    assert!(!st.running);
    assert!(
        st.owner
            .as_deref()
            .is_some_and(|o| o.starts_with("instance-"))
    );
    let json = serde_json::to_value(st).unwrap();
    assert_eq!(json["name"], job_name.as_str());
    assert!(json["next_run_at"].is_string());
    if let Some(m) = metrics {
        let text = m.render();
        let series = format!("scheduler_runs_total{{job=\"{job_name}\",outcome=\"ok\"}}");
        assert!(text.contains(&series), "{series} missing");
        for name in [
            "scheduler_run_duration_seconds_count",
            "scheduler_next_run_timestamp_seconds",
            "scheduler_last_success_timestamp_seconds",
        ] {
            let series = format!("{name}{{job=\"{job_name}\"}}");
            assert!(text.contains(&series), "{series} missing");
        }
    }
    t.close().await;
}

/// A job whose occurrences were missed for five hours, with `Skip`: one run, for the
/// latest missed occurrence, then the next future one is pending.
async fn skip_runs_missed_occurrences_once(backend: Backend) {
    let Some(t) = TestDb::open(backend, "skip_runs_missed_occurrences_once").await else {
        return;
    };
    let db = t.instance().await;
    let seen: Arc<Mutex<Vec<Run>>> = Arc::default();
    let s = {
        let seen = seen.clone();
        Scheduler::new(&db, &config())
            .job(Job::new(
                "hourly",
                Schedule::every(Duration::from_secs(3600)).unwrap(),
                move |run: Run| {
                    seen.lock().unwrap().push(run);
                    async { Ok::<(), String>(()) }
                },
            ))
            .unwrap()
    };
    s.install().await.unwrap();
    let seeded = (Utc::now() - ChronoDuration::minutes(5 * 60 + 10))
        .duration_trunc(ChronoDuration::seconds(1))
        .unwrap();
    seed(&db, "hourly", seeded).await;
    let (stop_tx, task) = start(&s);
    eventually("the catch-up run", Duration::from_secs(15), || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    // Nothing more comes: the next occurrence is in the future.
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop(stop_tx, task).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].scheduled_for, seeded + ChronoDuration::hours(5));
    assert_eq!(seen[0].attempt, 1);
    let st = &s.status().await.unwrap()[0];
    assert_eq!(st.next_run_at, Some(seeded + ChronoDuration::hours(6)));
    assert!(st.next_run_at.is_some_and(|n| n > Utc::now()));
    assert_eq!(st.last_scheduled_for, Some(seen[0].scheduled_for));
    t.close().await;
}

/// A daily cron job missed for five days, with `All`: each missed occurrence runs, oldest
/// first, with its own time; with `All { max: 2 }` only the latest two.
async fn all_runs_each_missed_occurrence(backend: Backend) {
    let Some(t) = TestDb::open(backend, "all_runs_each_missed_occurrence").await else {
        return;
    };
    let db = t.instance().await;
    let seen: Arc<Mutex<Vec<Run>>> = Arc::default();
    let handler = {
        let seen = seen.clone();
        move |run: Run| {
            seen.lock().unwrap().push(run);
            async { Ok::<(), String>(()) }
        }
    };
    let s = Scheduler::new(&db, &config())
        .job(
            Job::new(
                "daily",
                Schedule::cron("0 0 * * *").unwrap(),
                handler.clone(),
            )
            .catch_up(CatchUp::all()),
        )
        .unwrap()
        .job(
            Job::new("daily2", Schedule::cron("0 0 0 * * *").unwrap(), handler)
                .catch_up(CatchUp::All { max: 2 }),
        )
        .unwrap();
    s.install().await.unwrap();
    let midnight = Utc::now().duration_trunc(ChronoDuration::days(1)).unwrap();
    let seeded = midnight - ChronoDuration::days(5);
    seed(&db, "daily", seeded).await;
    seed(&db, "daily2", seeded).await;
    let (stop_tx, task) = start(&s);
    eventually("the catch-up runs", Duration::from_secs(20), || {
        seen.lock().unwrap().len() >= 8
    })
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    stop(stop_tx, task).await;
    let seen = seen.lock().unwrap().clone();
    // Every midnight from the seeded one up to now (the test may cross one).
    let mut expected = Vec::new();
    let mut m = seeded;
    while m <= Utc::now() {
        expected.push(m);
        m += ChronoDuration::days(1);
    }
    let daily: Vec<_> = seen
        .iter()
        .filter(|r| r.job == "daily")
        .map(|r| r.scheduled_for)
        .collect();
    assert_eq!(daily, expected, "in order, each once");
    let daily2: Vec<_> = seen
        .iter()
        .filter(|r| r.job == "daily2")
        .map(|r| r.scheduled_for)
        .collect();
    assert_eq!(daily2, expected[expected.len() - 2..].to_vec());
    for st in s.status().await.unwrap() {
        assert_eq!(
            st.next_run_at,
            expected.last().map(|m| *m + ChronoDuration::days(1))
        );
        assert_eq!(st.last_outcome.as_deref(), Some("ok"));
    }
    t.close().await;
}

/// A handler failing twice is retried after a back-off (one instance at a time, two
/// instances running) and succeeds on its third attempt of the same occurrence; one that
/// fails (or panics) every time is given up after its attempts, recorded as an error, and
/// the job goes on with its next occurrence.
async fn failing_runs_are_retried_and_recorded(backend: Backend) {
    let Some(t) = TestDb::open(backend, "failing_runs_are_retried_and_recorded").await else {
        return;
    };
    let seen: Arc<Mutex<Vec<Run>>> = Arc::default();
    let hopeless_calls = Arc::new(AtomicU32::new(0));
    let retry = Retry {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(1),
    };
    let mut instances = Vec::new();
    for i in 0..2 {
        let db = t.instance().await;
        let flaky = {
            let seen = seen.clone();
            move |run: Run| {
                let seen = seen.clone();
                async move {
                    let attempt = run.attempt;
                    seen.lock().unwrap().push(run);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if attempt < 3 {
                        return Err(format!("attempt {attempt} failed"));
                    }
                    Ok(())
                }
            }
        };
        let hopeless = {
            let calls = hopeless_calls.clone();
            move |run: Run| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n.is_multiple_of(2) {
                        panic!("attempt {} exploded", run.attempt);
                    }
                    Err::<(), _>(std::io::Error::other("boom"))
                }
            }
        };
        let s = Scheduler::new(&db, &config())
            .owner(format!("instance-{i}"))
            .job(
                Job::new(
                    "flaky",
                    Schedule::every(Duration::from_secs(3600)).unwrap(),
                    flaky,
                )
                .retry(retry),
            )
            .unwrap()
            .job(
                Job::new(
                    "hopeless",
                    Schedule::every(Duration::from_secs(3600)).unwrap(),
                    hopeless,
                )
                .retry(Retry {
                    max_attempts: 2,
                    ..retry
                }),
            )
            .unwrap();
        s.install().await.unwrap();
        instances.push(s);
    }
    let db = t.instance().await;
    let due = (Utc::now() - ChronoDuration::seconds(1))
        .duration_trunc(ChronoDuration::milliseconds(1))
        .unwrap();
    seed(&db, "flaky", due).await;
    seed(&db, "hopeless", due).await;
    let running: Vec<_> = instances.iter().map(start).collect();
    let s = instances[0].clone();
    eventually_async("the flaky job to succeed", Duration::from_secs(20), || {
        let s = s.clone();
        async move {
            let st = s.status().await.unwrap();
            st[0].last_outcome.as_deref() == Some("ok")
                && st[1].last_outcome.as_deref() == Some("error")
                && st[1].attempt == 0
        }
    })
    .await;
    for (stop_tx, task) in running {
        stop(stop_tx, task).await;
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen.iter().map(|r| r.attempt).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "{seen:?}"
    );
    assert!(seen.iter().all(|r| r.scheduled_for == due));
    assert!(seen.windows(2).all(|w| w[1].fence > w[0].fence));
    assert_eq!(hopeless_calls.load(Ordering::SeqCst), 2);
    let st = s.status().await.unwrap();
    let flaky = &st[0];
    assert_eq!(flaky.last_error, None);
    assert_eq!(flaky.attempt, 0);
    assert_eq!(flaky.last_scheduled_for, Some(due));
    assert_eq!(flaky.next_run_at, Some(due + ChronoDuration::hours(1)));
    assert!(flaky.last_success_at.is_some());
    let hopeless = &st[1];
    assert_eq!(hopeless.last_outcome.as_deref(), Some("error"));
    let error = hopeless.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("boom") || error.contains("panicked"),
        "{error}"
    );
    assert_eq!(hopeless.last_success_at, None);
    assert_eq!(hopeless.next_run_at, Some(due + ChronoDuration::hours(1)));
    t.close().await;
}

/// Instance A claims an occurrence and is killed mid-run (its task aborted while the
/// handler sleeps, lease 600 ms). Instance B takes the occurrence over once the lease ended
/// (attempt 2, a larger fence) and records it. A's late completion (a direct call with
/// its old run) writes nothing, and its fence no longer holds in a transaction.
async fn a_killed_instance_is_taken_over_and_its_late_end_is_fenced(backend: Backend) {
    let Some(t) = TestDb::open(
        backend,
        "a_killed_instance_is_taken_over_and_its_late_end_is_fenced",
    )
    .await
    else {
        return;
    };
    let seen: Seen = Arc::default();
    let finished = Arc::new(AtomicU32::new(0));
    let make = |i: usize, db: &Db| {
        let seen = seen.clone();
        let finished = finished.clone();
        let job = Job::new(
            "invoices",
            Schedule::every(Duration::from_secs(3600)).unwrap(),
            move |run: Run| {
                let seen = seen.clone();
                let finished = finished.clone();
                async move {
                    let first = run.attempt == 1;
                    seen.lock().unwrap().push((run, i));
                    if first {
                        // Killed before this ends.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok::<(), String>(())
                }
            },
        )
        .lease(Duration::from_millis(600));
        Scheduler::new(db, &config())
            .owner(format!("instance-{i}"))
            .job(job)
            .unwrap()
    };
    let db_a = t.instance().await;
    let db_b = t.instance().await;
    let a = make(0, &db_a);
    let b = make(1, &db_b);
    a.install().await.unwrap();
    seed(&db_a, "invoices", Utc::now() - ChronoDuration::seconds(1)).await;
    let (_stop_a, task_a) = start(&a);
    eventually("A to start the run", Duration::from_secs(15), || {
        !seen.lock().unwrap().is_empty()
    })
    .await;
    let st = &a.status().await.unwrap()[0];
    assert!(st.running);
    assert_eq!(st.owner.as_deref(), Some("instance-0"));
    // Killed: the handler is dropped mid-sleep and the lease is no longer renewed.
    task_a.abort();
    let _ = task_a.await;
    let (stop_b, task_b) = start(&b);
    eventually(
        "B to take the occurrence over",
        Duration::from_secs(20),
        || finished.load(Ordering::SeqCst) >= 1,
    )
    .await;
    eventually_async("B's run to be recorded", Duration::from_secs(10), || {
        let b = b.clone();
        async move { b.status().await.unwrap()[0].last_outcome.as_deref() == Some("ok") }
    })
    .await;
    stop(stop_b, task_b).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let (run_a, who_a) = seen[0].clone();
    let (run_b, who_b) = seen[1].clone();
    assert_eq!((who_a, who_b), (0, 1));
    assert_eq!(run_a.scheduled_for, run_b.scheduled_for);
    assert_eq!(run_b.attempt, 2);
    assert!(run_b.fence > run_a.fence);
    let before = b.status().await.unwrap()[0].clone();
    assert_eq!(before.owner.as_deref(), Some("instance-1"));
    assert!(!before.running);
    // A's late end (as if its handler had gone on and finished): fenced off, even as a
    // failure that would schedule a retry.
    assert!(!a.complete(&run_a, Ok(())).await.unwrap());
    assert!(!a.complete(&run_a, Err("late".into())).await.unwrap());
    let after = b.status().await.unwrap()[0].clone();
    assert_eq!(after, before);
    // A's own writes, fenced in a transaction, are refused too; B's fence still holds.
    match &db_a {
        Db::Postgres(p) => {
            let mut tx = p.begin().await.unwrap();
            assert!(!run_a.still_owner(&mut *tx).await.unwrap());
            assert!(run_b.still_owner(&mut *tx).await.unwrap());
            tx.rollback().await.unwrap();
        }
        Db::Sqlite(p) => {
            let mut tx = p.begin().await.unwrap();
            assert!(!run_a.still_owner(&mut *tx).await.unwrap());
            assert!(run_b.still_owner(&mut *tx).await.unwrap());
            tx.rollback().await.unwrap();
        }
    }
    // The direct API: a claim of a job that is not due yields nothing.
    assert!(b.claim("invoices").await.unwrap().is_none());
    assert!(b.claim("nope").await.is_err());
    t.close().await;
}

/// Stopping while a run is in flight: the scheduler claims nothing more, lets the run
/// finish and records it before `run` returns.
async fn stopping_finishes_the_run_in_flight(backend: Backend) {
    let Some(t) = TestDb::open(backend, "stopping_finishes_the_run_in_flight").await else {
        return;
    };
    let db = t.instance().await;
    let started = Arc::new(AtomicBool::new(false));
    let s = {
        let started = started.clone();
        Scheduler::new(&db, &config())
            .job(Job::new(
                "slow",
                Schedule::every(Duration::from_secs(3600)).unwrap(),
                move |_run: Run| {
                    let started = started.clone();
                    async move {
                        started.store(true, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(700)).await;
                        Ok::<(), String>(())
                    }
                },
            ))
            .unwrap()
    };
    s.install().await.unwrap();
    seed(&db, "slow", Utc::now() - ChronoDuration::seconds(1)).await;
    let (stop_tx, task) = start(&s);
    eventually("the run to start", Duration::from_secs(15), || {
        started.load(Ordering::SeqCst)
    })
    .await;
    stop(stop_tx, task).await;
    let st = &s.status().await.unwrap()[0];
    assert_eq!(st.last_outcome.as_deref(), Some("ok"));
    assert!(!st.running);
    // Disabled: returns at once, runs nothing.
    let off = Scheduler::new(
        &db,
        &SchedulerConfig {
            enabled: false,
            ..config()
        },
    );
    let (_tx, rx) = watch::channel(false);
    tokio::time::timeout(Duration::from_secs(5), off.run(rx))
        .await
        .expect("a disabled scheduler returns at once");
    t.close().await;
}

#[test]
fn cron_expressions_parse() {
    let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    // Five fields: minute granularity, second 0, UTC.
    let s = Schedule::cron("*/15 9-17 * * MON-FRI").unwrap();
    assert_eq!(
        s.next_after(at("2026-03-06T17:50:00Z")), // a Friday
        Some(at("2026-03-09T09:00:00Z"))
    );
    assert_eq!(
        s.next_after(at("2026-03-09T09:00:00Z")),
        Some(at("2026-03-09T09:15:00Z"))
    );
    // Six fields: seconds first.
    let s = Schedule::cron("30 * * * * *").unwrap();
    assert_eq!(
        s.next_after(at("2026-01-01T00:00:30.5Z")),
        Some(at("2026-01-01T00:01:30Z"))
    );
    // Aliases and names.
    let s = Schedule::cron("@daily").unwrap();
    assert_eq!(
        s.next_after(at("2026-01-01T00:00:00Z")),
        Some(at("2026-01-02T00:00:00Z"))
    );
    assert!(Schedule::cron("0 12 1 JAN *").is_ok());
    assert_eq!(
        Schedule::cron(" 0 2 * * * ").unwrap().to_string(),
        "0 2 * * *"
    );
    // Refused: wrong field counts, out of range, never matching, garbage.
    for bad in [
        "",
        "* * * *",
        "0 0 0 1 1 * 2030",
        "61 * * * *",
        "* 25 * * *",
        "0 0 30 2 *",
        "every minute",
    ] {
        assert!(Schedule::cron(bad).is_err(), "{bad:?} was accepted");
    }
    // The text form: cron or @every.
    let s: Schedule = "@every 1m 30s".parse().unwrap();
    assert!(s.is_interval());
    assert_eq!(s.to_string(), "@every 1m 30s");
    assert_eq!(
        s.next_after(at("2026-01-01T00:00:00Z")),
        Some(at("2026-01-01T00:01:30Z"))
    );
    assert!("@every 0s".parse::<Schedule>().is_err());
    assert!("@every soon".parse::<Schedule>().is_err());
    assert!("0 * * * *".parse::<Schedule>().is_ok());
    assert!(Schedule::every(Duration::from_micros(10)).is_err());
}

#[test]
fn jobs_are_checked_when_declared() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let cfg = DatabaseConfig {
            driver: DatabaseDriver::Sqlite,
            url: Secret::new(String::new()),
            data_dir: dir.path().to_path_buf(),
            max_connections: 1,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
        };
        let db = Db::connect(&cfg, "declared").await.unwrap();
        let ok = |_run: Run| async { Ok::<(), String>(()) };
        let every = Schedule::every(Duration::from_secs(1)).unwrap();
        let s = Scheduler::new(&db, &SchedulerConfig::default())
            .job(Job::new("a", every.clone(), ok))
            .unwrap();
        assert!(s.clone().job(Job::new("a", every.clone(), ok)).is_err());
        assert!(s.job(Job::new("a b", every, ok)).is_err());
        db.close().await;
    });
}
