//! PostgreSQL with `sslmode` in `database.url` (sqlx over rustls with ring):
//!
//! - against `PLT_TEST_POSTGRES_URL`: `disable` connects in plaintext; `require` connects
//!   over TLS when the server has `ssl = on` (Debian's default, with its snakeoil
//!   certificate) and otherwise fails with a clear TLS error; `prefer` connects either way
//!   (the system's roots may trust a snakeoil certificate, so nothing is asserted of
//!   `verify-*` here);
//! - against `PLT_TEST_POSTGRES_TLS_URL` (a server whose certificate `PLT_TEST_POSTGRES_TLS_CA`
//!   signed, for the URL's host): `verify-full` with `sslrootcert` connects over TLS, and
//!   with another CA fails. That server is started by `.ci/run` (see README, *TLS*).

use plt_db::Db;
use plt_kernel::{
    Secret,
    config::{DatabaseConfig, DatabaseDriver},
    testing::TestCa,
};
use std::time::Duration;

fn config(url: String, dir: &std::path::Path) -> DatabaseConfig {
    DatabaseConfig {
        driver: DatabaseDriver::Postgres,
        url: Secret::new(url),
        data_dir: dir.to_owned(),
        max_connections: 2,
        min_connections: 0,
        acquire_timeout: Duration::from_secs(5),
        probe_interval: Duration::from_millis(250),
        probe_timeout: Duration::from_millis(500),
    }
}

fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

async fn connect(url: String, dir: &std::path::Path) -> Result<Db, String> {
    let schema = format!("tls_t{}", uuid::Uuid::new_v4().simple());
    let db = Db::connect(&config(url, dir), &schema)
        .await
        .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
    let Db::Postgres(pool) = &db else {
        unreachable!()
    };
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(pool)
    .await;
    Ok(db)
}

/// Whether this session is encrypted, as the server sees it.
async fn encrypted(db: &Db) -> bool {
    let Db::Postgres(pool) = db else {
        unreachable!()
    };
    sqlx::query_scalar::<_, bool>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn sslmode_disable_and_require_against_the_test_server() {
    let Some(url) = std::env::var("PLT_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("SKIPPED sslmode tests: PLT_TEST_POSTGRES_URL is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();

    let plain = connect(with_params(&url, "sslmode=disable"), dir.path())
        .await
        .expect("sslmode=disable connects");
    assert!(!encrypted(&plain).await, "sslmode=disable is plaintext");
    let Db::Postgres(pool) = &plain else {
        unreachable!()
    };
    let server_ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(pool)
        .await
        .unwrap();
    plain.close().await;

    let required = connect(with_params(&url, "sslmode=require"), dir.path()).await;
    if server_ssl == "on" {
        let db = required.expect("sslmode=require connects to a server with ssl on");
        assert!(encrypted(&db).await, "sslmode=require is encrypted");
        db.close().await;
    } else {
        let e = required.expect_err("sslmode=require fails against a server without TLS");
        assert!(e.contains("TLS"), "a clear TLS error: {e}");
    }

    // prefer (sqlx's default) connects either way.
    let preferred = connect(with_params(&url, "sslmode=prefer"), dir.path())
        .await
        .expect("sslmode=prefer connects");
    assert_eq!(encrypted(&preferred).await, server_ssl == "on");
    preferred.close().await;
}

#[tokio::test]
async fn sslmode_verify_full_against_a_server_of_a_known_ca() {
    let (Some(url), Some(ca_path)) = (
        std::env::var("PLT_TEST_POSTGRES_TLS_URL")
            .ok()
            .filter(|u| !u.is_empty()),
        std::env::var("PLT_TEST_POSTGRES_TLS_CA")
            .ok()
            .filter(|u| !u.is_empty()),
    ) else {
        eprintln!(
            "SKIPPED sslmode=verify-full test: PLT_TEST_POSTGRES_TLS_URL and PLT_TEST_POSTGRES_TLS_CA are not set"
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = connect(
        with_params(&url, &format!("sslmode=verify-full&sslrootcert={ca_path}")),
        dir.path(),
    )
    .await
    .expect("verify-full with the server's CA connects");
    assert!(encrypted(&db).await);
    db.close().await;

    let other = TestCa::new(dir.path(), "other");
    let e = connect(
        with_params(
            &url,
            &format!(
                "sslmode=verify-full&sslrootcert={}",
                other.ca_file().display()
            ),
        ),
        dir.path(),
    )
    .await
    .expect_err("verify-full with another CA fails");
    assert!(e.contains("TLS") || e.contains("certificate"), "{e}");
}
