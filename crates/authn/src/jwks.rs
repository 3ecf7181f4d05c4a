//! Where a verifier gets its public keys.

use async_trait::async_trait;
use plt_contracts::auth::Jwks;
use std::sync::{Arc, RwLock};

/// A source of the current JWKS document.
#[async_trait]
pub trait JwksSource: Send + Sync {
    async fn fetch(&self) -> Result<Jwks, String>;
}

/// `GET <url>` returning a JWKS document (the auth service's `/.well-known/jwks.json`).
#[derive(Clone)]
pub struct HttpJwksSource {
    client: reqwest::Client,
    url: String,
}

impl HttpJwksSource {
    pub fn new(client: reqwest::Client, url: impl Into<String>) -> Self {
        Self {
            client,
            url: url.into(),
        }
    }
}

#[async_trait]
impl JwksSource for HttpJwksSource {
    async fn fetch(&self) -> Result<Jwks, String> {
        let resp = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("fetching JWKS: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("fetching JWKS: HTTP {}", resp.status()));
        }
        resp.json::<Jwks>()
            .await
            .map_err(|e| format!("reading JWKS: {e}"))
    }
}

/// A JWKS held in memory and replaced by its owner (the auth service itself, tests).
#[derive(Clone, Default)]
pub struct StaticJwks {
    jwks: Arc<RwLock<Option<Jwks>>>,
}

impl StaticJwks {
    pub fn new(jwks: Jwks) -> Self {
        let s = Self::default();
        s.set(jwks);
        s
    }

    pub fn set(&self, jwks: Jwks) {
        *self.jwks.write().unwrap_or_else(|p| p.into_inner()) = Some(jwks);
    }
}

#[async_trait]
impl JwksSource for StaticJwks {
    async fn fetch(&self) -> Result<Jwks, String> {
        self.jwks
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| "no keys yet".to_owned())
    }
}
