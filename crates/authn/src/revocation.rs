//! Sessions that ended before their access tokens expired, known to every verifier within a
//! second.
//!
//! Access tokens carry the session they belong to (`sid`, the refresh-token family). When a
//! session ends — logout, a refresh token replayed, a password reset, a user disabled or
//! deleted — auth records the session id (or, for a single token, its `jti`) until the last
//! access token it could have signed for it has expired, and publishes the list at
//! `GET /v1/auth/revocations` as a long poll: a verifier asks with the cursor of its last
//! answer and auth answers as soon as something newer exists (at most `wait` later).
//!
//! [`Revocations`] is that list in a process: auth keeps its own (fed from its database),
//! every other service's [`crate::Verifier`] follows auth's feed ([`Revocations::follow`]).
//! While auth is unreachable a follower keeps what it knows and retries with back-off:
//! tokens of sessions ended meanwhile stay usable until auth is back or they expire (at most
//! `auth.access_token_ttl`); sign-in and refresh need auth anyway. The time since the last
//! answer is exported as `plt_revocations_staleness_seconds`.

use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};
use tokio::sync::watch;

/// What a revocation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokedKind {
    /// Every access token of a session (`sid` claim).
    Session,
    /// One access token (`jti` claim).
    Token,
}

/// One ended session or token, until `expires_at` (Unix seconds): no token it covers is
/// valid after that anyway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revoked {
    pub kind: RevokedKind,
    pub id: String,
    pub expires_at: i64,
}

/// An answer of the feed: `full` replaces what the follower knows, otherwise it adds to it.
/// `cursor` is what to ask with next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationFeed {
    pub cursor: String,
    pub full: bool,
    pub revoked: Vec<Revoked>,
}

struct Entry {
    expires_at: i64,
    /// The local sequence number at which this entry arrived here.
    seq: u64,
}

#[derive(Default)]
struct State {
    entries: HashMap<(RevokedKind, String), Entry>,
    seq: u64,
    last_ok: Option<Instant>,
}

/// The revocations a process knows. Cheap to share (`Arc`).
pub struct Revocations {
    /// Names this process's sequence, so a cursor from another auth instance is recognised
    /// and answered with the full list.
    instance: String,
    state: RwLock<State>,
    changed: watch::Sender<u64>,
}

impl Default for Revocations {
    fn default() -> Self {
        Self::new()
    }
}

fn now_secs() -> i64 {
    crate::token::now_secs()
}

impl Revocations {
    pub fn new() -> Self {
        Self {
            instance: uuid::Uuid::new_v4().simple().to_string(),
            state: RwLock::new(State::default()),
            changed: watch::channel(0).0,
        }
    }

    /// Whether a token of session `sid` with id `jti` is revoked.
    pub fn is_revoked(&self, sid: &str, jti: &str) -> bool {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        if s.entries.is_empty() {
            return false;
        }
        let hit = |kind, id: &str| {
            !id.is_empty()
                && s.entries
                    .get(&(kind, id.to_owned()))
                    .is_some_and(|e| e.expires_at >= now_secs())
        };
        hit(RevokedKind::Session, sid) || hit(RevokedKind::Token, jti)
    }

    /// Adds revocations (those already known or already expired change nothing). Returns
    /// how many were new.
    pub fn add(&self, revoked: impl IntoIterator<Item = Revoked>) -> usize {
        let now = now_secs();
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        let mut added = 0;
        for r in revoked {
            if r.expires_at < now {
                continue;
            }
            let key = (r.kind, r.id);
            if s.entries.contains_key(&key) {
                continue;
            }
            s.seq += 1;
            let seq = s.seq;
            s.entries.insert(
                key,
                Entry {
                    expires_at: r.expires_at,
                    seq,
                },
            );
            added += 1;
        }
        s.entries.retain(|_, e| e.expires_at >= now);
        s.last_ok = Some(Instant::now());
        let seq = s.seq;
        drop(s);
        if added > 0 {
            self.changed.send_replace(seq);
        }
        added
    }

    /// Replaces everything known by `revoked` (a full answer of the feed).
    pub fn replace(&self, revoked: Vec<Revoked>) {
        {
            let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
            s.entries.clear();
        }
        self.add(revoked);
    }

    /// How long since the list was last confirmed current (`None`: never).
    pub fn staleness(&self) -> Option<Duration> {
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        s.last_ok.map(|t| t.elapsed())
    }

    /// Marks the list as current without news (a feed answer with nothing new).
    fn confirmed(&self) {
        let mut s = self.state.write().unwrap_or_else(|p| p.into_inner());
        s.last_ok = Some(Instant::now());
    }

