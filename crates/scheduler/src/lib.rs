//! plt-scheduler: scheduled jobs of a plt service, each occurrence run on exactly one
//! instance even when several instances share the service's database.
//!
//! A service declares [`Job`]s — a name, a [`Schedule`] (cron expression or fixed
//! interval, UTC), a [`CatchUp`] policy, a lease, a [`Retry`] policy and an async handler
//! that gets a [`Run`] — on a [`Scheduler`], and runs [`Scheduler::run`] as a background
//! job until shutdown:
//!
//! ```no_run
//! use plt_scheduler::{CatchUp, Job, Run, Schedule, Scheduler, SchedulerConfig};
//! use std::time::Duration;
//!
//! # async fn wire(db: plt_db::Db, stopping: tokio::sync::watch::Receiver<bool>)
//! #     -> Result<(), plt_scheduler::SchedulerError> {
//! let scheduler = Scheduler::new(&db, &SchedulerConfig::default())
//!     .job(
//!         Job::new("invoices", Schedule::cron("0 2 1 * *")?, |run: Run| async move {
//!             // bill the period that ends at run.scheduled_for …
//!             Ok::<(), String>(())
//!         })
//!         .catch_up(CatchUp::all()),
//!     )?
//!     .job(Job::new("sweep", Schedule::every(Duration::from_secs(60))?, |_run| async {
//!         Ok::<(), String>(())
//!     }))?;
//! let status = scheduler.clone(); // status.status().await? for an endpoint
//! tokio::spawn(scheduler.run(stopping));
//! # Ok(()) }
//! ```
//!
//! # Exactly one instance per occurrence
//!
//! The state lives in the platform table `plt_schedule` of the service's own database
//! (schema or file; created when missing, on PostgreSQL and SQLite alike), one row per job:
//! `next_run_at` (the pending occurrence), `attempt`, `retry_at`, `fence`, `owner`,
//! `lease_until` and the last run (`last_run_at`, `last_scheduled_for`, `last_outcome`,
//! `last_error`, `last_success_at`).
//!
//! - **Claim**: an instance that finds an occurrence due runs one conditional `UPDATE`:
//!   only if the fence is still the one it read, the occurrence is due, its retry back-off
//!   over and its lease free or expired. It moves the fence (the fencing token, +1 per
//!   claim), sets `owner` and `lease_until`. Of instances racing for one occurrence, one
//!   `UPDATE` matches; the others match nothing.
//! - **Run**: the handler runs on the claiming instance, which renews the lease every third
//!   of it. An instance killed mid-run stops renewing; when its lease ends another instance
//!   claims the occurrence (attempt + 1) and runs it.
//! - **Complete**: the next occurrence, or the retry of a failed run, and the outcome are
//!   written `WHERE fence = <the run's fence>`: an instance whose lease ran out and whose
//!   occurrence was taken over records nothing (counted as `outcome="lost"`).
//!
//! So at most one instance at a time runs an occurrence, and an occurrence recorded as
//! done never runs again. An instance that dies after its handler's effect but before the
//! record gets its occurrence run again: handlers fence their own writes
//! ([`Run::still_owner`] in the effect's transaction) and make effects idempotent per
//! occurrence (Billing's invoice job keeps a unique `(subscription, period)` constraint).
//! Leases are compared with each instance's clock: keep clock skew well below the lease.
//!
//! # Visibility
//!
//! Metrics (the `metrics` facade): `scheduler_runs_total{job,outcome}` (`ok`, `error`,
//! `lost`), `scheduler_run_duration_seconds{job}` (histogram),
//! `scheduler_last_success_timestamp_seconds{job}` and
//! `scheduler_next_run_timestamp_seconds{job}` (gauges, from the table at each poll, so
//! every instance reports the same). [`Scheduler::status`] returns each job's schedule,
//! last run and outcome, next run and owner (serializable, for a status endpoint).

mod config;
mod job;
mod schedule;
mod sql;

pub use config::SchedulerConfig;
pub use job::{FenceConn, Job, Retry, Run};
pub use schedule::{CatchUp, Schedule, ScheduleError};

