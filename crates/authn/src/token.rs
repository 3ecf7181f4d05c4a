//! Signing and verifying access tokens.

use crate::{jwks::JwksSource, revocation::Revocations};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use plt_contracts::{
    Error,
    auth::{Jwk, Jwks, TokenClaims},
};
use plt_kernel::Secret;
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// The one JWS algorithm plt issues and accepts.
pub const ALGORITHM: &str = "EdDSA";
/// The `typ` header of access tokens (RFC 9068).
pub const TOKEN_TYPE: &str = "at+jwt";
/// The `typ` header of service tokens: a different type, so neither kind is ever accepted as
/// the other (RFC 8725 §3.11).
pub const SERVICE_TOKEN_TYPE: &str = "svc+jwt";

/// A `kid` is 1–64 characters of `A-Z a-z 0-9 - _`.
pub fn valid_kid(kid: &str) -> bool {
    !kid.is_empty()
        && kid.len() <= 64
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The claims plt puts in an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub scope: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub client_id: String,
    /// The session (refresh-token family) the token belongs to: ending the session ends
    /// the token ([`crate::Revocations`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub sid: String,
}

#[derive(Serialize)]
struct Header<'a> {
    alg: &'a str,
    typ: &'a str,
    kid: &'a str,
}

/// A private signing key with its `kid`.
pub struct Signer {
    kid: String,
    key: SigningKey,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A new random key.
    pub fn generate(kid: impl Into<String>) -> Result<Self, Error> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::internal("generating signing key", &e))?;
        Self::from_seed(kid, &seed)
    }

    /// The key whose 32-byte Ed25519 seed is `seed`.
    pub fn from_seed(kid: impl Into<String>, seed: &[u8]) -> Result<Self, Error> {
        let kid = kid.into();
        if !valid_kid(&kid) {
            return Err(Error::invalid(
                "kid",
                "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_'",
            ));
        }
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| Error::invalid("seed", "must be 32 bytes"))?;
        Ok(Self {
            kid,
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The private seed, to be stored encrypted.
    pub fn seed(&self) -> Secret<Vec<u8>> {
        Secret::new(self.key.to_bytes().to_vec())
    }

    /// The public key as a JWK (RFC 8037: `kty: OKP`, `crv: Ed25519`).
    pub fn public_jwk(&self) -> Jwk {
        Jwk {
            kty: "OKP".into(),
            crv: "Ed25519".into(),
            x: URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes()),
            y: String::new(),
            kid: self.kid.clone(),
            alg: ALGORITHM.into(),
            use_: "sig".into(),
        }
    }

    /// A compact JWS of `claims`, typed as an access token.
    pub fn sign(&self, claims: &AccessClaims) -> String {
        self.sign_typed(TOKEN_TYPE, claims)
    }

    /// A compact JWS of `claims`, typed as a service token (`sub` is the calling service,
    /// `aud` the called one).
    pub fn sign_service(&self, claims: &AccessClaims) -> String {
        self.sign_typed(SERVICE_TOKEN_TYPE, claims)
    }

    fn sign_typed(&self, typ: &str, claims: &AccessClaims) -> String {
        let header = Header {
            alg: ALGORITHM,
            typ,
            kid: &self.kid,
        };
        // Serialising these plain structs cannot fail.
        let h = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap_or_default());
        let p = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{h}.{p}");
        use ed25519_dalek::Signer as _;
        let sig = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()))
    }
}

/// Why a token was refused. Callers see only "invalid token"; this is for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("token larger than {0} bytes")]
    TooLarge(usize),
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("algorithm not allowed")]
    Algorithm,
    #[error("header parameter {0:?} not allowed")]
    Header(String),
    #[error("wrong token type")]
    Type,
    #[error("malformed kid")]
    Kid,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("missing or invalid claim {0}")]
    Claim(&'static str),
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("session ended")]
    Revoked,
}

impl From<VerifyError> for Error {
    fn from(e: VerifyError) -> Self {
        tracing::debug!(reason = %e, "access token refused");
        Error::unauthenticated("invalid or expired token")
    }
}

#[derive(Debug, Clone)]
pub struct VerifierConfig {
    pub issuer: String,
    /// The audience this verifier accepts (one of the token's `aud` values).
    pub audience: String,
    /// Clock skew tolerated for `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    pub max_token_bytes: usize,
    /// At most one JWKS refetch per this interval, whatever the traffic.
    pub min_refetch_interval: Duration,
    /// Cached keys older than this are refreshed on the next verification (so removed keys
    /// stop validating), subject to `min_refetch_interval`.
    pub max_key_age: Duration,
}

