//! The `authz` section of the configuration (see config/default.yaml).

use plt_kernel::config::{ConfigError, Validate};
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, time::Duration};
use uuid::Uuid;

/// The largest accepted `staleness_bound`: the platform promises that a grant or revoke takes
/// effect everywhere within 5 seconds.
pub const MAX_STALENESS_BOUND: Duration = Duration::from_secs(5);
/// The smallest accepted `staleness_bound` (each instance polls at half of it).
pub const MIN_STALENESS_BOUND: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthzConfig {
    pub listen: SocketAddr,
    /// A grant, revoke or role change takes effect on every instance within this time.
    #[serde(with = "humantime_serde")]
    pub staleness_bound: Duration,
    pub cache: CacheConfig,
    /// User ids granted `admin` at every start (idempotent).
    pub bootstrap_admins: Vec<String>,
    pub auth: TokenConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Users whose effective permissions are kept in memory (least recently used go first).
    pub max_users: u64,
}

/// How admin callers' access tokens are verified (locally, against auth's JWKS).
pub use plt_authn::TokenConfig;

impl AuthzConfig {
    /// `bootstrap_admins` as ids (validated at load).
    pub fn bootstrap_admin_ids(&self) -> Vec<Uuid> {
        self.bootstrap_admins
            .iter()
            .filter_map(|s| Uuid::parse_str(s.trim()).ok())
            .collect()
    }

    /// How often each instance reads the policy version: half the staleness bound.
    pub fn poll_interval(&self) -> Duration {
        self.staleness_bound / 2
    }
}

fn http_url(s: &str) -> bool {
    s.starts_with("http://") || s.starts_with("https://")
}

impl Validate for AuthzConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{p}.{k}");
        if self.staleness_bound < MIN_STALENESS_BOUND || self.staleness_bound > MAX_STALENESS_BOUND
        {
            return Err(ConfigError::new(
                key("staleness_bound"),
                "must be between 100ms and 5s",
            ));
        }
        if self.cache.max_users == 0 {
            return Err(ConfigError::new(
                key("cache.max_users"),
                "must be greater than 0",
            ));
        }
        for (i, id) in self.bootstrap_admins.iter().enumerate() {
            if Uuid::parse_str(id.trim()).is_err() {
                return Err(ConfigError::new(
                    format!("{p}.bootstrap_admins[{i}]"),
                    "must be a user id (UUID)",
                ));
            }
        }
        if !http_url(&self.auth.jwks_url) {
            return Err(ConfigError::new(
                key("auth.jwks_url"),
                "must be an http:// or https:// URL",
            ));
        }
        if self.auth.issuer.trim().is_empty() {
            return Err(ConfigError::new(key("auth.issuer"), "must not be empty"));
        }
        if self.auth.audience.trim().is_empty() {
            return Err(ConfigError::new(key("auth.audience"), "must not be empty"));
        }
        Ok(())
    }
}

impl plt_runtime::ServiceSettings for AuthzConfig {
    fn listen(&self) -> std::net::SocketAddr {
        self.listen
    }

    fn auth(&self) -> Option<&plt_authn::TokenConfig> {
        Some(&self.auth)
    }
}
