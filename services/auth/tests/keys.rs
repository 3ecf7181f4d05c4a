//! Key rotation and removal: tokens signed by the previous key validate until it is removed;
//! after removal they do not; the JWKS follows the lifecycle; keys are encrypted at rest.

mod common;

use common::{Backend, start};
use plt_contracts::{ErrorCode, auth::AuthServiceClient, testsuite::auth::kid_of};
use plt_kernel::Secret;

const PW: &str = "correct horse battery staple";

async fn lifecycle(backend: Backend) {
    let Some(svc) = start(backend, &[]).await else {
        common::skipped("key lifecycle on postgres");
        return;
    };
    let ctx = svc.service_ctx().await;
    let core = svc.core.clone();
    svc.identity.add_user("rot@example.com", PW);

    let jwks0 = core.get_jwks(&ctx).await.unwrap();
    assert_eq!(
        jwks0.keys.len(),
        2,
        "active and next are published from the start"
    );
    let t1 = core
        .login(&ctx, "rot@example.com", Secret::new(PW.into()))
        .await
        .unwrap();
    let k1 = kid_of(t1.access_token.expose());

    // Rotate: the next key (already published) signs; the old one is retiring, still published.
    let k2 = core.keys().rotate().await.unwrap();
    assert_ne!(k1, k2);
    assert!(
        jwks0.keys.iter().any(|k| k.kid == k2),
        "the new signing key was published before use"
    );
    let jwks1 = core.get_jwks(&ctx).await.unwrap();
    assert_eq!(jwks1.keys.len(), 3, "retiring + active + next");
    let t2 = core
        .login(&ctx, "rot@example.com", Secret::new(PW.into()))
        .await
        .unwrap();
    assert_eq!(kid_of(t2.access_token.expose()), k2);
    core.validate_token(&ctx, t1.access_token.expose())
        .await
        .expect("a token of the retiring key still validates");
    core.validate_token(&ctx, t2.access_token.expose())
        .await
        .unwrap();

    // Let the retiring key's removal time pass (as if access_token_ttl had elapsed).
    let past = chrono::Utc::now() - chrono::Duration::seconds(1);
    match svc.db() {
        plt_db::Db::Postgres(p) => {
            sqlx::query("UPDATE signing_keys SET remove_after = $1 WHERE kid = $2")
                .bind(past)
                .bind(&k1)
                .execute(p)
                .await
                .unwrap();
        }
        plt_db::Db::Sqlite(p) => {
            sqlx::query("UPDATE signing_keys SET remove_after = $1 WHERE kid = $2")
                .bind(past)
                .bind(&k1)
                .execute(p)
                .await
                .unwrap();
        }
    }
    core.keys().maintain().await.unwrap();
    let jwks2 = core.get_jwks(&ctx).await.unwrap();
    assert!(
        !jwks2.keys.iter().any(|k| k.kid == k1),
        "removed key still published"
    );
    let err = core
        .validate_token(&ctx, t1.access_token.expose())
        .await
        .unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::Unauthenticated,
        "token of a removed key accepted"
    );
    core.validate_token(&ctx, t2.access_token.expose())
        .await
        .unwrap();

    // Private keys are stored encrypted: no stored blob contains the raw seed prefix of a
    // plain Ed25519 PKCS#8 or the public key bytes in clear.
    let blobs: Vec<Vec<u8>> = match svc.db() {
        plt_db::Db::Postgres(p) => sqlx::query_scalar("SELECT encrypted_seed FROM signing_keys")
            .fetch_all(p)
            .await
            .unwrap(),
        plt_db::Db::Sqlite(p) => sqlx::query_scalar("SELECT encrypted_seed FROM signing_keys")
            .fetch_all(p)
            .await
            .unwrap(),
    };
    assert_eq!(blobs.len(), 2);
    for b in blobs {
        assert_eq!(b.len(), 24 + 32 + 16, "nonce + sealed seed + tag");
    }
    svc.stop().await;
}

#[tokio::test]
async fn lifecycle_on_sqlite() {
    lifecycle(Backend::Sqlite).await;
}

#[tokio::test]
async fn lifecycle_on_postgres() {
    lifecycle(Backend::Postgres).await;
}

#[tokio::test]
async fn a_wrong_encryption_key_cannot_open_the_keys() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().to_string();
    let cfg = common::config(&[("PLT_DATABASE__DATA_DIR", &data)]);
    let db = auth_service::connect_db(&cfg, "auth").await.unwrap();
    auth_service::key_ring(&cfg, &db)
        .await
        .expect("first open creates keys");
    let other = common::config(&[
        ("PLT_DATABASE__DATA_DIR", &data),
        (
            "PLT_AUTH__KEYS__ENCRYPTION_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
    ]);
    assert!(auth_service::key_ring(&other, &db).await.is_err());
}
