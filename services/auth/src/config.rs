//! The `auth` section of the configuration (see config/default.yaml).

use base64::{Engine, engine::general_purpose::STANDARD};
use plt_kernel::{
    Secret,
    config::{ConfigError, Validate},
};
use serde::{Deserialize, Serialize};
use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

/// The development key-encryption key shipped in config/default.yaml. Refused when
/// `env` is `production`.
pub const DEV_ENCRYPTION_KEY: &str = "cGx0LWRldmVsb3BtZW50LWtleS1kby1ub3QtdXNlISE=";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub listen: SocketAddr,
    /// `iss` of access tokens.
    pub issuer: String,
    /// `aud` of access tokens.
    pub audience: String,
    #[serde(with = "humantime_serde")]
    pub access_token_ttl: Duration,
    pub refresh: RefreshConfig,
    pub keys: KeysConfig,
    pub throttle: ThrottleConfig,
    /// Peers (IPs or CIDRs) whose `X-Forwarded-For` is believed; from anyone else it is ignored.
    pub trusted_proxies: Vec<String>,
    /// Platform services whose stated client address (`x-plt-client-ip`, sent with their
    /// verified service token) is believed: the gateway, which determined it.
    pub client_address_from: Vec<String>,
    /// Platform services allowed service tokens: name → the secret it presents.
    pub service_accounts: BTreeMap<String, Secret<String>>,
    /// Lifetime of service tokens.
    #[serde(with = "humantime_serde")]
    pub service_token_ttl: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshConfig {
    /// Absolute lifetime of a sign-in: no refresh after this, whatever the activity.
    #[serde(with = "humantime_serde")]
    pub absolute_lifetime: Duration,
    /// A sign-in unused this long expires.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A spent refresh token presented again within this window returns the same successor
    /// (the client lost the answer); later, it revokes the family.
    #[serde(with = "humantime_serde")]
    pub reuse_grace: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// How long a key signs before the next one takes over.
    #[serde(with = "humantime_serde")]
    pub rotation_interval: Duration,
    /// How often each instance applies due rotations and removals.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// How often each instance re-reads the key ring, so that a rotation made elsewhere (by
    /// another instance or `auth-service keys rotate`) signs here within this long.
    #[serde(with = "humantime_serde")]
    pub reload_interval: Duration,
    /// Base64 of 32 bytes: encrypts private keys at rest. Secret: use
    /// PLT_AUTH__KEYS__ENCRYPTION_KEY_FILE in production.
    pub encryption_key: Secret<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThrottleConfig {
    /// Failed sign-ins per account allowed before back-off starts.
    pub account_free_failures: u32,
    /// First back-off after the free failures; doubles with each further failure.
    #[serde(with = "humantime_serde")]
    pub account_base_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub account_max_delay: Duration,
    /// Failures older than this are forgotten.
    #[serde(with = "humantime_serde")]
    pub failure_window: Duration,
    /// Failed sign-ins allowed per source address within `failure_window`.
    pub source_max_failures: u32,
    /// A source address from which an account signed in successfully stays "known" for it
    /// this long: attempts from there count only their own failures (others cannot lock the
    /// owner out) and are exempt from the per-source limit.
    #[serde(with = "humantime_serde")]
    pub known_source_ttl: Duration,
    /// `redis://…`: the counters live in Redis, shared by every instance and kept across
    /// restarts. Empty: in this instance's memory. A secret (it may hold a password).
    pub redis_url: Secret<String>,
    /// A Redis call slower than this counts as failed (memory decides).
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// While Redis is failing it is not asked; a PING this often finds it back.
    #[serde(with = "humantime_serde")]
    pub redis_probe_interval: Duration,
    /// Prefix of every Redis key.
    pub key_prefix: String,
}

impl KeysConfig {
    /// The 32-byte key-encryption key.
    pub fn encryption_key_bytes(&self) -> Result<[u8; 32], String> {
        let bytes = STANDARD
            .decode(self.encryption_key.expose().trim())
            .map_err(|_| "must be base64".to_owned())?;
        <[u8; 32]>::try_from(bytes.as_slice())
            .map_err(|_| "must decode to exactly 32 bytes".to_owned())
    }
}

impl AuthConfig {
    pub fn validate_for_env(&self, env: &str) -> Result<(), ConfigError> {
        if env == "production" && self.keys.encryption_key.expose() == DEV_ENCRYPTION_KEY {
            return Err(ConfigError::new(
                "auth.keys.encryption_key",
                "the development key must not be used in production; set PLT_AUTH__KEYS__ENCRYPTION_KEY_FILE",
            ));
        }
        if env == "production" {
            for (name, secret) in &self.service_accounts {
                if plt_client::is_development_secret(secret.expose()) {
                    return Err(ConfigError::new(
                        format!("auth.service_accounts.{name}"),
                        "is a development secret; set PLT_AUTH__SERVICE_ACCOUNTS__<NAME>_FILE in production",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl Validate for AuthConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("{p}.{k}");
        if self.issuer.trim().is_empty() {
            return Err(ConfigError::new(key("issuer"), "must not be empty"));
        }
        if self.audience.trim().is_empty() {
            return Err(ConfigError::new(key("audience"), "must not be empty"));
        }
        let ttl = self.access_token_ttl;
        if ttl < Duration::from_secs(30) || ttl > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                key("access_token_ttl"),
                "must be between 30s and 1h",
            ));
        }
        let r = &self.refresh;
        if r.idle_timeout.is_zero() || r.absolute_lifetime < r.idle_timeout {
            return Err(ConfigError::new(
                key("refresh.absolute_lifetime"),
                "must be at least refresh.idle_timeout, which must be greater than 0",
            ));
        }
        if r.reuse_grace > Duration::from_secs(60) {
            return Err(ConfigError::new(
                key("refresh.reuse_grace"),
                "must be at most 60s",
            ));
        }
        let k = &self.keys;
        if k.rotation_interval < ttl * 2 {
            return Err(ConfigError::new(
                key("keys.rotation_interval"),
                "must be at least twice access_token_ttl",
            ));
        }
        if k.check_interval.is_zero() || k.check_interval > k.rotation_interval {
            return Err(ConfigError::new(
                key("keys.check_interval"),
                "must be greater than 0 and at most keys.rotation_interval",
            ));
        }
        if k.reload_interval.is_zero() || k.reload_interval > k.check_interval {
            return Err(ConfigError::new(
                key("keys.reload_interval"),
                "must be greater than 0 and at most keys.check_interval",
            ));
        }
        if let Err(reason) = k.encryption_key_bytes() {
            return Err(ConfigError::new(key("keys.encryption_key"), reason));
        }
        let t = &self.throttle;
        if t.account_base_delay.is_zero() || t.account_max_delay < t.account_base_delay {
            return Err(ConfigError::new(
                key("throttle.account_max_delay"),
                "must be at least throttle.account_base_delay, which must be greater than 0",
            ));
        }
        if t.known_source_ttl.is_zero() {
            return Err(ConfigError::new(
                key("throttle.known_source_ttl"),
                "must be greater than 0",
            ));
        }
        if !t.redis_url.is_empty() {
            if let Err(e) = plt_redis::check_url(t.redis_url.expose()) {
                return Err(ConfigError::new(key("throttle.redis_url"), e));
            }
            if t.redis_timeout.is_zero() || t.redis_timeout > Duration::from_secs(1) {
                return Err(ConfigError::new(
                    key("throttle.redis_timeout"),
                    "must be greater than 0 and at most 1s (a sign-in waits for it)",
                ));
            }
            if t.redis_probe_interval.is_zero() {
                return Err(ConfigError::new(
                    key("throttle.redis_probe_interval"),
                    "must be greater than 0",
                ));
            }
            if t.key_prefix.is_empty() {
                return Err(ConfigError::new(
                    key("throttle.key_prefix"),
                    "must not be empty (keys of other users of the Redis would mix with these)",
                ));
            }
        }
        for (i, name) in self.client_address_from.iter().enumerate() {
            if !plt_contracts::service_identity::valid_service_name(name) {
                return Err(ConfigError::new(
                    format!("{p}.client_address_from[{i}]"),
                    "must be a service name (a-z, 0-9 and '-', starting with a letter)",
                ));
            }
        }
        if t.failure_window.is_zero() || t.source_max_failures == 0 {
            return Err(ConfigError::new(
                key("throttle.source_max_failures"),
                "must be greater than 0 (and failure_window too)",
            ));
        }
        for (name, secret) in &self.service_accounts {
            if !plt_contracts::service_identity::valid_service_name(name) {
                return Err(ConfigError::new(
                    format!("{p}.service_accounts.{name}"),
                    "service names are 1-64 characters of a-z, 0-9 and '-', starting with a letter",
                ));
            }
            if secret.expose().len() < 16 {
                return Err(ConfigError::new(
                    format!("{p}.service_accounts.{name}"),
                    "must be at least 16 characters",
                ));
            }
        }
        let st = self.service_token_ttl;
        if st < Duration::from_secs(30) || st > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                key("service_token_ttl"),
                "must be between 30s and 1h",
            ));
        }
        for (i, proxy) in self.trusted_proxies.iter().enumerate() {
            if plt_kernel::net::Cidr::parse(proxy).is_none() {
                return Err(ConfigError::new(
                    format!("{p}.trusted_proxies[{i}]"),
                    "must be an IP address or CIDR block",
                ));
            }
        }
        Ok(())
    }
}

impl plt_runtime::ServiceSettings for AuthConfig {
    fn listen(&self) -> std::net::SocketAddr {
        self.listen
    }

    /// Auth holds the keys itself: it verifies with its key ring, not a JWKS URL.
    fn auth(&self) -> Option<&plt_authn::TokenConfig> {
        None
    }
}
