//! The store suite: `AuditStore` semantics the contract suite cannot see from outside —
//! all-or-nothing appends, sequence uniqueness, the append-only triggers, time ordering of
//! stored times (also at whole seconds, which SQLite stores without a fraction), keyset
//! paging and the chain walk — against SQLite and, when `PLT_TEST_POSTGRES_URL` is set,
//! PostgreSQL (fresh schema).

mod common;

use audit_service::{
    chain::{GENESIS_HASH, canonical_entry, entry_hash},
    store::{AuditStore, ChainHead, Filter, StoreError, StoredEntry, for_db},
};
use chrono::{DateTime, Duration, TimeZone, Utc};
use plt_contracts::audit::Outcome;
use plt_db::Db;
use std::sync::Arc;

async fn open(
    backend: common::Backend,
) -> Option<(Arc<dyn AuditStore>, Db, String, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().to_string();
    let cfg = plt_kernel::testing::config(
        audit_service::SECTION,
        common::backend_vars(backend, &data)?,
    );
    let schema = plt_db::testing::unique_schema("auditstore");
    let db = audit_service::connect_db(&cfg, &schema).await.unwrap();
    Some((for_db(&db), db, schema, dir))
}

/// Sealed entries after `prev` (sequence, hash), with these times and actors.
fn seal(prev: (u64, &str), rows: &[(DateTime<Utc>, &str, Outcome)]) -> Vec<StoredEntry> {
    let (mut sequence, prev) = prev;
    let mut prev = prev.to_owned();
    let mut out = Vec::new();
    for (i, (time, actor, outcome)) in rows.iter().enumerate() {
        sequence += 1;
        let mut e = StoredEntry {
            record_id: None,
            sequence,
            time: *time,
            actor: (*actor).to_owned(),
            action: if i.is_multiple_of(2) {
                "a.even".into()
            } else {
                "a.odd".into()
            },
            resource: format!("res/{}", i % 3),
            outcome: outcome.as_str().to_owned(),
            metadata: format!("{{\"i\":{i}}}"),
            source_ip: String::new(),
            user_agent: "ua".into(),
            trace_id: String::new(),
            prev_hash: prev.clone(),
            hash: String::new(),
        };
        e.hash = entry_hash(&prev, &canonical_entry(&e));
        prev = e.hash.clone();
        out.push(e);
    }
    out
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 12, 0, 0).unwrap()
}

async fn suite(backend: common::Backend) {
    let Some((store, db, schema, _dir)) = open(backend).await else {
        common::skipped("audit store suite on postgres");
        return;
    };
    let s = store.as_ref();
    empty_log(s).await;
    let first = append_round_trips_and_moves_the_head(s).await;
    append_is_all_or_nothing(s, &first).await;
    update_and_delete_are_refused(&db, &first).await;
    times_sort_in_time_order_and_filters_match(s).await;
    keyset_pages_visit_everything_once(s).await;
    chain_walks_in_sequence_order(s).await;
    db.close().await;
    if backend == common::Backend::Postgres {
        common::drop_schema(&schema).await;
    }
}

async fn empty_log(s: &dyn AuditStore) {
    assert_eq!(s.head().await.unwrap(), None);
    assert!(s.chain(0, 10).await.unwrap().is_empty());
    assert!(s.query(&Filter::default(), 10).await.unwrap().is_empty());
    s.append(&[]).await.expect("an empty append is a no-op");
}

async fn append_round_trips_and_moves_the_head(s: &dyn AuditStore) -> Vec<StoredEntry> {
    let rows = seal(
        (0, GENESIS_HASH),
        &[
            (t0(), "alice", Outcome::Success),
            (t0(), "bob", Outcome::Failure),
            (t0(), "alice", Outcome::Denied),
        ],
    );
    s.append(&rows).await.unwrap();
    assert_eq!(
        s.chain(0, 100).await.unwrap(),
        rows,
        "stored entries differ"
    );
    let last = rows.last().unwrap();
    assert_eq!(
        s.head().await.unwrap(),
        Some(ChainHead {
            sequence: 3,
            hash: last.hash.clone(),
            time: last.time
        })
    );
    rows
}

async fn append_is_all_or_nothing(s: &dyn AuditStore, existing: &[StoredEntry]) {
    // Sequences 4 and 5 are new, but 3 is taken: the whole batch is refused.
    let last = existing.last().unwrap();
    let mut batch = seal(
        (last.sequence, &last.hash),
        &[
            (t0(), "carol", Outcome::Success),
            (t0(), "carol", Outcome::Success),
        ],
    );
    let mut clash = batch[0].clone();
    clash.sequence = 3;
    batch.push(clash);
    assert!(matches!(s.append(&batch).await, Err(StoreError::Conflict)));
    assert_eq!(
        s.chain(0, 100).await.unwrap(),
        existing,
        "half a batch was written"
    );
    assert_eq!(s.head().await.unwrap().unwrap().sequence, 3);
}

