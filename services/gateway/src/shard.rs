//! A bounded concurrent map for the gateway's per-request lookups (rate-limit cells,
//! verified tokens): shards of read-write-locked hash maps, so that a hit costs one hash
//! and an uncontended read lock, with none of a general-purpose cache's per-access
//! bookkeeping (access logs, recency lists, housekeeping run on the request path).
//!
//! Bounded by `capacity`: when a shard is full, an insert first drops the entries the
//! caller's `stale` test says are no longer needed (expired tokens; rate-limit cells whose
//! bucket is full again, which is exactly as if they were absent), and if the shard is
//! still full, one arbitrary entry.
//!
//! Hashing is foldhash, seeded per map: fast for the short keys used here (addresses, user
//! ids, token digests), which an attacker cannot aim at a chosen hash without the seed.

use foldhash::fast::RandomState;
use std::{
    borrow::Borrow,
    collections::HashMap,
    hash::{BuildHasher, Hash},
    sync::{RwLock, RwLockReadGuard, RwLockWriteGuard},
};

const SHARDS: usize = 32;

pub struct ShardedMap<K, V> {
    shards: Box<[RwLock<HashMap<K, V, RandomState>>]>,
    per_shard: usize,
    hasher: RandomState,
}

impl<K: Hash + Eq + Clone, V: Clone> ShardedMap<K, V> {
    /// At most about `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            shards: (0..SHARDS)
                .map(|_| RwLock::new(HashMap::with_hasher(RandomState::default())))
                .collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::default(),
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> &RwLock<HashMap<K, V, RandomState>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        &self.shards[i]
    }

    fn read<Q: Hash + ?Sized>(&self, key: &Q) -> RwLockReadGuard<'_, HashMap<K, V, RandomState>> {
        self.shard(key).read().unwrap_or_else(|p| p.into_inner())
    }

    fn write<Q: Hash + ?Sized>(&self, key: &Q) -> RwLockWriteGuard<'_, HashMap<K, V, RandomState>> {
        self.shard(key).write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.read(key).get(key).cloned()
    }

    /// The value of `key`, inserting `make()` when there is none.
    pub fn get_or_insert_with<Q>(
        &self,
        key: &Q,
        make: impl FnOnce() -> (K, V),
        stale: impl Fn(&V) -> bool,
    ) -> V
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(v) = self.read(key).get(key) {
            return v.clone();
        }
        let mut shard = self.write(key);
        if let Some(v) = shard.get(key) {
            return v.clone();
        }
        let (k, v) = make();
        self.make_room(&mut shard, stale);
        shard.insert(k, v.clone());
        v
    }

    pub fn insert(&self, key: K, value: V, stale: impl Fn(&V) -> bool) {
        let mut shard = self.write(&key);
        if !shard.contains_key(&key) {
            self.make_room(&mut shard, stale);
        }
        shard.insert(key, value);
    }

    pub fn remove<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.write(key).remove(key);
    }

    fn make_room(&self, shard: &mut HashMap<K, V, RandomState>, stale: impl Fn(&V) -> bool) {
        if shard.len() < self.per_shard {
            return;
        }
        shard.retain(|_, v| !stale(v));
        if shard.len() >= self.per_shard {
            // Still full of live entries: give one up (the map is a bound, not a promise).
            if let Some(k) = shard.keys().next().cloned() {
                shard.remove(&k);
            }
        }
    }

    /// Entries now held (all shards).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_dropping_stale_entries_first() {
        let m: ShardedMap<String, u32> = ShardedMap::new(64);
        for i in 0..1000u32 {
            // Odd values are stale.
            m.insert(format!("k{i}"), i, |v| v % 2 == 1);
        }
        assert!(m.len() <= 64 + SHARDS, "{}", m.len());
        assert_eq!(m.get("k999"), Some(999), "the newest entry is kept");
        let v = m.get_or_insert_with("new", || ("new".into(), 7), |_| false);
        assert_eq!(v, 7);
        assert_eq!(
            m.get_or_insert_with("new", || ("new".into(), 8), |_| false),
            7
        );
        m.remove("new");
        assert_eq!(m.get("new"), None);
    }
}
