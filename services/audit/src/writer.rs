//! The chain's single writer, with group commit.
//!
//! `record` hands its validated entry to one writer task over a bounded channel and waits on
//! a oneshot. The writer owns the chain head (last sequence, hash and time, loaded from the
//! database at start). It takes every waiting entry, up to `audit.max_batch`, assigns
//! consecutive sequences, one time and the chained hashes, appends them in one transaction,
//! and only after the commit answers each caller with its sequence. One writer means
//! concurrent `record`s can never fork the chain; batching means one commit serves many
//! callers. If the append fails, every caller of the batch gets the error and the head is
//! reloaded from the database before the next batch (the database is the truth). If
//! another process appended first (a sequence is taken), the head is reloaded and the batch
//! resealed and retried.
//!
//! Record ids: before sealing, the writer looks up the batch's ids; an entry whose id the
//! log holds is answered with the sequence it has, and a repeat within the batch with the
//! sequence of its first occurrence — neither is appended. The unique index on the id
//! decides races with another writer (a conflict: looked up again, resealed).

use crate::{
    chain::{self, GENESIS_HASH},
    store::{AuditStore, ChainHead, StoreError, StoredEntry},
};
use chrono::{SubsecRound, Utc};
use plt_contracts::{Error, Result, audit::Outcome};
use std::{sync::Arc, time::Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// A validated entry waiting for its sequence, time and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Draft {
    /// The caller's record id: an id the log holds is not appended again.
    pub id: Option<uuid::Uuid>,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub outcome: Outcome,
    /// Canonical JSON text.
    pub metadata: String,
    pub source_ip: String,
    pub user_agent: String,
    pub trace_id: String,
}

struct Pending {
    draft: Draft,
    reply: oneshot::Sender<Result<u64>>,
}

/// What the writer does with one entry of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Appended.
    Write,
    /// Its record id is in the log already, at this sequence.
    Held(u64),
    /// Its record id repeats the entry at this index of the batch.
    Repeats(usize),
}

/// How many times a batch is resealed after another writer took its sequences.
const CONFLICT_RETRIES: u32 = 3;

/// Most scheduler yields spent gathering a batch (see `WriterTask::gather`).
const GATHER_YIELDS: usize = 8;

/// The sending side, held by the core. Cheap to clone.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Pending>,
    committed: watch::Receiver<u64>,
}

impl WriterHandle {
    /// Appends `draft`; returns its sequence once committed.
    pub async fn append(&self, draft: Draft) -> Result<u64> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Pending { draft, reply })
            .await
            .map_err(|_| Error::unavailable("the audit log is shutting down"))?;
        answer
            .await
            .map_err(|_| Error::unavailable("the audit log is shutting down"))?
    }

    /// The newest sequence this writer has committed (or found at start).
    pub fn committed(&self) -> u64 {
        *self.committed.borrow()
    }
}

/// The writer task, owned by the app: stop it to drain and end it.
pub struct Writer {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Loads the chain head and starts the writer task.
    pub async fn start(
        store: Arc<dyn AuditStore>,
        max_batch: usize,
        queue_capacity: usize,
        service: &'static str,
    ) -> std::result::Result<(Writer, WriterHandle), StoreError> {
        let head = store.head().await?;
        let (committed_tx, committed) =
            watch::channel(head.as_ref().map(|h| h.sequence).unwrap_or(0));
        let (tx, rx) = mpsc::channel(queue_capacity);
        let (stop, stop_rx) = oneshot::channel();
        let task = WriterTask {
            store,
            head,
            stale: false,
            max_batch,
            committed: committed_tx,
            service,
        };
        let task = tokio::spawn(task.run(rx, stop_rx));
        Ok((Writer { stop, task }, WriterHandle { tx, committed }))
    }

    /// Refuses new entries, commits those already waiting, and ends the task.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "audit writer task failed");
        }
    }
}

struct WriterTask {
    store: Arc<dyn AuditStore>,
    head: Option<ChainHead>,
    /// The head must be reloaded before sealing (after a failed or conflicting append).
    stale: bool,
    max_batch: usize,
    committed: watch::Sender<u64>,
    service: &'static str,
}

impl WriterTask {
    async fn run(mut self, mut rx: mpsc::Receiver<Pending>, mut stop: oneshot::Receiver<()>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let mut stopping = false;
        loop {
            let n = tokio::select! {
                biased;
                n = rx.recv_many(&mut batch, self.max_batch) => n,
                _ = &mut stop, if !stopping => {
                    // Refuse new entries; those already queued are still committed below.
                    stopping = true;
                    rx.close();
                    continue;
                }
            };
            if n == 0 {
                break;
            }
            self.gather(&mut rx, &mut batch).await;
            self.commit(&mut batch).await;
        }
        tracing::debug!("audit writer stopped");
    }

    /// Group commit: the callers answered by the previous commit are usually about to send
    /// their next entry. Yielding to them while the queue keeps growing fills the batch
    /// instead of alternating between half-full ones. A lone caller costs one yield.
    async fn gather(&self, rx: &mut mpsc::Receiver<Pending>, batch: &mut Vec<Pending>) {
        for _ in 0..GATHER_YIELDS {
            if batch.len() >= self.max_batch {
                return;
            }
            tokio::task::yield_now().await;
            if rx.is_empty() {
                return;
            }
            let room = self.max_batch - batch.len();
            rx.recv_many(batch, room).await;
        }
    }

