//! Delivery of audit records to the audit service, decoupled from the requests that cause
//! them.
//!
//! Records go into a bounded in-memory queue (`authz.audit.queue_capacity`) drained by one
//! background task, in order. A failed delivery (audit unreachable, timing out, answering an
//! error other than "this record is invalid") is retried with exponential backoff
//! (`retry_initial_backoff` doubling up to `retry_max_backoff`) until it succeeds; the queue
//! meanwhile fills. When it is full the NEWEST record is dropped: counted in
//! `authz_audit_dropped_total{service,reason="queue_full"}` and written to the log at error
//! level with its content, so it is never lost silently. A record the audit service refuses
//! as invalid is dropped the same way (`reason="rejected"`). On shutdown the queue gets a
//! short grace period to drain; what is left is logged the same way (`reason="shutdown"`).
//!
//! Authorization never waits for audit: decisions are answered from authz's own data whether
//! or not audit is reachable.

use plt_contracts::{
    ErrorCode, RequestContext,
    audit::{AuditServiceClient, NewAuditEntry},
};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::sync::{Notify, mpsc};

pub const DROPPED_METRIC: &str = "authz_audit_dropped_total";

#[derive(Debug, Clone)]
pub struct AuditQueueConfig {
    pub capacity: usize,
    pub timeout: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

#[derive(Default)]
struct State {
    /// Records accepted and not yet delivered or dropped (queued + in flight).
    pending: AtomicUsize,
    delivered: AtomicU64,
    dropped: AtomicU64,
    /// Failed delivery attempts.
    failures: AtomicU64,
    changed: Notify,
    stop: Notify,
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct AuditQueue {
    tx: mpsc::Sender<NewAuditEntry>,
    state: Arc<State>,
    service: &'static str,
    task: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

fn permanent(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::InvalidArgument | ErrorCode::PayloadTooLarge
    )
}

fn drop_record(state: &State, service: &'static str, reason: &'static str, entry: &NewAuditEntry) {
    state.dropped.fetch_add(1, Ordering::Relaxed);
    metrics::counter!(DROPPED_METRIC, "service" => service, "reason" => reason).increment(1);
    tracing::error!(
        event = "authz.audit.dropped",
        reason,
        record = %serde_json::to_string(entry).unwrap_or_default(),
        "audit record not delivered"
    );
}

impl AuditQueue {
    /// Starts the delivery task (on the current tokio runtime).
    pub fn start(
        client: Arc<dyn AuditServiceClient>,
        cfg: AuditQueueConfig,
        service: &'static str,
    ) -> Self {
        let (tx, rx) = mpsc::channel(cfg.capacity.max(1));
        let state = Arc::new(State::default());
        let task = tokio::spawn(deliver(client, cfg, rx, state.clone(), service));
        Self {
            tx,
            state,
            service,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Queues a record; never waits. When the queue is full the record is dropped, counted
    /// and logged.
    pub fn record(&self, entry: NewAuditEntry) {
        self.state.pending.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = self.tx.try_send(entry) {
            self.state.pending.fetch_sub(1, Ordering::AcqRel);
            let (reason, entry) = match e {
                mpsc::error::TrySendError::Full(entry) => ("queue_full", entry),
                mpsc::error::TrySendError::Closed(entry) => ("shutdown", entry),
            };
            drop_record(&self.state, self.service, reason, &entry);
            self.state.changed.notify_waiters();
        }
    }

    /// Records queued or in flight.
    pub fn pending(&self) -> usize {
        self.state.pending.load(Ordering::Acquire)
    }

    pub fn delivered(&self) -> u64 {
        self.state.delivered.load(Ordering::Relaxed)
    }

    /// Records dropped by this queue (full, rejected or left at shutdown).
    pub fn dropped(&self) -> u64 {
        self.state.dropped.load(Ordering::Relaxed)
    }

    pub fn failed_attempts(&self) -> u64 {
        self.state.failures.load(Ordering::Relaxed)
    }

    /// Waits until every accepted record is delivered (or dropped), at most `within`.
    /// `true` when nothing is pending.
    pub async fn flush(&self, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.state.changed.notified();
            if self.pending() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.pending() == 0;
            }
        }
    }

    /// Flushes for at most `grace`, then stops the task; records still pending are logged
    /// and counted as dropped (`reason="shutdown"`).
    pub async fn shutdown(&self, grace: Duration) {
        let drained = self.flush(grace).await;
        if !drained {
            tracing::error!(
                pending = self.pending(),
                "audit unreachable at shutdown; logging the undelivered records"
            );
        }
        self.state.stop.notify_one();
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn deliver(
    client: Arc<dyn AuditServiceClient>,
    cfg: AuditQueueConfig,
    mut rx: mpsc::Receiver<NewAuditEntry>,
    state: Arc<State>,
    service: &'static str,
) {
    let ctx = RequestContext::new();
    let mut stopping = false;
    'records: while !stopping {
        let entry = tokio::select! {
            biased;
            _ = state.stop.notified() => break 'records,
            e = rx.recv() => match e {
                Some(e) => e,
                None => break 'records,
            },
        };
        let mut backoff = cfg.initial_backoff;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let result = tokio::time::timeout(cfg.timeout, client.record(&ctx, entry.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(plt_contracts::Error::new(
                        ErrorCode::DeadlineExceeded,
                        "audit did not answer in time",
                    ))
                });
            match result {
                Ok(_) => {
                    state.delivered.fetch_add(1, Ordering::Relaxed);
                    if attempt > 1 {
                        tracing::info!(attempts = attempt, "audit record delivered after retries");
                    }
                    break;
                }
                Err(e) if permanent(e.code) => {
                    drop_record(&state, service, "rejected", &entry);
                    tracing::error!(error = %e, "audit refused the record");
                    break;
                }
                Err(e) => {
                    state.failures.fetch_add(1, Ordering::Relaxed);
                    if attempt == 1 {
                        tracing::warn!(error = %e, "audit delivery failed; retrying with backoff");
                    } else {
                        tracing::debug!(error = %e, attempt, "audit delivery failed again");
                    }
                    tokio::select! {
                        biased;
                        _ = state.stop.notified() => {
                            drop_record(&state, service, "shutdown", &entry);
                            state.pending.fetch_sub(1, Ordering::AcqRel);
                            stopping = true;
                            break;
                        }
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(cfg.max_backoff);
                }
            }
        }
        if !stopping {
            state.pending.fetch_sub(1, Ordering::AcqRel);
        }
        state.changed.notify_waiters();
    }
    // Stopped: whatever is still queued is logged, never silently lost.
    rx.close();
    while let Ok(entry) = rx.try_recv() {
        drop_record(&state, service, "shutdown", &entry);
        state.pending.fetch_sub(1, Ordering::AcqRel);
    }
    state.changed.notify_waiters();
}
