//! The platform under test, started from the service binaries: a fresh PostgreSQL database
//! and a private etcd per scenario, the services configured only through `PLT_*` variables,
//! their database and Redis traffic through the suite's fault proxies, a bootstrap admin.

use anyhow::{Context as _, bail};
use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use plt_testkit::FaultProxy;
use serde_json::{Value, json};
use sqlx::Connection as _;
use std::{
    fs::File,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};
use tokio::process::{Child, Command};
use uuid::Uuid;

/// Where the registry keeps instances (`<prefix>/<service>/<id>`).
pub const REGISTRY_PREFIX: &str = "/plt/services";

/// How long a service may take to answer `/readyz` 200 after its start.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The run's settings (command line).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The configuration directory the services read (`PLT_CONFIG_DIR`).
    pub config_dir: PathBuf,
    pub bin_dir: PathBuf,
    pub etcd_bin: PathBuf,
    pub postgres_url: String,
    pub redis_url: String,
    /// Per scenario, a directory of logs under it.
    pub run_dir: PathBuf,
    /// Unique per run (Redis key prefix, e-mails, database names).
    pub tag: String,
}

/// What a scenario needs of the platform.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub identity_instances: usize,
    /// Raise the gateway's rate limits far above the suite's load (all but the scenarios
    /// that look at limits).
    pub raise_rate_limits: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Svc {
    Auth,
    Identity,
    Audit,
    Authz,
    Gateway,
}

impl Svc {
    pub const ALL: [Svc; 5] = [
        Svc::Auth,
        Svc::Identity,
        Svc::Audit,
        Svc::Authz,
        Svc::Gateway,
    ];

    pub fn binary(self) -> &'static str {
        match self {
            Svc::Auth => "auth-service",
            Svc::Identity => "identity-service",
            Svc::Audit => "audit-service",
            Svc::Authz => "authz-service",
            Svc::Gateway => "api-gateway",
        }
    }

    /// Its configuration section, `PLT_<SECTION>__…`, and its name in the registry.
    pub fn section(self) -> &'static str {
        match self {
            Svc::Auth => "auth",
            Svc::Identity => "identity",
            Svc::Audit => "audit",
            Svc::Authz => "authz",
            Svc::Gateway => "gateway",
        }
    }
}

/// A running service process.
pub struct Process {
    /// `identity-1`, `auth`, …
    pub name: String,
    pub svc: Svc,
    pub addr: SocketAddr,
    pub env: Vec<(String, String)>,
    child: Child,
}

impl Process {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

/// The bootstrap admin.
#[derive(Debug, Clone)]
pub struct Admin {
    pub id: Uuid,
    pub email: String,
    pub password: String,
}

/// A URL split as the suite needs it: scheme, user info, host, port, the rest.
struct Url {
    scheme: String,
    userinfo: Option<String>,
    host: String,
    port: u16,
    /// Path and query, e.g. `/postgres?sslmode=disable`, or "".
    rest: String,
}

impl Url {
    fn parse(s: &str, default_port: u16) -> anyhow::Result<Self> {
        let (scheme, after) = s
            .split_once("://")
            .with_context(|| format!("{s}: not a URL"))?;
        let (authority, rest) = match after.find(['/', '?']) {
            Some(i) => (&after[..i], &after[i..]),
            None => (after, ""),
        };
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().with_context(|| format!("{s}: bad port"))?),
            None => (hostport, default_port),
        };
        Ok(Self {
            scheme: scheme.to_owned(),
            userinfo,
            host: if host.is_empty() {
                "127.0.0.1".into()
            } else {
                host.to_owned()
            },
            port,
            rest: rest.to_owned(),
        })
    }

    /// The server's address; the suite only talks to loopback.
    async fn loopback_addr(&self) -> anyhow::Result<SocketAddr> {
        let addrs = tokio::net::lookup_host((self.host.as_str(), self.port)).await?;
        addrs
            .into_iter()
            .find(|a| matches!(a.ip(), IpAddr::V4(ip) if ip.is_loopback()))
            .with_context(|| {
                format!(
                    "{}:{} is not a 127.0.0.x address (the suite only talks to loopback)",
                    self.host, self.port
                )
            })
    }

    /// The same URL pointed at `addr`, with `rest` instead of its own path.
    fn with_addr(&self, addr: SocketAddr, rest: &str) -> String {
        let user = self
            .userinfo
            .as_ref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        format!("{}://{user}{addr}{rest}", self.scheme)
    }
}