use chrono::{DateTime, SubsecRound, Utc};
use futures_util::FutureExt;
use plt_db::Db;
use serde::Serialize;
use std::{
    collections::HashSet,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::{sync::watch, task::JoinSet};

/// The schedule table's name.
pub const TABLE: &str = sql::TABLE;

/// Why a job could not be declared, claimed or completed.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// A job declaration the scheduler refuses (bad name, bounds, a duplicate).
    #[error("job {0:?}: {1}")]
    InvalidJob(String, String),
    /// A schedule that does not parse.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// No job of that name was declared on this scheduler.
    #[error("no job named {0:?}")]
    UnknownJob(String),
    /// The database failed.
    #[error("schedule table: {0}")]
    Database(#[from] sqlx::Error),
}

/// One job's state, for a status endpoint (serializes to JSON with RFC 3339 times).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobStatus {
    /// The job's name.
    pub name: String,
    /// Its schedule as declared here (`0 2 * * *`, `@every 1m`).
    pub schedule: String,
    /// Its catch-up policy (`skip`, `all (at most 100)`).
    pub catch_up: String,
    /// The pending occurrence (`None` before the job reached the table).
    pub next_run_at: Option<DateTime<Utc>>,
    /// When the pending occurrence's retry may start, after a failed attempt.
    pub retry_at: Option<DateTime<Utc>>,
    /// Attempts of the pending occurrence so far.
    pub attempt: u32,
    /// When the last run ended.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The occurrence the last run stood for.
    pub last_scheduled_for: Option<DateTime<Utc>>,
    /// `ok` or `error`.
    pub last_outcome: Option<String>,
    /// The last failed run's error.
    pub last_error: Option<String>,
    /// When a run last succeeded.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The instance running the job now, or the one that ran it last.
    pub owner: Option<String>,
    /// Whether an instance holds the job's lease now (is running it).
    pub running: bool,
    /// The end of the current lease.
    pub lease_until: Option<DateTime<Utc>>,
    /// The job's fencing token (claims so far).
    pub fence: u64,
}

/// Time as stored: microseconds.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn micros_ts(t: DateTime<Utc>) -> f64 {
    t.timestamp_micros() as f64 / 1e6
}

/// This process's default owner name: host, process id and a random suffix.
fn default_owner() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &id[..8])
}

/// Removes a job from the running set when its run task ends, however it ends.
struct Busy {
    set: Arc<Mutex<HashSet<String>>>,
    name: String,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.name);
    }
}

/// A service's scheduled jobs on its database. Cheap to clone: keep a clone for
/// [`Scheduler::status`] and hand one to the runtime as a background job
/// ([`Scheduler::run`]).
#[derive(Clone)]
pub struct Scheduler {
    db: Db,
    cfg: SchedulerConfig,
    owner: Arc<str>,
    jobs: Vec<Arc<Job>>,
    installed: Arc<tokio::sync::OnceCell<()>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("owner", &self.owner)
            .field("backend", &self.db.backend())
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler without jobs on `db`, named after this process (host, pid, random
    /// suffix) in the table's `owner` column.
    pub fn new(db: &Db, cfg: &SchedulerConfig) -> Self {
        Self {
            db: db.clone(),
            cfg: cfg.clone(),
            owner: default_owner().into(),
            jobs: Vec::new(),
            installed: Arc::default(),
        }
    }

    /// Names this instance in the `owner` column (its address, a pod name).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = owner.into().into();
        self
    }

    /// This instance's name in the `owner` column.
    pub fn owner_name(&self) -> &str {
        &self.owner
    }

    /// Adds a job; refused when its name is taken or its settings are out of bounds.
    pub fn job(mut self, job: Job) -> Result<Self, SchedulerError> {
        job.check()
            .map_err(|e| SchedulerError::InvalidJob(job.name.clone(), e))?;
        if self.jobs.iter().any(|j| j.name == job.name) {
            return Err(SchedulerError::InvalidJob(
                job.name,
                "declared twice".to_owned(),
            ));
        }
        self.jobs.push(Arc::new(job));
        Ok(self)
    }

    /// The declared jobs.
    pub fn jobs(&self) -> impl Iterator<Item = &Job> {
        self.jobs.iter().map(|j| &**j)
    }

    fn find(&self, name: &str) -> Result<&Arc<Job>, SchedulerError> {
        self.jobs
            .iter()
            .find(|j| j.name == name)
            .ok_or_else(|| SchedulerError::UnknownJob(name.to_owned()))
    }

    fn lease_of(&self, job: &Job) -> Duration {
        job.lease.unwrap_or(self.cfg.lease)
    }

