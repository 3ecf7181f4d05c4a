//! Tamper evidence. The table refuses UPDATE, DELETE and TRUNCATE; a superuser who switches
//! triggers off (`SET session_replication_role = replica`) can still edit rows, and then
//! Verify names the first broken sequence: the edited entry, the entry after a deleted one,
//! the first of two swapped ones. On SQLite the equivalent attacker drops the triggers.

mod common;

use audit_service::verify_chain;
use common::{Backend, Running, ctx, entry, start};
use plt_contracts::audit::{AuditServiceClient, VerifyReport, http::AuditHttpClient};
use sqlx::{Connection, Executor, PgConnection};

const ENTRIES: usize = 10;

/// A running service on PostgreSQL with entries 1..=10, or `None` without PostgreSQL.
async fn log_of_ten(name: &str) -> Option<Running> {
    let Some(svc) = start(Backend::Postgres).await else {
        common::skipped(name);
        return None;
    };
    for i in 0..ENTRIES {
        svc.app_core
            .record(&ctx(), entry("tamper-test", i))
            .await
            .unwrap();
    }
    let report = svc.app_core.verify(&ctx()).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, ENTRIES as u64);
    Some(svc)
}

/// A second connection, as a superuser with triggers disabled, in the service's schema.
async fn tamperer(schema: &str) -> PgConnection {
    let url = plt_db::testing::postgres_url().unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "SET search_path TO \"{schema}\""
    )))
    .await
    .unwrap();
    conn.execute("SET session_replication_role = replica")
        .await
        .unwrap();
    conn
}

async fn tamper(svc: &Running, statements: &[&str]) {
    let mut conn = tamperer(svc.schema().unwrap_or_default()).await;
    for sql in statements {
        let done = conn
            .execute(sqlx::AssertSqlSafe(sql.to_string()))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(done.rows_affected(), 1, "{sql}");
    }
    conn.close().await.unwrap();
}

/// Verify through the core, over HTTP, and offline (the CLI's walk) all agree on `want`.
/// `checked` is the number of entries intact before the broken one.
async fn assert_broken_at(
    svc: &Running,
    want: u64,
    checked: u64,
    reason_contains: &str,
) -> VerifyReport {
    let report = svc.app_core.verify(&ctx()).await.unwrap();
    assert!(!report.ok, "tampering not detected: {report:?}");
    assert_eq!(report.first_broken_sequence, Some(want), "{report:?}");
    assert_eq!(report.checked, checked, "{report:?}");
    assert!(
        report.reason.contains(reason_contains),
        "reason {:?} does not mention {reason_contains:?}",
        report.reason
    );
    let http = AuditHttpClient::new(plt_kernel::tls::http_client(), &svc.url());
    assert_eq!(http.verify(&ctx()).await.unwrap(), report);
    assert_eq!(verify_chain(svc.db()).await.unwrap(), report);
    report
}

#[tokio::test]
async fn plain_update_delete_and_truncate_fail() {
    let Some(svc) = log_of_ten("plain_update_delete_and_truncate_fail").await else {
        return;
    };
    // Another ordinary connection (not the service's pool), without the replica setting.
    let url = plt_db::testing::postgres_url().unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    conn.execute(sqlx::AssertSqlSafe(format!(
        "SET search_path TO \"{}\"",
        svc.schema().unwrap_or_default()
    )))
    .await
    .unwrap();
    for sql in [
        "UPDATE audit_log SET actor = 'mallory' WHERE sequence = 4",
        "DELETE FROM audit_log WHERE sequence = 5",
        "TRUNCATE audit_log",
    ] {
        let err = conn
            .execute(sql)
            .await
            .expect_err(&format!("{sql} was allowed"));
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    conn.close().await.unwrap();
    let report = svc.app_core.verify(&ctx()).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, ENTRIES as u64);
    svc.stop().await;
}

#[tokio::test]
async fn changed_field_is_named() {
    let Some(svc) = log_of_ten("changed_field_is_named").await else {
        return;
    };
    tamper(
        &svc,
        &["UPDATE audit_log SET actor = 'mallory' WHERE sequence = 4"],
    )
    .await;
    assert_broken_at(&svc, 4, 3, "hash does not match").await;
    svc.stop().await;
}

#[tokio::test]
async fn changed_metadata_and_time_are_named() {
    let Some(svc) = log_of_ten("changed_metadata_and_time_are_named").await else {
        return;
    };
    tamper(
        &svc,
        &[
            "UPDATE audit_log SET recorded_at = recorded_at - interval '1 microsecond' WHERE sequence = 9",
            r#"UPDATE audit_log SET metadata = '{"i":7,"why":"nothing to see"}' WHERE sequence = 8"#,
        ],
    )
    .await;
    assert_broken_at(&svc, 8, 7, "hash does not match").await;
    svc.stop().await;
}

