//! plt-idempotency on SQLite and on the real PostgreSQL (`PLT_TEST_POSTGRES_URL`, a fresh
//! schema per test): one effect and one answer per key under 50 concurrent callers, on two
//! pools (instances) at once; another request under a key is refused; passing errors are not
//! stored; answers written in the effect's transaction; an abandoned pending key is taken over.

use plt_contracts::{Error, ErrorCode};
use plt_db::{Db, testing::Backend};
use plt_idempotency::{Idempotency, IdempotencyConfig, fingerprint};
use plt_kernel::{
    Secret,
    config::{DatabaseConfig, DatabaseDriver},
};
use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

async fn open(backend: Backend, schema: &str, dir: &std::path::Path) -> Option<Db> {
    let (driver, url) = match backend {
        Backend::Sqlite => (DatabaseDriver::Sqlite, String::new()),
        Backend::Postgres => match plt_db::testing::postgres_url() {
            Some(u) => (DatabaseDriver::Postgres, u),
            None => {
                plt_db::testing::skipped("plt-idempotency");
                return None;
            }
        },
    };
    let cfg = DatabaseConfig {
        driver,
        url: Secret::new(url),
        data_dir: dir.to_path_buf(),
        max_connections: 8,
        min_connections: 0,
        acquire_timeout: Duration::from_secs(10),
        probe_interval: Duration::from_secs(1),
        probe_timeout: Duration::from_secs(2),
    };
    Some(Db::connect(&cfg, schema).await.expect("test database"))
}

macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn sqlite() {
                    super::$name(plt_db::testing::Backend::Sqlite).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn postgres() {
                    super::$name(plt_db::testing::Backend::Postgres).await
                }
            }
        )*
    };
}

on_both!(one_key_one_effect, rules);

async fn one_key_one_effect(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let schema = plt_db::testing::unique_schema("idem");
    let Some(db1) = open(backend, &schema, dir.path()).await else {
        return;
    };
    let db2 = open(backend, &schema, dir.path()).await.unwrap();
    let (i1, i2) = (Idempotency::new(&db1, "t"), Idempotency::new(&db2, "t"));
    let effects = Arc::new(AtomicU32::new(0));
    let fp = fingerprint(b"request");
    let calls = (0..50).map(|n| {
        let idem = if n % 2 == 0 { i1.clone() } else { i2.clone() };
        let (effects, fp) = (effects.clone(), fp.clone());
        tokio::spawn(async move {
            idem.run("user:a/Create", Some("k1"), &fp, |_claim| async move {
                let n = effects.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, Error>(format!("created #{n}"))
            })
            .await
        })
    });
    let answers: Vec<String> = futures_util::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(effects.load(Ordering::SeqCst), 1);
    assert!(answers.iter().all(|a| a == "created #0"), "{answers:?}");
    db1.close().await;
    db2.close().await;
    plt_db::testing::drop_schema(&schema).await;
}

async fn rules(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let schema = plt_db::testing::unique_schema("idem");
    let Some(db) = open(backend, &schema, dir.path()).await else {
        return;
    };
    let idem = Idempotency::new(&db, "t");
    let ok = |v: &'static str| move |_c| async move { Ok::<_, Error>(v.to_owned()) };
    // Another request under the key: invalid_argument on idempotency_key.
    assert_eq!(idem.run("s", Some("k"), "fp1", ok("a")).await.unwrap(), "a");
    let e = idem.run("s", Some("k"), "fp2", ok("b")).await.unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidArgument);
    assert_eq!(e.violations[0].field, "idempotency_key");
    // Another scope is another key.
    assert_eq!(
        idem.run("s2", Some("k"), "fp2", ok("c")).await.unwrap(),
        "c"
    );
    // Bad keys.
    for bad in ["", "has space", "é", &"x".repeat(256)] {
        let e = idem.run("s", Some(bad), "fp", ok("x")).await.unwrap_err();
        assert_eq!(e.violations[0].field, "idempotency_key", "{bad:?}");
    }
    // No key: runs every time.
    assert_eq!(idem.run("s", None, "fp", ok("n")).await.unwrap(), "n");
    // A final error is stored and replayed; a passing one is not.
    let runs = Arc::new(AtomicU32::new(0));
    for _ in 0..2 {
        let runs = runs.clone();
        let e = idem
            .run("s", Some("bad"), "fp", |_c| async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Err::<String, _>(Error::invalid("name", "is empty"))
            })
            .await
            .unwrap_err();
        assert_eq!(
            (e.code, e.violations[0].field.as_str()),
            (ErrorCode::InvalidArgument, "name")
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let e = idem
        .run("s", Some("flaky"), "fp", |_c| async move {
            Err::<String, _>(Error::unavailable("down"))
        })
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unavailable);
    assert_eq!(
        idem.run("s", Some("flaky"), "fp", ok("later"))
            .await
            .unwrap(),
        "later"
    );
    // The answer written in the effect's own transaction.
    let answer = idem
        .run("s", Some("tx"), "fp", |claim| {
            let db = db.clone();
            async move {
                let done = claim.unwrap().completion(&"in tx".to_owned())?;
                match &db {
                    Db::Postgres(p) => {
                        let mut tx = p.begin().await.unwrap();
                        done.write(&mut *tx).await?;
                        tx.commit().await.unwrap();
                    }
                    Db::Sqlite(p) => {
                        let mut tx = p.begin().await.unwrap();
                        done.write(&mut *tx).await?;
                        tx.commit().await.unwrap();
                    }
                }
                Ok("in tx".to_owned())
            }
        })
        .await
        .unwrap();
    assert_eq!(answer, "in tx");
    assert_eq!(
        idem.run("s", Some("tx"), "fp", ok("again")).await.unwrap(),
        "in tx"
    );
    // A request still running: a repeat waits, then 409; after the lease it is taken over.
    let short = Idempotency::new(&db, "t").with_config(IdempotencyConfig {
        wait: Duration::from_millis(200),
        lease: Duration::from_millis(600),
        ttl: Duration::from_secs(3600),
    });
    let slow = {
        let short = short.clone();
        tokio::spawn(async move {
            short
                .run("s", Some("slow"), "fp", |_c| async move {
                    tokio::time::sleep(Duration::from_secs(3)).await;
                    Ok::<_, Error>("slow".to_owned())
                })
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = short
        .run("s", Some("slow"), "fp", ok("x"))
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::AlreadyExists);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        short
            .run("s", Some("slow"), "fp", ok("took over"))
            .await
            .unwrap(),
        "took over"
    );
    slow.abort();
    assert_eq!(idem.prune().await.unwrap(), 0);
    db.close().await;
    plt_db::testing::drop_schema(&schema).await;
}
