//! Refresh-token lifetimes: the idle timeout and the absolute lifetime of a sign-in end it,
//! whatever happens to the individual tokens.

mod common;

use common::{Backend, start};
use plt_contracts::{ErrorCode, RequestContext, auth::AuthServiceClient};
use plt_kernel::Secret;

const PW: &str = "correct horse battery staple";

async fn set_family_time(db: &plt_db::Db, column: &str, when: chrono::DateTime<chrono::Utc>) {
    let sql = format!("UPDATE token_families SET {column} = $1");
    match db {
        plt_db::Db::Postgres(p) => {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(when)
                .execute(p)
                .await
                .unwrap();
        }
        plt_db::Db::Sqlite(p) => {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(when)
                .execute(p)
                .await
                .unwrap();
        }
    }
}

async fn lifetimes(backend: Backend) {
    let Some(svc) = start(backend, &[]).await else {
        common::skipped("refresh lifetimes on postgres");
        return;
    };
    let ctx = svc.service_ctx().await;
    svc.identity.add_user("life@example.com", PW);
    let login = || {
        svc.core
            .login(&ctx, "life@example.com", Secret::new(PW.into()))
    };

    // Idle: unused for longer than idle_timeout (7 days by default).
    let t = login().await.unwrap();
    set_family_time(
        svc.db(),
        "last_used_at",
        chrono::Utc::now() - chrono::Duration::days(8),
    )
    .await;
    let e = svc
        .core
        .refresh_token(&ctx, t.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthenticated, "idle sign-in refreshed");

    // Active but past the absolute lifetime.
    let t = login().await.unwrap();
    let fresh = svc
        .core
        .refresh_token(&ctx, t.refresh_token)
        .await
        .expect("fresh sign-in refreshes");
    set_family_time(
        svc.db(),
        "expires_at",
        chrono::Utc::now() - chrono::Duration::seconds(1),
    )
    .await;
    let e = svc
        .core
        .refresh_token(&ctx, fresh.refresh_token)
        .await
        .unwrap_err();
    assert_eq!(
        e.code,
        ErrorCode::Unauthenticated,
        "sign-in refreshed past its absolute lifetime"
    );
    svc.stop().await;
}

#[tokio::test]
async fn lifetimes_on_sqlite() {
    lifetimes(Backend::Sqlite).await;
}

#[tokio::test]
async fn lifetimes_on_postgres() {
    lifetimes(Backend::Postgres).await;
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_mint_one_successor() {
    let svc = start(
        Backend::Sqlite,
        &[("PLT_AUTH__REFRESH__REUSE_GRACE", "10s")],
    )
    .await
    .unwrap();
    let ctx = svc.service_ctx().await;
    svc.identity.add_user("race@example.com", PW);
    let t = svc
        .core
        .login(&ctx, "race@example.com", Secret::new(PW.into()))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let core = svc.core.clone();
        let rt = t.refresh_token.clone();
        tasks.push(tokio::spawn(async move {
            core.refresh_token(&RequestContext::new(), rt).await
        }));
    }
    let mut successors = std::collections::HashSet::new();
    for task in tasks {
        // Within the grace window every racer gets the one successor (or a refusal under
        // SQLite's write lock); never two different successors.
        if let Ok(pair) = task.await.unwrap() {
            successors.insert(pair.refresh_token.expose().clone());
        }
    }
    assert_eq!(
        successors.len(),
        1,
        "one refresh token minted {} successors",
        successors.len()
    );
    svc.stop().await;
}

/// Identity ends a user's sessions (a reset, a disable, a delete): every session of the user
/// stops refreshing, its access tokens are refused by auth's own checks and published on the
/// revocation feed; another user's session is untouched. Only identity may ask.
async fn ending_a_users_sessions(backend: Backend) {
    let Some(svc) = start(backend, &[]).await else {
        common::skipped("ending sessions on postgres");
        return;
    };
    let ctx = svc.service_ctx().await;
    let user = svc.identity.add_user("ended@example.com", PW).id;
    svc.identity.add_user("kept@example.com", PW);
    let mut pairs = Vec::new();
    for _ in 0..2 {
        pairs.push(
            svc.core
                .login(&ctx, "ended@example.com", Secret::new(PW.into()))
                .await
                .unwrap(),
        );
    }
    let kept = svc
        .core
        .login(&ctx, "kept@example.com", Secret::new(PW.into()))
        .await
        .unwrap();
    let feed = format!("{}/v1/auth/revocations", svc.url());
    let before: plt_authn::revocation::RevocationFeed = plt_kernel::tls::http_client()
        .get(&feed)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(before.full && before.revoked.is_empty());

    // Over HTTP, as identity would call: a user's token or another service is refused.
    let http =
        plt_contracts::auth::http::AuthHttpClient::new(plt_kernel::tls::http_client(), &svc.url());
    let as_gateway = ctx.clone();
    let e = http
        .end_user_sessions(&as_gateway, user, "user_disabled")
        .await
        .unwrap_err();
    assert_eq!(e.code, plt_contracts::ErrorCode::PermissionDenied, "{e}");
    let as_identity = RequestContext::new().with_service_token(
        svc.core
            .issue_service_token(
                &RequestContext::new(),
                "identity",
                Secret::new(plt_client::development_secret("identity")),
                auth_service::SECTION,
            )
            .await
            .unwrap()
            .token,
    );
    let e = http
        .end_user_sessions(&as_identity, user, "because")
        .await
        .unwrap_err();
    assert_eq!(e.violations[0].field, "reason");
    assert_eq!(
        http.end_user_sessions(&as_identity, user, "user_disabled")
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        http.end_user_sessions(&as_identity, user, "user_disabled")
            .await
            .unwrap(),
        0,
        "idempotent"
    );
    for p in &pairs {
        let e = svc
            .core
            .refresh_token(&RequestContext::new(), p.refresh_token.clone())
            .await
            .unwrap_err();
        assert_eq!(e.code, plt_contracts::ErrorCode::Unauthenticated);
        // Auth's own check refuses the access token as soon as its mirror has the news
        // (at once after a local change; polled here, bounded).
        let mut refused = false;
        for _ in 0..100 {
            if svc
                .core
                .validate_token(&ctx, p.access_token.expose())
                .await
                .is_err()
            {
                refused = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(refused, "an ended session's access token still validates");
    }
    // The other user's session lives on.
    svc.core
        .validate_token(&ctx, kept.access_token.expose())
        .await
        .unwrap();
    svc.core
        .refresh_token(&RequestContext::new(), kept.refresh_token.clone())
        .await
        .unwrap();
    // The feed names both ended sessions.
    let after: plt_authn::revocation::RevocationFeed = plt_kernel::tls::http_client()
        .get(&feed)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after.revoked.len(), 2, "{after:?}");
    svc.stop().await;
}

#[tokio::test]
async fn ending_a_users_sessions_on_sqlite() {
    ending_a_users_sessions(Backend::Sqlite).await;
}

#[tokio::test]
async fn ending_a_users_sessions_on_postgres() {
    ending_a_users_sessions(Backend::Postgres).await;
}
