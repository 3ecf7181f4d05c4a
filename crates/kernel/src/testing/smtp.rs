//! A real SMTP server for tests: aiosmtpd (Debian's `python3-aiosmtpd`) running
//! `smtp_server.py` (beside this file), which writes every message it accepts, with what it saw
//! of the connection (TLS, AUTH, EHLO), to a directory the test reads.
//!
//! `PLT_TEST_SMTP_PYTHON` names a Python interpreter that has aiosmtpd (e.g.
//! `/usr/bin/python3`). Tests call [`python`]: when it is set they must run; unset, they
//! skip with a message.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

/// The test server, embedded so that any crate's tests can run it.
const SCRIPT: &str = include_str!("smtp_server.py");

/// `PLT_TEST_SMTP_PYTHON`, or `None` after printing that SMTP tests are skipped.
pub fn python() -> Option<String> {
    let p = std::env::var("PLT_TEST_SMTP_PYTHON")
        .ok()
        .filter(|p| !p.is_empty());
    if p.is_none() {
        eprintln!("SKIPPED SMTP: PLT_TEST_SMTP_PYTHON is not set (a python3 with aiosmtpd)");
    }
    p
}

/// One aiosmtpd server on 127.0.0.1; stopped when dropped (its standard input closes, and it
/// is killed).
pub struct SmtpServer {
    pub port: u16,
    dir: PathBuf,
    out: PathBuf,
    _child: Child,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl SmtpServer {
    /// Starts the server with `python` and the script's `args` (`--tls none|starttls|tls`,
    /// `--cert PEM --key PEM`, `--auth USER:PASS`). Panics when it does not start.
    pub async fn start(python: &str, args: &[&str]) -> SmtpServer {
        let dir = std::env::temp_dir().join(format!("plt-smtp-{}", uuid::Uuid::new_v4().simple()));
        let out = dir.join("received");
        std::fs::create_dir_all(&out).expect("creating the mail directory");
        let script = dir.join("smtp_server.py");
        std::fs::write(&script, SCRIPT).expect("writing the SMTP server script");
        let mut child = Command::new(python)
            .arg(&script)
            .arg(&out)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the SMTP server with {python}: {e}"));
        let stdout = child.stdout.take().expect("stdout piped");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(20),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("the SMTP server reports its port within 20 s")
        .expect("reading the SMTP server's port");
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("the SMTP server did not start (printed {line:?}); has {python} aiosmtpd?")
        });
        SmtpServer {
            port,
            dir,
            out,
            _child: child,
        }
    }

    /// Every message the server accepted, oldest first: `mail_from`, `rcpt_tos`, `tls`,
    /// `tls_version`, `authenticated`, `login`, `hello`, `content` (the message as received).
    pub fn received(&self) -> Vec<serde_json::Value> {
        received(&self.out)
    }
}

fn received(out: &Path) -> Vec<serde_json::Value> {
    let mut files: Vec<(u64, PathBuf)> = std::fs::read_dir(out)
        .expect("reading the mail directory")
        .filter_map(|e| {
            let p = e.ok()?.path();
            let n = p.file_stem()?.to_str()?.parse().ok()?;
            (p.extension()? == "json").then_some((n, p))
        })
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|(_, p)| {
            let bytes = std::fs::read(&p).expect("reading a received message");
            serde_json::from_slice(&bytes).expect("a received message is JSON")
        })
        .collect()
}
