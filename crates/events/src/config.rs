//! The `events` configuration section (shared by every service).

use plt_kernel::{ConfigError, config::Validate};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Which bus carries events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// No events are published or consumed (events stay in the outbox until a bus is set).
    None,
    /// The embedded bus of this process (`plt dev`, tests).
    Memory,
    /// A Kafka-protocol broker.
    Kafka,
    /// The embedded bus of another process on this machine, over HTTP (`plt dev` serves
    /// its bus to the feature services it runs as processes; development only).
    Bridge,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    pub backend: Backend,
    pub kafka: KafkaConfig,
    pub consumer: ConsumerConfig,
    #[serde(default)]
    pub bridge: BridgeConfig,
}

/// Where the bus of `backend: bridge` is served.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeConfig {
    /// `http://127.0.0.1:<port>` (set by `plt dev` for the processes it starts).
    pub url: String,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            backend: Backend::None,
            kafka: KafkaConfig::default(),
            consumer: ConsumerConfig::default(),
            bridge: BridgeConfig::default(),
        }
    }
}

/// How to reach Kafka.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `host:port[,host:port…]`.
    pub brokers: String,
    /// How long a publish may take before it counts as failed (the outbox retries it).
    #[serde(with = "humantime_serde")]
    pub publish_timeout: Duration,
    /// How long the producer gathers messages into one batch.
    #[serde(with = "humantime_serde")]
    pub linger: Duration,
    /// A consumer that does not heartbeat for this long leaves its group.
    #[serde(with = "humantime_serde")]
    pub session_timeout: Duration,
    /// The longest a consumer's fetch waits at the broker for new messages: the bound of
    /// the delivery latency of a quiet topic. Kafka answers a fetch as soon as data arrives;
    /// a broker that holds every fetch for the whole wait (tansu 0.6) adds it to every
    /// delivery, so lower it there (`10ms`: more, smaller fetches).
    #[serde(with = "humantime_serde")]
    pub fetch_wait: Duration,
    /// The idempotent producer (`enable.idempotence`: a retried send is written once, five
    /// requests in flight). Off: one request in flight per broker, so retries cannot reorder
    /// a partition either; a retried send may be written twice (consumers' inboxes absorb
    /// it). Off by default: some Kafka-protocol brokers (tansu 0.6) fail on it.
    pub idempotent: bool,
    /// Partitions of the topics plt creates (events, dead letters) when they are missing.
    pub partitions: u32,
    /// Replicas of the topics plt creates (1 for a single development broker).
    pub replication_factor: u32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            publish_timeout: Duration::from_secs(10),
            linger: Duration::from_millis(5),
            session_timeout: Duration::from_secs(10),
            fetch_wait: Duration::from_millis(100),
            idempotent: false,
            partitions: 4,
            replication_factor: 1,
        }
    }
}

/// How consumers handle messages.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Attempts of one message before it goes to the dead-letter topic.
    pub max_attempts: u32,
    /// Wait after a failed attempt, doubling up to `retry_max_backoff` (with jitter).
    #[serde(with = "humantime_serde")]
    pub retry_initial_backoff: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_backoff: Duration,
    /// Messages fetched and handled at once (partitions concurrently).
    pub batch_size: u32,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            retry_initial_backoff: Duration::from_millis(100),
            retry_max_backoff: Duration::from_secs(10),
            batch_size: 100,
        }
    }
}

impl Validate for EventsConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{p}.{k}");
        if self.backend == Backend::Bridge && !self.bridge.url.starts_with("http://") {
            return Err(ConfigError::new(
                key("bridge.url"),
                "must be the http:// URL where plt dev serves its bus when events.backend is bridge",
            ));
        }
        if self.backend == Backend::Kafka {
            if self.kafka.brokers.trim().is_empty() {
                return Err(ConfigError::new(
                    key("kafka.brokers"),
                    "must name at least one broker (host:port) when events.backend is kafka",
                ));
            }
            for b in self.kafka.brokers.split(',') {
                let b = b.trim();
                let ok = b
                    .rsplit_once(':')
                    .is_some_and(|(h, port)| !h.is_empty() && port.parse::<u16>().is_ok());
                if !ok {
                    return Err(ConfigError::new(
                        key("kafka.brokers"),
                        format!("{b:?} is not host:port"),
                    ));
                }
            }
        }
        if self.kafka.publish_timeout < Duration::from_millis(100) {
            return Err(ConfigError::new(
                key("kafka.publish_timeout"),
                "must be at least 100ms",
            ));
        }
        if self.kafka.linger > Duration::from_secs(1) {
            return Err(ConfigError::new(key("kafka.linger"), "must be at most 1s"));
        }
        if self.kafka.session_timeout < Duration::from_secs(1) {
            return Err(ConfigError::new(
                key("kafka.session_timeout"),
                "must be at least 1s",
            ));
        }
        if self.kafka.fetch_wait.is_zero() || self.kafka.fetch_wait > Duration::from_secs(5) {
            return Err(ConfigError::new(
                key("kafka.fetch_wait"),
                "must be between 1ms and 5s",
            ));
        }
        if self.kafka.partitions == 0 || self.kafka.partitions > 10_000 {
            return Err(ConfigError::new(
                key("kafka.partitions"),
                "must be between 1 and 10000",
            ));
        }
        if self.kafka.replication_factor == 0 || self.kafka.replication_factor > 100 {
            return Err(ConfigError::new(
                key("kafka.replication_factor"),
                "must be between 1 and 100",
            ));
        }
        let c = &self.consumer;
        if c.max_attempts == 0 || c.max_attempts > 100 {
            return Err(ConfigError::new(
                key("consumer.max_attempts"),
                "must be between 1 and 100",
            ));
        }
        if c.retry_initial_backoff.is_zero() || c.retry_max_backoff < c.retry_initial_backoff {
            return Err(ConfigError::new(
                key("consumer.retry_max_backoff"),
                "must be at least events.consumer.retry_initial_backoff, which must be greater than 0",
            ));
        }
        if c.batch_size == 0 || c.batch_size > 10_000 {
            return Err(ConfigError::new(
                key("consumer.batch_size"),
                "must be between 1 and 10000",
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
        assert!(EventsConfig::default().validate("events").is_ok());
        let mut c = EventsConfig {
            backend: Backend::Kafka,
            ..Default::default()
        };
        c.kafka.brokers = "localhost".into();
        let e = c.validate("events").unwrap_err().to_string();
        assert!(e.contains("events.kafka.brokers"), "{e}");
        let mut c = EventsConfig::default();
        c.consumer.max_attempts = 0;
        let e = c.validate("events").unwrap_err().to_string();
        assert!(e.contains("events.consumer.max_attempts"), "{e}");
    }
}
