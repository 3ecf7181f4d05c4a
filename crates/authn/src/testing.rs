//! A token authority for tests: one signing key, its JWKS, and access and service tokens
//! signed with it, with the issuer and audience of config/default.yaml.

use crate::{AccessClaims, JwksSource, Signer, StaticJwks, sign_service_token};
use async_trait::async_trait;
use plt_contracts::{RequestContext, Result, auth::Jwks, service_identity::ServiceCredentials};
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
        let now = crate::token::now_secs();
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
            sid: String::new(),
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

impl TestAuthority {
    /// Serves this authority's JWKS over HTTP on a loopback port (for services started as
    /// separate processes) and returns its URL. Runs until the runtime stops.
    pub async fn serve_jwks(&self) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/.well-known/jwks.json", listener.local_addr()?);
        let body = serde_json::to_string(&Jwks {
            keys: vec![self.signer.public_jwk()],
        })
        .unwrap_or_default();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let body = body.clone();
                tokio::spawn(async move {
                    // One request per connection: read the head, answer, close.
                    let mut buf = vec![0u8; 8192];
                    let mut read = 0;
                    while read < buf.len() {
                        match conn.read(&mut buf[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                        if buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Ok(url)
    }
}

impl TestAuthority {
    /// An HTTP client whose every request carries a service token from `caller` to
    /// `audience` (the `x-plt-service-token` header), as a platform service's would.
    pub fn http_client(&self, caller: &str, audience: &str) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Ok(v) = self.service_token(caller, audience).expose().parse() {
            headers.insert(plt_contracts::service_identity::SERVICE_TOKEN_HEADER, v);
        }
        plt_kernel::tls::http_client_builder()
            .default_headers(headers)
            .build()
            .unwrap_or_default()
    }
}
