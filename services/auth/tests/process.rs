//! The binary as an operator runs it.

use std::{path::PathBuf, process::Command};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_auth-service"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env(
            "PLT_CONFIG_DIR",
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../config"),
        );
    c
}

#[test]
fn production_refuses_the_development_encryption_key() {
    let out = bin()
        .env("PLT_ENV", "production")
        .env("PLT_DATABASE__URL", "postgres://localhost/plt")
        .args(["config", "print"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth.keys.encryption_key"), "{err}");
}

#[test]
fn bad_values_name_their_keys() {
    for (var, value, key) in [
        (
            "PLT_AUTH__KEYS__ENCRYPTION_KEY",
            "c2hvcnQ=",
            "auth.keys.encryption_key",
        ),
        ("PLT_AUTH__ACCESS_TOKEN_TTL", "3d", "auth.access_token_ttl"),
        (
            "PLT_AUTH__TRUSTED_PROXIES",
            "[10.0.0.0/99]",
            "auth.trusted_proxies[0]",
        ),
        (
            "PLT_CLIENTS__IDENTITY__PROTOCOL",
            "carrier-pigeon",
            "clients.identity.protocol",
        ),
        ("PLT_REGISTRY__KIND", "zookeeper", "registry.kind"),
    ] {
        let out = bin()
            .env(var, value)
            .args(["config", "print"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{var}={value}: {err}");
    }
}

#[test]
fn keys_rotate_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let out = bin()
            .env("PLT_DATABASE__DATA_DIR", dir.path())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let before = run(&["keys", "list"]);
    let active_before: Vec<&str> = before.lines().filter(|l| l.contains("\tactive")).collect();
    assert_eq!(active_before.len(), 1, "{before}");
    let rotated = run(&["keys", "rotate"]);
    assert!(rotated.starts_with("rotated: "), "{rotated}");
    let lines: Vec<&str> = rotated.lines().skip(1).collect();
    assert_eq!(lines.iter().filter(|l| l.contains("\tactive")).count(), 1);
    assert_eq!(lines.iter().filter(|l| l.contains("\tnext")).count(), 1);
    assert_eq!(lines.iter().filter(|l| l.contains("\tretiring")).count(), 1);
    let old_kid = active_before[0].split('\t').next().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with(old_kid) && l.contains("\tretiring"))
    );
    // The output never shows key material.
    assert!(!rotated.contains("seed") && !rotated.to_lowercase().contains("private"));
}