/// Runs `sql` on the service's own pool.
async fn exec(db: &Db, sql: &str) -> Result<u64, sqlx::Error> {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match db {
        Db::Postgres(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
        Db::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|r| r.rows_affected()),
    }
}

async fn update_and_delete_are_refused(db: &Db, existing: &[StoredEntry]) {
    let mut statements = vec![
        "UPDATE audit_log SET actor = 'mallory' WHERE sequence = 2",
        "UPDATE audit_log SET sequence = 99 WHERE sequence = 3",
        "DELETE FROM audit_log WHERE sequence = 1",
        "DELETE FROM audit_log",
    ];
    if matches!(db, Db::Postgres(_)) {
        statements.push("TRUNCATE audit_log");
    }
    for sql in statements {
        let err = exec(db, sql)
            .await
            .expect_err(&format!("{sql} was allowed on the audit log"));
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    let store = for_db(db);
    assert_eq!(
        store.chain(0, 100).await.unwrap(),
        existing,
        "a refused statement changed rows"
    );
}

async fn times_sort_in_time_order_and_filters_match(s: &dyn AuditStore) {
    // A fresh actor; times in a scrambled insertion order, at a whole second, at
    // milliseconds and at microseconds (SQLite stores these as text of different lengths).
    let head = s.head().await.unwrap().unwrap();
    let base = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
    let times = [
        base + Duration::milliseconds(100),
        base,
        base + Duration::microseconds(100_001),
        base + Duration::seconds(1),
        base + Duration::microseconds(99_999),
        base + Duration::microseconds(100_001),
    ];
    let outcomes = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Success,
        Outcome::Denied,
        Outcome::Success,
        Outcome::Failure,
    ];
    let rows: Vec<_> = times
        .iter()
        .zip(outcomes)
        .map(|(t, o)| (*t, "timekeeper", o))
        .collect();
    let sealed = seal((head.sequence, &head.hash), &rows);
    s.append(&sealed).await.unwrap();
    let mine = Filter {
        actor: Some("timekeeper".into()),
        ..Default::default()
    };
    let got = s.query(&mine, 100).await.unwrap();
    let mut want = sealed.clone();
    want.sort_by_key(|e| std::cmp::Reverse((e.time, e.sequence)));
    assert_eq!(
        got.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        want.iter().map(|e| e.sequence).collect::<Vec<_>>(),
        "not newest first by (time, sequence)"
    );
    let count = |f: Filter| async move { s.query(&f, 100).await.unwrap().len() };
    assert_eq!(
        count(Filter {
            from: Some(base + Duration::milliseconds(100)),
            ..mine.clone()
        })
        .await,
        4,
        "from is inclusive"
    );
    assert_eq!(
        count(Filter {
            to: Some(base + Duration::milliseconds(100)),
            ..mine.clone()
        })
        .await,
        2,
        "to is exclusive"
    );
    assert_eq!(
        count(Filter {
            from: Some(base + Duration::microseconds(100_001)),
            to: Some(base + Duration::seconds(1)),
            ..mine.clone()
        })
        .await,
        2
    );
    assert_eq!(
        count(Filter {
            outcome: Some(Outcome::Success),
            ..mine.clone()
        })
        .await,
        3
    );
    assert_eq!(
        count(Filter {
            action: Some("a.odd".into()),
            resource: Some("res/1".into()),
            ..mine.clone()
        })
        .await,
        1
    );
    assert_eq!(
        count(Filter {
            actor: Some("nobody".into()),
            ..Default::default()
        })
        .await,
        0
    );
}

async fn keyset_pages_visit_everything_once(s: &dyn AuditStore) {
    let all = s.query(&Filter::default(), 1000).await.unwrap();
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .query(
                &Filter {
                    before,
                    ..Default::default()
                },
                2,
            )
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        before = Some((last.time, last.sequence));
        seen.extend(page.into_iter().map(|e| e.sequence));
        assert!(seen.len() <= all.len(), "keyset paging repeats entries");
    }
    assert_eq!(seen, all.iter().map(|e| e.sequence).collect::<Vec<_>>());
}

async fn chain_walks_in_sequence_order(s: &dyn AuditStore) {
    let head = s.head().await.unwrap().unwrap();
    let mut after = 0;
    let mut seqs = Vec::new();
    loop {
        let page = s.chain(after, 4).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.sequence;
        seqs.extend(page.iter().map(|e| e.sequence));
    }
    assert_eq!(seqs, (1..=head.sequence).collect::<Vec<_>>());
    let report = audit_service::chain::verify(s, head.sequence)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, head.sequence);
}

#[tokio::test]
async fn store_suite_on_sqlite() {
    suite(common::Backend::Sqlite).await;
}

#[tokio::test]
async fn store_suite_on_postgres() {
    suite(common::Backend::Postgres).await;
}
