//! The `blog` configuration section (defaults in ../config.yaml).

use plt_authn::TokenConfig;
use plt_kernel::config::{ConfigError, Validate};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlogConfig {
    pub listen: SocketAddr,
    pub max_page_size: u32,
    pub attachments: AttachmentsConfig,
    pub auth: TokenConfig,
}

/// What a post's attachments may be.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttachmentsConfig {
    /// The largest attachment, in bytes.
    pub max_bytes: u64,
    /// The media types accepted (lower case, without parameters).
    pub content_types: Vec<String>,
}

impl Validate for BlogConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !(1..=1000).contains(&self.max_page_size) {
            return Err(ConfigError::new(
                format!("{prefix}.max_page_size"),
                "must be between 1 and 1000",
            ));
        }
        if !(1..=100 * 1024 * 1024).contains(&self.attachments.max_bytes) {
            return Err(ConfigError::new(
                format!("{prefix}.attachments.max_bytes"),
                "must be between 1 and 104857600",
            ));
        }
        if self.attachments.content_types.is_empty()
            || self.attachments.content_types.iter().any(|t| {
                !t.contains('/')
                    || t.chars()
                        .any(|c| c.is_ascii_uppercase() || c == ';' || c.is_whitespace())
            })
        {
            return Err(ConfigError::new(
                format!("{prefix}.attachments.content_types"),
                "must list media types like image/png (lower case, no parameters)",
            ));
        }
        self.auth.check(&format!("{prefix}.auth"))
    }
}

impl plt_runtime::ServiceSettings for BlogConfig {
    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn auth(&self) -> Option<&TokenConfig> {
        Some(&self.auth)
    }
}
