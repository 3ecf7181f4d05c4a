//! The `identity` section of the configuration (see config/default.yaml).

use plt_kernel::config::{ConfigError, Validate};
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, time::Duration};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    pub listen: SocketAddr,
    #[serde(with = "humantime_serde")]
    pub verification_token_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub reset_token_ttl: Duration,
    pub verification_link: String,
    pub reset_link: String,
    pub password: PasswordPolicy,
    pub argon2: Argon2Config,
    pub max_page_size: u32,
    /// Auth's keys, for verifying callers' service tokens (VerifyCredentials is for
    /// platform services only).
    pub auth: plt_authn::TokenConfig,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordPolicy {
    pub min_length: usize,
    pub max_length: usize,
    pub min_strength: u8,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Argon2Config {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

/// OWASP's floor for Argon2id.
pub const MIN_ARGON2_MEMORY_KIB: u32 = 19456;
pub const MIN_ARGON2_ITERATIONS: u32 = 2;

impl Validate for IdentityConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{p}.{k}");
        self.auth.check(&key("auth"))?;
        if self.verification_token_ttl.is_zero() {
            return Err(ConfigError::new(
                key("verification_token_ttl"),
                "must be greater than 0",
            ));
        }
        if self.reset_token_ttl.is_zero() {
            return Err(ConfigError::new(
                key("reset_token_ttl"),
                "must be greater than 0",
            ));
        }
        for (k, v) in [
            ("verification_link", &self.verification_link),
            ("reset_link", &self.reset_link),
        ] {
            if !v.contains("{token}") {
                return Err(ConfigError::new(
                    key(k),
                    "must contain the placeholder {token}",
                ));
            }
        }
        let pw = &self.password;
        if pw.min_length < 8 {
            return Err(ConfigError::new(
                key("password.min_length"),
                "must be at least 8",
            ));
        }
        if pw.max_length < 128 || pw.max_length > 4096 {
            return Err(ConfigError::new(
                key("password.max_length"),
                "must be between 128 and 4096",
            ));
        }
        if pw.min_length > pw.max_length {
            return Err(ConfigError::new(
                key("password.min_length"),
                "must not exceed password.max_length",
            ));
        }
        if pw.min_strength > 4 {
            return Err(ConfigError::new(
                key("password.min_strength"),
                "must be between 0 and 4",
            ));
        }
        let a = &self.argon2;
        if a.memory_kib < MIN_ARGON2_MEMORY_KIB {
            return Err(ConfigError::new(
                key("argon2.memory_kib"),
                format!("must be at least {MIN_ARGON2_MEMORY_KIB}"),
            ));
        }
        if a.iterations < MIN_ARGON2_ITERATIONS {
            return Err(ConfigError::new(
                key("argon2.iterations"),
                format!("must be at least {MIN_ARGON2_ITERATIONS}"),
            ));
        }
        if a.parallelism == 0 || a.parallelism > 16 {
            return Err(ConfigError::new(
                key("argon2.parallelism"),
                "must be between 1 and 16",
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

impl plt_runtime::ServiceSettings for IdentityConfig {
    fn listen(&self) -> std::net::SocketAddr {
        self.listen
    }

    fn auth(&self) -> Option<&plt_authn::TokenConfig> {
        Some(&self.auth)
    }
}
