//! What a service declares: [`Job`]s, and the [`Run`] each handler call receives.

use crate::{CatchUp, Schedule, sql};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use std::{fmt, future::Future, sync::Arc, time::Duration};

/// The boxed handler: what a job does for one occurrence.
pub(crate) type Handler = Arc<dyn Fn(Run) -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One occurrence of a job, as its handler gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The job's name.
    pub job: String,
    /// When this occurrence was due (UTC): the cron match or interval tick it stands for,
    /// not when it started. Catching up ([`CatchUp::All`]) runs late occurrences with their
    /// own times; a retry keeps its occurrence's time.
    pub scheduled_for: DateTime<Utc>,
    /// Attempts of this occurrence so far, this one included (1 for the first).
    pub attempt: u32,
    /// The fencing token: grows with every claim of the job, by any instance. A run whose
    /// lease ran out and whose occurrence another instance took over holds a smaller one
    /// than the new owner, and its completion is not recorded. Writes of the handler's own
    /// can be fenced too: see [`Run::still_owner`].
    pub fence: u64,
}

impl Run {
    /// Whether this run still owns its occurrence, checked through `conn` **inside the
    /// transaction of the handler's effect** (`&mut *tx`): it takes the job's row lock
    /// there, so on PostgreSQL no other instance can claim the occurrence until that
    /// transaction ends, and on SQLite the write lock does the same. `false`: another
    /// instance took the occurrence over (this run's lease ran out) — roll back.
    ///
    /// ```ignore
    /// let mut tx = pool.begin().await?;
    /// if !run.still_owner(&mut *tx).await? {
    ///     return Err("lost the occurrence to another instance".into());
    /// }
    /// write_invoices(&mut tx, run.scheduled_for).await?;
    /// tx.commit().await?;
    /// ```
    ///
    /// A fence protects the effect only where the effect is in the same database. Where
    /// it is not, or to be safe against a run repeated after an instance died between its
    /// effect and the scheduler's record of it, make the effect idempotent per occurrence
    /// as well: Billing's invoice job, for one, relies on a unique `(subscription, period)`
    /// constraint, so a repeated run inserts nothing twice.
    pub async fn still_owner<C: FenceConn + ?Sized>(
        &self,
        conn: &mut C,
    ) -> Result<bool, sqlx::Error> {
        match i64::try_from(self.fence) {
            Ok(fence) => conn.hold_fence(&self.job, fence).await,
            Err(_) => Ok(false),
        }
    }
}

/// A connection inside the caller's transaction that can check (and lock) a job's fence:
/// `sqlx::PgConnection` and `sqlx::SqliteConnection` (`&mut *tx`). See [`Run::still_owner`].
#[async_trait]
pub trait FenceConn: Send {
    /// `true` when job `job`'s fence is still `fence`; the row stays locked until the
    /// transaction ends.
    async fn hold_fence(&mut self, job: &str, fence: i64) -> Result<bool, sqlx::Error>;
}

#[async_trait]
impl FenceConn for sqlx::PgConnection {
    async fn hold_fence(&mut self, job: &str, fence: i64) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(sql::HOLD)
            .bind(job)
            .bind(fence)
            .execute(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}

#[async_trait]
impl FenceConn for sqlx::SqliteConnection {
    async fn hold_fence(&mut self, job: &str, fence: i64) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(sql::HOLD)
            .bind(job)
            .bind(fence)
            .execute(self)
            .await?;
        Ok(r.rows_affected() == 1)
    }
}

/// How a failed run is retried: the same occurrence again after a back-off (doubling from
/// `initial_backoff` up to `max_backoff`), one instance at a time, until `max_attempts`
/// attempts failed; then the occurrence is given up (recorded as an error) and the job goes
/// on with its next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// Attempts of one occurrence, the first included; at least 1 (1: no retry).
    pub max_attempts: u32,
    /// Wait after the first failure.
    pub initial_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
}

impl Default for Retry {
    /// 3 attempts, 1 s then 2 s apart (at most 5 min).
    fn default() -> Self {
        Self {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
        }
    }
}

impl Retry {
    /// The wait after failed attempt `attempt` (1-based).
    pub(crate) fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(30);
        self.initial_backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }
}

