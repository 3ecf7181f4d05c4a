//! When a job runs: a cron expression or a fixed interval (both in UTC), and what happens to
//! occurrences missed while no instance ran ([`CatchUp`]).

use chrono::{DateTime, SubsecRound, TimeZone, Utc};
use croner::{
    Cron,
    parser::{CronParser, Seconds, Year},
};
use std::{fmt, str::FromStr, time::Duration};

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not a cron expression of 5 fields (`minute hour day-of-month month day-of-week`) or 6
    /// (`second` first), nor an alias such as `@hourly`.
    #[error("invalid cron expression {expr:?}: {reason}")]
    Cron {
        /// The expression as given.
        expr: String,
        /// What the parser said.
        reason: String,
    },
    /// A valid cron expression without any future occurrence (`0 0 30 2 *`).
    #[error("cron expression {0:?} never matches")]
    NeverMatches(String),
    /// An interval shorter than 1 ms or longer than 100 years.
    #[error("invalid interval {0}: it must be between 1ms and 100 years")]
    Interval(String),
}

#[derive(Clone)]
enum Kind {
    Cron(Box<Cron>),
    /// Microseconds, at least 1000.
    Every(i64),
}

/// When a job runs, in UTC: a cron expression ([`Schedule::cron`]) or a fixed interval
/// ([`Schedule::every`]). Its text form (`Display`, and `FromStr`: a cron expression or
/// `@every <duration>`, e.g. `@every 30s`) is what the schedule table and
/// [`crate::JobStatus`] show.
#[derive(Clone)]
pub struct Schedule {
    kind: Kind,
    text: String,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.text).finish()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// The last representable occurrence: what `next_run_at` holds for a schedule that has no
/// further one (a cron expression whose last match passed). Year 9999 sorts correctly as
/// text in SQLite and fits PostgreSQL's `timestamptz`.
pub(crate) fn never() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(9999, 12, 31, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

impl Schedule {
    /// A cron expression, evaluated in UTC: 5 fields (`minute hour day-of-month month
    /// day-of-week`, second 0) or 6 (`second` first); names (`MON`, `JAN`), ranges, steps,
    /// lists, `L`, `W`, `#` and the aliases `@yearly`, `@monthly`, `@weekly`, `@daily` and
    /// `@hourly` as [croner](https://docs.rs/croner) reads them. Refused when it does not
    /// parse or never matches.
    pub fn cron(expr: &str) -> Result<Self, ScheduleError> {
        let expr = expr.trim();
        let fields = expr.split_whitespace().count();
        if !expr.starts_with('@') && fields != 5 && fields != 6 {
            return Err(ScheduleError::Cron {
                expr: expr.to_owned(),
                reason: format!(
                    "{fields} fields; expected 5 (minute hour day-of-month month day-of-week) \
                     or 6 (second first)"
                ),
            });
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Cron {
                expr: expr.to_owned(),
                reason: e.to_string(),
            })?;
        if cron.find_next_occurrence(&Utc::now(), false).is_err() {
            return Err(ScheduleError::NeverMatches(expr.to_owned()));
        }
        Ok(Self {
            kind: Kind::Cron(Box::new(cron)),
            text: expr.to_owned(),
        })
    }

    /// A fixed interval: occurrences `every` apart, the first one `every` after the job is
    /// first registered in the database, each next one `every` after the previous
    /// occurrence's scheduled time (not after the run ended: runs do not drift). At least
    /// 1 ms; kept to the microsecond.
    pub fn every(every: Duration) -> Result<Self, ScheduleError> {
        let text = humantime_serde::re::humantime::format_duration(every).to_string();
        let micros = i64::try_from(every.as_micros()).unwrap_or(i64::MAX);
        if micros < 1000 || every > Duration::from_secs(100 * 366 * 86_400) {
            return Err(ScheduleError::Interval(text));
        }
        Ok(Self {
            kind: Kind::Every(micros),
            text: format!("@every {text}"),
        })
    }

    /// Whether this is a fixed interval.
    pub fn is_interval(&self) -> bool {
        matches!(self.kind, Kind::Every(_))
    }

    /// The first occurrence strictly after `t` (`None` when there is none).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = match &self.kind {
            Kind::Every(us) => t.checked_add_signed(chrono::Duration::microseconds(*us))?,
            Kind::Cron(c) => c.find_next_occurrence(&t, false).ok()?,
        };
        Some(next.trunc_subsecs(6))
    }

    /// The latest occurrence at or before `t`; for an interval, counted from `anchor` (an
    /// occurrence); `None` when there is none after `anchor`.
    fn previous(
        &self,
        anchor: DateTime<Utc>,
        t: DateTime<Utc>,
        inclusive: bool,
    ) -> Option<DateTime<Utc>> {
        let p = match &self.kind {
            Kind::Every(us) => {
                let since = (t - anchor).num_microseconds()?;
                let mut k = since / us;
                if !inclusive && since % us == 0 {
                    k -= 1;
                }
                anchor.checked_add_signed(chrono::Duration::microseconds(k.checked_mul(*us)?))?
            }
            Kind::Cron(c) => c.find_previous_occurrence(&t, inclusive).ok()?,
        };
        Some(p.trunc_subsecs(6))
    }

    /// The occurrence to run now when `pending` (the stored next occurrence) is due at
    /// `now`: `pending` itself unless more than `keep` occurrences are due, else the oldest
    /// of the `keep` latest ones (older ones are skipped). `keep` 1 is [`CatchUp::Skip`].
    pub(crate) fn catch_up_target(
        &self,
        pending: DateTime<Utc>,
        now: DateTime<Utc>,
        keep: u32,
    ) -> DateTime<Utc> {
        if pending >= now {
            return pending;
        }
        let keep = keep.max(1) as usize;
        // The due occurrences after `pending`, newest first, at most `keep` of them.
        let mut later = Vec::with_capacity(keep.min(128));
        let mut t = now;
        let mut inclusive = true;
        while later.len() < keep {
            match self.previous(pending, t, inclusive) {
                Some(p) if p > pending && p <= now => {
                    later.push(p);
                    t = p;
                    inclusive = false;
                }
                _ => break,
            }
        }
        if later.len() == keep {
            later[keep - 1]
        } else {
            pending
        }
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    /// `@every <duration>` (humantime: `30s`, `5m`, `1h 30m`) or a cron expression.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        match s.strip_prefix("@every") {
            Some(d) => {
                let d = humantime_serde::re::humantime::parse_duration(d.trim())
                    .map_err(|e| ScheduleError::Interval(format!("{d:?} ({e})")))?;
                Self::every(d)
            }
            None => Self::cron(s),
        }
    }
}

