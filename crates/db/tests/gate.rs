//! The database gate against a real PostgreSQL behind a fault proxy: while the database
//! refuses connections or silently drops packets, queries fail at once with an error
//! `is_unavailable` recognises (never after the pool's acquire timeout), readiness fails,
//! and everything works again by itself once the database is back.

use plt_db::{Db, is_unavailable};
use plt_kernel::{
    Secret,
    config::{DatabaseConfig, DatabaseDriver},
};
use plt_testkit::{FaultProxy, Mode};
use sqlx::{ConnectOptions as _, postgres::PgConnectOptions};
use std::{
    net::ToSocketAddrs,
    str::FromStr,
    time::{Duration, Instant},
};

const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

async fn eventually(what: &str, within: Duration, check: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !check() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `n` queries while the database is down: each fails as unavailable, and all of them
/// together take far less than one acquire timeout (none waits for a connection).
async fn fail_fast(db: &Db, n: usize) {
    let Db::Postgres(pool) = db else {
        unreachable!()
    };
    let started = Instant::now();
    for _ in 0..n {
        let e = sqlx::query("SELECT 1").execute(pool).await.unwrap_err();
        assert!(is_unavailable(&e), "{e}");
        let e = pool.begin().await.unwrap_err();
        assert!(is_unavailable(&e), "{e}");
    }
    assert!(
        started.elapsed() < ACQUIRE_TIMEOUT / 5,
        "{n} queries took {:?} while the database was known to be down",
        started.elapsed()
    );
    let check = db.health_check();
    let reason = check.check().await.unwrap_err();
    assert!(reason.contains("unreachable"), "{reason}");
}

#[tokio::test]
async fn refused_and_silent_databases_fail_fast_and_recover_by_themselves() {
    let Some(url) = std::env::var("PLT_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("SKIPPED database gate: PLT_TEST_POSTGRES_URL is not set");
        return;
    };
    let real = PgConnectOptions::from_str(&url).unwrap();
    let upstream = (real.get_host(), real.get_port())
        .to_socket_addrs()
        .unwrap()
        .next()
        .unwrap();
    let proxy = FaultProxy::start("postgres", upstream).await.unwrap();
    let proxied = real.clone().host("127.0.0.1").port(proxy.addr().port());
    let dir = tempfile::tempdir().unwrap();
    let cfg = DatabaseConfig {
        driver: DatabaseDriver::Postgres,
        url: Secret::new(proxied.to_url_lossy().to_string()),
        data_dir: dir.path().to_owned(),
        max_connections: 4,
        min_connections: 0,
        acquire_timeout: ACQUIRE_TIMEOUT,
        probe_interval: Duration::from_millis(100),
        probe_timeout: Duration::from_millis(500),
    };
    let schema = format!("gate_t{}", uuid::Uuid::new_v4().simple());
    let db = Db::connect(&cfg, &schema).await.unwrap();
    let Db::Postgres(pool) = &db else {
        unreachable!()
    };
    sqlx::query("CREATE TABLE t (id int PRIMARY KEY)")
        .execute(pool)
        .await
        .unwrap();
    let insert = |id: i32| {
        sqlx::query("INSERT INTO t VALUES ($1)")
            .bind(id)
            .execute(pool)
    };
    insert(1).await.unwrap();

    // Refused: connections reset, new ones refused. The gate opens at the first failure
    // (or probe), and from then on nothing waits.
    proxy.set(Mode::Refuse);
    eventually("refused database noticed", Duration::from_secs(2), || {
        db.gate().is_down()
    })
    .await;
    fail_fast(&db, 20).await;
    proxy.set(Mode::Pass);
    eventually("recovery after refusal", Duration::from_secs(3), || {
        !db.gate().is_down()
    })
    .await;
    insert(2).await.unwrap();
    db.health_check().check().await.unwrap();

    // Silent: packets dropped. A query already waiting is cancelled as soon as the probe
    // notices (probe_timeout), not after the acquire timeout or TCP's minutes.
    proxy.set(Mode::Silent);
    let started = Instant::now();
    let waiting = sqlx::query("SELECT 1").execute(pool).await.unwrap_err();
    assert!(is_unavailable(&waiting), "{waiting}");
    assert!(
        started.elapsed() < ACQUIRE_TIMEOUT / 2,
        "a query waited {:?} on a silent database",
        started.elapsed()
    );
    assert!(db.gate().is_down());
    fail_fast(&db, 20).await;
    proxy.set(Mode::Pass);
    eventually("recovery after silence", Duration::from_secs(5), || {
        !db.gate().is_down()
    })
    .await;
    insert(3).await.unwrap();

    // Every write that succeeded is there.
    let ids: Vec<i32> = sqlx::query_scalar("SELECT id FROM t ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(ids, [1, 2, 3]);
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA \"{schema}\" CASCADE"
    )))
    .execute(pool)
    .await
    .unwrap();
    db.close().await;
}