    /// The feed's answer to `cursor`: what arrived after it, or everything when the cursor is
    /// another instance's (or none). Waits up to `wait` for something new first.
    pub async fn feed(&self, cursor: Option<&str>, wait: Duration) -> RevocationFeed {
        let after = cursor
            .and_then(|c| c.split_once(':'))
            .filter(|(inst, _)| *inst == self.instance)
            .and_then(|(_, seq)| seq.parse::<u64>().ok());
        if let Some(after) = after {
            let mut rx = self.changed.subscribe();
            let current = *rx.borrow_and_update();
            if current <= after {
                let _ = tokio::time::timeout(wait, rx.wait_for(|v| *v > after)).await;
            }
        }
        let s = self.state.read().unwrap_or_else(|p| p.into_inner());
        let now = now_secs();
        let revoked = s
            .entries
            .iter()
            .filter(|(_, e)| e.expires_at >= now && after.is_none_or(|a| e.seq > a))
            .map(|((kind, id), e)| Revoked {
                kind: *kind,
                id: id.clone(),
                expires_at: e.expires_at,
            })
            .collect();
        RevocationFeed {
            cursor: format!("{}:{}", self.instance, s.seq),
            full: after.is_none(),
            revoked,
        }
    }

    /// Follows auth's feed at `url` (`…/v1/auth/revocations`) until the task is aborted:
    /// long polls of up to `wait`, retried with back-off (100 ms doubling to 2 s) while auth
    /// is unreachable.
    pub fn follow(
        self: &Arc<Self>,
        client: reqwest::Client,
        url: String,
        wait: Duration,
    ) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut cursor: Option<String> = None;
            let mut backoff = Duration::from_millis(100);
            let mut failing = false;
            loop {
                let mut req = client
                    .get(&url)
                    .query(&[("wait_ms", wait.as_millis().to_string())])
                    .timeout(wait + Duration::from_secs(5));
                if let Some(c) = &cursor {
                    req = req.query(&[("cursor", c)]);
                }
                let answer = match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        r.json::<RevocationFeed>().await.map_err(|e| e.to_string())
                    }
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                };
                match answer {
                    Ok(feed) => {
                        if failing {
                            tracing::info!("revocation feed reachable again");
                            failing = false;
                        }
                        backoff = Duration::from_millis(100);
                        if feed.full {
                            me.replace(feed.revoked);
                        } else if me.add(feed.revoked) == 0 {
                            me.confirmed();
                        }
                        cursor = Some(feed.cursor);
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(error = %e, url = %url, "revocation feed unreachable; keeping the revocations known so far");
                            failing = true;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
                if let Some(age) = me.staleness() {
                    metrics::gauge!("plt_revocations_staleness_seconds").set(age.as_secs_f64());
                }
            }
        })
    }
}

/// The feed's URL at the auth service whose JWKS is at `jwks_url` (same origin).
pub fn feed_url(jwks_url: &str) -> Option<String> {
    let scheme_end = jwks_url.find("://")? + 3;
    let path_start = jwks_url[scheme_end..]
        .find('/')
        .map_or(jwks_url.len(), |i| scheme_end + i);
    Some(format!("{}{FEED_PATH}", &jwks_url[..path_start]))
}

/// Where auth serves the feed.
pub const FEED_PATH: &str = "/v1/auth/revocations";

#[cfg(test)]
mod tests {
    use super::*;

    fn session(id: &str, in_secs: i64) -> Revoked {
        Revoked {
            kind: RevokedKind::Session,
            id: id.into(),
            expires_at: now_secs() + in_secs,
        }
    }

    #[tokio::test]
    async fn a_feed_answers_news_at_once_and_full_lists_to_strangers() {
        let r = Revocations::new();
        assert!(!r.is_revoked("s1", "j1"));
        assert_eq!(r.add([session("s1", 60), session("old", -1)]), 1);
        assert!(r.is_revoked("s1", ""));
        assert!(!r.is_revoked("old", ""));
        let first = r.feed(None, Duration::ZERO).await;
        assert!(first.full);
        assert_eq!(first.revoked.len(), 1);
        // Nothing new: waits, then an empty increment.
        let started = Instant::now();
        let empty = r
            .feed(Some(&first.cursor), Duration::from_millis(100))
            .await;
        assert!(started.elapsed() >= Duration::from_millis(100));
        assert!(!empty.full && empty.revoked.is_empty());
        // Something new wakes a waiting poll at once.
        let r = Arc::new(r);
        let waiter = {
            let r = r.clone();
            let cursor = empty.cursor.clone();
            tokio::spawn(async move { r.feed(Some(&cursor), Duration::from_secs(10)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = Instant::now();
        r.add([session("s2", 60)]);
        let news = waiter.await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(news.revoked, vec![session("s2", 60)]);
        // Another instance's cursor gets everything.
        let stranger = r.feed(Some("other:99"), Duration::ZERO).await;
        assert!(stranger.full);
        assert_eq!(stranger.revoked.len(), 2);
    }

    #[test]
    fn the_feed_lives_beside_the_jwks() {
        assert_eq!(
            feed_url("http://127.0.0.1:8081/.well-known/jwks.json").as_deref(),
            Some("http://127.0.0.1:8081/v1/auth/revocations")
        );
        assert_eq!(
            feed_url("https://auth.example").as_deref(),
            Some("https://auth.example/v1/auth/revocations")
        );
        assert_eq!(feed_url("nonsense"), None);
    }
}
