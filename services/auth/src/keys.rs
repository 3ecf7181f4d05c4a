//! The signing-key ring: every instance loads the keys from the store, signs with the active
//! one, publishes next + active + retiring in the JWKS, and applies due rotations and
//! removals. Rotations are compare-and-swap in the store, so concurrent instances agree.
//!
//! Lifecycle: `next` (published a full rotation interval before it signs, so every verifier
//! has it cached by then) → `active` (signs) → `retiring` (still published until every token
//! it signed has expired: `access_token_ttl` + leeway after retirement) → removed.

use crate::{
    seal::Sealer,
    store::{AuthStore, KeyRow, KeyState},
};
use chrono::{DateTime, SubsecRound, Utc};
use plt_authn::{Signer, StaticJwks, Verifier, VerifierConfig};
use plt_contracts::{
    Error,
    auth::{Jwk, Jwks},
};
use std::{
    sync::{Arc, RwLock},
    time::Duration,
};
use uuid::Uuid;

/// Extra time a retired key stays published beyond the last token's expiry (clock skew).
const REMOVAL_MARGIN: Duration = Duration::from_secs(30);

pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

struct Current {
    signer: Arc<Signer>,
    rows: Vec<KeyRow>,
}

pub struct KeyRing {
    store: Arc<dyn AuthStore>,
    sealer: Sealer,
    rotation_interval: Duration,
    access_ttl: Duration,
    current: RwLock<Option<Current>>,
    jwks: StaticJwks,
    verifier: Verifier,
    /// Publishes `plt.auth.keys.rotated.v1` with each rotation, once set.
    events: std::sync::OnceLock<plt_events::Publisher>,
}

fn internal(context: &str, e: impl std::error::Error + 'static) -> Error {
    Error::internal(context, &e)
}

