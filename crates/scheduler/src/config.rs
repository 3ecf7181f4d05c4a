//! The `scheduler` configuration section.

use plt_kernel::{ConfigError, config::Validate};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The `scheduler` configuration section (shared by every service that declares jobs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulerConfig {
    /// Whether this instance runs scheduled jobs at all. Off: [`crate::Scheduler::run`]
    /// returns at once (the jobs still run on the instances where it is on), and
    /// [`crate::Scheduler::status`] still answers.
    pub enabled: bool,
    /// How often an instance reads the schedule table for due occurrences (it also wakes
    /// for the nearest one it knows of, and after each of its runs ends).
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How long a claimed occurrence belongs to the instance that claimed it, unless a job
    /// declares its own ([`crate::Job::lease`]). The owner renews it every third of it
    /// while the handler runs; an instance that dies loses it when it ends, and another
    /// instance takes the occurrence over. Longer: slower take-over; shorter: more writes,
    /// and clock skew between instances must stay well below it.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(30),
        }
    }
}

impl Validate for SchedulerConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{p}.{k}");
        if self.poll_interval < Duration::from_millis(10)
            || self.poll_interval > Duration::from_secs(3600)
        {
            return Err(ConfigError::new(
                key("poll_interval"),
                "must be between 10ms and 1h",
            ));
        }
        if self.lease < Duration::from_millis(100) || self.lease > Duration::from_secs(86_400) {
            return Err(ConfigError::new(
                key("lease"),
                "must be between 100ms and 24h",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_name_their_key() {
        assert!(SchedulerConfig::default().validate("scheduler").is_ok());
        let bad = SchedulerConfig {
            poll_interval: Duration::ZERO,
            ..Default::default()
        };
        let e = bad.validate("scheduler").unwrap_err().to_string();
        assert!(e.contains("scheduler.poll_interval"), "{e}");
        let bad = SchedulerConfig {
            lease: Duration::from_millis(1),
            ..Default::default()
        };
        let e = bad.validate("scheduler").unwrap_err().to_string();
        assert!(e.contains("scheduler.lease"), "{e}");
    }

    #[test]
    fn reads_humane_durations() {
        let c: SchedulerConfig =
            serde_json::from_str(r#"{"enabled": false, "poll_interval": "500ms", "lease": "1m"}"#)
                .unwrap();
        assert!(!c.enabled);
        assert_eq!(c.poll_interval, Duration::from_millis(500));
        assert_eq!(c.lease, Duration::from_secs(60));
        assert!(
            serde_json::from_str::<SchedulerConfig>(
                r#"{"enabled": true, "poll_interval": "1s", "lease": "1m", "x": 1}"#
            )
            .is_err()
        );
    }
}
