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
    pub auth: TokenConfig,
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
