//! The single writer and its group commit, over a real (SQLite) store wrapped to observe
//! or hold back each append: concurrent entries share transactions up to `max_batch`,
//! `append` answers only after the commit, a failed batch fails its callers without forking
//! the chain, a second writer on the same database is resealed instead of forking, and
//! shutdown commits what is queued.

mod common;

use async_trait::async_trait;
use audit_service::{
    chain,
    store::{AuditStore, ChainHead, Filter, StoreError, StoredEntry, for_db},
    writer::{Draft, Writer, WriterHandle},
};
use plt_contracts::{ErrorCode, audit::Outcome};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};
use tokio::sync::Semaphore;

/// Wraps a store: records batch sizes, can hold appends at a gate, can fail one append.
struct Observed {
    inner: Arc<dyn AuditStore>,
    batches: Mutex<Vec<usize>>,
    gate: Option<Arc<Semaphore>>,
    fail_next: AtomicBool,
}

impl Observed {
    fn new(inner: Arc<dyn AuditStore>, gate: Option<Arc<Semaphore>>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            batches: Mutex::new(Vec::new()),
            gate,
            fail_next: AtomicBool::new(false),
        })
    }

    fn batches(&self) -> Vec<usize> {
        self.batches.lock().unwrap().clone()
    }
}

#[async_trait]
impl AuditStore for Observed {
    async fn head(&self) -> Result<Option<ChainHead>, StoreError> {
        self.inner.head().await
    }

    async fn append(&self, entries: &[StoredEntry]) -> Result<(), StoreError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.unwrap().forget();
        }
        if self.fail_next.swap(false, Ordering::SeqCst) {
            return Err(StoreError::Db(sqlx::Error::Decode(
                "injected failure".into(),
            )));
        }
        self.batches.lock().unwrap().push(entries.len());
        self.inner.append(entries).await
    }

    async fn query(&self, filter: &Filter, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
        self.inner.query(filter, limit).await
    }

    async fn chain(&self, after: u64, limit: u32) -> Result<Vec<StoredEntry>, StoreError> {
        self.inner.chain(after, limit).await
    }

    async fn find_records(
        &self,
        ids: &[uuid::Uuid],
    ) -> Result<std::collections::HashMap<uuid::Uuid, u64>, StoreError> {
        self.inner.find_records(ids).await
    }
}

async fn sqlite_store() -> (Arc<dyn AuditStore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().to_string();
    let cfg = common::config(&[("PLT_DATABASE__DATA_DIR", data.as_str())]);
    let db = audit_service::connect_db(&cfg, "audit").await.unwrap();
    (for_db(&db), dir)
}

fn draft(i: usize) -> Draft {
    Draft {
        id: None,
        actor: format!("writer-test-{i}"),
        action: "test.append".into(),
        resource: String::new(),
        outcome: Outcome::Success,
        metadata: "{}".into(),
        source_ip: String::new(),
        user_agent: String::new(),
        trace_id: String::new(),
    }
}

async fn start(store: Arc<dyn AuditStore>, max_batch: usize) -> (Writer, WriterHandle) {
    Writer::start(store, max_batch, 4096, "audit-test")
        .await
        .unwrap()
}

async fn assert_intact(store: &dyn AuditStore, entries: u64) {
    let report = chain::verify(store, 0).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, entries);
}

#[tokio::test]
async fn concurrent_appends_share_transactions_up_to_max_batch() {
    let (inner, _dir) = sqlite_store().await;
    // Hold the first append so that the rest queue up behind it.
    let gate = Arc::new(Semaphore::new(0));
    let store = Observed::new(inner.clone(), Some(gate.clone()));
    let (writer, handle) = start(store.clone(), 16).await;
    let mut tasks = Vec::new();
    for i in 0..200 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move { h.append(draft(i)).await }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.add_permits(1000);
    let mut seqs: Vec<u64> = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().expect("append"));
    }
    seqs.sort();
    assert_eq!(seqs, (1..=200).collect::<Vec<_>>());
    let batches = store.batches();
    assert_eq!(batches.iter().sum::<usize>(), 200);
    assert!(
        batches.iter().all(|&b| b <= 16),
        "a batch exceeded max_batch: {batches:?}"
    );
    // 200 waiting entries in batches of at most 16: 13 transactions, plus the first one
    // that was taken before the others arrived.
    assert!(batches.len() <= 14, "entries were not grouped: {batches:?}");
    assert_intact(inner.as_ref(), 200).await;
    writer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_callers_fill_batches_but_never_beyond_max_batch() {
    // 64 callers each appending again as soon as they are answered (like services under
    // load): batches start partly full, and gathering the callers that were just answered
    // must fill them up to max_batch, never beyond.
    let (inner, _dir) = sqlite_store().await;
    let store = Observed::new(inner.clone(), None);
    let (writer, handle) = start(store.clone(), 48).await;
    let mut tasks = Vec::new();
    for caller in 0..64 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                h.append(draft(caller * 100 + i)).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let batches = store.batches();
    assert_eq!(batches.iter().sum::<usize>(), 64 * 20);
    let max = batches.iter().copied().max().unwrap();
    assert!(max <= 48, "a batch of {max} exceeded max_batch 48");
    let mean = (64 * 20) as f64 / batches.len() as f64;
    assert!(
        mean >= 16.0,
        "poor grouping: {mean:.1} entries per transaction"
    );
    assert_intact(inner.as_ref(), 64 * 20).await;
    writer.shutdown().await;
}

