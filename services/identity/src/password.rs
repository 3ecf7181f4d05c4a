//! Password policy and hashing. Argon2id runs on tokio's blocking pool behind a semaphore
//! sized to the number of cores, so a burst of sign-ins cannot starve the async workers or
//! pile up unbounded memory (each hash takes `memory_kib`).

use crate::config::{Argon2Config, PasswordPolicy};
use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash},
};
use plt_contracts::{Error, Result};
use plt_kernel::Secret;
use std::sync::Arc;
use tokio::sync::{OnceCell, Semaphore};

/// zxcvbn's estimate is computed on at most this many characters (its matching cost grows
/// quickly with length); the full password is always what gets hashed.
const STRENGTH_PREFIX_CHARS: usize = 100;

#[derive(Clone)]
pub struct Passwords {
    argon: Arc<Argon2<'static>>,
    permits: Arc<Semaphore>,
    policy: PasswordPolicy,
    dummy_hash: Arc<OnceCell<String>>,
}

impl Passwords {
    pub fn new(policy: PasswordPolicy, a: &Argon2Config) -> Result<Self, String> {
        let params = Params::new(a.memory_kib, a.iterations, a.parallelism, None)
            .map_err(|e| e.to_string())?;
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Ok(Self {
            argon: Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params)),
            permits: Arc::new(Semaphore::new(cores)),
            policy,
            dummy_hash: Arc::new(OnceCell::new()),
        })
    }

    /// Refuses passwords that are too short, too long, or too easy to guess (common
    /// passwords, or ones built from the user's e-mail or name).
    pub async fn check_policy(
        &self,
        password: &Secret<String>,
        user_inputs: &[&str],
    ) -> Result<()> {
        let pw = password.expose();
        let len = pw.chars().count();
        if len < self.policy.min_length {
            return Err(Error::invalid(
                "password",
                format!("must be at least {} characters", self.policy.min_length),
            ));
        }
        if len > self.policy.max_length {
            return Err(Error::invalid(
                "password",
                format!("must be at most {} characters", self.policy.max_length),
            ));
        }
        let prefix: String = pw.chars().take(STRENGTH_PREFIX_CHARS).collect();
        let inputs: Vec<String> = user_inputs.iter().map(|s| s.to_string()).collect();
        let min = self.policy.min_strength;
        let score = self
            .blocking(move || {
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                u8::from(zxcvbn::zxcvbn(&prefix, &refs).score())
            })
            .await?;
        if score < min {
            return Err(Error::invalid(
                "password",
                "is too easy to guess (common, or built from your e-mail or name); use a longer passphrase",
            ));
        }
        Ok(())
    }

    /// The Argon2id PHC string of `password`.
    pub async fn hash(&self, password: &Secret<String>) -> Result<String> {
        let argon = self.argon.clone();
        let pw = password.expose().clone();
        self.blocking(move || argon.hash_password(pw.as_bytes()).map(|h| h.to_string()))
            .await?
            .map_err(|e| Error::internal("hashing password", &e))
    }

    /// Whether `password` matches `phc`.
    pub async fn verify(&self, password: &Secret<String>, phc: &str) -> Result<bool> {
        let argon = self.argon.clone();
        let pw = password.expose().clone();
        let phc = phc.to_owned();
        self.blocking(move || {
            let parsed = PasswordHash::new(&phc).map_err(|e| e.to_string())?;
            Ok::<bool, String>(argon.verify_password(pw.as_bytes(), &parsed).is_ok())
        })
        .await?
        .map_err(|e| Error::internal("reading stored password hash", &StrError(e)))
    }

    /// Spends the same work as a real verification, for an unknown account, so that timing
    /// does not tell whether an e-mail address is registered.
    pub async fn verify_dummy(&self, password: &Secret<String>) -> Result<()> {
        let dummy = self
            .dummy_hash
            .get_or_try_init(|| async {
                self.hash(&Secret::new("plt-dummy-password".into())).await
            })
            .await?
            .clone();
        self.verify(password, &dummy).await.map(drop)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::unavailable("shutting down"))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| Error::internal("password worker", &e))
    }
}

#[derive(Debug)]
struct StrError(String);

impl std::fmt::Display for StrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StrError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn passwords() -> Passwords {
        Passwords::new(
            PasswordPolicy {
                min_length: 8,
                max_length: 128,
                min_strength: 2,
            },
            &Argon2Config {
                memory_kib: 19456,
                iterations: 2,
                parallelism: 1,
            },
        )
        .unwrap()
    }

    #[tokio::test]
    async fn hashes_are_argon2id_with_the_configured_cost_and_verify() {
        let p = passwords();
        let pw = Secret::new("correct horse battery staple".to_string());
        let phc = p.hash(&pw).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(p.verify(&pw, &phc).await.unwrap());
        assert!(
            !p.verify(&Secret::new("wrong horse battery staple".into()), &phc)
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn long_passwords_are_not_truncated() {
        let p = passwords();
        let a = "x7!Qm".repeat(25); // 125 characters
        let mut b = a.clone();
        b.push('z');
        let phc = p.hash(&Secret::new(b.clone())).await.unwrap();
        assert!(!p.verify(&Secret::new(a), &phc).await.unwrap());
        assert!(p.verify(&Secret::new(b), &phc).await.unwrap());
    }

    #[tokio::test]
    async fn policy_refuses_short_long_and_common() {
        let p = passwords();
        for bad in [
            "short",
            "password",
            "password123",
            "qwertyuiop",
            "alice@example.com",
        ] {
            let r = p
                .check_policy(&Secret::new(bad.into()), &["alice@example.com", "alice"])
                .await;
            assert!(r.is_err(), "{bad} accepted");
        }
        let r = p.check_policy(&Secret::new("a".repeat(129)), &[]).await;
        assert!(r.unwrap_err().violations[0].reason.contains("at most 128"));
        assert!(
            p.check_policy(&Secret::new("correct horse battery staple".into()), &[])
                .await
                .is_ok()
        );
        assert!(
            p.check_policy(&Secret::new("Tr0ub4dour&3-xylophone".repeat(5)), &[])
                .await
                .is_ok()
        );
    }
}
