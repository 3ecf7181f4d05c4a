//! Feature services under `plt dev`: every workspace crate that names its service in
//! `[package.metadata.plt] service = "<name>"` (what `plt new service` generates) is built
//! and run as its own process beside the core services, with no change to plt itself. They
//! all find each other through a registry `plt dev` hosts (the Consul agent API subset of
//! `plt-registry`), so a feature service listening on any port is registered, routed by the
//! gateway under `/api`, documented in `/openapi.json`, and its permissions land in authz.

use anyhow::Context as _;
use plt_registry::ServiceRegistry;
use serde_json::Value;
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::process::{Child, Command};

/// A feature service found in the workspace.
#[derive(Debug, Clone)]
pub struct Feature {
    /// Its registry name (`notes`).
    pub service: String,
    /// Its package and binary (`notes-service`).
    pub package: String,
    pub binary: String,
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// The feature services of the workspace in the current directory: none outside one (an
/// installed `plt` run anywhere), and none, with a warning, when there is no cargo to ask.
pub fn discover() -> anyhow::Result<Vec<Feature>> {
    if !Path::new("Cargo.toml").is_file() {
        return Ok(Vec::new());
    }
    let out = match std::process::Command::new(cargo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .stderr(Stdio::inherit())
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "plt dev: no cargo on PATH ({}), so no feature services of ./Cargo.toml are run",
                cargo()
            );
            return Ok(Vec::new());
        }
        Err(e) => {
            return Err(e).context("running cargo metadata to find feature services");
        }
    };
    if !out.status.success() {
        anyhow::bail!("cargo metadata failed ({})", out.status);
    }
    let meta: Value = serde_json::from_slice(&out.stdout).context("reading cargo metadata")?;
    let mut found = Vec::new();
    for p in meta["packages"].as_array().into_iter().flatten() {
        let Some(service) = p["metadata"]["plt"]["service"].as_str() else {
            continue;
        };
        let binary = p["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| {
                t["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"))
            })
            .and_then(|t| t["name"].as_str())
            .with_context(|| {
                format!("{} declares service {service} but has no binary", p["name"])
            })?;
        found.push(Feature {
            service: service.to_owned(),
            package: p["name"].as_str().unwrap_or_default().to_owned(),
            binary: binary.to_owned(),
        });
    }
    found.sort_by(|a, b| a.service.cmp(&b.service));
    Ok(found)
}

/// Builds the feature services' binaries (once; cargo skips what is up to date) and returns
/// each one's executable.
pub fn build(features: &[Feature]) -> anyhow::Result<Vec<PathBuf>> {
    if features.is_empty() {
        return Ok(Vec::new());
    }
    let mut cmd = std::process::Command::new(cargo());
    cmd.args(["build", "--message-format=json-render-diagnostics"]);
    for f in features {
        cmd.args(["-p", &f.package]);
    }
    eprintln!(
        "plt dev: building feature services: {}",
        features
            .iter()
            .map(|f| f.package.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo build")?;
    if !out.status.success() {
        anyhow::bail!("building the feature services failed ({})", out.status);
    }
    let mut exes = Vec::new();
    for f in features {
        let exe = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| {
                m["reason"] == "compiler-artifact" && m["target"]["name"] == f.binary.as_str()
            })
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .with_context(|| format!("cargo built no executable {}", f.binary))?;
        exes.push(exe);
    }
    Ok(exes)
}

/// The order to start `features` in (each after the feature services it calls), from each
/// binary's `manifest`; a dependency that is neither a core service nor a feature service of
/// the workspace, or a cycle, is refused with its name.
pub fn start_order(features: &[Feature], exes: &[PathBuf]) -> anyhow::Result<Vec<usize>> {
    let mut calls: Vec<Vec<String>> = Vec::new();
    for (f, exe) in features.iter().zip(exes) {
        let out = std::process::Command::new(exe)
            .arg("manifest")
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {} manifest", f.binary))?;
        let m: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("reading {}'s manifest", f.binary))?;
        calls.push(
            m["calls"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.as_str().map(str::to_owned))
                .collect(),
        );
    }
    let calls_ref: Vec<Vec<&str>> = calls
        .iter()
        .map(|c| c.iter().map(String::as_str).collect())
        .collect();
    let services: Vec<(&str, &[&str])> = features
        .iter()
        .zip(&calls_ref)
        .map(|(f, c)| (f.service.as_str(), c.as_slice()))
        .collect();
    let order = plt_runtime::start_order(&services, CORE)?;
    Ok(order
        .iter()
        .filter_map(|name| features.iter().position(|f| f.service == *name))
        .collect())
}

/// The services `plt dev` starts itself.
const CORE: &[&str] = &["identity", "auth", "authz", "audit", "gateway"];

/// A running feature service.
pub struct Running {
    pub feature: Feature,
    pub addr: SocketAddr,
    child: Child,
}

/// Starts `feature` from `exe`, registered in `registry` (at `agent`), and waits until it
/// registered itself.
pub async fn spawn(
    feature: &Feature,
    exe: &Path,
    agent: &str,
    registry: &Arc<dyn ServiceRegistry>,
    auth: SocketAddr,
    env: &[(String, String)],
    // The addresses of its instances started before: this one is the instance registered at
    // another address.
    others: &[SocketAddr],
) -> anyhow::Result<Running> {
    let section = feature.service.to_uppercase().replace('-', "_");
    let mut cmd = Command::new(exe);
    cmd.arg("serve")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .env("PLT_REGISTRY__KIND", "consul")
        .env("PLT_REGISTRY__CONSUL__AGENT", agent)
        .env(
            format!("PLT_{section}__AUTH__JWKS_URL"),
            format!("http://{auth}/.well-known/jwks.json"),
        );
    // Another feature service's own variables (`PLT_BILLING__PERIOD` for blog) are not
    // this one's: its loader would refuse a section it does not know.
    let own = format!("PLT_{section}__");
    for (k, _) in std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v))) {
        if let Some(rest) = k.strip_prefix("PLT_")
            && let Some((sect, _)) = rest.split_once("__")
            && !k.starts_with(&own)
            && !plt_kernel::config::KNOWN_SECTIONS.contains(&sect.to_ascii_lowercase().as_str())
            && !plt_kernel::config::is_reserved_var(&k)
        {
            cmd.env_remove(&k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", exe.display()))?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "{} exited during start-up ({status}); see its log above",
                feature.binary
            );
        }
        if let Ok(instances) = registry.discover(&feature.service).await
            && let Some(addr) = instances
                .iter()
                .filter_map(|i| i.address.parse::<SocketAddr>().ok())
                .find(|a| !others.contains(a))
        {
            return Ok(Running {
                feature: feature.clone(),
                addr,
                child,
            });
        }
        if Instant::now() > deadline {
            anyhow::bail!("{} did not register within 60 s", feature.binary);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops the feature services (SIGTERM: deregister, drain, close), newest first.
pub async fn stop(mut running: Vec<Running>) -> anyhow::Result<()> {
    let mut failed = Vec::new();
    while let Some(mut r) = running.pop() {
        failed.extend(crate::processes::terminate(&mut r.child, &r.feature.binary).await);
    }
    if failed.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(failed.join("; "))
    }
}