    /// Creates the table when it is missing and registers the declared jobs (a new job's
    /// first occurrence; a job whose declared schedule changed starts over from the new
    /// one). [`Scheduler::run`] and [`Scheduler::status`] do it first; idempotent, and
    /// safe for instances starting together.
    pub async fn install(&self) -> Result<(), SchedulerError> {
        self.installed
            .get_or_try_init(|| async {
                sql::install(&self.db).await?;
                let now = now();
                for job in &self.jobs {
                    let first = job.schedule.next_after(now).unwrap_or_else(schedule::never);
                    sql::register(&self.db, &job.name, &job.schedule.to_string(), first).await?;
                }
                Ok::<(), sqlx::Error>(())
            })
            .await?;
        Ok(())
    }

    /// Each declared job's state, in declaration order.
    pub async fn status(&self) -> Result<Vec<JobStatus>, SchedulerError> {
        self.install().await?;
        let rows = sql::load(&self.db).await?;
        let now = now();
        Ok(self
            .jobs
            .iter()
            .map(|job| {
                let row = rows.iter().find(|r| r.name == job.name);
                JobStatus {
                    name: job.name.clone(),
                    schedule: job.schedule.to_string(),
                    catch_up: job.catch_up.to_string(),
                    next_run_at: row.map(|r| r.next_run_at),
                    retry_at: row.and_then(|r| r.retry_at),
                    attempt: row.map_or(0, |r| u32::try_from(r.attempt).unwrap_or(0)),
                    last_run_at: row.and_then(|r| r.last_run_at),
                    last_scheduled_for: row.and_then(|r| r.last_scheduled_for),
                    last_outcome: row.and_then(|r| r.last_outcome.clone()),
                    last_error: row.and_then(|r| r.last_error.clone()),
                    last_success_at: row.and_then(|r| r.last_success_at),
                    owner: row.and_then(|r| r.owner.clone()),
                    running: row.and_then(|r| r.lease_until).is_some_and(|l| l > now),
                    lease_until: row.and_then(|r| r.lease_until),
                    fence: row.map_or(0, |r| u64::try_from(r.fence).unwrap_or(0)),
                }
            })
            .collect())
    }

    /// Claims `job`'s pending occurrence if it is due and free, as the run loop does:
    /// `Some(run)` means this instance now owns it (for the job's lease) and must finish it
    /// with [`Scheduler::complete`]. For tools and tests; services use [`Scheduler::run`].
    pub async fn claim(&self, job: &str) -> Result<Option<Run>, SchedulerError> {
        self.install().await?;
        let job = self.find(job)?.clone();
        let Some(row) = sql::load_one(&self.db, &job.name).await? else {
            return Ok(None);
        };
        Ok(self.try_claim(&job, &row, now()).await?)
    }

    /// Records the end of `run` (claimed by [`Scheduler::claim`]) as the run loop does: the
    /// next occurrence after a success or a given-up failure, the retry otherwise.
    /// `Ok(false)`: the run's fence is stale (another instance took the occurrence over),
    /// nothing was written.
    pub async fn complete(
        &self,
        run: &Run,
        result: Result<(), String>,
    ) -> Result<bool, SchedulerError> {
        let job = self.find(&run.job)?;
        Ok(record(&self.db, job, run, &result).await?)
    }

    /// Claims the occurrence `row` shows as due, if nobody else did since.
    async fn try_claim(
        &self,
        job: &Job,
        row: &sql::Row,
        now: DateTime<Utc>,
    ) -> Result<Option<Run>, sqlx::Error> {
        let schedule = job.schedule.to_string();
        if row.claimable_at() > now || row.schedule != schedule {
            return Ok(None);
        }
        let occurrence = job
            .schedule
            .catch_up_target(row.next_run_at, now, job.catch_up.keep());
        let attempt = if occurrence == row.next_run_at {
            row.attempt.saturating_add(1).max(1)
        } else {
            if occurrence > row.next_run_at {
                tracing::info!(
                    job = %job.name,
                    from = %row.next_run_at,
                    to = %occurrence,
                    policy = %job.catch_up,
                    "skipping missed occurrences"
                );
            }
            1
        };
        let lease_until = now + chrono(self.lease_of(job));
        let fence = sql::claim(
            &self.db,
            &job.name,
            row.fence,
            &self.owner,
            lease_until,
            occurrence,
            attempt,
            &schedule,
            now,
        )
        .await?;
        Ok(fence.map(|fence| Run {
            job: job.name.clone(),
            scheduled_for: occurrence,
            attempt: u32::try_from(attempt).unwrap_or(1),
            fence: u64::try_from(fence).unwrap_or(0),
        }))
    }

