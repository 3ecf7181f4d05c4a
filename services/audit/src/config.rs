//! The `audit` section of the configuration (see config/default.yaml).

use plt_kernel::config::{ConfigError, Validate};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub listen: SocketAddr,
    /// Largest metadata object, in bytes of its canonical (compact, sorted-key) JSON.
    pub max_metadata_bytes: usize,
    /// Group commit: the most waiting entries the writer appends in one transaction.
    pub max_batch: usize,
    /// Entries waiting for the writer; when it is full, `record` waits (back-pressure).
    pub queue_capacity: usize,
    /// Largest page size of `query`.
    pub max_page_size: u32,
    /// How callers' access tokens are verified.
    pub auth: plt_authn::TokenConfig,
}

/// Largest `max_batch`: 12 bind parameters per entry must stay under SQLite's 32766.
pub const MAX_BATCH_LIMIT: usize = 2000;

impl Validate for AuditConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{p}.{k}");
        self.auth.check(&key("auth"))?;
        if !(2..=1024 * 1024).contains(&self.max_metadata_bytes) {
            return Err(ConfigError::new(
                key("max_metadata_bytes"),
                "must be between 2 and 1048576",
            ));
        }
        if self.max_batch == 0 || self.max_batch > MAX_BATCH_LIMIT {
            return Err(ConfigError::new(
                key("max_batch"),
                format!("must be between 1 and {MAX_BATCH_LIMIT}"),
            ));
        }
        if self.queue_capacity < self.max_batch || self.queue_capacity > 1_000_000 {
            return Err(ConfigError::new(
                key("queue_capacity"),
                "must be at least max_batch and at most 1000000",
            ));
        }
        if self.max_page_size == 0 || self.max_page_size > 1000 {
            return Err(ConfigError::new(
                key("max_page_size"),
                "must be between 1 and 1000",
            ));
        }
        Ok(())
    }
}

impl plt_runtime::ServiceSettings for AuditConfig {
    fn listen(&self) -> std::net::SocketAddr {
        self.listen
    }

    fn auth(&self) -> Option<&plt_authn::TokenConfig> {
        Some(&self.auth)
    }
}