/// What happens to occurrences that came due while no instance ran (or while a run took
/// longer than the schedule's period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// Run once, now, for the latest missed occurrence (the run's
    /// [`scheduled_for`](crate::Run::scheduled_for) is that occurrence), then go on from the
    /// next future one: the missed ones before it are skipped.
    #[default]
    Skip,
    /// Run every missed occurrence, oldest first, each with its own scheduled time, but at
    /// most `max` of them (the latest `max`; older ones are skipped). [`CatchUp::all`] is
    /// `All { max: 100 }`.
    All {
        /// The most missed occurrences run; at least 1.
        max: u32,
    },
}

impl CatchUp {
    /// [`CatchUp::All`] with at most 100 missed occurrences run.
    pub fn all() -> Self {
        CatchUp::All { max: 100 }
    }

    /// How many of the due occurrences are kept.
    pub(crate) fn keep(self) -> u32 {
        match self {
            CatchUp::Skip => 1,
            CatchUp::All { max } => max.max(1),
        }
    }
}

impl fmt::Display for CatchUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatchUp::Skip => f.write_str("skip"),
            CatchUp::All { max } => write!(f, "all (at most {max})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn interval_catch_up_keeps_the_latest() {
        let s = Schedule::every(Duration::from_secs(10)).unwrap();
        let p = t("2026-01-01T00:00:00Z");
        let now = t("2026-01-01T00:00:35Z");
        // Due: :00 :10 :20 :30.
        assert_eq!(s.catch_up_target(p, now, 1), t("2026-01-01T00:00:30Z"));
        assert_eq!(s.catch_up_target(p, now, 2), t("2026-01-01T00:00:20Z"));
        assert_eq!(s.catch_up_target(p, now, 4), p);
        assert_eq!(s.catch_up_target(p, now, 100), p);
        let on_the_dot = t("2026-01-01T00:00:30Z");
        assert_eq!(s.catch_up_target(p, on_the_dot, 1), on_the_dot);
        assert_eq!(s.catch_up_target(p, p, 1), p);
    }

    #[test]
    fn cron_catch_up_keeps_the_latest() {
        let s = Schedule::cron("*/15 * * * *").unwrap();
        let p = t("2026-01-01T00:00:00Z");
        let now = t("2026-01-01T01:07:00.250Z");
        // Due: 00:00 00:15 00:30 00:45 01:00.
        assert_eq!(s.catch_up_target(p, now, 1), t("2026-01-01T01:00:00Z"));
        assert_eq!(s.catch_up_target(p, now, 3), t("2026-01-01T00:30:00Z"));
        assert_eq!(s.catch_up_target(p, now, 5), p);
        assert_eq!(s.catch_up_target(p, now, 6), p);
    }
}
