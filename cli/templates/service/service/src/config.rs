//! The `__name__` configuration section (defaults in ../config.yaml).

use plt_authn::TokenConfig;
use plt_kernel::config::{ConfigError, Validate};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct __Name__Config {
    pub listen: SocketAddr,
    pub max_page_size: u32,
    pub auth: TokenConfig,
}

impl Validate for __Name__Config {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if !(1..=1000).contains(&self.max_page_size) {
            return Err(ConfigError::new(
                format!("{prefix}.max_page_size"),
                "must be between 1 and 1000",
            ));
        }
        self.auth.check(&format!("{prefix}.auth"))
    }
}

impl plt_runtime::ServiceSettings for __Name__Config {
    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn auth(&self) -> Option<&TokenConfig> {
        Some(&self.auth)
    }
}
