//! The binary as an operator runs it: configuration errors exit non-zero naming the key,
//! `config print` redacts secrets, and SIGTERM drains and exits 0.

use std::{
    io::{BufRead, BufReader},
    net::TcpListener,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_identity-service"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "PLT_CONFIG_DIR",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config"),
        );
    c
}

#[test]
fn bad_config_exits_non_zero_naming_the_key() {
    let out = bin()
        .env("PLT_IDENTITY__LISTEN", "not-an-address")
        .arg("config")
        .arg("print")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("identity.listen"), "{err}");

    let out = bin()
        .env("PLT_IDENTITY__ARGON2__MEMORY_KIB", "1024")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("identity.argon2.memory_kib") && err.contains("at least 19456"),
        "{err}"
    );

    let out = bin().env("PLT_IDENTITY__COLOUR", "blue").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
}

#[test]
fn production_refuses_the_development_outbox() {
    let out = bin()
        .env("PLT_ENV", "production")
        .env("PLT_DATABASE__URL", "postgres://plt@127.0.0.1:1/plt")
        .args(["config", "print"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("notifier.kind") && err.contains("smtp"),
        "{err}"
    );
}

#[test]
fn config_print_redacts_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("db-url");
    std::fs::write(&secret, "postgres://app:s3cr3t-pa55@db.internal/plt\n").unwrap();
    let out = bin()
        .env("PLT_DATABASE__DRIVER", "postgres")
        .env("PLT_DATABASE__URL_FILE", &secret)
        .env("PLT_LOG__FORMAT", "json")
        .args(["config", "print"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(
        text.contains("url: '[redacted]'") || text.contains("url: \"[redacted]\""),
        "{text}"
    );
    assert!(text.contains("format: json"));
    assert!(text.contains("listen: 127.0.0.1:8082"));
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = bin()
        .env("PLT_DATABASE__DATA_DIR", dir.path())
        .env("PLT_NOTIFIER__OUTBOX_DIR", dir.path().join("mail"))
        .env("PLT_IDENTITY__LISTEN", format!("127.0.0.1:{port}"))
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
    let mut lines = Vec::new();
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("service logs");
        let listening = line.contains("listening");
        lines.push(line);
        if listening {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "service did not start: {lines:?}"
        );
    }
    // JSON logs: one object per line.
    for l in &lines {
        assert!(
            serde_json::from_str::<serde_json::Value>(l).is_ok(),
            "not JSON: {l}"
        );
    }
    // Several requests in flight (each spends an Argon2id hash) when SIGTERM arrives.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let results = rt.block_on(async {
        let client = plt_kernel::tls::http_client();
        let mut calls = Vec::new();
        for i in 0..4 {
            let c = client.clone();
            calls.push(tokio::spawn(async move {
                c.post(format!("http://127.0.0.1:{port}/v1/users"))
                    .json(&serde_json::json!({"email": format!("t{i}@example.com"), "password": "correct horse battery staple"}))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }));
        }
        tokio::time::sleep(Duration::from_millis(15)).await;
        let kill = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
        assert!(kill.success());
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.unwrap());
        }
        out
    });
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM");
    // Requests in flight when the signal came completed; any that had not been sent yet were
    // refused (connection refused, or an idle connection closed before the request was sent).
    let completed = results.iter().filter(|r| matches!(r, Ok(201))).count();
    assert!(
        completed >= 1,
        "no in-flight request completed: {results:?}"
    );
    for r in &results {
        match r {
            Ok(code) => assert_eq!(*code, 201),
            Err(e) => assert!(e.is_connect() || e.is_request(), "unexpected failure: {e}"),
        }
    }
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(rest.iter().any(|l| l.contains("SIGTERM")), "{rest:?}");
    // A request logged inside its span carries the request id.
    assert!(
        rest.iter()
            .any(|l| l.contains("\"request_id\"") && l.contains("user created")),
        "{rest:?}"
    );
}

/// The binary as installed: run from an empty directory with no `config/` and no
/// `PLT_CONFIG_DIR` (the built-in defaults apply), with `plt dev`'s and the tests' own
/// variables exported in the same shell (not configuration, so not refused): it becomes ready.
#[test]
fn starts_from_an_empty_directory_beside_the_tools_variables() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_identity-service"))
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PLT_DEV_ADMIN_PASSWORD", "exported for plt dev")
        .env("PLT_DEV_ADMIN_EMAIL", "admin@example.com")
        .env(
            "PLT_TEST_POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/postgres",
        )
        .env("PLT_IDENTITY__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ready = loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read as _;
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("identity-service exited ({status}) instead of starting:\n{err}");
        }
        let ok = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
            use std::io::{Read as _, Write as _};
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            s.write_all(b"GET /readyz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
                .is_ok()
                && {
                    let mut out = String::new();
                    let _ = s.read_to_string(&mut out);
                    out.starts_with("HTTP/1.1 200")
                }
        });
        if ok || Instant::now() > deadline {
            break ok;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    assert!(ready, "identity-service never became ready");
    assert_eq!(status.code(), Some(0));
    // Data directories default relative to the working directory.
    assert!(dir.path().join("data").join("identity.db").is_file());
}
