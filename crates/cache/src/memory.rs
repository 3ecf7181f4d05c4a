//! The memory backend: a bounded map under one lock. Expired entries are never returned and
//! are dropped when read or when they come first in expiry order; when the map is full, the
//! entry that expires first makes room (an expired one, if any — with similar TTLs, the
//! oldest).

use bytes::Bytes;
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

/// Expired entries dropped by one write, besides the one that makes room (keeps the map
/// clean without a sweeper task, at a bounded cost per write).
const PURGE_PER_WRITE: usize = 8;

struct Entry {
    value: Bytes,
    expires: Instant,
    seq: u64,
}

#[derive(Default)]
struct Map {
    entries: HashMap<Arc<str>, Entry>,
    /// Every entry by (expiry, write sequence): the first is the next to expire.
    by_expiry: BTreeMap<(Instant, u64), Arc<str>>,
    seq: u64,
}

impl Map {
    fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.by_expiry.remove(&(e.expires, e.seq));
        }
    }

    /// Drops the entry that expires first; `only_expired`: only if it has expired by `now`.
    fn pop_first(&mut self, now: Instant, only_expired: bool) -> bool {
        let Some(first) = self.by_expiry.first_entry() else {
            return false;
        };
        if only_expired && first.key().0 > now {
            return false;
        }
        let key = first.remove();
        self.entries.remove(&key);
        true
    }
}

/// A bounded in-memory store of bytes with expiry.
pub(crate) struct MemoryStore {
    map: Mutex<Map>,
    max_entries: usize,
}

impl MemoryStore {
    pub(crate) fn new(max_entries: usize) -> Self {
        Self {
            map: Mutex::new(Map::default()),
            max_entries: max_entries.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Map> {
        // The map stays consistent between statements; a panic elsewhere cannot break it.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, key: &str) -> Option<Bytes> {
        let now = Instant::now();
        let mut map = self.lock();
        let entry = map.entries.get(key)?;
        if entry.expires > now {
            return Some(entry.value.clone());
        }
        map.remove(key);
        None
    }

    pub(crate) fn set(&self, key: &str, value: Bytes, ttl: Duration) {
        let now = Instant::now();
        let expires = now.checked_add(ttl).unwrap_or(now + super::config::MAX_TTL);
        let mut map = self.lock();
        map.remove(key);
        for _ in 0..PURGE_PER_WRITE {
            if !map.pop_first(now, true) {
                break;
            }
        }
        while map.entries.len() >= self.max_entries && map.pop_first(now, false) {}
        map.seq += 1;
        let seq = map.seq;
        let key: Arc<str> = Arc::from(key);
        map.by_expiry.insert((expires, seq), key.clone());
        map.entries.insert(
            key,
            Entry {
                value,
                expires,
                seq,
            },
        );
    }

    pub(crate) fn delete(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Entries held (expired ones not yet dropped included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_map_drops_the_entry_that_expires_first() {
        let s = MemoryStore::new(3);
        let v = || Bytes::from_static(b"v");
        s.set("long", v(), Duration::from_secs(60));
        s.set("short", v(), Duration::from_secs(5));
        s.set("mid", v(), Duration::from_secs(30));
        s.set("new", v(), Duration::from_secs(60));
        assert_eq!(s.len(), 3);
        assert!(s.get("short").is_none());
        for k in ["long", "mid", "new"] {
            assert!(s.get(k).is_some(), "{k}");
        }
        // Overwriting a key does not count twice.
        s.set("new", v(), Duration::from_secs(1));
        assert_eq!(s.len(), 3);
        assert!(s.get("mid").is_some());
    }
}