/// A scheduled job: a name (its row in the schedule table, its `job` label in metrics), a
/// [`Schedule`], a [`CatchUp`] policy, a lease, a [`Retry`] policy and the handler run for
/// each occurrence.
#[derive(Clone)]
pub struct Job {
    pub(crate) name: String,
    pub(crate) schedule: Schedule,
    pub(crate) catch_up: CatchUp,
    pub(crate) lease: Option<Duration>,
    pub(crate) retry: Retry,
    pub(crate) handler: Handler,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("schedule", &self.schedule)
            .field("catch_up", &self.catch_up)
            .field("lease", &self.lease)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// A job named `name` (unique within the service; letters, digits, `.`, `_`, `-`, at
    /// most 100) that runs `handler` at each occurrence of `schedule`, [`CatchUp::Skip`],
    /// the scheduler's lease and [`Retry::default`]. The handler's error (a `String`, an
    /// `anyhow::Error`, anything `Display`) is recorded as the run's `last_error`
    /// (`{:#}`: with its causes); a handler that panics fails its run the same way.
    pub fn new<F, Fut, E>(name: impl Into<String>, schedule: Schedule, handler: F) -> Self
    where
        F: Fn(Run) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: fmt::Display + 'static,
    {
        let handler: Handler = Arc::new(move |run| {
            let fut = handler(run);
            Box::pin(async move { fut.await.map_err(|e| format!("{e:#}")) })
        });
        Self {
            name: name.into(),
            schedule,
            catch_up: CatchUp::default(),
            lease: None,
            retry: Retry::default(),
            handler,
        }
    }

    /// What happens to occurrences missed while no instance ran.
    pub fn catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// How long a claimed occurrence belongs to its instance without a renewal (renewed
    /// every third of it while the handler runs); instead of the scheduler's `lease`.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self
    }

    /// How failed runs are retried.
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The job's schedule.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Why the job cannot be scheduled, if it cannot.
    pub(crate) fn check(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 100
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !name_ok {
            return Err(
                "a job name is 1 to 100 characters: letters, digits, '.', '_' and '-'".into(),
            );
        }
        if let Some(l) = self.lease
            && (l < Duration::from_millis(10) || l > Duration::from_secs(86_400))
        {
            return Err("the lease must be between 10ms and 24h".into());
        }
        if self.retry.max_attempts == 0 || self.retry.max_attempts > 1000 {
            return Err("retry.max_attempts must be between 1 and 1000".into());
        }
        if self.retry.initial_backoff.is_zero()
            || self.retry.max_backoff < self.retry.initial_backoff
        {
            return Err(
                "retry.max_backoff must be at least retry.initial_backoff, which must be greater than 0"
                    .into(),
            );
        }
        if let CatchUp::All { max } = self.catch_up
            && (max == 0 || max > 100_000)
        {
            return Err("catch_up All max must be between 1 and 100000".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let r = Retry {
            max_attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
        };
        assert_eq!(r.backoff(1), Duration::from_millis(100));
        assert_eq!(r.backoff(2), Duration::from_millis(200));
        assert_eq!(r.backoff(3), Duration::from_millis(400));
        assert_eq!(r.backoff(4), Duration::from_millis(500));
        assert_eq!(r.backoff(u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn names_and_bounds_are_checked() {
        let every = Schedule::every(Duration::from_secs(1)).unwrap();
        let ok = |_run: Run| async { Ok::<(), String>(()) };
        assert!(
            Job::new("invoices.monthly", every.clone(), ok)
                .check()
                .is_ok()
        );
        assert!(Job::new("", every.clone(), ok).check().is_err());
        assert!(Job::new("a b", every.clone(), ok).check().is_err());
        assert!(
            Job::new("a", every.clone(), ok)
                .lease(Duration::ZERO)
                .check()
                .is_err()
        );
        assert!(
            Job::new("a", every.clone(), ok)
                .catch_up(CatchUp::All { max: 0 })
                .check()
                .is_err()
        );
        assert!(
            Job::new("a", every, ok)
                .retry(Retry {
                    max_attempts: 0,
                    ..Retry::default()
                })
                .check()
                .is_err()
        );
    }
}
