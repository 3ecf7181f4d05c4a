//! The `notes` configuration section (defaults in ../config.yaml).

use plt_authn::TokenConfig;
use plt_kernel::config::{ConfigError, Validate};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotesConfig {
    pub listen: SocketAddr,
    pub max_page_size: u32,
    pub auth: TokenConfig,
}

impl Validate for NotesConfig {
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

impl plt_runtime::ServiceSettings for NotesConfig {
    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn auth(&self) -> &TokenConfig {
        &self.auth
    }
}
