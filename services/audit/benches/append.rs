//! Append throughput of the audit log on PostgreSQL, through the core (validation, the
//! single writer with group commit, one transaction per batch, commit before answering).
//!
//! ```sh
//! PLT_BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres \
//!   cargo bench -p audit-service --bench append
//! ```
//!
//! Uses `PLT_BENCH_POSTGRES_URL`, else `PLT_TEST_POSTGRES_URL`, in a fresh schema dropped at
//! the end. Modes: 1 caller appending one entry at a time, and 64 concurrent callers. Each
//! mode stops at its row count or after `PLT_BENCH_SECONDS` (default 60), whichever comes
//! first. Row counts: `PLT_BENCH_SINGLE_ROWS` (3000), `PLT_BENCH_CONCURRENT_ROWS` (50000).
//! Not a test (`harness = false`, not run by `cargo test`).

use audit_service::{SECTION, connect_db, core::AuditCore, store, writer::Writer};
use plt_contracts::{
    RequestContext,
    audit::{AuditServiceClient, NewAuditEntry, Outcome},
};
use plt_kernel::config::ConfigSource;
use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

const CALLERS: usize = 64;
const TARGET_SINGLE: f64 = 3_000.0;
const TARGET_CONCURRENT: f64 = 50_000.0;

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn entry(i: usize) -> NewAuditEntry {
    NewAuditEntry {
        id: None,
        actor: format!("user:{}", i % 1000),
        action: "bench.resource.update".into(),
        resource: format!("resource/{i}"),
        outcome: if i.is_multiple_of(10) {
            Outcome::Denied
        } else {
            Outcome::Success
        },
        metadata: serde_json::json!({"i": i, "fields": ["name", "email"], "reason": "benchmark"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        source_ip: "203.0.113.9".into(),
        user_agent: "audit-bench/1".into(),
        trace_id: format!("{i:032x}"),
    }
}

struct Run {
    mode: String,
    rows: usize,
    seconds: f64,
    /// Transactions used (each batch shares one time), when known.
    commits: Option<i64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-9)
    }
}

/// `callers` tasks append until `rows` entries are in or `limit` has passed.
async fn append(
    core: Arc<dyn AuditServiceClient>,
    service: &RequestContext,
    callers: usize,
    rows: usize,
    limit: Duration,
    offset: usize,
) -> Result<Run, String> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = Vec::new();
    for _ in 0..callers {
        let core = core.clone();
        let next = next.clone();
        let ctx = service.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0usize;
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= rows || Instant::now() >= deadline {
                    return Ok::<usize, String>(done);
                }
                core.record(&ctx, entry(offset + i))
                    .await
                    .map_err(|e| e.to_string())?;
                done += 1;
            }
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.map_err(|e| e.to_string())??;
    }
    let mode = if callers == 1 {
        "1 caller".to_owned()
    } else {
        format!("{callers} callers")
    };
    Ok(Run {
        mode,
        rows: total,
        seconds: started.elapsed().as_secs_f64(),
        commits: None,
    })
}

/// How many transactions wrote the entries after `after` (a batch shares one time).
async fn commits(db: &plt_db::Db, after: usize) -> Option<i64> {
    let plt_db::Db::Postgres(pool) = db else {
        return None;
    };
    sqlx::query_scalar("SELECT count(DISTINCT recorded_at) FROM audit_log WHERE sequence > $1")
        .bind(after as i64)
        .fetch_one(pool)
        .await
        .ok()
}

