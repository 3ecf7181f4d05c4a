//! The embedded bus: Kafka's semantics inside one process, for `plt dev` and tests.
//!
//! Topics (created on first use) have [`PARTITIONS`] partitions; a message goes to the
//! partition of its key's hash (keyless ones round-robin). Consumer groups keep committed
//! offsets; the partitions of a group's topics are spread over its members and spread again
//! when one joins or leaves, each member resuming from the group's committed offset — so
//! what a member read but did not commit is delivered again, as with Kafka. Messages are
//! kept for the life of the bus.

use crate::{Bus, BusError, Consumer, Headers, Outgoing, Position, Received, Start};
use async_trait::async_trait;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};
use tokio::sync::watch;

/// Partitions of every topic of the embedded bus.
pub const PARTITIONS: i32 = 4;

struct Stored {
    key: Option<Vec<u8>>,
    headers: Headers,
    value: Vec<u8>,
}

#[derive(Default)]
struct Group {
    committed: HashMap<(String, i32), i64>,
    /// Members in join order, with the topics each reads.
    members: Vec<(u64, Vec<String>)>,
    /// Bumped whenever membership changes: members then take their assignment anew.
    generation: u64,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Vec<Vec<Stored>>>,
    groups: HashMap<String, Group>,
    next_member: u64,
    round_robin: usize,
}

impl State {
    fn topic(&mut self, name: &str) -> &mut Vec<Vec<Stored>> {
        self.topics
            .entry(name.to_owned())
            .or_insert_with(|| (0..PARTITIONS).map(|_| Vec::new()).collect())
    }
}

/// The embedded bus. Clones share one set of topics and groups.
#[derive(Clone)]
pub struct MemoryBus {
    state: Arc<Mutex<State>>,
    /// Bumped on every publish and membership change: waiting consumers look again.
    changed: Arc<watch::Sender<u64>>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a: a stable hash, so a key's partition does not change between runs.
fn partition_of(key: &[u8]) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % PARTITIONS as u32) as i32
}

impl MemoryBus {
    /// A bus of its own (tests).
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }

    /// The bus of this process: every service that `plt dev` runs in it shares it.
    pub fn shared() -> Self {
        static SHARED: OnceLock<MemoryBus> = OnceLock::new();
        SHARED.get_or_init(Self::new).clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind: still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Messages of `topic` so far, all partitions (tests, `plt dev` diagnostics).
    pub fn len(&self, topic: &str) -> usize {
        self.lock()
            .topics
            .get(topic)
            .map_or(0, |ps| ps.iter().map(Vec::len).sum())
    }

    pub fn is_empty(&self, topic: &str) -> bool {
        self.len(topic) == 0
    }

    /// Every message of `topic`, partition by partition (tests).
    pub fn read_all(&self, topic: &str) -> Vec<Received> {
        let st = self.lock();
        let mut out = Vec::new();
        if let Some(ps) = st.topics.get(topic) {
            for (p, log) in ps.iter().enumerate() {
                for (o, m) in log.iter().enumerate() {
                    out.push(received(topic, p as i32, o as i64, m));
                }
            }
        }
        out
    }
}

fn received(topic: &str, partition: i32, offset: i64, m: &Stored) -> Received {
    Received {
        topic: topic.to_owned(),
        partition,
        offset,
        key: m.key.clone(),
        headers: m.headers.clone(),
        value: m.value.clone(),
    }
}

#[async_trait]
impl Bus for MemoryBus {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn publish(&self, messages: &[Outgoing]) -> Vec<Result<(), BusError>> {
        let mut results = Vec::with_capacity(messages.len());
        {
            let mut st = self.lock();
            for m in messages {
                if !valid_topic(&m.topic) {
                    results.push(Err(BusError::Rejected(format!(
                        "invalid topic name {:?}",
                        m.topic
                    ))));
                    continue;
                }
                let p = match &m.key {
                    Some(k) => partition_of(k),
                    None => {
                        st.round_robin = st.round_robin.wrapping_add(1);
                        (st.round_robin % PARTITIONS as usize) as i32
                    }
                };
                st.topic(&m.topic)[p as usize].push(Stored {
                    key: m.key.clone(),
                    headers: m.headers.clone(),
                    value: m.value.clone(),
                });
                results.push(Ok(()));
            }
        }
        self.bump();
        results
    }