impl VerifierConfig {
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: Duration::from_secs(5),
            max_token_bytes: 8 * 1024,
            min_refetch_interval: Duration::from_secs(10),
            max_key_age: Duration::from_secs(300),
        }
    }
}

struct KeyCache {
    keys: HashMap<String, VerifyingKey>,
    fetched_at: Option<Instant>,
}

/// Verifies access tokens locally. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Verifier {
    cfg: Arc<VerifierConfig>,
    source: Arc<dyn JwksSource>,
    cache: Arc<RwLock<KeyCache>>,
    refetch: Arc<tokio::sync::Mutex<Option<Instant>>>,
    revocations: Option<Arc<Revocations>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictHeader {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    jti: Option<String>,
    #[serde(default)]
    scope: String,
    #[serde(default)]
    sid: String,
}

fn b64(part: &str, what: &'static str) -> Result<Vec<u8>, VerifyError> {
    if part.is_empty() {
        return Err(VerifyError::Malformed(what));
    }
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| VerifyError::Malformed(what))
}

/// RFC 7515 §4 / RFC 7519 §7.2: the header and the claims set are JSON objects. Checked
/// before deserialising because serde's derived structs also accept a JSON array (fields by
/// position), which no other JOSE implementation would.
fn json_object(bytes: Vec<u8>, what: &'static str) -> Result<Vec<u8>, VerifyError> {
    match bytes.iter().find(|b| !b" \t\r\n".contains(b)) {
        Some(b'{') => Ok(bytes),
        _ => Err(VerifyError::Malformed(what)),
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The usable keys of a JWKS: Ed25519 signature keys with a valid `kid`.
fn parse_jwks(jwks: &Jwks) -> HashMap<String, VerifyingKey> {
    let mut keys = HashMap::new();
    for k in &jwks.keys {
        let usable = k.kty == "OKP"
            && k.crv == "Ed25519"
            && (k.alg.is_empty() || k.alg == ALGORITHM)
            && (k.use_.is_empty() || k.use_ == "sig")
            && valid_kid(&k.kid);
        if !usable {
            continue;
        }
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(&k.x) else {
            continue;
        };
        let Ok(bytes) = <[u8; 32]>::try_from(bytes.as_slice()) else {
            continue;
        };
        // Small-order ("weak") points would let anyone forge signatures under lax checks;
        // verify_strict refuses them too, but such a key has no business in the cache.
        if let Ok(vk) = VerifyingKey::from_bytes(&bytes)
            && !vk.is_weak()
        {
            keys.insert(k.kid.clone(), vk);
        }
    }
    keys
}

impl Verifier {
    pub fn new(cfg: VerifierConfig, source: Arc<dyn JwksSource>) -> Self {
        Self {
            cfg: Arc::new(cfg),
            source,
            cache: Arc::new(RwLock::new(KeyCache {
                keys: HashMap::new(),
                fetched_at: None,
            })),
            refetch: Arc::new(tokio::sync::Mutex::new(None)),
            revocations: None,
        }
    }

    /// This verifier, refusing access tokens of the sessions and tokens `revocations` names.
    pub fn with_revocations(mut self, revocations: Arc<Revocations>) -> Self {
        self.revocations = Some(revocations);
        self
    }

    /// The revocations this verifier honours, if any.
    pub fn revocations(&self) -> Option<&Arc<Revocations>> {
        self.revocations.as_ref()
    }

    /// Whether an access token of session `sid` with id `jti`, verified earlier, has been
    /// revoked since (for callers that cache verified tokens).
    pub fn is_revoked(&self, sid: &str, jti: &str) -> bool {
        self.revocations
            .as_ref()
            .is_some_and(|r| r.is_revoked(sid, jti))
    }

    pub fn config(&self) -> &VerifierConfig {
        &self.cfg
    }

    /// Replaces the cached keys (for an owner that knows them, like the auth service).
    pub fn set_keys(&self, jwks: &Jwks) {
        let mut c = self.cache.write().unwrap_or_else(|p| p.into_inner());
        c.keys = parse_jwks(jwks);
        c.fetched_at = Some(Instant::now());
    }

    fn lookup(&self, kid: &str) -> (Option<VerifyingKey>, bool) {
        let c = self.cache.read().unwrap_or_else(|p| p.into_inner());
        let stale = c
            .fetched_at
            .is_none_or(|t| t.elapsed() > self.cfg.max_key_age);
        (c.keys.get(kid).copied(), stale)
    }

    /// Refetches the JWKS unless one was fetched within `min_refetch_interval`. Concurrent
    /// callers wait for the one fetch in progress instead of starting their own.
    async fn refresh(&self) {
        let mut last = self.refetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.cfg.min_refetch_interval) {
            return;
        }
        *last = Some(Instant::now());
        match self.source.fetch().await {
            Ok(jwks) => self.set_keys(&jwks),
            Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached keys"),
        }
    }

    /// Verifies the access token `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<TokenClaims, VerifyError> {
        let claims = self
            .verify_typed(token, TOKEN_TYPE, &self.cfg.audience)
            .await?;
        if self.is_revoked(&claims.sid, &claims.jti) {
            return Err(VerifyError::Revoked);
        }
        Ok(claims)
    }

    /// Verifies the service token `token` addressed to `audience` (the verifying service's
    /// name) and returns its claims; `sub` is the calling service.
    pub async fn verify_service(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<TokenClaims, VerifyError> {
        self.verify_typed(token, SERVICE_TOKEN_TYPE, audience).await
    }

    async fn verify_typed(
        &self,
        token: &str,
        expected_typ: &str,
        audience: &str,
    ) -> Result<TokenClaims, VerifyError> {
        if token.len() > self.cfg.max_token_bytes {
            return Err(VerifyError::TooLarge(self.cfg.max_token_bytes));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(VerifyError::Malformed("not three dot-separated parts"));
        };
        let header = json_object(b64(h, "header")?, "header is not a JSON object")?;
        let header: StrictHeader = serde_json::from_slice(&header).map_err(|e| {
            if e.to_string().contains("unknown field") {
                let name = e.to_string().split('`').nth(1).unwrap_or("?").to_owned();
                VerifyError::Header(name)
            } else {
                VerifyError::Malformed("header is not the expected JSON object")
            }
        })?;
        if header.alg != ALGORITHM {
            return Err(VerifyError::Algorithm);
        }
        // RFC 7515 §4.1.9: the `application/` prefix may be present, in any case.
        let typ_ok = header.typ.as_deref().is_some_and(|t| {
            let t = match t.get(..12) {
                Some(p) if p.eq_ignore_ascii_case("application/") => &t[12..],
                _ => t,
            };
            t.eq_ignore_ascii_case(expected_typ)
        });
        if !typ_ok {
            return Err(VerifyError::Type);
        }
        let kid = header.kid.ok_or(VerifyError::Kid)?;
        if !valid_kid(&kid) {
            return Err(VerifyError::Kid);
        }
        let sig_bytes = b64(s, "signature")?;
        let signature =
            Signature::from_slice(&sig_bytes).map_err(|_| VerifyError::Malformed("signature"))?;
        let payload = json_object(b64(p, "payload")?, "claims are not a JSON object")?;

        let (mut key, stale) = self.lookup(&kid);
        if key.is_none() || stale {
            self.refresh().await;
            key = self.lookup(&kid).0;
        }
        let key = key.ok_or(VerifyError::UnknownKey)?;
        let signing_input = &token[..h.len() + 1 + p.len()];
        key.verify_strict(signing_input.as_bytes(), &signature)
            .map_err(|_| VerifyError::Signature)?;

        let raw: RawClaims = serde_json::from_slice(&payload)
            .map_err(|_| VerifyError::Malformed("claims are not a JSON object"))?;
        let now = now_secs();
        // Saturating: an absurd (but signed) `exp` or a huge leeway must not overflow.
        let leeway = i64::try_from(self.cfg.leeway.as_secs()).unwrap_or(i64::MAX);
        let exp = raw.exp.ok_or(VerifyError::Claim("exp"))?;
        if now > exp.saturating_add(leeway) {
            return Err(VerifyError::Expired);
        }
        let iat = raw.iat.ok_or(VerifyError::Claim("iat"))?;
        if iat > now.saturating_add(leeway) {
            return Err(VerifyError::NotYetValid);
        }
        if let Some(nbf) = raw.nbf
            && nbf > now.saturating_add(leeway)
        {
            return Err(VerifyError::NotYetValid);
        }
        let iss = raw.iss.ok_or(VerifyError::Claim("iss"))?;
        if iss != self.cfg.issuer {
            return Err(VerifyError::Issuer);
        }
        let aud = match raw.aud.ok_or(VerifyError::Claim("aud"))? {
            Audience::One(a) => vec![a],
            Audience::Many(v) => v,
        };
        if !aud.iter().any(|a| a == audience) {
            return Err(VerifyError::Audience);
        }
        let sub = raw
            .sub
            .filter(|s| !s.is_empty())
            .ok_or(VerifyError::Claim("sub"))?;
        let jti = raw
            .jti
            .filter(|s| !s.is_empty())
            .ok_or(VerifyError::Claim("jti"))?;
        Ok(TokenClaims {
            sub,
            iss,
            aud,
            exp,
            iat,
            nbf: raw.nbf.unwrap_or(iat),
            jti,
            scope: raw.scope,
            sid: raw.sid,
        })
    }
}