/// Free ports on 127.0.0.1: all bound at once, then released.
pub fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()?)
}

/// Sends a signal to a process with the `kill` command (no unsafe code here).
pub async fn send_signal(pid: u32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .await
        .context("running kill")?;
    if !status.success() {
        bail!("kill -{signal} {pid} failed ({status})");
    }
    Ok(())
}

fn log_file(path: &Path) -> anyhow::Result<(Stdio, Stdio)> {
    let f = File::options()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok((Stdio::from(f.try_clone()?), Stdio::from(f)))
}

/// The suite's own etcd: free ports, its own data directory, stopped and restarted at will.
pub struct Etcd {
    bin: PathBuf,
    child: Option<Child>,
    pub client: SocketAddr,
    peer: SocketAddr,
    data: tempfile::TempDir,
    log: PathBuf,
    http: reqwest::Client,
}

impl Etcd {
    pub async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Self> {
        let ports = free_ports(2)?;
        let mut etcd = Self {
            bin: bin.to_owned(),
            child: None,
            client: SocketAddr::from(([127, 0, 0, 1], ports[0])),
            peer: SocketAddr::from(([127, 0, 0, 1], ports[1])),
            data: tempfile::Builder::new()
                .prefix("plt-faults-etcd")
                .tempdir()?,
            log: dir.join("etcd.log"),
            http: plt_kernel::tls::http_client_builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        };
        etcd.restart().await?;
        Ok(etcd)
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client)
    }

    /// Starts etcd (again, on the same data directory and ports) and waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("etcd is already running");
        }
        let (out, err) = log_file(&self.log)?;
        let peer = format!("http://{}", self.peer);
        let client = self.endpoint();
        let child = Command::new(&self.bin)
            .arg("--name")
            .arg("plt-faults")
            .arg("--data-dir")
            .arg(self.data.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("plt-faults={peer}"))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "starting {} (apt-get install etcd-server)",
                    self.bin.display()
                )
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.range(b"\0", None).await.is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(status) = c.try_wait()?
            {
                self.child = None;
                bail!(
                    "etcd exited during start-up ({status}); see {}",
                    self.log.display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "etcd did not answer within 30 s; see {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits for it to exit (SIGKILL after 10 s).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            send_signal(pid, "TERM").await?;
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = child.kill().await;
        }
        Ok(())
    }

    /// Keys and values under `key` (with `range_end`, or just `key`).
    async fn range(&self, key: &[u8], range_end: Option<&[u8]>) -> anyhow::Result<Vec<Value>> {
        let mut body = json!({"key": B64.encode(key)});
        if let Some(end) = range_end {
            body["range_end"] = Value::String(B64.encode(end));
        }
        let v: Value = self
            .http
            .post(format!("{}/v3/kv/range", self.endpoint()))
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(v["kvs"].as_array().cloned().unwrap_or_default())
    }

    /// The registered instances: (service, address).
    pub async fn instances(&self) -> anyhow::Result<Vec<(String, String)>> {
        let prefix = format!("{REGISTRY_PREFIX}/");
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let mut out = Vec::new();
        for kv in self.range(prefix.as_bytes(), Some(&end)).await? {
            let Some(raw) = kv["value"].as_str().and_then(|s| B64.decode(s).ok()) else {
                continue;
            };
            let Ok(inst) = serde_json::from_slice::<Value>(&raw) else {
                continue;
            };
            out.push((
                inst["service"].as_str().unwrap_or_default().to_owned(),
                inst["address"].as_str().unwrap_or_default().to_owned(),
            ));
        }
        Ok(out)
    }
}

/// The platform of one scenario.
pub struct Platform {
    /// This scenario's logs.
    pub dir: PathBuf,
    settings: Settings,
    pub pg: FaultProxy,
    pub redis: FaultProxy,
    pub etcd: Etcd,
    db_name: String,
    base_env: Vec<(String, String)>,
    /// Fixed addresses of the single-instance services.
    addrs: [(Svc, SocketAddr); 4],
    /// The processes expected to be running.
    pub procs: Vec<Process>,
    /// Processes that exited, with how.
    pub exited: Vec<(String, ExitStatus)>,
    pub admin: Option<Admin>,
    instances_started: usize,
    http: reqwest::Client,
}

