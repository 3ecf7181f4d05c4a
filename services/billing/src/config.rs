//! The `billing` configuration section (defaults in ../config.yaml).

use plt_authn::TokenConfig;
use plt_kernel::config::{ConfigError, Validate};
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, time::Duration};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BillingConfig {
    pub listen: SocketAddr,
    pub max_page_size: u32,
    /// How often the invoice job runs.
    #[serde(with = "humantime_serde")]
    pub invoice_interval: Duration,
    /// Most subscriptions one run of the invoice job bills.
    pub invoice_batch: u32,
    /// How long a repeat with an idempotency key waits for the first answer.
    #[serde(with = "humantime_serde")]
    pub idempotency_wait: Duration,
    /// How long idempotent answers are kept.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// How long a billing period is: `month` (the calendar month), or a fixed length such as
    /// `2m` to try billing out without waiting a month.
    #[serde(default)]
    pub period: Period,
    pub auth: TokenConfig,
}

/// `billing.period`: the calendar month, or a fixed length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Period {
    #[default]
    Month,
    Fixed(Duration),
}

impl Period {
    /// The fixed length, if not the calendar month.
    pub fn fixed(&self) -> Option<Duration> {
        match self {
            Period::Month => None,
            Period::Fixed(d) => Some(*d),
        }
    }
}

impl Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Period::Month => s.serialize_str("month"),
            Period::Fixed(d) => {
                s.serialize_str(&humantime_serde::re::humantime::format_duration(*d).to_string())
            }
        }
    }
}

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "month" {
            return Ok(Period::Month);
        }
        humantime_serde::re::humantime::parse_duration(&s)
            .map(Period::Fixed)
            .map_err(|_| serde::de::Error::custom("must be month or a duration such as 2m"))
    }
}

impl Validate for BillingConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{prefix}.{k}");
        if !(1..=1000).contains(&self.max_page_size) {
            return Err(ConfigError::new(
                key("max_page_size"),
                "must be between 1 and 1000",
            ));
        }
        if self.invoice_interval < Duration::from_millis(10)
            || self.invoice_interval > Duration::from_secs(86_400)
        {
            return Err(ConfigError::new(
                key("invoice_interval"),
                "must be between 10ms and 24h",
            ));
        }
        if let Period::Fixed(d) = self.period
            && d < Duration::from_secs(1)
        {
            return Err(ConfigError::new(
                key("period"),
                "must be month or at least 1s",
            ));
        }
        if !(1..=100_000).contains(&self.invoice_batch) {
            return Err(ConfigError::new(
                key("invoice_batch"),
                "must be between 1 and 100000",
            ));
        }
        if self.idempotency_wait < Duration::from_millis(100)
            || self.idempotency_wait > Duration::from_secs(300)
        {
            return Err(ConfigError::new(
                key("idempotency_wait"),
                "must be between 100ms and 5m",
            ));
        }
        if self.idempotency_ttl < Duration::from_secs(60)
            || self.idempotency_ttl > Duration::from_secs(30 * 86_400)
        {
            return Err(ConfigError::new(
                key("idempotency_ttl"),
                "must be between 1m and 30d",
            ));
        }
        self.auth.check(&key("auth"))
    }
}

impl plt_runtime::ServiceSettings for BillingConfig {
    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn auth(&self) -> Option<&TokenConfig> {
        Some(&self.auth)
    }
}
