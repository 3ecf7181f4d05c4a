//! The binary as an operator runs it: configuration errors name their keys; `grant` and
//! `revoke` on the command line (idempotent, refusing bad ids and unknown roles, the record
//! committed to the outbox with the change); bootstrap admins are granted once across
//! restarts.

mod common;

use authz_service::{connect_db, store::for_db};
use std::{path::Path, process::Command};
use uuid::Uuid;

fn bin(data_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_authz-service"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PLT_CONFIG_DIR", plt_kernel::testing::config_dir())
        .env("PLT_DATABASE__DATA_DIR", data_dir)
        .env("PLT_LOG__LEVEL", "error")
        // Nothing listens there: the CLI must still work, and say so.
        .env("PLT_REGISTRY__STATIC__AUDIT", "[127.0.0.1:1]")
        .env("PLT_REGISTRY__STATIC__AUTH", "[127.0.0.1:1]");
    c
}

#[test]
fn config_print_shows_the_authz_section() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin(dir.path()).args(["config", "print"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("authz:") && text.contains("staleness_bound: 5s"),
        "{text}"
    );
    assert!(text.contains("listen: 127.0.0.1:8083"), "{text}");
}

#[test]
fn bad_values_name_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, key) in [
        ("PLT_AUTHZ__STALENESS_BOUND", "6s", "authz.staleness_bound"),
        ("PLT_AUTHZ__STALENESS_BOUND", "0s", "authz.staleness_bound"),
        (
            "PLT_AUTHZ__BOOTSTRAP_ADMINS",
            "[not-a-uuid]",
            "authz.bootstrap_admins[0]",
        ),
        (
            "PLT_CLIENTS__AUDIT__PROTOCOL",
            "carrier-pigeon",
            "clients.audit.protocol",
        ),
        ("PLT_AUTHZ__AUDIT__QUEUE_CAPACITY", "10", "authz.audit"),
        ("PLT_OUTBOX__LEASE", "1s", "outbox.lease"),
        ("PLT_OUTBOX__BATCH_SIZE", "0", "outbox.batch_size"),
        (
            "PLT_AUTHZ__AUTH__JWKS_URL",
            "file:///etc/keys",
            "authz.auth.jwks_url",
        ),
        ("PLT_AUTHZ__CACHE__MAX_USERS", "0", "authz.cache.max_users"),
    ] {
        let out = bin(dir.path())
            .env(var, value)
            .args(["config", "print"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{var}={value}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(key), "{var}={value}: {err}");
    }
}

#[tokio::test]
async fn grant_and_revoke_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let user = Uuid::new_v4();
    let run = |args: &[&str]| {
        let out = bin(dir.path()).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let id = user.to_string();
    let (code, out, err) = run(&["grant", &id, "admin"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), format!("granted admin to {user}"));
    assert!(err.trim().is_empty(), "{err}");
    let (code, out, _) = run(&["grant", &id, "admin"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("unchanged"), "{out}");
    let (code, _, err) = run(&["grant", "not-a-uuid", "admin"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("UUID"), "{err}");
    let (code, _, err) = run(&["grant", &id, "nosuchrole"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("not found"), "{err}");
    let (code, _, err) = run(&["grant", &id, "Not A Role"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("role"), "{err}");

    let cfg = common::config(&[("PLT_DATABASE__DATA_DIR", &dir.path().to_string_lossy())]);
    let db = connect_db(&cfg, "authz").await.unwrap();
    let store = for_db(&db);
    assert_eq!(
        store.grants(user).await.unwrap().roles,
        vec!["admin", "user"]
    );
    // The grant's record committed with it, for a running instance's relay to deliver.
    let outbox = plt_outbox::Outbox::new(&db, "authz-service");
    assert_eq!(
        outbox.pending(plt_outbox::audit::TOPIC).await.unwrap().0,
        2,
        "the grant, and the repeated grant that changed nothing"
    );
    let (code, out, _) = run(&["revoke", &id, "admin"]);
    assert_eq!(code, Some(0));
    assert_eq!(out.trim(), format!("revoked admin from {user}"));
    assert_eq!(store.grants(user).await.unwrap().roles, vec!["user"]);
    db.close().await;
}

#[tokio::test]
async fn bootstrap_admins_are_granted_once_across_restarts() {
    let first = common::start(common::Backend::Sqlite, &[]).await.unwrap();
    let admin = first.admin_id;
    let dir = first.data_dir.clone();
    let schema = first.schema.clone();
    let v1 = first.core.policy().store().version().await.unwrap();
    let records_first = first.audit.records().len();
    // Restart on the same database (the first instance keeps its directory alive).
    let mut setup = common::Setup::new(common::Backend::Sqlite).beside(&first);
    setup.schema = Some(schema);
    setup.data_dir = Some(dir);
    let audit = common::FakeAudit::default();
    let second = common::start_with(setup.audit(audit.clone()))
        .await
        .unwrap();
    assert_eq!(second.admin_id, admin);
    assert_eq!(
        second.core.policy().store().version().await.unwrap(),
        v1,
        "a restart changed the policy"
    );
    let g = second.core.policy().store().grants(admin).await.unwrap();
    assert_eq!(g.roles, vec!["admin", "user"]);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        audit.records().is_empty(),
        "an unchanged bootstrap was audited again"
    );
    assert!(records_first <= first.audit.records().len());
    second.stop().await;
    first.stop().await;
}
