//! Service credentials: the service tokens a service presents to the services it calls
//! (see `plt_contracts::service_identity`), obtained from auth with the service's secret and
//! cached until half their lifetime has passed.

use plt_contracts::{
    Error, ErrorCode, RequestContext, Result, auth::AuthServiceClient,
    service_identity::ServiceCredentials,
};
use plt_kernel::{
    Secret,
    config::{ConfigError, Validate},
};
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

/// The `service_identity` section: the secret this process presents to auth.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceIdentityConfig {
    /// Empty: the development secret of the service (refused in production).
    #[serde(default)]
    pub secret: Secret<String>,
}

impl Validate for ServiceIdentityConfig {
    fn validate(&self, _prefix: &str) -> std::result::Result<(), ConfigError> {
        Ok(())
    }
}

/// The secret a service uses in development when none is configured. Auth's default
/// `auth.service_accounts` holds these; production refuses them on both sides.
pub fn development_secret(service: &str) -> String {
    format!("dev-{service}-service-secret")
}

/// Whether `secret` is a development secret (they all start `dev-`).
pub fn is_development_secret(secret: &str) -> bool {
    secret.starts_with("dev-")
}

impl ServiceIdentityConfig {
    /// The secret `service` presents, checked for environment `env`.
    pub fn secret_for(
        &self,
        service: &str,
        env: &str,
    ) -> std::result::Result<Secret<String>, ConfigError> {
        let production = env == "production";
        let secret = self.secret.expose().trim();
        if secret.is_empty() {
            if production {
                return Err(ConfigError::new(
                    "service_identity.secret",
                    "must be set in production (for example PLT_SERVICE_IDENTITY__SECRET_FILE)",
                ));
            }
            return Ok(Secret::new(development_secret(service)));
        }
        if production && is_development_secret(secret) {
            return Err(ConfigError::new(
                "service_identity.secret",
                "is a development secret; production needs a real one",
            ));
        }
        if secret.len() < 16 {
            return Err(ConfigError::new(
                "service_identity.secret",
                "must be at least 16 characters",
            ));
        }
        Ok(Secret::new(secret.to_owned()))
    }
}

struct Cached {
    token: Secret<String>,
    refresh_at: Instant,
    expires_at: Instant,
}

/// Service tokens from auth (`IssueServiceToken`) for one service, one per audience,
/// refreshed once half their lifetime has passed. While auth cannot be reached a cached token
/// is used until shortly before it expires.
pub struct IssuedCredentials {
    service: String,
    secret: Secret<String>,
    auth: Arc<dyn AuthServiceClient>,
    cache: Mutex<HashMap<String, Cached>>,
    fetching: tokio::sync::Mutex<()>,
}

/// Tokens this close to expiry are not presented any more.
const EXPIRY_MARGIN: Duration = Duration::from_secs(5);
/// The deadline of one token request to auth.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(3);

impl IssuedCredentials {
    /// `auth` must be a client without credentials of its own (auth authenticates this call
    /// by the secret).
    pub fn new(service: &str, secret: Secret<String>, auth: Arc<dyn AuthServiceClient>) -> Self {
        Self {
            service: service.to_owned(),
            secret,
            auth,
            cache: Mutex::new(HashMap::new()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self, audience: &str, fresh: bool) -> Option<Secret<String>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let c = cache.get(audience)?;
        let now = Instant::now();
        let usable = if fresh {
            now < c.refresh_at
        } else {
            now + EXPIRY_MARGIN < c.expires_at
        };
        usable.then(|| c.token.clone())
    }
}

#[async_trait::async_trait]
impl ServiceCredentials for IssuedCredentials {
    fn service(&self) -> &str {
        &self.service
    }

    async fn token(&self, audience: &str) -> Result<Secret<String>> {
        if let Some(t) = self.cached(audience, true) {
            return Ok(t);
        }
        // One request to auth at a time; the others find its token in the cache.
        let _one = self.fetching.lock().await;
        if let Some(t) = self.cached(audience, true) {
            return Ok(t);
        }
        let ctx = RequestContext::new().with_timeout(ISSUE_TIMEOUT);
        match self
            .auth
            .issue_service_token(&ctx, &self.service, self.secret.clone(), audience)
            .await
        {
            Ok(t) => {
                let now = Instant::now();
                let life = Duration::from_secs(u64::from(t.expires_in));
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    audience.to_owned(),
                    Cached {
                        token: t.token.clone(),
                        refresh_at: now + life / 2,
                        expires_at: now + life,
                    },
                );
                Ok(t.token)
            }
            Err(e) => {
                if let Some(t) = self.cached(audience, false) {
                    tracing::warn!(service = %self.service, %audience, error = %e, "renewing the service token failed; using the current one");
                    return Ok(t);
                }
                if e.code == ErrorCode::Unauthenticated {
                    tracing::error!(service = %self.service, "auth refused this service's secret (service_identity.secret / auth.service_accounts)");
                } else {
                    tracing::warn!(service = %self.service, %audience, error = %e, "cannot get a service token from auth");
                }
                Err(Error::unavailable(format!(
                    "no service credential for calling {audience}"
                )))
            }
        }
    }
}

/// Checks the shared sections a service process uses to find and call others — `registry`,
/// `clients` and `service_identity` (for `service` in environment `env`) — so a bad value
/// stops the process at start, naming its key.
pub fn check_shared_config(
    source: &plt_kernel::config::ConfigSource,
    service: &str,
    env: &str,
) -> std::result::Result<(), ConfigError> {
    source.section::<plt_registry::config::RegistryConfig>("registry")?;
    source.section::<crate::ClientsConfig>("clients")?;
    source
        .section::<ServiceIdentityConfig>("service_identity")?
        .secret_for(service, env)?;
    Ok(())
}