#[tokio::test]
async fn append_answers_only_after_the_commit() {
    let (inner, _dir) = sqlite_store().await;
    let gate = Arc::new(Semaphore::new(0));
    let store = Observed::new(inner.clone(), Some(gate.clone()));
    let (writer, handle) = start(store, 256).await;
    let task = tokio::spawn(async move { handle.append(draft(0)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!task.is_finished(), "append answered before its commit");
    assert!(inner.chain(0, 10).await.unwrap().is_empty());
    gate.add_permits(1);
    assert_eq!(task.await.unwrap().unwrap(), 1);
    assert_eq!(inner.chain(0, 10).await.unwrap().len(), 1);
    writer.shutdown().await;
}

#[tokio::test]
async fn a_failed_batch_fails_its_callers_and_the_chain_continues_without_a_gap() {
    let (inner, _dir) = sqlite_store().await;
    let store = Observed::new(inner.clone(), None);
    let (writer, handle) = start(store.clone(), 256).await;
    assert_eq!(handle.append(draft(0)).await.unwrap(), 1);
    store.fail_next.store(true, Ordering::SeqCst);
    let err = handle.append(draft(1)).await.expect_err("failed append");
    assert_eq!(err.code, ErrorCode::Internal);
    assert_eq!(err.message, "internal error", "the cause leaked: {err}");
    // The next entry takes the sequence the failed one did not get.
    assert_eq!(handle.append(draft(2)).await.unwrap(), 2);
    let mut tasks = Vec::new();
    for i in 3..30 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move { h.append(draft(i)).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_intact(inner.as_ref(), 29).await;
    assert_eq!(handle.committed(), 29);
    writer.shutdown().await;
}

#[tokio::test]
async fn a_second_writer_on_the_same_database_is_resealed_not_forked() {
    let (store, _dir) = sqlite_store().await;
    // Both load the same (empty) head.
    let (wa, a) = start(store.clone(), 256).await;
    let (wb, b) = start(store.clone(), 256).await;
    for i in 0..3 {
        assert_eq!(a.append(draft(i)).await.unwrap(), i as u64 + 1);
    }
    // b still believes the log is empty: its first try conflicts, it reloads and reseals.
    assert_eq!(b.append(draft(10)).await.unwrap(), 4);
    assert_eq!(a.append(draft(11)).await.unwrap(), 5);
    assert_intact(store.as_ref(), 5).await;
    wa.shutdown().await;
    wb.shutdown().await;
}

#[tokio::test]
async fn shutdown_commits_what_is_queued_then_refuses() {
    let (inner, _dir) = sqlite_store().await;
    let gate = Arc::new(Semaphore::new(0));
    let store = Observed::new(inner.clone(), Some(gate.clone()));
    let (writer, handle) = start(store, 4).await;
    let mut tasks = Vec::new();
    for i in 0..10 {
        let h = handle.clone();
        tasks.push(tokio::spawn(async move { h.append(draft(i)).await }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stopping = tokio::spawn(writer.shutdown());
    tokio::time::sleep(Duration::from_millis(50)).await;
    gate.add_permits(100);
    stopping.await.unwrap();
    for t in tasks {
        t.await
            .unwrap()
            .expect("queued entry committed at shutdown");
    }
    assert_intact(inner.as_ref(), 10).await;
    let err = handle.append(draft(99)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable);
}

/// At-least-once senders: an entry whose record id the log holds is answered with the
/// sequence it has, whether the repeat arrives in the same batch, in a later one, or after
/// the writer restarted; the chain gets one entry per id and stays intact.
#[tokio::test]
async fn repeated_record_ids_are_written_once() {
    let (inner, _dir) = sqlite_store().await;
    let store = Observed::new(inner, None);
    let (writer, handle) = start(store.clone(), 64).await;
    let ids: Vec<uuid::Uuid> = (0..10).map(|_| uuid::Uuid::now_v7()).collect();
    let with_id = |i: usize| Draft {
        id: Some(ids[i % ids.len()]),
        ..draft(i)
    };
    // Each id three times, concurrently (mostly one batch), plus entries without an id.
    let mut calls = Vec::new();
    for i in 0..30 {
        let h = handle.clone();
        let d = with_id(i);
        calls.push(tokio::spawn(
            async move { (d.id, h.append(d).await.unwrap()) },
        ));
    }
    for i in 0..5 {
        let h = handle.clone();
        calls.push(tokio::spawn(async move {
            (None, h.append(draft(100 + i)).await.unwrap())
        }));
    }
    let mut by_id: std::collections::HashMap<uuid::Uuid, std::collections::HashSet<u64>> =
        Default::default();
    for c in calls {
        let (id, seq) = c.await.unwrap();
        if let Some(id) = id {
            by_id.entry(id).or_default().insert(seq);
        }
    }
    assert_eq!(by_id.len(), 10);
    assert!(
        by_id.values().all(|s| s.len() == 1),
        "every repeat answered with one sequence: {by_id:?}"
    );
    assert_intact(store.as_ref(), 15).await;
    // A later batch, and a new writer (restart): still the same sequences, nothing written.
    let again = handle.append(with_id(3)).await.unwrap();
    assert_eq!(Some(&again), by_id[&ids[3]].iter().next());
    writer.shutdown().await;
    let (writer, handle) = start(store.clone(), 64).await;
    let again = handle.append(with_id(7)).await.unwrap();
    assert_eq!(Some(&again), by_id[&ids[7]].iter().next());
    assert_intact(store.as_ref(), 15).await;
    writer.shutdown().await;
}
