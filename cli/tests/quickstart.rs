//! The README quickstart, run verbatim (the `sh` block after the `quickstart` marker) with
//! bash and curl against `plt dev`, plus edge behaviour seen through the gateway: unknown
//! routes, oversized bodies, CORS preflight, spoofed identity headers.

mod common;

use common::login;

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
    start_processes_on(&processes_ports())
}

fn processes_ports() -> Vec<(String, u16)> {
    ["identity", "auth", "authz", "audit", "gateway"]
        .iter()
        .map(|s| (s.to_string(), free_port()))
        .collect()
}

fn start_processes_on(ports: &[(String, u16)]) -> Platform {
    let mut vars: Vec<(String, String)> = Vec::new();
    let auth_port = ports[1].1;
    for (svc, port) in ports {
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
    start_in(args, extra, Some(repo().join("config")))
}

/// `plt <args>` in a new empty directory, with `config_dir` as `PLT_CONFIG_DIR` (none: the
/// built-in configuration).
fn start_in(args: &[&str], extra: &[(&str, &str)], config_dir: Option<PathBuf>) -> Platform {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_path_buf();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plt"));
    cmd.args(args)
        .current_dir(&cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PLT_DEV_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("PLT_LOG__LEVEL", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for svc in ["IDENTITY", "AUTH", "AUTHZ", "AUDIT", "GATEWAY"] {
        cmd.env(format!("PLT_{svc}__LISTEN"), "127.0.0.1:0");
    }
    if let Some(config_dir) = config_dir {
        cmd.env("PLT_CONFIG_DIR", config_dir);
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

/// An installed `plt` run in an empty directory: no `./config`, no `PLT_CONFIG_DIR`, no
/// `Cargo.toml` (so no feature services), and its own `PLT_DEV_*` variables exported. The
/// built-in configuration applies; the data goes to `./data`; the admin's password is the
/// exported one.
#[test]
fn plt_dev_starts_from_an_empty_directory_with_the_built_in_configuration() {
    let p = start_in(&["dev"], &[], None);
    assert!(!p.cwd.join("config").exists());
    let gw = p.gateway.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = plt_kernel::tls::http_client();
        let r = c.get(format!("{gw}/readyz")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        // Signed in with PLT_DEV_ADMIN_PASSWORD: plt dev read it, no service refused it.
        let token = login(&c, &gw, "admin@example.com", ADMIN_PASSWORD).await;
        assert!(!token.is_empty());
    });
    assert!(p.cwd.join("data").join("identity.db").is_file());
    p.stop();
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

/// Zero trust, from outside, one OS process per service: every service's own port refuses a
/// call without credentials (401) and a plain user's call that needs a permission (403), and
/// serves the admin; a user who just signed up reads itself; after logout the same access
/// token is refused at the gateway and on every service's port (within the revocation feed's
/// propagation, measured here; `plt-bench revocation` measures its p99).
#[test]
fn every_service_guards_itself_and_logout_ends_the_token_everywhere() {
    let ports = processes_ports();
    let port = |svc: &str| ports.iter().find(|(s, _)| s == svc).unwrap().1;
    let p = start_processes_on(&ports);
    let gw = p.gateway.clone();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = plt_kernel::tls::http_client();
        let admin = login(&c, &gw, "admin@example.com", ADMIN_PASSWORD).await;
        // A fresh user: signs up, signs in, reads itself (role user is implicit).
        let r = c
            .post(format!("{gw}/api/v1/users"))
            .json(&serde_json::json!({"email": "plain@example.com", "password": "plain user passphrase 42"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let me: serde_json::Value = r.json().await.unwrap();
        let me = me["id"].as_str().unwrap().to_owned();
        let plain = login(&c, &gw, "plain@example.com", "plain user passphrase 42").await;
        for path in [
            format!("/api/v1/users/{me}"),
            format!("/api/v1/authz/users/{me}/permissions"),
        ] {
            let r = c
                .get(format!("{gw}{path}"))
                .bearer_auth(&plain)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "a new user reads {path}");
        }
        // Each service's own port: (service, method, path, body) -> no token 401, a plain
        // user 403, the admin 2xx.
        let admin_id = {
            let r = c
                .get(format!("{gw}/api/v1/users?page_size=100"))
                .bearer_auth(&admin)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let page: serde_json::Value = r.json().await.unwrap();
            page["users"]
                .as_array()
                .unwrap()
                .iter()
                .find(|u| u["email"] == "admin@example.com")
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        let table: Vec<(&str, reqwest::Method, String)> = vec![
            ("identity", reqwest::Method::GET, "/v1/users".into()),
            ("identity", reqwest::Method::GET, format!("/v1/users/{admin_id}")),
            ("authz", reqwest::Method::GET, "/v1/authz/roles".into()),
            ("authz", reqwest::Method::GET, format!("/v1/authz/users/{admin_id}/roles")),
            ("audit", reqwest::Method::GET, "/v1/audit/logs".into()),
            ("audit", reqwest::Method::POST, "/v1/audit/verify".into()),
        ];
        for (svc, method, path) in &table {
            let url = format!("http://127.0.0.1:{}{path}", port(svc));
            for (who, token, want) in [
                ("nobody", None, vec![401]),
                ("a plain user", Some(&plain), vec![403]),
                ("the admin", Some(&admin), vec![200, 204]),
            ] {
                let mut rb = c.request(method.clone(), &url);
                if let Some(t) = token {
                    rb = rb.bearer_auth(t);
                }
                let r = rb.send().await.unwrap();
                assert!(
                    want.contains(&r.status().as_u16()),
                    "{who}: {method} {url} answered {}",
                    r.status()
                );
            }
        }
        // Internal methods refuse users, even the admin: they need a service token.
        for (svc, path, body) in [
            ("auth", "/v1/auth/validate", serde_json::json!({"token": admin})),
            ("authz", "/v1/authz/check", serde_json::json!({"user_id": me, "permission": "audit.logs.read"})),
            ("audit", "/v1/audit/records", serde_json::json!({"entry": {}})),
        ] {
            let r = c
                .post(format!("http://127.0.0.1:{}{path}", port(svc)))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert!(
                [400, 401, 403].contains(&r.status().as_u16()) && r.status() != 200,
                "{svc} {path} with a user's token answered {}",
                r.status()
            );
        }
        // Logout, then the same access token everywhere.
        let r = c
            .post(format!("{gw}/api/v1/auth/logout"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
        let ended = std::time::Instant::now();
        let targets = [
            format!("{gw}/api/v1/audit/logs"),
            format!("http://127.0.0.1:{}/v1/audit/logs", port("audit")),
            format!("http://127.0.0.1:{}/v1/users", port("identity")),
            format!("http://127.0.0.1:{}/v1/authz/roles", port("authz")),
        ];
        for url in &targets {
            loop {
                let r = c.get(url).bearer_auth(&admin).send().await.unwrap();
                if r.status() == 401 {
                    break;
                }
                assert_eq!(r.status(), 200, "{url}");
                assert!(
                    ended.elapsed() < Duration::from_secs(5),
                    "{url} still accepts a signed-out token after {:?}",
                    ended.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            eprintln!("{url}: refused {:?} after logout", ended.elapsed());
        }

        // Two gateway instances (the second its own `plt serve gateway` process): sign in,
        // use the token at both (each caches its verification), sign out through one, and
        // time until each refuses it.
        let second_port = free_port();
        let mut second = second_gateway(&ports, second_port, &p.cwd);
        let gw2 = format!("http://127.0.0.1:{second_port}");
        let mut ready = false;
        for _ in 0..300 {
            if c.get(format!("{gw2}/readyz")).send().await.is_ok_and(|r| r.status().is_success()) {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "the second gateway never became ready");
        let mut latencies = Vec::new();
        for round in 0..10 {
            let token = login(&c, &gw, "admin@example.com", ADMIN_PASSWORD).await;
            for g in [&gw, &gw2] {
                let r = c
                    .get(format!("{g}/api/v1/audit/logs"))
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "round {round}: {g}");
            }
            let out = if round % 2 == 0 { &gw } else { &gw2 };
            let r = c
                .post(format!("{out}/api/v1/auth/logout"))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
            let ended = std::time::Instant::now();
            for g in [&gw, &gw2] {
                loop {
                    let r = c
                        .get(format!("{g}/api/v1/audit/logs"))
                        .bearer_auth(&token)
                        .send()
                        .await
                        .unwrap();
                    if r.status() == 401 {
                        latencies.push(ended.elapsed());
                        break;
                    }
                    assert!(ended.elapsed() < Duration::from_secs(5), "{g} kept a signed-out token");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        latencies.sort();
        eprintln!(
            "logout -> refused at both gateways: {} samples, p50 {:?}, max (p99 of this run) {:?}",
            latencies.len(),
            latencies[latencies.len() / 2],
            latencies[latencies.len() - 1]
        );
        let _ = second.kill();
        let _ = second.wait();
    });
    p.stop();
}

/// A second gateway, `plt serve gateway` on `port`, beside the platform on `ports`.
fn second_gateway(ports: &[(String, u16)], port: u16, cwd: &Path) -> Child {
    let auth = ports.iter().find(|(s, _)| s == "auth").unwrap().1;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plt"));
    cmd.args(["serve", "gateway", "--data-dir", "data"])
        .current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PLT_CONFIG_DIR", repo().join("config"))
        .env("PLT_LOG__LEVEL", "warn")
        .env("PLT_REGISTRY__KIND", "static")
        .env("PLT_GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "PLT_GATEWAY__AUTH__JWKS_URL",
            format!("http://127.0.0.1:{auth}/.well-known/jwks.json"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (svc, p) in ports {
        cmd.env(
            format!("PLT_REGISTRY__STATIC__{}", svc.to_uppercase()),
            format!("[127.0.0.1:{p}]"),
        );
    }
    cmd.spawn().unwrap()
}
