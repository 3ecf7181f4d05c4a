//! Established reverse proxies, run beside the gateway in front of the same upstream so
//! that one run shows what the machine allows a proxy hop to cost: nginx and HAProxy, each
//! as its own process (configuration written to a temporary directory), keep-alive
//! connections to the upstream, `workers` worker processes or threads, no logging.

use anyhow::Context as _;
use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// Which proxy.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Haproxy,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "HAProxy",
        }
    }
}

/// A running proxy; stopped (killed) when dropped.
pub struct Proxy {
    pub addr: SocketAddr,
    pub version: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Proxy {
    /// The process id of the proxy's main process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free right now (the proxy binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn nginx_config(dir: &Path, listen: u16, upstream: SocketAddr, workers: usize) -> String {
    let d = dir.display();
    format!(
        r#"daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  upstream bench {{ server {upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{listen};
    location / {{
      proxy_pass http://bench;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering on;
    }}
  }}
}}
"#
    )
}

fn haproxy_config(dir: &Path, listen: u16, upstream: SocketAddr, workers: usize) -> String {
    let d = dir.display();
    format!(
        r#"global
  nbthread {workers}
  maxconn 4096
  pidfile {d}/haproxy.pid
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend bench_in
  bind 127.0.0.1:{listen}
  default_backend bench
backend bench
  server up {upstream}
"#
    )
}

/// The first line `bin -v` prints (both print their version so, nginx on stderr).
fn version(bin: &Path) -> String {
    let out = Command::new(bin).arg("-v").output();
    out.ok()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stderr).to_string()
                + &String::from_utf8_lossy(&o.stdout);
            text.lines().next().unwrap_or("").trim().to_owned()
        })
        .unwrap_or_default()
}

/// Whether `bin` can be run at all (installed, on PATH or at that path).
pub fn available(bin: &Path) -> bool {
    Command::new(bin)
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Starts `kind` from `bin` in front of `upstream` and waits until it accepts connections.
pub fn start(
    kind: Kind,
    bin: &PathBuf,
    upstream: SocketAddr,
    workers: usize,
) -> anyhow::Result<Proxy> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    let (file, text) = match kind {
        Kind::Nginx => (
            "nginx.conf",
            nginx_config(dir.path(), port, upstream, workers),
        ),
        Kind::Haproxy => (
            "haproxy.cfg",
            haproxy_config(dir.path(), port, upstream, workers),
        ),
    };
    let conf = dir.path().join(file);
    std::fs::write(&conf, text)?;
    let mut cmd = Command::new(bin);
    match kind {
        Kind::Nginx => {
            cmd.arg("-p").arg(dir.path()).arg("-c").arg(&conf);
        }
        Kind::Haproxy => {
            cmd.arg("-db").arg("-f").arg(&conf);
        }
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{} exited at start: {status}", kind.name());
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("{} did not listen on {addr} within 10 s", kind.name());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Proxy {
        addr,
        version: version(bin),
        child,
        _dir: dir,
    })
}

/// CPU time used so far by process `pid` and its child processes (nginx's workers).
pub fn tree_cpu(pid: u32) -> Duration {
    let mut total = Duration::ZERO;
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return total;
    };
    for p in procs.flatten() {
        let Some(this) = p.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // After the name: state, ppid, …; utime and stime are fields 14 and 15 of the line.
        let ppid = f.get(1).and_then(|v| v.parse::<u32>().ok()).unwrap_or(0);
        if this != pid && ppid != pid {
            continue;
        }
        let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        total += Duration::from_millis(ticks * 10);
    }
    total
}
