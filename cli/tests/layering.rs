//! The layering ARCHITECTURE.md states, checked on the workspace's real dependency graph
//! (`cargo metadata`): a service never depends on another service, a library crate never
//! depends on a service, the kernel depends on no internal crate, and test helpers
//! (`plt-testkit`) are never a normal dependency of a service or library. Only the composition
//! root (`cli`) and the tools beside it (`tools/*`, `faults`) may depend on services. A
//! feature service's contract crate (`services/<name>-contract`) is a library: services call
//! each other through it.

use serde_json::Value;
use std::{collections::BTreeMap, path::Path};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Kernel,
    Library,
    TestKit,
    Service,
    /// The composition root and tools: may depend on anything.
    Root,
}

/// A workspace package's layer, from where it lives.
fn layer(name: &str, dir: &Path, root: &Path) -> Layer {
    let rel = dir.strip_prefix(root).unwrap_or(dir);
    let first = rel
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    match (first.as_str(), name) {
        (_, "plt-kernel") => Layer::Kernel,
        (_, "plt-testkit") => Layer::TestKit,
        ("crates", _) => Layer::Library,
        ("services", n) if n.ends_with("-contract") => Layer::Library,
        ("services", _) => Layer::Service,
        _ => Layer::Root,
    }
}

/// One dependency edge inside the workspace: (from, to, kind) where kind is `normal`, `dev`
/// or `build`.
type Edge = (String, String, String);

/// What is wrong with `edges` given each package's layer.
fn violations(layers: &BTreeMap<String, Layer>, edges: &[Edge]) -> Vec<String> {
    let mut out = Vec::new();
    for (from, to, kind) in edges {
        let (Some(&f), Some(&t)) = (layers.get(from), layers.get(to)) else {
            continue;
        };
        let why = match (f, t) {
            (Layer::Service, Layer::Service) => {
                Some("a service never depends on another service's crate (use its contract)")
            }
            (Layer::Library | Layer::Kernel | Layer::TestKit, Layer::Service) => {
                Some("a library crate never depends on a service")
            }
            (Layer::Kernel, _) => Some("the kernel depends on no internal crate"),
            (Layer::Service | Layer::Library, Layer::TestKit) if kind != "dev" => {
                Some("test helpers are a dev-dependency only")
            }
            _ => None,
        };
        if let Some(why) = why {
            out.push(format!("{from} -> {to} ({kind}): {why}"));
        }
    }
    out
}

fn metadata() -> (BTreeMap<String, Layer>, Vec<Edge>) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("running cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata JSON");
    let root = Path::new(v["workspace_root"].as_str().expect("workspace_root"));
    let packages = v["packages"].as_array().expect("packages");
    let mut layers = BTreeMap::new();
    for p in packages {
        let name = p["name"].as_str().unwrap_or_default();
        let manifest = Path::new(p["manifest_path"].as_str().unwrap_or_default());
        let dir = manifest.parent().unwrap_or(root);
        layers.insert(name.to_owned(), layer(name, dir, root));
    }
    let mut edges = Vec::new();
    for p in packages {
        let from = p["name"].as_str().unwrap_or_default();
        for d in p["dependencies"].as_array().into_iter().flatten() {
            let to = d["name"].as_str().unwrap_or_default();
            if layers.contains_key(to) {
                let kind = d["kind"].as_str().unwrap_or("normal").to_owned();
                edges.push((from.to_owned(), to.to_owned(), kind));
            }
        }
    }
    (layers, edges)
}

#[test]
fn the_workspace_keeps_its_layers() {
    let (layers, edges) = metadata();
    // The check sees the real graph: services, libraries and the kernel are all there.
    for (name, layer) in [
        ("plt-kernel", Layer::Kernel),
        ("plt-client", Layer::Library),
        ("identity-service", Layer::Service),
        ("api-gateway", Layer::Service),
        ("plt", Layer::Root),
    ] {
        assert_eq!(layers.get(name), Some(&layer), "{name}");
    }
    assert!(
        edges
            .iter()
            .any(|(f, t, _)| f == "auth-service" && t == "plt-client")
    );
    let bad = violations(&layers, &edges);
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

#[test]
fn contract_crates_beside_services_are_libraries() {
    let root = Path::new("/w");
    let at = |p: &str| root.join(p);
    assert_eq!(
        layer("notes-contract", &at("services/notes-contract"), root),
        Layer::Library
    );
    assert_eq!(
        layer("notes-service", &at("services/notes"), root),
        Layer::Service
    );
    assert_eq!(
        layer("plt-runtime", &at("crates/runtime"), root),
        Layer::Library
    );
}

#[test]
fn each_kind_of_violation_is_caught() {
    let layers: BTreeMap<String, Layer> = [
        ("plt-kernel", Layer::Kernel),
        ("plt-db", Layer::Library),
        ("plt-testkit", Layer::TestKit),
        ("auth-service", Layer::Service),
        ("identity-service", Layer::Service),
        ("plt", Layer::Root),
    ]
    .into_iter()
    .map(|(n, l)| (n.to_owned(), l))
    .collect();
    let edge = |f: &str, t: &str, k: &str| (f.to_owned(), t.to_owned(), k.to_owned());
    let allowed = [
        edge("auth-service", "plt-db", "normal"),
        edge("plt-db", "plt-kernel", "normal"),
        edge("plt-db", "plt-testkit", "dev"),
        edge("plt", "identity-service", "normal"),
    ];
    assert!(violations(&layers, &allowed).is_empty());
    for bad in [
        edge("auth-service", "identity-service", "normal"),
        edge("auth-service", "identity-service", "dev"),
        edge("plt-db", "auth-service", "normal"),
        edge("plt-kernel", "plt-db", "normal"),
        edge("auth-service", "plt-testkit", "normal"),
    ] {
        assert_eq!(
            violations(&layers, std::slice::from_ref(&bad)).len(),
            1,
            "{bad:?}"
        );
    }
}