impl Platform {
    /// The backends: a fresh database, the proxies, etcd. Services come with `boot`.
    pub async fn new(settings: &Settings, scenario: &str, opts: Options) -> anyhow::Result<Self> {
        let dir = settings.run_dir.join(scenario);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let pg_url = Url::parse(&settings.postgres_url, 5432)?;
        let redis_url = Url::parse(&settings.redis_url, 6379)?;
        let pg = FaultProxy::start("postgres", pg_url.loopback_addr().await?).await?;
        let redis = FaultProxy::start("redis", redis_url.loopback_addr().await?).await?;

        let db_name = format!(
            "plt_faults_{}_{}",
            scenario.replace('-', "_"),
            &Uuid::new_v4().simple().to_string()[..8]
        );
        let mut admin_db = sqlx::PgConnection::connect(&settings.postgres_url)
            .await
            .with_context(|| format!("connecting to {}", settings.postgres_url))?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE DATABASE \"{db_name}\""
        )))
        .execute(&mut admin_db)
        .await
        .with_context(|| format!("creating database {db_name}"))?;
        let _ = admin_db.close().await;
        live_databases().push(db_name.clone());

        let etcd = match Etcd::start(&settings.etcd_bin, &dir).await {
            Ok(e) => e,
            Err(e) => {
                drop_database(&settings.postgres_url, &db_name).await;
                return Err(e);
            }
        };
        let ports = match free_ports(4) {
            Ok(p) => p,
            Err(e) => {
                drop_database(&settings.postgres_url, &db_name).await;
                return Err(e);
            }
        };
        let at = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
        let addrs = [
            (Svc::Auth, at(0)),
            (Svc::Audit, at(1)),
            (Svc::Authz, at(2)),
            (Svc::Gateway, at(3)),
        ];
        let jwks = format!("http://{}/.well-known/jwks.json", at(0));
        let db_rest = match pg_url.rest.find('?') {
            Some(i) => format!("/{db_name}{}", &pg_url.rest[i..]),
            None => format!("/{db_name}"),
        };
        let mut env: Vec<(String, String)> = vec![
            (
                "PLT_CONFIG_DIR".into(),
                settings.config_dir.display().to_string(),
            ),
            ("PLT_LOG__FORMAT".into(), "json".into()),
            ("PLT_DATABASE__DRIVER".into(), "postgres".into()),
            (
                "PLT_DATABASE__URL".into(),
                pg_url.with_addr(pg.addr(), &db_rest),
            ),
            (
                "PLT_DATABASE__DATA_DIR".into(),
                dir.join("data").display().to_string(),
            ),
            (
                "PLT_NOTIFIER__OUTBOX_DIR".into(),
                dir.join("mail").display().to_string(),
            ),
            ("PLT_REGISTRY__KIND".into(), "etcd".into()),
            ("PLT_REGISTRY__ETCD__ENDPOINT".into(), etcd.endpoint()),
            ("PLT_REGISTRY__ETCD__PREFIX".into(), REGISTRY_PREFIX.into()),
            ("PLT_IDENTITY__AUTH__JWKS_URL".into(), jwks.clone()),
            ("PLT_AUTHZ__AUTH__JWKS_URL".into(), jwks.clone()),
            ("PLT_AUDIT__AUTH__JWKS_URL".into(), jwks.clone()),
            ("PLT_GATEWAY__AUTH__JWKS_URL".into(), jwks),
            ("PLT_GATEWAY__RATE_LIMIT__BACKEND".into(), "redis".into()),
            (
                "PLT_GATEWAY__RATE_LIMIT__REDIS_URL".into(),
                redis_url.with_addr(redis.addr(), &redis_url.rest),
            ),
            (
                "PLT_GATEWAY__RATE_LIMIT__KEY_PREFIX".into(),
                format!("plt:faults:{}:{scenario}:", settings.tag),
            ),
        ];
        for (svc, addr) in addrs {
            env.push((
                format!("PLT_{}__LISTEN", svc.section().to_ascii_uppercase()),
                addr.to_string(),
            ));
        }
        if opts.raise_rate_limits {
            for scope in ["CLIENT", "USER"] {
                for (k, v) in [
                    ("REQUESTS", "1000000"),
                    ("BURST", "1000000"),
                    ("PERIOD", "1s"),
                ] {
                    env.push((format!("PLT_GATEWAY__RATE_LIMIT__{scope}__{k}"), v.into()));
                }
            }
        }
        Ok(Self {
            dir,
            settings: settings.clone(),
            pg,
            redis,
            etcd,
            db_name,
            base_env: env,
            addrs,
            procs: Vec::new(),
            exited: Vec::new(),
            admin: None,
            instances_started: 0,
            http: plt_kernel::tls::http_client_builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        })
    }

    /// Starts the services in dependency order (auth, identity, bootstrap admin, audit,
    /// authz with the admin, gateway), each ready and registered before the next.
    pub async fn boot(&mut self, opts: Options) -> anyhow::Result<()> {
        self.spawn(Svc::Auth, &[]).await?;
        for _ in 0..opts.identity_instances.max(1) {
            self.spawn(Svc::Identity, &[]).await?;
        }
        let admin = self.ensure_admin().await?;
        self.spawn(Svc::Audit, &[]).await?;
        let admins = format!("[{}]", admin.id);
        self.spawn(Svc::Authz, &[("PLT_AUTHZ__BOOTSTRAP_ADMINS", admins)])
            .await?;
        self.spawn(Svc::Gateway, &[]).await?;
        self.admin = Some(admin);
        Ok(())
    }

    pub fn addr(&self, svc: Svc) -> SocketAddr {
        if let Some(p) = self.procs.iter().find(|p| p.svc == svc) {
            return p.addr;
        }
        self.addrs
            .iter()
            .find(|(s, _)| *s == svc)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn gateway(&self) -> SocketAddr {
        self.addr(Svc::Gateway)
    }

    pub fn admin(&self) -> anyhow::Result<&Admin> {
        self.admin.as_ref().context("the platform has no admin yet")
    }

    /// Names of the running instances of `svc`.
    pub fn names(&self, svc: Svc) -> Vec<String> {
        self.procs
            .iter()
            .filter(|p| p.svc == svc)
            .map(|p| p.name.clone())
            .collect()
    }

    pub fn process(&self, name: &str) -> anyhow::Result<&Process> {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .with_context(|| format!("no running process {name}"))
    }

    pub fn binary(&self, svc: Svc) -> PathBuf {
        self.settings.bin_dir.join(svc.binary())
    }

    /// Starts one instance of `svc` without waiting for it. Identity instances get a free
    /// port each; the others their fixed one.
    pub fn start_process(&mut self, svc: Svc, extra: &[(&str, String)]) -> anyhow::Result<String> {
        let (name, addr) = if svc == Svc::Identity {
            self.instances_started += 1;
            let port = free_ports(1)?[0];
            (
                format!("identity-{}", self.instances_started),
                SocketAddr::from(([127, 0, 0, 1], port)),
            )
        } else {
            (svc.section().to_owned(), self.addr(svc))
        };
        let mut env = self.base_env.clone();
        env.push((
            format!("PLT_{}__LISTEN", svc.section().to_ascii_uppercase()),
            addr.to_string(),
        ));
        env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        let log = self.dir.join(format!("{name}.log"));
        let (out, err) = log_file(&log)?;
        let mut cmd = Command::new(self.binary(svc));
        cmd.arg("serve")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        apply_env(&mut cmd, &env);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", self.binary(svc).display()))?;
        self.procs.push(Process {
            name: name.clone(),
            svc,
            addr,
            env,
            child,
        });
        Ok(name)
    }

    /// Starts one instance of `svc` and waits until it is ready and registered.
    pub async fn spawn(&mut self, svc: Svc, extra: &[(&str, String)]) -> anyhow::Result<String> {
        let name = self.start_process(svc, extra)?;
        self.wait_ready(&name).await?;
        Ok(name)
    }

    /// Waits for `/readyz` 200 and for the instance's registration in etcd.
    pub async fn wait_ready(&mut self, name: &str) -> anyhow::Result<()> {
        let started = Instant::now();
        let deadline = started + READY_TIMEOUT;
        let (svc, addr) = {
            let p = self.process(name)?;
            (p.svc, p.addr)
        };
        loop {
            let p = self
                .procs
                .iter_mut()
                .find(|p| p.name == name)
                .context("process vanished")?;
            if let Some(status) = p.child.try_wait()? {
                let name = p.name.clone();
                self.procs.retain(|p| p.name != name);
                self.exited.push((name.clone(), status));
                bail!(
                    "{name} exited during start-up ({status}); see {}",
                    self.dir.join(format!("{name}.log")).display()
                );
            }
            let ready = self
                .http
                .get(format!("http://{addr}/readyz"))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready && self.is_registered(svc, addr).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} was not ready (and registered) within {} s; see {}",
                    READY_TIMEOUT.as_secs(),
                    self.dir.join(format!("{name}.log")).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn is_registered(&self, svc: Svc, addr: SocketAddr) -> bool {
        let addr = addr.to_string();
        self.etcd
            .instances()
            .await
            .is_ok_and(|v| v.iter().any(|(s, a)| s == svc.section() && *a == addr))
    }

    /// Running instances missing from etcd: (name, service, address).
    pub async fn unregistered(&self) -> anyhow::Result<Vec<String>> {
        let registered = self.etcd.instances().await?;
        Ok(self
            .procs
            .iter()
            .filter(|p| {
                let a = p.addr.to_string();
                !registered
                    .iter()
                    .any(|(s, ra)| s == p.svc.section() && *ra == a)
            })
            .map(|p| format!("{} ({})", p.name, p.addr))
            .collect())
    }

    /// Sends `signal` (TERM, KILL) to a process, waits for it to exit (at most `wait`) and
    /// forgets it. Returns how it exited.
    pub async fn stop(
        &mut self,
        name: &str,
        signal: &str,
        wait: Duration,
    ) -> anyhow::Result<ExitStatus> {
        let i = self
            .procs
            .iter()
            .position(|p| p.name == name)
            .with_context(|| format!("no running process {name}"))?;
        let mut p = self.procs.remove(i);
        if let Some(pid) = p.pid() {
            send_signal(pid, signal).await?;
        }
        let status = match tokio::time::timeout(wait, p.child.wait()).await {
            Ok(s) => s?,
            Err(_) => {
                let _ = p.child.kill().await;
                self.exited.push((name.to_owned(), p.child.wait().await?));
                bail!(
                    "{name} did not exit within {} s of SIG{signal}; killed",
                    wait.as_secs()
                );
            }
        };
        self.exited.push((name.to_owned(), status));
        Ok(status)
    }

    /// Processes that should be running but exited (crashes), forgotten once reported.
    pub fn crashed(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.procs.len() {
            if let Ok(Some(status)) = self.procs[i].child.try_wait() {
                let p = self.procs.remove(i);
                out.push(format!("{} exited ({status})", p.name));
                self.exited.push((p.name, status));
            } else {
                i += 1;
            }
        }
        out
    }

    /// Runs `<binary of svc> args…` with the environment of the running `name`.
    pub async fn run_command(&self, name: &str, args: &[&str]) -> anyhow::Result<String> {
        let p = self.process(name)?;
        let mut cmd = Command::new(self.binary(p.svc));
        cmd.args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        apply_env(&mut cmd, &p.env);
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .context("the command took more than 60 s")??;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            bail!(
                "{} {} failed ({}): {}{}",
                p.svc.binary(),
                args.join(" "),
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(stdout)
    }

    /// Creates the admin account in identity (over its HTTP API) and verifies its address
    /// from the development outbox — what `plt dev` does on a first start.
    async fn ensure_admin(&self) -> anyhow::Result<Admin> {
        let identity = self.addr(Svc::Identity);
        let email = format!("admin-{}@example.com", Uuid::new_v4().simple());
        let password = format!("faults admin {}", Uuid::new_v4().simple());
        let resp = self
            .http
            .post(format!("http://{identity}/v1/users"))
            .timeout(Duration::from_secs(10))
            .json(&json!({"email": email, "password": password, "display_name": "Administrator"}))
            .send()
            .await
            .context("creating the admin")?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.as_u16() != 201 {
            bail!("creating the admin: {status} {body}");
        }
        let id: Uuid = body["id"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("no id in {body}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let token = loop {
            if let Some(t) = token_in_outbox(&self.dir.join("mail"), &email) {
                break t;
            }
            if Instant::now() > deadline {
                bail!("no verification mail to {email} in the outbox");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let resp = self
            .http
            .post(format!("http://{identity}/v1/users/verify-email"))
            .json(&json!({"token": token}))
            .send()
            .await
            .context("verifying the admin's address")?;
        if !resp.status().is_success() {
            bail!("verifying the admin's address: {}", resp.status());
        }
        Ok(Admin {
            id,
            email,
            password,
        })
    }

    /// `/metrics` of a process.
    pub async fn metrics(&self, addr: SocketAddr) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("http://{addr}/metrics"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// Stops everything: the services (SIGTERM, SIGKILL after 15 s), etcd, the database.
    pub async fn shutdown(mut self) {
        for p in &self.procs {
            if let Some(pid) = p.pid() {
                let _ = send_signal(pid, "TERM").await;
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        for p in &mut self.procs {
            if tokio::time::timeout_at(deadline, p.child.wait())
                .await
                .is_err()
            {
                eprintln!(
                    "    {} did not stop within 15 s of SIGTERM; killing it",
                    p.name
                );
                let _ = p.child.kill().await;
            }
        }
        self.procs.clear();
        let _ = self.etcd.stop().await;
        drop_database(&self.settings.postgres_url, &self.db_name).await;
        let _ = std::fs::remove_dir_all(self.dir.join("mail"));
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

/// The inherited environment without any `PLT_*` variable (the suite's own, such as
/// `PLT_TEST_POSTGRES_URL`, would be unknown configuration keys), then `env`.
fn apply_env(cmd: &mut Command, env: &[(String, String)]) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PLT_") {
            cmd.env_remove(&k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
}

/// Databases created and not yet dropped (dropped on an interrupted run too).
fn live_databases() -> std::sync::MutexGuard<'static, Vec<String>> {
    static LIVE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Drops every database a scenario left behind (after an interruption).
pub async fn drop_live_databases(url: &str) {
    let names = std::mem::take(&mut *live_databases());
    for name in names {
        drop_database(url, &name).await;
    }
}

async fn drop_database(url: &str, name: &str) {
    live_databases().retain(|n| n != name);
    let result = async {
        let mut c = sqlx::PgConnection::connect(url).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(&mut c)
        .await?;
        c.close().await
    }
    .await;
    if let Err(e) = result {
        eprintln!("    could not drop database {name}: {e}");
    }
}

/// The verification token of the newest mail to `to` in an outbox directory.
fn token_in_outbox(dir: &Path, to: &str) -> Option<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    // Names are UUIDv7: time-ordered.
    files.sort();
    files.iter().rev().find_map(|p| {
        let mail: Value = serde_json::from_slice(&std::fs::read(p).ok()?).ok()?;
        if !mail["to"].as_str()?.eq_ignore_ascii_case(to) {
            return None;
        }
        mail["body"]
            .as_str()?
            .lines()
            .find_map(|l| l.strip_prefix("Or use this token: "))
            .map(|t| t.trim().to_owned())
    })
}

/// Sum of the calls a service handled (HTTP and gRPC) in a `/metrics` text, without health,
/// readiness, metrics and reflection traffic.
pub fn handled_calls(metrics: &str) -> f64 {
    let mut sum = 0.0;
    for line in metrics.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, l.trim_end_matches('}')),
            None => (series, ""),
        };
        let label = |key: &str| -> Option<&str> {
            let start = labels.find(&format!("{key}=\""))? + key.len() + 2;
            let len = labels[start..].find('"')?;
            Some(&labels[start..start + len])
        };
        let counted = match name {
            "http_server_requests_total" => {
                !matches!(label("route"), Some("/healthz" | "/readyz" | "/metrics"))
            }
            "grpc_server_handled_total" => !label("grpc_service").is_some_and(|s| {
                s.starts_with("grpc.health.") || s.starts_with("grpc.reflection.")
            }),
            _ => false,
        };
        if counted && let Ok(v) = value.trim().parse::<f64>() {
            sum += v;
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse(
            "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable",
            5432,
        )
        .unwrap();
        assert_eq!(u.host, "127.0.0.1");
        assert_eq!(u.port, 5432);
        assert_eq!(u.rest, "/postgres?sslmode=disable");
        let addr: SocketAddr = "127.0.0.1:7000".parse().unwrap();
        assert_eq!(
            u.with_addr(addr, "/x?sslmode=disable"),
            "postgres://postgres@127.0.0.1:7000/x?sslmode=disable"
        );
        let r = Url::parse("redis://127.0.0.1", 6379).unwrap();
        assert_eq!(
            (r.port, r.rest.as_str(), r.userinfo.as_deref()),
            (6379, "", None)
        );
        assert_eq!(r.with_addr(addr, ""), "redis://127.0.0.1:7000");
    }

    #[test]
    fn counts_handled_calls() {
        let text = r#"# TYPE http_server_requests_total counter
http_server_requests_total{service="identity",method="GET",route="/v1/users/{id}",status="200"} 7
http_server_requests_total{service="identity",method="GET",route="/readyz",status="200"} 100
grpc_server_handled_total{service="identity",grpc_service="plt.identity.v1.IdentityService",grpc_method="VerifyCredentials",grpc_code="Ok"} 3
grpc_server_handled_total{service="identity",grpc_service="grpc.health.v1.Health",grpc_method="Check",grpc_code="Ok"} 9
db_pool_connections{service="identity",state="idle"} 4
"#;
        assert_eq!(handled_calls(text), 10.0);
    }
}
