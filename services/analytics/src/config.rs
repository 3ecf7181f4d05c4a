//! The `analytics` configuration section (defaults in ../config.yaml).

use plt_authn::TokenConfig;
use plt_kernel::config::{ConfigError, Validate};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// Most days one time series may span (the setting's upper bound).
pub const MAX_RANGE_LIMIT: u32 = 3660;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsConfig {
    pub listen: SocketAddr,
    /// The events counted, each under its metric name; their types are the topics the
    /// consumer group reads.
    pub events: Vec<CountedEvent>,
    /// Longest time series one request may ask for, in days.
    pub max_range_days: u32,
    pub auth: TokenConfig,
}

/// One counted event type and the name the API gives its counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CountedEvent {
    /// `signups`: a-z, 0-9 and `_`, starting with a letter.
    pub metric: String,
    /// The event type, which is also its topic: `plt.identity.user.created.v1`.
    #[serde(rename = "type")]
    pub event_type: String,
}

impl AnalyticsConfig {
    /// The metric that counts `event_type`, if one does.
    pub fn metric_of(&self, event_type: &str) -> Option<&str> {
        self.events
            .iter()
            .find(|e| e.event_type == event_type)
            .map(|e| e.metric.as_str())
    }

    /// The event type metric `metric` counts, if it is configured.
    pub fn type_of(&self, metric: &str) -> Option<&str> {
        self.events
            .iter()
            .find(|e| e.metric == metric)
            .map(|e| e.event_type.as_str())
    }

    /// The topics the consumer group reads.
    pub fn topics(&self) -> Vec<&str> {
        self.events.iter().map(|e| e.event_type.as_str()).collect()
    }
}

/// A metric name: a-z, 0-9 and `_`, starting with a letter, at most 64 characters.
pub fn valid_metric(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 64
        && m.starts_with(|c: char| c.is_ascii_lowercase())
        && m.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// An event type that can be a topic (Kafka's rule): letters, digits, `.`, `_`, `-`; at most
/// 249 characters.
pub fn valid_event_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl Validate for AnalyticsConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.events.is_empty() {
            return Err(ConfigError::new(
                format!("{prefix}.events"),
                "must list at least one event to count",
            ));
        }
        for (i, e) in self.events.iter().enumerate() {
            if !valid_metric(&e.metric) {
                return Err(ConfigError::new(
                    format!("{prefix}.events[{i}].metric"),
                    "must be 1 to 64 of a-z, 0-9 and _, starting with a letter",
                ));
            }
            if !valid_event_type(&e.event_type) {
                return Err(ConfigError::new(
                    format!("{prefix}.events[{i}].type"),
                    "must be an event type usable as a topic (letters, digits, '.', '_', '-')",
                ));
            }
            if self.events[..i].iter().any(|o| o.metric == e.metric) {
                return Err(ConfigError::new(
                    format!("{prefix}.events[{i}].metric"),
                    format!("{} is listed twice", e.metric),
                ));
            }
            if self.events[..i]
                .iter()
                .any(|o| o.event_type == e.event_type)
            {
                return Err(ConfigError::new(
                    format!("{prefix}.events[{i}].type"),
                    format!("{} is listed twice", e.event_type),
                ));
            }
        }
        if !(1..=MAX_RANGE_LIMIT).contains(&self.max_range_days) {
            return Err(ConfigError::new(
                format!("{prefix}.max_range_days"),
                format!("must be between 1 and {MAX_RANGE_LIMIT}"),
            ));
        }
        self.auth.check(&format!("{prefix}.auth"))
    }
}

impl plt_runtime::ServiceSettings for AnalyticsConfig {
    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn auth(&self) -> Option<&TokenConfig> {
        Some(&self.auth)
    }
}
