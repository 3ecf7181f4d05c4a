//! The in-memory registry: one process (development, tests). Instances heartbeat; one that
//! stops (its registration dropped without deregistering) disappears after its TTL. An
//! instance whose readiness fails ([`crate::HealthSpec::ready`]) is not discovered until it
//! is ready again.

use crate::{
    HealthSpec, Instance, Registration, Result, ServiceRegistry, Watch, check_instance, sorted,
};
use async_trait::async_trait;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio::sync::watch;

struct Entry {
    instance: Instance,
    ttl: Duration,
    last_beat: Instant,
    ready: bool,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    watchers: HashMap<String, watch::Sender<Vec<Instance>>>,
}

#[derive(Clone, Default)]
pub struct MemoryRegistry {
    state: Arc<Mutex<State>>,
}

impl MemoryRegistry {
    pub fn new() -> Self {
        let r = Self::default();
        // Expire silent instances.
        let weak = Arc::downgrade(&r.state);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { break };
                let reg = MemoryRegistry { state };
                reg.expire();
            }
        });
        r
    }

    fn healthy(state: &State, service: &str) -> Vec<Instance> {
        let now = Instant::now();
        sorted(
            state
                .entries
                .values()
                .filter(|e| {
                    e.instance.service == service
                        && e.ready
                        && now.duration_since(e.last_beat) <= e.ttl
                })
                .map(|e| e.instance.clone())
                .collect(),
        )
    }

    fn notify(state: &State, service: &str) {
        if let Some(tx) = state.watchers.get(service) {
            let now = Self::healthy(state, service);
            tx.send_if_modified(|cur| {
                if *cur != now {
                    *cur = now;
                    true
                } else {
                    false
                }
            });
        }
    }

    fn expire(&self) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let dead: Vec<(String, String)> = s
            .entries
            .iter()
            .filter(|(_, e)| now.duration_since(e.last_beat) > e.ttl)
            .map(|(id, e)| (id.clone(), e.instance.service.clone()))
            .collect();
        for (id, service) in dead {
            s.entries.remove(&id);
            Self::notify(&s, &service);
        }
    }
}

#[async_trait]
impl ServiceRegistry for MemoryRegistry {
    async fn register(&self, instance: Instance, health: HealthSpec) -> Result<Registration> {
        check_instance(&instance)?;
        let id = instance.id.clone();
        let service = instance.service.clone();
        {
            let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
            s.entries.insert(
                id.clone(),
                Entry {
                    instance,
                    ttl: health.ttl,
                    last_beat: Instant::now(),
                    ready: health.is_ready(),
                },
            );
            Self::notify(&s, &service);
        }
        let state = self.state.clone();
        let beat_id = id.clone();
        let heartbeat = tokio::spawn(async move {
            let mut tick = tokio::time::interval(health.ttl / 3);
            let mut ready = health.ready.clone();
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    () = HealthSpec::ready_changed(&mut ready) => {}
                }
                let now_ready = health.is_ready();
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                let Some(e) = s.entries.get_mut(&beat_id) else {
                    break;
                };
                e.last_beat = Instant::now();
                if e.ready != now_ready {
                    e.ready = now_ready;
                    let service = e.instance.service.clone();
                    Self::notify(&s, &service);
                }
            }
        });
        let state = self.state.clone();
        let dereg_id = id.clone();
        Ok(Registration::new(id, Some(heartbeat), move || {
            Box::pin(async move {
                let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(e) = s.entries.remove(&dereg_id) {
                    Self::notify(&s, &e.instance.service);
                }
                Ok(())
            })
        }))
    }

    async fn discover(&self, service: &str) -> Result<Vec<Instance>> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Self::healthy(&s, service))
    }

    async fn watch(&self, service: &str) -> Result<Watch> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Self::healthy(&s, service);
        let tx = s
            .watchers
            .entry(service.to_owned())
            .or_insert_with(|| watch::channel(now).0);
        Ok(tx.subscribe())
    }
}