    /// Seals the drafts after the current head: consecutive sequences, one time (never
    /// before the head's), each hash chained to the one before.
    fn seal(&self, drafts: &[&Draft]) -> Vec<StoredEntry> {
        let now = Utc::now().trunc_subsecs(6);
        let (mut sequence, mut prev, time) = match &self.head {
            Some(h) => (h.sequence, h.hash.clone(), now.max(h.time)),
            None => (0, GENESIS_HASH.to_owned(), now),
        };
        let mut out = Vec::with_capacity(drafts.len());
        for d in drafts {
            sequence += 1;
            let mut e = StoredEntry {
                sequence,
                time,
                actor: d.actor.clone(),
                action: d.action.clone(),
                resource: d.resource.clone(),
                outcome: d.outcome.as_str().to_owned(),
                metadata: d.metadata.clone(),
                source_ip: d.source_ip.clone(),
                user_agent: d.user_agent.clone(),
                trace_id: d.trace_id.clone(),
                record_id: d.id,
                prev_hash: prev,
                hash: String::new(),
            };
            e.hash = chain::entry_hash(&e.prev_hash, &chain::canonical_entry(&e));
            prev = e.hash.clone();
            out.push(e);
        }
        out
    }

    /// What to do with each entry of `batch`: its id is already in the log (that
    /// sequence), it repeats an earlier entry of the batch (that index), or it is written.
    async fn plan(&self, batch: &[Pending]) -> std::result::Result<Vec<Slot>, StoreError> {
        let ids: Vec<uuid::Uuid> = batch.iter().filter_map(|p| p.draft.id).collect();
        let held = if ids.is_empty() {
            Default::default()
        } else {
            self.store.find_records(&ids).await?
        };
        let mut first: std::collections::HashMap<uuid::Uuid, usize> = Default::default();
        Ok(batch
            .iter()
            .enumerate()
            .map(|(i, p)| match p.draft.id {
                Some(id) if held.contains_key(&id) => Slot::Held(held[&id]),
                Some(id) => match first.get(&id) {
                    Some(j) => Slot::Repeats(*j),
                    None => {
                        first.insert(id, i);
                        Slot::Write
                    }
                },
                None => Slot::Write,
            })
            .collect())
    }

    async fn append(
        &mut self,
        batch: &[Pending],
    ) -> std::result::Result<(Vec<Slot>, Vec<StoredEntry>), StoreError> {
        let mut conflicts = 0;
        loop {
            if self.stale {
                self.head = self.store.head().await?;
                self.stale = false;
            }
            let plan = self.plan(batch).await?;
            let drafts: Vec<&Draft> = batch
                .iter()
                .zip(&plan)
                .filter(|(_, s)| matches!(s, Slot::Write))
                .map(|(p, _)| &p.draft)
                .collect();
            let sealed = self.seal(&drafts);
            match self.store.append(&sealed).await {
                Ok(()) => return Ok((plan, sealed)),
                Err(StoreError::Conflict) if conflicts < CONFLICT_RETRIES => {
                    conflicts += 1;
                    self.stale = true;
                    tracing::warn!(
                        "audit chain head or a record id moved (another writer on this database?); resealing"
                    );
                }
                Err(e) => {
                    // Whether it committed is unknown: the database decides the next head.
                    self.stale = true;
                    return Err(e);
                }
            }
        }
    }

    async fn commit(&mut self, batch: &mut Vec<Pending>) {
        let started = Instant::now();
        match self.append(batch).await {
            Ok((plan, sealed)) => {
                if let Some(last) = sealed.last() {
                    self.head = Some(ChainHead {
                        sequence: last.sequence,
                        hash: last.hash.clone(),
                        time: last.time,
                    });
                    self.committed.send_replace(last.sequence);
                }
                metrics::histogram!("audit_append_commit_seconds", "service" => self.service)
                    .record(started.elapsed().as_secs_f64());
                metrics::counter!("audit_append_batches_total", "service" => self.service)
                    .increment(1);
                metrics::counter!("audit_entries_appended_total", "service" => self.service)
                    .increment(sealed.len() as u64);
                let mut written = sealed.iter();
                let mut answers: Vec<u64> = Vec::with_capacity(batch.len());
                for slot in &plan {
                    let sequence = match slot {
                        Slot::Held(s) => *s,
                        Slot::Repeats(j) => answers[*j],
                        Slot::Write => written.next().map(|e| e.sequence).unwrap_or_default(),
                    };
                    answers.push(sequence);
                }
                let repeats = plan.iter().filter(|s| !matches!(s, Slot::Write)).count();
                if repeats > 0 {
                    metrics::counter!("audit_records_repeated_total", "service" => self.service)
                        .increment(repeats as u64);
                }
                for (p, sequence) in batch.drain(..).zip(answers) {
                    let _ = p.reply.send(Ok(sequence));
                }
            }
            Err(e) => {
                let err = match &e {
                    StoreError::Db(db) if plt_db::is_unavailable(db) => {
                        Error::dependency_unavailable("the database", "appending audit entries", db)
                    }
                    e => Error::internal("appending audit entries", e),
                };
                for p in batch.drain(..) {
                    let _ = p.reply.send(Err(err.clone()));
                }
            }
        }
    }
}
