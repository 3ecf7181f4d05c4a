//! Single-use secrets sent by mail: 256 random bits, base64url; only a SHA-256 hash is
//! stored, so a database leak does not yield usable tokens.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use plt_contracts::{Error, Result};
use sha2::{Digest, Sha256};

const TOKEN_BYTES: usize = 32;
/// Length of an encoded token: 32 bytes in unpadded base64url.
const TOKEN_CHARS: usize = 43;

/// A new token: what is mailed, and what is stored.
pub fn generate() -> Result<(String, Vec<u8>)> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| Error::internal("generating token", &e))?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = hash(&token);
    Ok((token, hash))
}

/// The stored form of a presented token, or an error if it cannot be one of ours.
pub fn parse(field: &str, token: &str) -> Result<Vec<u8>> {
    let token = token.trim();
    if token.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if token.len() != TOKEN_CHARS || URL_SAFE_NO_PAD.decode(token).is_err() {
        return Err(Error::invalid(field, "is malformed"));
    }
    Ok(hash(token))
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_to_their_hash_and_differ() {
        let (a, ha) = generate().unwrap();
        let (b, _) = generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_CHARS);
        assert_eq!(parse("token", &a).unwrap(), ha);
        assert!(parse("token", "").is_err());
        assert!(parse("token", "short").is_err());
        assert!(parse("token", &"!".repeat(TOKEN_CHARS)).is_err());
    }
}
