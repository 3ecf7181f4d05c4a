//! `plt dev` end to end, as separate OS-level processes see it: the platform comes up,
//! a user is created over identity's HTTP API, signs in over auth's HTTP API (auth calling
//! identity over loopback gRPC with a service token), internal methods refuse callers
//! without a service credential over both protocols, and Ctrl-C (SIGINT) stops everything with exit code 0.

mod common;

use plt_contracts::{
    ErrorCode, RequestContext,
    identity::{IdentityServiceClient, grpc::IdentityGrpcClient},
};
use plt_kernel::Secret;
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

#[test]
fn dev_starts_the_platform_and_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_plt"))
        .args(["dev", "--data-dir"])
        .arg(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "PLT_CONFIG_DIR",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config"),
        )
        .env("PLT_IDENTITY__LISTEN", "127.0.0.1:0")
        .env("PLT_AUTH__LISTEN", "127.0.0.1:0")
        .env("PLT_AUDIT__LISTEN", "127.0.0.1:0")
        .env("PLT_AUTHZ__LISTEN", "127.0.0.1:0")
        .env("PLT_LOG__LEVEL", "warn")
        // plt dev builds the workspace's feature services, as a developer's shell would.
        .envs(common::cargo_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    // Whatever happens below, do not leave the platform running.
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(self.0.to_string())
                .stderr(Stdio::null())
                .status();
        }
    }
    let _guard = KillOnDrop(child.id());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut identity = None;
    let mut auth = None;
    let mut audit = None;
    while identity.is_none() || auth.is_none() || audit.is_none() {
        // The first start builds the workspace's feature services (Blog, Billing, Analytics
        // and any generated one) with cargo: minutes on a cold 2-core machine.
        let line = rx
            .recv_timeout(Duration::from_secs(900))
            .expect("plt dev prints its banner");
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .map(str::to_owned);
        match line.split_whitespace().next() {
            Some("identity") => identity = url,
            Some("auth") => auth = url,
            Some("audit") => audit = url,
            _ => {}
        }
    }
    let (identity, auth, audit) = (identity.unwrap(), auth.unwrap(), audit.unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = plt_kernel::tls::http_client();
        let r = c
            .post(format!("{identity}/v1/users"))
            .json(&serde_json::json!({"email": "dev@example.com", "password": "correct horse battery staple"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let r = c
            .post(format!("{auth}/v1/auth/login"))
            .json(&serde_json::json!({"email": "dev@example.com", "password": "correct horse battery staple"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        let jwks: serde_json::Value = c
            .get(format!("{auth}/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        // Checking a password is for platform services only: called directly — over HTTP or
        // gRPC, with no service credential or with a user's access token in its place — it
        // is refused before any password is looked at.
        let access = body["access_token"].as_str().unwrap().to_owned();
        for token in [None, Some(access.as_str())] {
            let mut rb = c
                .post(format!("{identity}/v1/credentials/verify"))
                .json(&serde_json::json!({"email": "dev@example.com", "password": "correct horse battery staple"}));
            if let Some(t) = token {
                rb = rb.header("x-plt-service-token", t);
            }
            let r = rb.send().await.unwrap();
            assert_eq!(r.status(), 401);
            let p: serde_json::Value = r.json().await.unwrap();
            assert!(p["detail"].as_str().unwrap().contains("service credential"), "{p}");
        }
        let grpc = IdentityGrpcClient::connect_lazy(&identity).unwrap();
        let mut as_user = RequestContext::new();
        as_user.service_token = Some(Secret::new(access.clone()));
        for ctx in [RequestContext::new(), as_user] {
            let e = grpc
                .verify_credentials(&ctx, "dev@example.com", Secret::new("correct horse battery staple".into()))
                .await
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthenticated, "{e}");
        }
        // The audit log is guarded: without a token, 401 problem+json.
        let r = c.post(format!("{audit}/v1/audit/verify")).send().await.unwrap();
        assert_eq!(r.status(), 401);
    });
    for db in ["identity.db", "auth.db", "authz.db", "audit.db"] {
        assert!(dir.path().join(db).exists(), "{db} missing");
    }
    assert!(
        std::fs::read_dir(dir.path().join("mail")).unwrap().count() >= 1,
        "verification mail in the outbox"
    );
    let kill = Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
}
