//! plt-authn: plt access tokens. Signs them (compact JWS, EdDSA over Ed25519, `typ: at+jwt`
//! per RFC 9068, `kid` in the header) and verifies them locally under the RFC 8725 rules from
//! a cached JWKS, refetched at most once per interval when an unknown `kid` appears. The auth
//! service signs with it; the gateway and every service verify with it.
//!
//! The profile is deliberately narrow: one algorithm (`EdDSA`, compared exactly, so `none`,
//! `noNE`, `HS256` and the like never reach a key), a header holding only `alg`, `typ` and
//! `kid` (a `jku`, `x5u`, `jwk`, `x5c` or `crit` header is refused, never followed), required
//! `iss`, `aud`, `exp`, `iat`, `sub`, `jti`, a bounded token size checked before any parsing,
//! and strict unpadded base64url.

mod config;
mod jwks;
pub mod revocation;
mod service;
/// Test support (feature `testing`: dev-dependencies only, never in a production build).
#[cfg(feature = "testing")]
pub mod testing;
mod token;

pub use config::TokenConfig;
pub use jwks::{HttpJwksSource, JwksSource, StaticJwks};
pub use revocation::Revocations;
pub use service::{DEFAULT_SERVICE_TOKEN_TTL, ServiceGuard, service_claims, sign_service_token};
pub use token::{
    ALGORITHM, AccessClaims, SERVICE_TOKEN_TYPE, Signer, TOKEN_TYPE, Verifier, VerifierConfig,
    VerifyError, valid_kid,
};
