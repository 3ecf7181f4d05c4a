//! `plt new service <name>`: a feature service generated from `cli/templates/service`, as
//! two crates of its own — `services/<name>-contract` (the `.proto`, from which plt-build
//! generates the trait, adapters, clients, access rules and OpenAPI fragment) and
//! `services/<name>` (configuration, core, store with PostgreSQL and SQLite migrations,
//! tests over both protocols and both backends). Nothing else in the workspace changes:
//! the workspace takes every crate under `services/`, and `plt dev` runs every crate that
//! declares `[package.metadata.plt] service`.

use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// The template's files: (path under `service/` or `contract/`, with tokens; content).
const FILES: &[(&str, &str)] = &[
    (
        "contract/Cargo.toml",
        include_str!("../templates/service/contract/Cargo.toml"),
    ),
    (
        "contract/build.rs",
        include_str!("../templates/service/contract/build.rs"),
    ),
    (
        "contract/proto/__name__.proto",
        include_str!("../templates/service/contract/proto/__name__.proto"),
    ),
    (
        "contract/src/lib.rs",
        include_str!("../templates/service/contract/src/lib.rs"),
    ),
    (
        "service/Cargo.toml",
        include_str!("../templates/service/service/Cargo.toml"),
    ),
    (
        "service/config.yaml",
        include_str!("../templates/service/service/config.yaml"),
    ),
    (
        "service/migrations/postgres/20261207000001___name__.sql",
        include_str!(
            "../templates/service/service/migrations/postgres/20261207000001___name__.sql"
        ),
    ),
    (
        "service/migrations/sqlite/20261207000001___name__.sql",
        include_str!("../templates/service/service/migrations/sqlite/20261207000001___name__.sql"),
    ),
    (
        "service/src/config.rs",
        include_str!("../templates/service/service/src/config.rs"),
    ),
    (
        "service/src/core.rs",
        include_str!("../templates/service/service/src/core.rs"),
    ),
    (
        "service/src/lib.rs",
        include_str!("../templates/service/service/src/lib.rs"),
    ),
    (
        "service/src/main.rs",
        include_str!("../templates/service/service/src/main.rs"),
    ),
    (
        "service/src/store.rs",
        include_str!("../templates/service/service/src/store.rs"),
    ),
    (
        "service/tests/api.rs",
        include_str!("../templates/service/service/tests/api.rs"),
    ),
];

/// Names taken by the platform.
const RESERVED: &[&str] = &[
    "identity",
    "auth",
    "authz",
    "audit",
    "gateway",
    "plt",
    "api",
    "kernel",
    "runtime",
    "contracts",
    "client",
    "registry",
    "db",
    "build",
    "testkit",
];

/// Why `name` cannot name a new service, if it cannot.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = name.len() >= 2
        && name.len() <= 30
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        return Err(format!(
            "{name:?}: a service name is 2 to 30 of a-z and 0-9, starting with a letter (it names the crates, the registry entry, the database schema, the permissions and the URL path)"
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!("{name:?} is taken by the platform"));
    }
    Ok(())
}

/// The template's tokens for service `name`: `notes` -> NOTES, Notes, notes, Note, note.
fn tokens(name: &str) -> [(&'static str, String); 5] {
    let item = name
        .strip_suffix('s')
        .filter(|s| s.len() >= 2)
        .unwrap_or(name)
        .to_owned();
    let camel = |s: &str| {
        let mut c = s.chars();
        c.next()
            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
            .unwrap_or_default()
    };
    [
        ("__NAME__", name.to_ascii_uppercase()),
        ("__Name__", camel(name)),
        ("__name__", name.to_owned()),
        ("__Item__", camel(&item)),
        ("__item__", item),
    ]
}

fn render(text: &str, tokens: &[(&'static str, String)]) -> String {
    tokens
        .iter()
        .fold(text.to_owned(), |t, (token, value)| t.replace(token, value))
}

/// Writes the service's crates under `root/services/`; returns the directories created
/// (the service's, then its contract's).
pub fn new_service(root: &Path, name: &str) -> anyhow::Result<Vec<PathBuf>> {
    check_name(name).map_err(anyhow::Error::msg)?;
    let services = root.join("services");
    if !root.join("Cargo.toml").is_file() || !services.is_dir() {
        anyhow::bail!(
            "{} is not the plt workspace (no Cargo.toml and services/ there): run this from the repository root",
            root.display()
        );
    }
    let dirs = [
        ("service/", services.join(name)),
        ("contract/", services.join(format!("{name}-contract"))),
    ];
    for (_, d) in &dirs {
        if d.exists() {
            anyhow::bail!("{} already exists", d.display());
        }
    }
    let tokens = tokens(name);
    let mut rust_files = Vec::new();
    for (path, content) in FILES {
        let (prefix, dir) = dirs
            .iter()
            .find(|(p, _)| path.starts_with(p))
            .context("template file outside service/ and contract/")?;
        let dest = dir.join(render(&path[prefix.len()..], &tokens));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&dest, render(content, &tokens))
            .with_context(|| format!("writing {}", dest.display()))?;
        if dest.extension().is_some_and(|e| e == "rs") {
            rust_files.push(dest);
        }
    }
    // Line widths depend on the name: format the Rust files as `cargo fmt` would.
    let formatted = std::process::Command::new("rustfmt")
        .args(["--edition", "2024"])
        .args(&rust_files)
        .status();
    if !formatted.is_ok_and(|s| s.success()) {
        eprintln!("plt: rustfmt did not run; run `cargo fmt` before committing");
    }
    Ok(dirs.into_iter().map(|(_, d)| d).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("notes").is_ok());
        assert!(check_name("billing2").is_ok());
        for bad in ["", "n", "Notes", "my-notes", "2notes", "authz", "notes_x"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn renders_every_token_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("Cargo.toml"), "[workspace]\n").unwrap();
        std::fs::create_dir(dir.path().join("services")).unwrap();
        let made = new_service(dir.path(), "invoices").unwrap();
        assert_eq!(made.len(), 2);
        let lib = std::fs::read_to_string(made[0].join("src/lib.rs")).unwrap();
        assert!(lib.contains("pub struct Invoices;"), "{lib}");
        let proto = std::fs::read_to_string(made[1].join("proto/invoices.proto")).unwrap();
        assert!(proto.contains("rpc CreateInvoice(CreateInvoiceRequest) returns (Invoice)"));
        assert!(proto.contains("google/api/annotations.proto"));
        for (path, _) in FILES {
            let rendered = render(path, &tokens("invoices"));
            let base = if path.starts_with("service/") {
                &made[0]
            } else {
                &made[1]
            };
            let file = base.join(&rendered[rendered.find('/').unwrap() + 1..]);
            let text = std::fs::read_to_string(&file).unwrap();
            for (token, _) in tokens("invoices") {
                assert!(!text.contains(token), "{} keeps {token}", file.display());
            }
        }
        assert!(new_service(dir.path(), "invoices").is_err());
    }
}
