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