async fn bench(url: String) -> Result<bool, String> {
    let single_rows = env_num("PLT_BENCH_SINGLE_ROWS", 3_000);
    let concurrent_rows = env_num("PLT_BENCH_CONCURRENT_ROWS", 50_000);
    let limit = Duration::from_secs(env_num("PLT_BENCH_SECONDS", 60) as u64);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let source = ConfigSource {
        dir: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config"),
        vars: vec![
            ("PLT_DATABASE__DRIVER".into(), "postgres".into()),
            ("PLT_DATABASE__URL".into(), url.clone()),
            (
                "PLT_DATABASE__DATA_DIR".into(),
                dir.path().to_string_lossy().into_owned(),
            ),
        ],
        sections: Vec::new(),
    };
    let cfg: audit_service::Config = source.load(SECTION).map_err(|e| e.to_string())?;
    let schema = plt_db::testing::unique_schema("auditbench");
    let db = connect_db(&cfg, &schema)
        .await
        .map_err(|e| format!("{e:#}"))?;
    let store = store::for_db(&db);
    let (writer, handle) = Writer::start(
        store.clone(),
        cfg.service.max_batch,
        cfg.service.queue_capacity,
        "audit-bench",
    )
    .await
    .map_err(|e| e.to_string())?;
    // Records come from platform services: a service token, verified like in production.
    let authority = plt_authn::testing::TestAuthority::new();
    let guard = plt_authn::ServiceGuard::new(
        plt_authn::Verifier::new(
            plt_authn::VerifierConfig::new("plt", "plt-api"),
            authority.jwks(),
        ),
        SECTION,
    );
    let service = authority.service_ctx("authz", SECTION);
    let core: Arc<dyn AuditServiceClient> =
        Arc::new(AuditCore::new(store, handle, cfg.service.clone(), guard));

    println!(
        "audit append benchmark: PostgreSQL schema {schema}, max_batch {}, limit {}s per mode",
        cfg.service.max_batch,
        limit.as_secs()
    );
    let result = async {
        // Warm-up: connections, prepared statements.
        const WARM_UP: usize = 500;
        append(core.clone(), &service, 8, WARM_UP, limit, 10_000_000).await?;
        let mut single = append(core.clone(), &service, 1, single_rows, limit, 0).await?;
        let before_many = WARM_UP + single.rows;
        let mut many = append(
            core.clone(),
            &service,
            CALLERS,
            concurrent_rows,
            limit,
            single_rows,
        )
        .await?;
        single.commits = commits(&db, WARM_UP)
            .await
            .zip(commits(&db, before_many).await)
            .map(|(all, later)| all - later);
        many.commits = commits(&db, before_many).await;
        let started = Instant::now();
        let report = core
            .verify(&RequestContext::new())
            .await
            .map_err(|e| e.to_string())?;
        let verify = Run {
            mode: "verify (walk)".into(),
            rows: report.checked as usize,
            seconds: started.elapsed().as_secs_f64(),
            commits: None,
        };
        if !report.ok {
            return Err(format!("chain broken after the benchmark: {report:?}"));
        }
        Ok::<_, String>((single, many, verify, single_rows, concurrent_rows))
    }
    .await;
    writer.shutdown().await;
    let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    if let plt_db::Db::Postgres(pool) = &db {
        let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(pool).await;
    }
    db.close().await;
    let (single, many, verify, single_rows, concurrent_rows) = result?;

    let met = |run: &Run, want_rows: usize, target: f64| {
        if run.rows < want_rows {
            "no (time limit)"
        } else if run.rate() >= target {
            "yes"
        } else {
            "no"
        }
    };
    println!();
    println!(
        "| {:<13} | {:>7} | {:>8} | {:>9} | {:>7} | {:>11} | {:>13} | {:<15} |",
        "mode", "rows", "seconds", "rows/s", "commits", "rows/commit", "target rows/s", "met"
    );
    println!(
        "|{:-<15}|{:->9}|{:->10}|{:->11}|{:->9}|{:->13}|{:->15}|{:-<17}|",
        "", "", "", "", "", "", "", ""
    );
    let single_met = met(&single, single_rows, TARGET_SINGLE);
    let many_met = met(&many, concurrent_rows, TARGET_CONCURRENT);
    for (run, target, ok) in [
        (&single, format!(">= {TARGET_SINGLE:.0}"), single_met),
        (&many, format!(">= {TARGET_CONCURRENT:.0}"), many_met),
        (&verify, "-".to_owned(), "-"),
    ] {
        let (commits, per_commit) = match run.commits {
            Some(c) if c > 0 => (c.to_string(), format!("{:.1}", run.rows as f64 / c as f64)),
            _ => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "| {:<13} | {:>7} | {:>8.3} | {:>9.0} | {:>7} | {:>11} | {:>13} | {:<15} |",
            run.mode,
            run.rows,
            run.seconds,
            run.rate(),
            commits,
            per_commit,
            target,
            ok
        );
    }
    println!();
    println!(
        "ratio {CALLERS} callers / 1 caller: {:.1}x",
        many.rate() / single.rate().max(1e-9)
    );
    Ok(single_met == "yes" && many_met == "yes")
}

fn main() -> ExitCode {
    let Some(url) = ["PLT_BENCH_POSTGRES_URL", "PLT_TEST_POSTGRES_URL"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    else {
        eprintln!(
            "SKIPPED audit append benchmark: set PLT_BENCH_POSTGRES_URL or PLT_TEST_POSTGRES_URL"
        );
        return ExitCode::SUCCESS;
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("audit bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(bench(url)) {
        // Missing a target is a result, not a failure of the benchmark.
        Ok(all_met) => {
            println!("targets met: {}", if all_met { "yes" } else { "no" });
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("audit bench failed: {e}");
            ExitCode::FAILURE
        }
    }
}
