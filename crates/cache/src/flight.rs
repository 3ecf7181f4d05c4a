//! Single flight: at most one load per key at a time in this process. The first caller that
//! misses leads (runs the loader); later callers wait for its outcome. A write or an
//! invalidation of the key poisons the flight in progress — its outcome is still handed to
//! the callers that were waiting, but it is not written to the cache (and is deleted again
//! if the write raced the invalidation) — and detaches it, so the next caller starts a new
//! flight that sees the new state of the source.

use std::{
    any::Any,
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};
use tokio::sync::watch;

/// A flight's outcome, typed by the caller (`Result<Option<T>, E>`).
pub(crate) type Outcome = Arc<dyn Any + Send + Sync>;

struct Flight {
    id: u64,
    poisoned: AtomicBool,
    done: watch::Sender<Option<Outcome>>,
}

/// The flights in progress, by key.
#[derive(Default)]
pub(crate) struct Flights {
    map: Mutex<HashMap<String, Arc<Flight>>>,
    next_id: AtomicU64,
}

/// A caller's part in the flight of its key.
pub(crate) enum Join<'a> {
    /// Run the loader and [`Leader::finish`].
    Leader(Leader<'a>),
    /// Wait for the leader's outcome.
    Waiter(watch::Receiver<Option<Outcome>>),
}

impl Flights {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Flight>>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Leads a new flight for `key`, or waits for the one in progress.
    pub(crate) fn join(&self, key: &str) -> Join<'_> {
        let mut map = self.lock();
        if let Some(f) = map.get(key) {
            return Join::Waiter(f.done.subscribe());
        }
        let flight = Arc::new(Flight {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            poisoned: AtomicBool::new(false),
            done: watch::Sender::new(None),
        });
        map.insert(key.to_owned(), flight.clone());
        Join::Leader(Leader {
            flights: self,
            key: key.to_owned(),
            flight,
        })
    }

    /// Poisons and detaches the flight of `key`, if one is in progress.
    pub(crate) fn poison(&self, key: &str) {
        if let Some(f) = self.lock().remove(key) {
            f.poisoned.store(true, Ordering::SeqCst);
        }
    }

    /// Flights in progress.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The leader of a flight. Dropped without [`Leader::finish`] (its caller was cancelled or
/// the loader panicked), it detaches the flight and its waiters try again.
pub(crate) struct Leader<'a> {
    flights: &'a Flights,
    key: String,
    flight: Arc<Flight>,
}

impl Leader<'_> {
    /// Whether the key was written or invalidated since the flight started.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.flight.poisoned.load(Ordering::SeqCst)
    }

    /// Hands `outcome` to the waiters and ends the flight.
    pub(crate) fn finish(self, outcome: Outcome) {
        self.flight.done.send_replace(Some(outcome));
        // Drop detaches the flight.
    }
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        let mut map = self.flights.lock();
        if map.get(&self.key).is_some_and(|f| f.id == self.flight.id) {
            map.remove(&self.key);
        }
    }
}
