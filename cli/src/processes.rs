//! `plt dev --processes`: every service as its own OS process (`plt serve <service>`), on
//! the configured ports, finding the others through the static registry — the same platform
//! as the one-process mode, with process boundaries like a deployment's.

use crate::dev::{Banner, DevArgs, ensure_admin, source};
use anyhow::Context as _;
use plt_kernel::lifecycle::shutdown_signal;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};
use tokio::process::{Child, Command};

struct Service {
    name: &'static str,
    addr: SocketAddr,
    child: Child,
}

/// Starts `plt serve <name>` and waits until its `/readyz` answers 200.
async fn spawn(
    name: &'static str,
    addr: SocketAddr,
    data_dir: &Path,
    extra_env: &[(&str, String)],
) -> anyhow::Result<Service> {
    let exe = std::env::current_exe().context("locating the plt executable")?;
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .arg(name)
        .arg("--data-dir")
        .arg(data_dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if std::env::var_os("PLT_REGISTRY__KIND").is_none() {
        cmd.env("PLT_REGISTRY__KIND", "static");
    }
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let http = plt_kernel::tls::http_client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("{name} exited during start-up ({status}); see its log above");
        }
        let ready = http
            .get(format!("http://{addr}/readyz"))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return Ok(Service { name, addr, child });
        }
        if Instant::now() > deadline {
            anyhow::bail!("{name} was not ready at http://{addr}/readyz within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Asks each service to stop (SIGTERM, so it deregisters and drains) in reverse start order,
/// and waits for it.
/// Waits (at most 10 s) until the service at `addr` says authz took its permissions.
async fn wait_declared(addr: SocketAddr) {
    let http = plt_kernel::tls::http_client();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let declared = async {
            let v: serde_json::Value = http
                .get(format!("http://{addr}{}", plt_runtime::PERMISSIONS_PATH))
                .timeout(Duration::from_millis(500))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["declared"].as_bool()
        }
        .await;
        if declared == Some(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    tracing::warn!(%addr, "the service has not declared its permissions to authz yet");
}

/// Stops `child` like Ctrl-C would (SIGTERM: deregister, drain, close), killing it after 20 s;
/// what went wrong, if anything.
pub(crate) async fn terminate(child: &mut Child, name: &str) -> Option<String> {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .await;
    }
    match tokio::time::timeout(Duration::from_secs(20), child.wait()).await {
        Ok(Ok(status)) if status.success() => None,
        Ok(Ok(status)) => Some(format!("{name} exited with {status}")),
        Ok(Err(e)) => Some(format!("{name}: {e}")),
        Err(_) => {
            let _ = child.kill().await;
            Some(format!("{name} did not stop within 20 s and was killed"))
        }
    }
}

async fn stop_all(services: &mut Vec<Service>) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    while let Some(mut s) = services.pop() {
        failed.extend(terminate(&mut s.child, s.name).await);
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(failed.join("; "))
    }
}

pub async fn run(args: DevArgs, data_dir: PathBuf) -> anyhow::Result<()> {
    let started = Instant::now();
    let s = source(Some(&data_dir));
    let listen = |addr: SocketAddr| -> SocketAddr {
        if addr.ip().is_unspecified() {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        } else {
            addr
        }
    };
    let auth_addr = listen(
        s.load::<auth_service::config::AuthConfig>("auth")?
            .service
            .listen,
    );
    let identity_addr = listen(
        s.load::<identity_service::config::IdentityConfig>("identity")?
            .service
            .listen,
    );
    let audit_addr = listen(
        s.load::<audit_service::config::AuditConfig>("audit")?
            .service
            .listen,
    );
    let authz_addr = listen(
        s.load::<authz_service::config::AuthzConfig>("authz")?
            .service
            .listen,
    );
    let gateway_addr = listen(
        s.load::<api_gateway::config::GatewayConfig>("gateway")?
            .service
            .listen,
    );

    let mut services = Vec::new();
    let result = async {
        services.push(spawn("auth", auth_addr, &data_dir, &[]).await?);
        services.push(spawn("identity", identity_addr, &data_dir, &[]).await?);
        let admin = ensure_admin(identity_addr, &data_dir, &args).await?;
        services.push(spawn("audit", audit_addr, &data_dir, &[]).await?);
        let admins = ("PLT_AUTHZ__BOOTSTRAP_ADMINS", format!("[{}]", admin.id));
        services.push(spawn("authz", authz_addr, &data_dir, &[admins]).await?);
        services.push(spawn("gateway", gateway_addr, &data_dir, &[]).await?);
        // Identity and audit declare their permissions to authz as it comes up.
        for addr in [identity_addr, audit_addr] {
            wait_declared(addr).await;
        }
        Ok::<_, anyhow::Error>(admin)
    }
    .await;
    let admin = match result {
        Ok(a) => a,
        Err(e) => {
            let _ = stop_all(&mut services).await;
            return Err(e);
        }
    };
    Banner {
        started,
        gateway: gateway_addr,
        services: services
            .iter()
            .filter(|s| s.name != "gateway")
            .map(|s| (s.name.to_owned(), s.addr))
            .collect(),
        admin,
        data_dir,
        processes: true,
    }
    .print();
    tokio::select! {
        _ = shutdown_signal() => {}
        // A service that dies takes the platform down with it, loudly.
        (name, status) = async {
            loop {
                for s in services.iter_mut() {
                    if let Ok(Some(status)) = s.child.try_wait() {
                        return (s.name, status);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        } => {
            eprintln!("plt: {name} exited ({status}); stopping the others");
        }
    }
    stop_all(&mut services).await
}
