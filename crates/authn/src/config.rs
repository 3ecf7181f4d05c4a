//! How a service verifies callers' access tokens: the `auth` block of a service section.

use crate::{HttpJwksSource, JwksSource, Verifier, VerifierConfig};
use plt_kernel::config::ConfigError;
use serde::{Deserialize, Serialize};
use std::{sync::Arc, time::Duration};

/// Tokens are verified locally against auth's published keys.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub jwks_url: String,
    /// Must match `auth.issuer`.
    pub issuer: String,
    /// Must match `auth.audience`.
    pub audience: String,
}

impl TokenConfig {
    /// Checks the block at key path `prefix` (e.g. `audit.auth`).
    pub fn check(&self, prefix: &str) -> Result<(), ConfigError> {
        if !(self.jwks_url.starts_with("http://") || self.jwks_url.starts_with("https://")) {
            return Err(ConfigError::new(
                format!("{prefix}.jwks_url"),
                "must be an http:// or https:// URL",
            ));
        }
        if self.issuer.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{prefix}.issuer"),
                "must not be empty",
            ));
        }
        if self.audience.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{prefix}.audience"),
                "must not be empty",
            ));
        }
        Ok(())
    }

    /// The verifier this block describes; `source` replaces the JWKS URL (tests).
    pub fn verifier(
        &self,
        source: Option<Arc<dyn JwksSource>>,
    ) -> Result<Verifier, reqwest::Error> {
        let source = match source {
            Some(s) => s,
            None => Arc::new(HttpJwksSource::new(
                plt_kernel::tls::http_client_builder()
                    .timeout(Duration::from_secs(5))
                    .build()?,
                self.jwks_url.clone(),
            )),
        };
        Ok(Verifier::new(
            VerifierConfig::new(&self.issuer, &self.audience),
            source,
        ))
    }
}
