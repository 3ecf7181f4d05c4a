//! A token authority for tests: one signing key, its JWKS, and access and service tokens
//! signed with it, with the issuer and audience of config/default.yaml.

use crate::{AccessClaims, JwksSource, Signer, StaticJwks, sign_service_token};
use async_trait::async_trait;
use plt_contracts::{
    RequestContext, Result, auth::Jwks, service_identity::ServiceCredentials,
};
use plt_kernel::Secret;
use std::{sync::Arc, time::Duration};

pub const ISSUER: &str = "plt";
pub const AUDIENCE: &str = "plt-api";

/// Signs tokens the way auth does, with a key of its own.
#[derive(Clone)]
pub struct TestAuthority {
    signer: Arc<Signer>,
    jwks: Arc<StaticJwks>,
}

impl Default for TestAuthority {
    fn default() -> Self {
        Self::new()
    }
}

impl TestAuthority {
    pub fn new() -> Self {
        let signer = Arc::new(Signer::generate("test-authority").expect("key generation"));
        let jwks = Arc::new(StaticJwks::new(Jwks {
            keys: vec![signer.public_jwk()],
        }));
        Self { signer, jwks }
    }

    /// The JWKS to trust (as a service's `jwks` override).
    pub fn jwks(&self) -> Arc<dyn JwksSource> {
        self.jwks.clone()
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// A service token from `caller` to `audience`, valid for five minutes.
    pub fn service_token(&self, caller: &str, audience: &str) -> Secret<String> {
        Secret::new(sign_service_token(
            &self.signer,
            ISSUER,
            caller,
            audience,
            Duration::from_secs(300),
        ))
    }

    /// A context carrying a service token from `caller` to `audience`.
    pub fn service_ctx(&self, caller: &str, audience: &str) -> RequestContext {
        RequestContext::new().with_service_token(self.service_token(caller, audience))
    }

    /// Credentials of `caller` signed by this authority (for a client factory).
    pub fn credentials(&self, caller: &str) -> Arc<dyn ServiceCredentials> {
        Arc::new(AuthorityCredentials {
            authority: self.clone(),
            caller: caller.to_owned(),
        })
    }

    /// An access token of user `sub`, valid for five minutes.
    pub fn access_token(&self, sub: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.signer.sign(&AccessClaims {
            iss: ISSUER.into(),
            sub: sub.into(),
            aud: vec![AUDIENCE.into()],
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: format!("{now}-{sub}"),
            scope: String::new(),
            client_id: String::new(),
        })
    }
}

struct AuthorityCredentials {
    authority: TestAuthority,
    caller: String,
}

#[async_trait]
impl ServiceCredentials for AuthorityCredentials {
    fn service(&self) -> &str {
        &self.caller
    }

    async fn token(&self, audience: &str) -> Result<Secret<String>> {
        Ok(self.authority.service_token(&self.caller, audience))
    }
}