fn chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl KeyRing {
    /// Loads the keys, creating the first active and next keys on a fresh database.
    pub async fn open(
        store: Arc<dyn AuthStore>,
        sealer: Sealer,
        verifier_cfg: VerifierConfig,
        rotation_interval: Duration,
        access_ttl: Duration,
    ) -> Result<Arc<Self>, Error> {
        let jwks = StaticJwks::default();
        // Auth's own checks (its guard, ValidateToken) honour the sessions it ended.
        let verifier = Verifier::new(verifier_cfg, Arc::new(jwks.clone()))
            .with_revocations(Arc::new(plt_authn::Revocations::new()));
        let ring = Arc::new(Self {
            events: std::sync::OnceLock::new(),
            store,
            sealer,
            rotation_interval,
            access_ttl,
            current: RwLock::new(None),
            jwks,
            verifier,
        });
        ring.ensure_keys().await?;
        ring.reload().await?;
        Ok(ring)
    }

    fn new_key(&self, state: KeyState, now: DateTime<Utc>) -> Result<KeyRow, Error> {
        let kid = Uuid::now_v7().simple().to_string();
        let signer = Signer::generate(kid.clone())?;
        let encrypted_seed = self
            .sealer
            .seal(kid.as_bytes(), signer.seed().expose())
            .map_err(|e| internal("sealing signing key", e))?;
        Ok(KeyRow {
            public_x: signer.public_jwk().x,
            kid,
            state,
            encrypted_seed,
            created_at: now,
            activated_at: (state == KeyState::Active).then_some(now),
            retired_at: None,
            remove_after: None,
        })
    }

    async fn ensure_keys(&self) -> Result<(), Error> {
        let rows = self
            .store
            .keys()
            .await
            .map_err(|e| e.into_error("reading keys"))?;
        let now = now();
        for state in [KeyState::Active, KeyState::Next] {
            if !rows.iter().any(|r| r.state == state) {
                let key = self.new_key(state, now)?;
                // Another instance may create it at the same time; a unique index keeps one.
                if let Err(e) = self.store.insert_key(&key).await {
                    tracing::info!(error = %e, state = state.as_str(), "key created concurrently elsewhere");
                } else {
                    tracing::info!(kid = %key.kid, state = state.as_str(), "signing key created");
                }
            }
        }
        Ok(())
    }

    /// Reloads keys from the store.
    pub async fn reload(&self) -> Result<(), Error> {
        let rows = self
            .store
            .keys()
            .await
            .map_err(|e| e.into_error("reading keys"))?;
        let active = rows
            .iter()
            .find(|r| r.state == KeyState::Active)
            .ok_or_else(|| Error::unavailable("no active signing key"))?;
        let seed = self
            .sealer
            .open(active.kid.as_bytes(), &active.encrypted_seed)
            .map_err(|e| internal("opening signing key (wrong auth.keys.encryption_key?)", e))?;
        let signer = Arc::new(Signer::from_seed(active.kid.clone(), &seed)?);
        let now = now();
        let published: Vec<Jwk> = rows
            .iter()
            .filter(|r| r.remove_after.is_none_or(|t| t > now))
            .map(|r| Jwk {
                kty: "OKP".into(),
                crv: "Ed25519".into(),
                x: r.public_x.clone(),
                y: String::new(),
                kid: r.kid.clone(),
                alg: plt_authn::ALGORITHM.into(),
                use_: "sig".into(),
            })
            .collect();
        let jwks = Jwks { keys: published };
        self.record_rotation_due(active);
        let active_kid = active.kid.clone();
        self.jwks.set(jwks.clone());
        self.verifier.set_keys(&jwks);
        let previous = self
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .replace(Current { signer, rows })
            .map(|c| c.signer.kid().to_owned());
        if let Some(previous) = previous
            && previous != active_kid
        {
            tracing::info!(retiring = %previous, active = %active_kid, "now signing with the rotated key");
        }
        Ok(())
    }

    /// When `active` is due to be replaced by the next key (activated + rotation interval), as
    /// `auth_signing_key_expiry_timestamp_seconds` (Unix seconds). Keys carry no expiry of
    /// their own: a key past this time still signs and verifies, but [`Self::maintain`]
    /// should have rotated it by then, so a time well in the past means rotation stopped.
    fn record_rotation_due(&self, active: &KeyRow) {
        let since = active.activated_at.unwrap_or(active.created_at);
        static DESCRIBED: std::sync::Once = std::sync::Once::new();
        DESCRIBED.call_once(|| {
            // The ring is opened before the host binds and installs the recorder.
            let _ = plt_kernel::metrics::handle();
            metrics::describe_gauge!(
                "auth_signing_key_expiry_timestamp_seconds",
                metrics::Unit::Seconds,
                "When the active signing key is due to be rotated (Unix seconds)."
            );
        });
        if let Some(due) = since.checked_add_signed(chrono(self.rotation_interval)) {
            metrics::gauge!("auth_signing_key_expiry_timestamp_seconds", "service" => crate::SERVICE_NAME)
                .set(due.timestamp_millis() as f64 / 1000.0);
        }
    }

    /// Applies a due rotation and due removals, then reloads.
    pub async fn maintain(&self) -> Result<(), Error> {
        // Start from the store: another instance may have rotated or changed keys.
        self.reload().await?;
        let now = now();
        let rows = self.rows();
        if let Some(active) = rows.iter().find(|r| r.state == KeyState::Active) {
            let since = active.activated_at.unwrap_or(active.created_at);
            if since + chrono(self.rotation_interval) <= now {
                self.rotate_at(now, "scheduled").await?;
            }
        }
        for r in rows.iter().filter(|r| r.state == KeyState::Retiring) {
            if r.remove_after.is_some_and(|t| t <= now) {
                self.store
                    .delete_key(&r.kid)
                    .await
                    .map_err(|e| e.into_error("removing key"))?;
                tracing::info!(kid = %r.kid, "retired signing key removed");
            }
        }
        self.reload().await
    }

    /// Rotates now (on demand): next becomes active, active starts retiring.
    /// Publishes key rotations with `events` from now on.
    pub fn publish_events(&self, events: plt_events::Publisher) {
        let _ = self.events.set(events);
    }

    pub async fn rotate(&self) -> Result<String, Error> {
        self.reload().await?;
        self.rotate_at(now(), "on_demand").await?;
        self.reload().await?;
        Ok(self.signer().kid().to_owned())
    }

    /// Rotates at `now`; `trigger` (`scheduled`, `on_demand`) goes into the audit record,
    /// which commits with the rotation.
    async fn rotate_at(&self, now: DateTime<Utc>, trigger: &str) -> Result<(), Error> {
        let rows = self.rows();
        let (Some(active), Some(next)) = (
            rows.iter().find(|r| r.state == KeyState::Active),
            rows.iter().find(|r| r.state == KeyState::Next),
        ) else {
            return Err(Error::unavailable("key ring incomplete"));
        };
        let new_next = self.new_key(KeyState::Next, now)?;
        let remove_after = now + chrono(self.access_ttl) + chrono(REMOVAL_MARGIN);
        let mut audit = vec![
            plt_outbox::audit::AuditEvent::new(
                crate::SERVICE_NAME,
                "auth.keys.rotated",
                format!("key/{}", next.kid),
                plt_contracts::audit::Outcome::Success,
            )
            .meta("retiring", active.kid.as_str())
            .meta("next", new_next.kid.as_str())
            .meta("trigger", trigger)
            .message(),
        ];
        if let Some(events) = self.events.get() {
            audit.extend(events.message(
                plt_contracts::events::KEYS_ROTATED,
                &format!("key/{}", next.kid),
                "keys",
                plt_contracts::events::KeysRotated {
                    kid: next.kid.clone(),
                    at: now,
                },
            ));
        }
        let done = self
            .store
            .rotate_keys(&active.kid, &next.kid, &new_next, now, remove_after, &audit)
            .await
            .map_err(|e| e.into_error("rotating keys"))?;
        if done {
            tracing::info!(retiring = %active.kid, active = %next.kid, next = %new_next.kid, "signing keys rotated");
        }
        Ok(())
    }

    fn rows(&self) -> Vec<KeyRow> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.rows.clone())
            .unwrap_or_default()
    }

    /// The key that signs now.
    pub fn signer(&self) -> Arc<Signer> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|c| c.signer.clone())
            .expect("the key ring is loaded when opened")
    }

    /// The keys published now (as the JWKS document).
    pub fn keys(&self) -> Vec<KeyRow> {
        self.rows()
    }

    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauge() -> Option<f64> {
        let prefix = format!(
            "auth_signing_key_expiry_timestamp_seconds{{service=\"{}\"}} ",
            crate::SERVICE_NAME
        );
        plt_kernel::metrics::render(&[])
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().parse().expect("a number"))
    }

    /// When the active key of `ring` is due to be rotated, as the gauge shows it.
    fn due(ring: &KeyRing, interval: chrono::Duration) -> f64 {
        let rows = ring.keys();
        let active = rows.iter().find(|r| r.state == KeyState::Active).unwrap();
        (active.activated_at.unwrap() + interval).timestamp_millis() as f64 / 1000.0
    }

    #[tokio::test]
    async fn the_expiry_gauge_follows_the_active_key() {
        assert!(
            plt_kernel::metrics::handle().is_some(),
            "the recorder installed"
        );
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_string_lossy().to_string();
        let cfg: crate::Config = plt_kernel::testing::config(
            crate::SECTION,
            [
                ("PLT_DATABASE__DATA_DIR", data.as_str()),
                ("PLT_AUTH__KEYS__ROTATION_INTERVAL", "7d"),
            ],
        );
        let db = crate::connect_db(&cfg, "auth").await.unwrap();
        let ring = crate::key_ring(&cfg, &db).await.unwrap();
        let week = chrono::Duration::days(7);
        let first = due(&ring, week);
        assert_eq!(gauge(), Some(first), "set when the ring is opened");

        tokio::time::sleep(Duration::from_millis(5)).await;
        ring.rotate().await.unwrap();
        let second = due(&ring, week);
        assert!(second > first, "the new active key was activated later");
        assert_eq!(gauge(), Some(second), "follows a rotation");
    }
}