#[tokio::test]
async fn rewritten_row_with_recomputed_hash_breaks_the_next_link() {
    let Some(svc) = log_of_ten("rewritten_row_with_recomputed_hash_breaks_the_next_link").await
    else {
        return;
    };
    // The attacker edits entry 6 and gives it a hash that fits its new contents: entry 6
    // then checks out, but entry 7 no longer links to it.
    let mut rows = audit_service::store::for_db(svc.db())
        .chain(5, 1)
        .await
        .unwrap();
    let mut six = rows.remove(0);
    six.actor = "mallory".into();
    let forged = audit_service::chain::entry_hash(
        &six.prev_hash,
        &audit_service::chain::canonical_entry(&six),
    );
    tamper(
        &svc,
        &[&format!(
            "UPDATE audit_log SET actor = 'mallory', hash = '{forged}' WHERE sequence = 6"
        )],
    )
    .await;
    assert_broken_at(&svc, 7, 6, "does not link to entry 6").await;
    svc.stop().await;
}

#[tokio::test]
async fn deleted_row_is_named_by_the_sequence_after_the_gap() {
    let Some(svc) = log_of_ten("deleted_row_is_named_by_the_sequence_after_the_gap").await else {
        return;
    };
    tamper(&svc, &["DELETE FROM audit_log WHERE sequence = 5"]).await;
    assert_broken_at(&svc, 6, 4, "sequence 5 is missing").await;
    svc.stop().await;
}

#[tokio::test]
async fn swapped_rows_are_named_by_the_first_of_them() {
    let Some(svc) = log_of_ten("swapped_rows_are_named_by_the_first_of_them").await else {
        return;
    };
    // The primary key is checked row by row, so the swap goes through a free number.
    tamper(
        &svc,
        &[
            "UPDATE audit_log SET sequence = 1000000 WHERE sequence = 3",
            "UPDATE audit_log SET sequence = 3 WHERE sequence = 7",
            "UPDATE audit_log SET sequence = 7 WHERE sequence = 1000000",
        ],
    )
    .await;
    assert_broken_at(&svc, 3, 2, "does not link to entry 2").await;
    svc.stop().await;
}

#[tokio::test]
async fn deleted_tail_is_named_while_the_writer_remembers_it() {
    let Some(svc) = log_of_ten("deleted_tail_is_named_while_the_writer_remembers_it").await else {
        return;
    };
    tamper(&svc, &["DELETE FROM audit_log WHERE sequence = 10"]).await;
    let report = svc.app_core.verify(&ctx()).await.unwrap();
    assert!(!report.ok, "{report:?}");
    assert_eq!(report.first_broken_sequence, Some(10), "{report:?}");
    assert!(report.reason.contains("missing"), "{report:?}");
    // The offline walk has no memory of the tail: a chain cut at its end still links. (An
    // external anchor of the head hash would catch it; see the report.)
    assert!(verify_chain(svc.db()).await.unwrap().ok);
    svc.stop().await;
}

#[tokio::test]
async fn sqlite_refuses_changes_and_verify_catches_them_once_triggers_are_dropped() {
    let svc = start(Backend::Sqlite).await.unwrap();
    for i in 0..ENTRIES {
        svc.app_core
            .record(&ctx(), entry("tamper-test", i))
            .await
            .unwrap();
    }
    let plt_db::Db::Sqlite(pool) = svc.db() else {
        unreachable!()
    };
    for sql in [
        "UPDATE audit_log SET actor = 'mallory' WHERE sequence = 4",
        "DELETE FROM audit_log WHERE sequence = 5",
    ] {
        let err = sqlx::query(sql)
            .execute(pool)
            .await
            .expect_err(&format!("{sql} was allowed"));
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert!(svc.app_core.verify(&ctx()).await.unwrap().ok);
    for sql in [
        "DROP TRIGGER audit_log_no_update",
        "UPDATE audit_log SET resource = 'elsewhere' WHERE sequence = 4",
    ] {
        sqlx::query(sql).execute(pool).await.unwrap();
    }
    assert_broken_at(&svc, 4, 3, "hash does not match").await;
    sqlx::query("DROP TRIGGER audit_log_no_delete")
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM audit_log WHERE sequence = 2")
        .execute(pool)
        .await
        .unwrap();
    assert_broken_at(&svc, 3, 1, "sequence 2 is missing").await;
    svc.stop().await;
}