    /// One look at the table: claims and starts what is due and not running here; the
    /// time the next known occurrence (or the end of a lease or back-off) comes due.
    async fn poll(
        &self,
        runs: &mut JoinSet<()>,
        busy: &Arc<Mutex<HashSet<String>>>,
    ) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
        let rows = sql::load(&self.db).await?;
        let now = now();
        let mut nearest: Option<DateTime<Utc>> = None;
        for job in &self.jobs {
            let Some(row) = rows.iter().find(|r| r.name == job.name) else {
                // Gone (deleted by hand): registered again.
                let first = job.schedule.next_after(now).unwrap_or_else(schedule::never);
                sql::register(&self.db, &job.name, &job.schedule.to_string(), first).await?;
                nearest = Some(nearest.map_or(now, |n| n.min(now)));
                continue;
            };
            metrics::gauge!("scheduler_next_run_timestamp_seconds", "job" => job.name.clone())
                .set(micros_ts(row.next_run_at));
            if let Some(t) = row.last_success_at {
                metrics::gauge!("scheduler_last_success_timestamp_seconds", "job" => job.name.clone())
                    .set(micros_ts(t));
            }
            if busy
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&job.name)
            {
                continue;
            }
            if row.schedule != job.schedule.to_string() {
                // Another instance declares another schedule (a deployment under way): the
                // instances that agree with the table run it.
                continue;
            }
            let at = row.claimable_at();
            if at > now {
                nearest = Some(nearest.map_or(at, |n| n.min(at)));
                continue;
            }
            let Some(run) = self.try_claim(job, row, now).await? else {
                continue;
            };
            tracing::debug!(job = %run.job, scheduled_for = %run.scheduled_for, attempt = run.attempt, fence = run.fence, "claimed");
            busy.lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job.name.clone());
            let guard = Busy {
                set: busy.clone(),
                name: job.name.clone(),
            };
            let db = self.db.clone();
            let job = job.clone();
            let lease = self.lease_of(&job);
            runs.spawn(plt_kernel::trace::inherit_mark(async move {
                let _guard = guard;
                execute(db, job, run, lease).await;
            }));
        }
        Ok(nearest)
    }

    /// Runs the jobs until `stopping` turns `true` (or its sender goes away): polls the
    /// table every `poll_interval` and at the nearest known occurrence, claims what is due
    /// and runs each claimed occurrence in a task of its own (one job's long run does not
    /// hold up another's). When stopping it claims nothing more and waits for the runs in
    /// flight to finish (the runtime gives jobs a grace period, then aborts them: a run cut
    /// off is taken over by another instance when its lease ends). Returns at once when
    /// the configuration disables it. Database failures are logged and retried at the next
    /// poll.
    pub async fn run(self, mut stopping: watch::Receiver<bool>) {
        if !self.cfg.enabled {
            tracing::info!("scheduled jobs are disabled on this instance (scheduler.enabled)");
            return;
        }
        if self.jobs.is_empty() {
            return;
        }
        let poll = self.cfg.poll_interval;
        let mut backoff = Duration::from_millis(200);
        loop {
            if *stopping.borrow() {
                return;
            }
            match self.install().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot prepare the schedule table; retrying");
                }
            }
            tokio::select! {
                biased;
                r = stopping.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
        tracing::info!(owner = %self.owner, jobs = self.jobs.len(), "scheduler started");
        let busy: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut runs = JoinSet::new();
        let mut failing = false;
        loop {
            if *stopping.borrow() {
                break;
            }
            let wait = match self.poll(&mut runs, &busy).await {
                Ok(nearest) => {
                    if failing {
                        tracing::info!("the schedule table answers again");
                        failing = false;
                    }
                    nearest
                        .and_then(|n| (n - now()).to_std().ok())
                        .map_or(poll, |d| d.min(poll))
                        .max(Duration::from_millis(1))
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot read the schedule table; retrying");
                        failing = true;
                    }
                    poll
                }
            };
            tokio::select! {
                biased;
                r = stopping.changed() => if r.is_err() { break },
                Some(_) = runs.join_next(), if !runs.is_empty() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        if !runs.is_empty() {
            tracing::info!(
                runs = runs.len(),
                "scheduler stopping: finishing the runs in flight"
            );
        }
        while runs.join_next().await.is_some() {}
        tracing::debug!("scheduler stopped");
    }
}