    async fn join(
        &self,
        group: &str,
        topics: &[String],
        start: Start,
    ) -> Result<Box<dyn Consumer>, BusError> {
        if let Some(t) = topics.iter().find(|t| !valid_topic(t)) {
            return Err(BusError::Config(format!("invalid topic name {t:?}")));
        }
        let id = {
            let mut st = self.lock();
            st.next_member += 1;
            let id = st.next_member;
            // A new group starting at the end commits the current ends first.
            let ends: Vec<((String, i32), i64)> = if start == Start::Latest {
                topics
                    .iter()
                    .flat_map(|t| {
                        let ps = st.topic(t);
                        ps.iter()
                            .enumerate()
                            .map(|(p, log)| ((t.clone(), p as i32), log.len() as i64))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            } else {
                for t in topics {
                    st.topic(t);
                }
                Vec::new()
            };
            let g = st.groups.entry(group.to_owned()).or_default();
            for (tp, end) in ends {
                g.committed.entry(tp).or_insert(end);
            }
            g.members.push((id, topics.to_vec()));
            g.generation += 1;
            id
        };
        self.bump();
        Ok(Box::new(MemoryConsumer {
            bus: self.clone(),
            group: group.to_owned(),
            id,
            generation: 0,
            positions: HashMap::new(),
            changed: self.changed.subscribe(),
        }))
    }
}

/// Kafka's rule: letters, digits, `.`, `_`, `-`; at most 249 characters.
fn valid_topic(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 249
        && t != "."
        && t != ".."
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

struct MemoryConsumer {
    bus: MemoryBus,
    group: String,
    id: u64,
    generation: u64,
    /// Next offset to read of each assigned partition.
    positions: HashMap<(String, i32), i64>,
    changed: watch::Receiver<u64>,
}

impl MemoryConsumer {
    /// Takes up to `max` messages; reassigns partitions first if the group changed.
    fn take(&mut self, max: usize) -> Vec<Received> {
        let mut st = self.bus.lock();
        let st = &mut *st;
        let Some(g) = st.groups.get(&self.group) else {
            return Vec::new();
        };
        if g.generation != self.generation {
            self.generation = g.generation;
            self.positions.clear();
            // Every member reading a topic gets the partitions p with p % n == its index
            // among that topic's readers.
            let Some((_, mine)) = g.members.iter().find(|(id, _)| *id == self.id) else {
                return Vec::new();
            };
            for t in mine {
                let readers: Vec<u64> = g
                    .members
                    .iter()
                    .filter(|(_, ts)| ts.contains(t))
                    .map(|(id, _)| *id)
                    .collect();
                let n = readers.len().max(1);
                let idx = readers.iter().position(|id| *id == self.id).unwrap_or(0);
                for p in 0..PARTITIONS {
                    if p as usize % n == idx {
                        let from = g.committed.get(&(t.clone(), p)).copied().unwrap_or(0);
                        self.positions.insert((t.clone(), p), from);
                    }
                }
            }
        }
        let mut out = Vec::new();
        let mut keys: Vec<(String, i32)> = self.positions.keys().cloned().collect();
        keys.sort();
        for tp in keys {
            let Some(log) = st.topics.get(&tp.0).map(|ps| &ps[tp.1 as usize]) else {
                continue;
            };
            let pos = self.positions.get_mut(&tp).expect("listed above");
            while out.len() < max && (*pos as usize) < log.len() {
                out.push(received(&tp.0, tp.1, *pos, &log[*pos as usize]));
                *pos += 1;
            }
            if out.len() >= max {
                break;
            }
        }
        out
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<Received>, BusError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            self.changed.borrow_and_update();
            let got = self.take(max.max(1));
            if !got.is_empty() {
                return Ok(got);
            }
            match tokio::time::timeout_at(deadline, self.changed.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Ok(Vec::new()),
            }
        }
    }

    async fn commit(&mut self, positions: &[Position]) -> Result<(), BusError> {
        let mut st = self.bus.lock();
        let Some(g) = st.groups.get_mut(&self.group) else {
            return Err(BusError::Unavailable("the group is gone".into()));
        };
        if g.generation != self.generation {
            // Kafka refuses commits of a member whose partitions were taken away; the new
            // owner reads from the last committed offset (redelivery, absorbed by inboxes).
            return Err(BusError::Unavailable(
                "the group rebalanced; the partitions' new owners read them again".into(),
            ));
        }
        for p in positions {
            g.committed.insert((p.topic.clone(), p.partition), p.next);
        }
        Ok(())
    }

    async fn lag(&mut self) -> Vec<(String, i32, i64)> {
        let st = self.bus.lock();
        let Some(g) = st.groups.get(&self.group) else {
            return Vec::new();
        };
        self.positions
            .keys()
            .map(|(t, p)| {
                let end = st
                    .topics
                    .get(t)
                    .map_or(0, |ps| ps[*p as usize].len() as i64);
                let committed = g.committed.get(&(t.clone(), *p)).copied().unwrap_or(0);
                (t.clone(), *p, (end - committed).max(0))
            })
            .collect()
    }

    async fn close(self: Box<Self>) {
        drop(self);
    }
}

impl Drop for MemoryConsumer {
    /// Leaving the group (also when the consumer's task is killed): its partitions go to the
    /// other members, from the last committed offsets.
    fn drop(&mut self) {
        {
            let mut st = self.bus.lock();
            if let Some(g) = st.groups.get_mut(&self.group) {
                g.members.retain(|(id, _)| *id != self.id);
                g.generation += 1;
            }
        }
        self.bus.bump();
    }
}
