//! The README quickstart, run verbatim (the `sh` block after the `quickstart` marker) with
//! bash and curl against `plt dev`, plus edge behaviour seen through the gateway: unknown
//! routes, oversized bodies, CORS preflight, spoofed identity headers.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

const ADMIN_PASSWORD: &str = "quickstart admin passphrase 42";

struct Platform {
    child: Child,
    gateway: String,
    _dir: tempfile::TempDir,
    cwd: PathBuf,
}

impl Drop for Platform {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
    }
}

impl Platform {
    fn stop(mut self) {
        let kill = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(kill.success());
        assert_eq!(self.child.wait().unwrap().code(), Some(0));
    }
}

/// `plt dev` on free ports with its data under a temporary `./data`.
fn start(extra: &[(&str, &str)]) -> Platform {
    start_with(&["dev", "--data-dir", "data"], extra)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `plt dev --processes`: one OS process per service on free ports, found through the static
/// registry.
fn start_processes() -> Platform {
    let ports: Vec<(String, u16)> = ["identity", "auth", "authz", "audit", "gateway"]
        .iter()
        .map(|s| (s.to_string(), free_port()))
        .collect();
    let mut vars: Vec<(String, String)> = Vec::new();
    let auth_port = ports[1].1;
    for (svc, port) in &ports {
        let upper = svc.to_uppercase();
        vars.push((format!("PLT_{upper}__LISTEN"), format!("127.0.0.1:{port}")));
        vars.push((
            format!("PLT_REGISTRY__STATIC__{upper}"),
            format!("[127.0.0.1:{port}]"),
        ));
        if svc != "auth" {
            vars.push((
                format!("PLT_{upper}__AUTH__JWKS_URL"),
                format!("http://127.0.0.1:{auth_port}/.well-known/jwks.json"),
            ));
        }
    }
    let refs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    start_with(&["dev", "--processes", "--data-dir", "data"], &refs)
}

fn start_with(args: &[&str], extra: &[(&str, &str)]) -> Platform {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_path_buf();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plt"));
    cmd.args(args)
        .current_dir(&cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PLT_CONFIG_DIR", repo().join("config"))
        .env("PLT_DEV_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("PLT_LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for svc in ["IDENTITY", "AUTH", "AUTHZ", "AUDIT", "GATEWAY"] {
        cmd.env(format!("PLT_{svc}__LISTEN"), "127.0.0.1:0");
    }
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut platform = Platform {
        child,
        gateway: String::new(),
        _dir: dir,
        cwd,
    };
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("plt dev prints its banner");
        if line.trim_start().starts_with("gateway") {
            platform.gateway = line
                .split_whitespace()
                .find(|w| w.starts_with("http://"))
                .unwrap()
                .to_owned();
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    assert!(!platform.gateway.is_empty(), "no gateway URL in the banner");
    platform
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `sh` block of README.md that follows the quickstart marker.
fn quickstart_script(readme: &Path) -> String {
    let text = std::fs::read_to_string(readme).unwrap();
    let after = text
        .split_once("<!-- quickstart:")
        .expect("quickstart marker in README.md")
        .1;
    let block = after.split_once("```sh\n").expect("sh block").1;
    block
        .split_once("\n```")
        .expect("end of block")
        .0
        .to_owned()
}

#[test]
fn the_readme_quickstart_works_verbatim() {
    quickstart(start(&[]));
}

#[test]
fn the_quickstart_works_with_one_process_per_service() {
    quickstart(start_processes());
}

fn quickstart(p: Platform) {
    let script = quickstart_script(&repo().join("README.md"));
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{script}"))
        .current_dir(&p.cwd)
        .env("GW", &p.gateway)
        .env("PLT", env!("CARGO_BIN_EXE_plt"))
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "script failed\n{stdout}\n{stderr}");
    let id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("registered: "))
        .expect("registered line")
        .trim()
        .to_owned();
    assert_eq!(id.len(), 36, "{stdout}");
    for line in [
        "verify e-mail: 204".to_owned(),
        "read audit log: 403".to_owned(),
        "create role: 201".to_owned(),
        "grant role: 204".to_owned(),
        "read audit log: 200".to_owned(),
        format!("authz.role.grant user/{id} success"),
        "authz.authorize permission/audit.logs.read denied".to_owned(),
    ] {
        assert!(
            stdout.lines().any(|l| l.trim() == line),
            "{line:?} missing from:\n{stdout}\n{stderr}"
        );
    }
    p.stop();
}

#[test]
fn the_gateway_edge_through_plt_dev() {
    let p = start(&[
        ("PLT_GATEWAY__BODY_LIMIT_BYTES", "1024"),
        (
            "PLT_GATEWAY__CORS__ALLOWED_ORIGINS",
            "[\"http://localhost:3000\"]",
        ),
    ]);
    let gw = p.gateway.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = plt_kernel::tls::http_client();
        // Unknown route: 404 problem+json, with a request id.
        let r = c.get(format!("{gw}/api/v1/nothing")).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert!(r.headers().contains_key("x-request-id"));
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/problem+json")
        );
        // A body over the limit: 413 problem+json.
        let big = serde_json::json!({"email": "big@example.com", "password": "x".repeat(4096)});
        let r = c
            .post(format!("{gw}/api/v1/users"))
            .json(&big)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 413);
        // Internal methods are not reachable through the gateway at all.
        let r = c
            .post(format!("{gw}/api/v1/audit/records"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        // A protected route without a token: 401 with a Bearer challenge.
        let r = c.get(format!("{gw}/api/v1/users")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        assert!(r.headers().contains_key("www-authenticate"));
        // Spoofed identity headers do not make anyone an admin.
        let r = c
            .get(format!("{gw}/api/v1/users"))
            .header("x-user-id", uuid_of_nobody())
            .header("x-user-roles", "admin")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        // The admin (bootstrap) may list users; an ordinary user may not, whatever x-user-id
        // it sends.
        let admin = login(&c, &gw, "admin@example.com", ADMIN_PASSWORD).await;
        let r = c
            .post(format!("{gw}/api/v1/users"))
            .json(&serde_json::json!({"email": "eve@example.com", "password": "correct horse battery staple"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let eve = login(&c, &gw, "eve@example.com", "correct horse battery staple").await;
        let admin_id = c
            .get(format!("{gw}/api/v1/users?email=admin@example.com"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(admin_id.status(), 200);
        let body: serde_json::Value = admin_id.json().await.unwrap();
        let admin_id = body["users"][0]["id"].as_str().unwrap().to_owned();
        let r = c
            .get(format!("{gw}/api/v1/users"))
            .bearer_auth(&eve)
            .header("x-user-id", &admin_id)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403);
        // CORS preflight is answered by the gateway.
        let r = c
            .request(reqwest::Method::OPTIONS, format!("{gw}/api/v1/users"))
            .header("origin", "http://localhost:3000")
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        assert!(r.headers().contains_key("access-control-allow-methods"));
        // The OpenAPI document of the public API.
        let doc: serde_json::Value = c
            .get(format!("{gw}/openapi.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert!(doc["paths"]["/api/v1/users"].is_object());
    });
    p.stop();
}

fn uuid_of_nobody() -> &'static str {
    "00000000-0000-7000-8000-000000000001"
}

async fn login(c: &reqwest::Client, gw: &str, email: &str, password: &str) -> String {
    let r = c
        .post(format!("{gw}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "login {email}");
    let b: serde_json::Value = r.json().await.unwrap();
    b["access_token"].as_str().unwrap().to_owned()
}