/// Runs one claimed occurrence: the handler (its panics caught) with the lease renewed
/// every third of it, then the record, then the metrics.
async fn execute(db: Db, job: Arc<Job>, run: Run, lease: Duration) {
    let started = tokio::time::Instant::now();
    let fence = i64::try_from(run.fence).unwrap_or(i64::MAX);
    let result: Result<(), String> = if run.attempt > job.retry.max_attempts {
        // The earlier attempts' instances died holding it (their leases ran out).
        Err(format!(
            "given up: {} attempts ended without a result (their instances stopped before they finished)",
            run.attempt - 1
        ))
    } else {
        let handler = job.handler.clone();
        let call = run.clone();
        let fut = AssertUnwindSafe(async move { handler(call).await }).catch_unwind();
        tokio::pin!(fut);
        let every = (lease / 3).max(Duration::from_millis(5));
        let mut renew = tokio::time::interval_at(started + every, every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut lost = false;
        loop {
            tokio::select! {
                r = &mut fut => break r.unwrap_or_else(|panic| {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    Err(format!("the handler panicked: {what}"))
                }),
                _ = renew.tick() => {
                    match sql::renew(&db, &job.name, fence, now() + chrono(lease)).await {
                        Ok(true) => {}
                        Ok(false) => if !lost {
                            lost = true;
                            tracing::warn!(job = %job.name, fence = run.fence, "lost the lease of a running job: another instance took its occurrence over");
                        },
                        Err(e) => tracing::warn!(job = %job.name, error = %e, "cannot renew a running job's lease"),
                    }
                }
            }
        }
    };
    let took = started.elapsed();
    metrics::histogram!("scheduler_run_duration_seconds", "job" => job.name.clone())
        .record(took.as_secs_f64());
    // The record is retried briefly: a run whose end is not recorded runs again.
    let mut recorded = Err(sqlx::Error::PoolClosed);
    for wait in [0u64, 100, 300, 1000, 3000] {
        if wait > 0 {
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        recorded = record(&db, &job, &run, &result).await;
        if recorded.is_ok() {
            break;
        }
    }
    let outcome = match (&recorded, &result) {
        (Ok(false), _) => "lost",
        (_, Ok(())) => "ok",
        (_, Err(_)) => "error",
    };
    metrics::counter!("scheduler_runs_total", "job" => job.name.clone(), "outcome" => outcome)
        .increment(1);
    match (&recorded, &result) {
        (Err(e), _) => tracing::error!(
            job = %job.name, scheduled_for = %run.scheduled_for, error = %e,
            "cannot record a run's end: the occurrence will run again when its lease ends"
        ),
        (Ok(false), _) => tracing::warn!(
            job = %job.name, scheduled_for = %run.scheduled_for, fence = run.fence,
            "a run ended after another instance took its occurrence over: not recorded"
        ),
        (Ok(true), Ok(())) => {
            metrics::gauge!("scheduler_last_success_timestamp_seconds", "job" => job.name.clone())
                .set(micros_ts(now()));
            tracing::debug!(job = %job.name, scheduled_for = %run.scheduled_for, ?took, "ran");
        }
        (Ok(true), Err(e)) => tracing::warn!(
            job = %job.name, scheduled_for = %run.scheduled_for, attempt = run.attempt,
            max_attempts = job.retry.max_attempts, error = %e,
            "a scheduled run failed"
        ),
    }
}

/// Writes the end of `run`, fenced: `Ok(false)` when the fence moved on.
async fn record(
    db: &Db,
    job: &Job,
    run: &Run,
    result: &Result<(), String>,
) -> Result<bool, sqlx::Error> {
    let Ok(fence) = i64::try_from(run.fence) else {
        return Ok(false);
    };
    let now = now();
    let advance = || {
        job.schedule
            .next_after(run.scheduled_for)
            .unwrap_or_else(schedule::never)
    };
    let attempt = i32::try_from(run.attempt).unwrap_or(i32::MAX);
    let (next_run_at, attempt, retry_at) = match result {
        Ok(()) => (advance(), 0, None),
        Err(_) if run.attempt < job.retry.max_attempts => (
            run.scheduled_for,
            attempt,
            Some(now + chrono(job.retry.backoff(run.attempt))),
        ),
        Err(_) => (advance(), 0, None),
    };
    let recorded = sql::complete(
        db,
        &sql::Completion {
            name: &job.name,
            fence,
            next_run_at,
            attempt,
            retry_at,
            ran_at: now,
            scheduled_for: run.scheduled_for,
            outcome: if result.is_ok() { "ok" } else { "error" },
            error: result.as_ref().err().map(String::as_str),
            success_at: result.is_ok().then_some(now),
        },
    )
    .await?;
    if recorded {
        metrics::gauge!("scheduler_next_run_timestamp_seconds", "job" => job.name.clone())
            .set(micros_ts(retry_at.unwrap_or(next_run_at)));
    }
    Ok(recorded)
}
