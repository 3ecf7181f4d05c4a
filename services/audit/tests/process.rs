//! The binary as an operator runs it: configuration errors exit 2 naming the key,
//! `verify` exits 0 on an intact chain and 3 naming the first broken sequence, and SIGTERM
//! drains, commits and exits 0.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_audit-service"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "PLT_CONFIG_DIR",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config"),
        );
    c
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_config_exits_2_naming_the_key() {
    for (var, value, key) in [
        ("PLT_AUDIT__MAX_BATCH", "0", "audit.max_batch"),
        ("PLT_AUDIT__MAX_PAGE_SIZE", "5000", "audit.max_page_size"),
        ("PLT_AUDIT__QUEUE_CAPACITY", "1", "audit.queue_capacity"),
        ("PLT_AUDIT__LISTEN", "nowhere", "audit.listen"),
        ("PLT_AUDIT__COLOUR", "blue", "colour"),
    ] {
        let out = bin().env(var, value).arg("verify").output().unwrap();
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(2), "{var}: {err}");
        assert!(err.contains(key), "{var}: {err}");
    }
}

#[test]
fn config_print_shows_the_audit_section() {
    let out = bin().args(["config", "print"]).output().unwrap();
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for line in [
        "audit:",
        "listen: 127.0.0.1:8084",
        "max_metadata_bytes: 8192",
        "max_batch: 256",
    ] {
        assert!(stdout.contains(line), "{line} missing: {stdout}");
    }
}

fn verify(data: &Path, json: bool) -> Output {
    let mut c = bin();
    c.env("PLT_DATABASE__DATA_DIR", data).arg("verify");
    if json {
        c.arg("--json");
    }
    c.output().unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Serves on SQLite in `data`, records `n` entries over HTTP, then SIGTERM: exits 0.
fn serve_record_and_terminate(data: &Path, n: usize) {
    let port = free_port();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The service verifies the callers' service tokens against this JWKS.
    let jwks_url = rt.block_on(common::SERVICES.serve_jwks()).unwrap();
    let token = common::ctx().service_token.unwrap().expose().clone();
    let mut child = bin()
        .env("PLT_DATABASE__DATA_DIR", data)
        .env("PLT_AUDIT__AUTH__JWKS_URL", &jwks_url)
        .env("PLT_AUDIT__LISTEN", format!("127.0.0.1:{port}"))
        .env("PLT_LOG__FORMAT", "json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("service logs");
        if line.contains("listening") {
            break;
        }
        assert!(Instant::now() < deadline, "service did not start");
    }
    let statuses = rt.block_on(async {
        let client = plt_kernel::tls::http_client();
        let mut calls = Vec::new();
        for i in 0..n {
            let c = client.clone();
            let token = token.clone();
            calls.push(tokio::spawn(async move {
                c.post(format!("http://127.0.0.1:{port}/v1/audit/records"))
                    .header("x-plt-service-token", token)
                    .json(&serde_json::json!({
                        "actor": "process-test", "action": "proc.record",
                        "resource": format!("r/{i}"), "outcome": "success"
                    }))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }));
        }
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.unwrap().unwrap());
        }
        out
    });
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let kill = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "no clean exit after SIGTERM");
}

#[test]
fn sigterm_exits_zero_and_verify_reports_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    serve_record_and_terminate(dir.path(), 20);

    let out = verify(dir.path(), false);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("ok: 20 entries checked"), "{stdout}");

    // Tamper with entry 7 the way an attacker with file access would: drop the trigger.
    let db = dir.path().join("audit.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
            .await
            .unwrap();
        let refused = sqlx::query("UPDATE audit_log SET outcome = 'failure' WHERE sequence = 7")
            .execute(&pool)
            .await;
        assert!(refused.is_err(), "the trigger did not refuse the update");
        sqlx::query("DROP TRIGGER audit_log_no_update")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("UPDATE audit_log SET outcome = 'failure' WHERE sequence = 7")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let out = verify(dir.path(), false);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(3), "{stdout}{stderr}");
    assert!(stdout.contains("BROKEN at sequence 7"), "{stdout}");

    let out = verify(dir.path(), true);
    assert_eq!(out.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_broken_sequence"], 7);
    assert_eq!(report["checked"], 6);
}
