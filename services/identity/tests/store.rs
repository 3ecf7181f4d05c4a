//! The store suite: `UserStore` semantics that the contract suite cannot see from outside —
//! atomic single use of tokens under concurrency, uniqueness races, transactional inserts —
//! run against SQLite and, when `PLT_TEST_POSTGRES_URL` is set, PostgreSQL (fresh schema).

mod common;

use chrono::{Duration, SubsecRound, Utc};
use identity_service::store::{
    NewToken, StoreError, TokenAction, TokenOutcome, TokenPurpose, UserRecord, UserStore, for_db,
};
use plt_contracts::identity::UserStatus;
use plt_db::Db;
use std::sync::Arc;
use uuid::Uuid;

async fn open(
    backend: common::Backend,
) -> Option<(Arc<dyn UserStore>, Db, String, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().to_string();
    let cfg = plt_kernel::testing::config(identity_service::SECTION, backend.vars(&data)?);
    let schema = plt_db::testing::unique_schema("idstore");
    let db = identity_service::connect_db(&cfg, &schema).await.unwrap();
    Some((for_db(&db), db, schema, dir))
}

fn user(tag: &str) -> UserRecord {
    let now = Utc::now().trunc_subsecs(6);
    let email = format!("{tag}.{}@example.com", Uuid::new_v4().simple());
    UserRecord {
        id: Uuid::now_v7(),
        email_normalized: email.clone(),
        email,
        display_name: tag.into(),
        status: UserStatus::Active,
        email_verified: false,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g".into(),
        created_at: now,
        updated_at: now,
    }
}

fn token(u: &UserRecord, purpose: TokenPurpose, ttl: Duration) -> NewToken {
    let now = Utc::now().trunc_subsecs(6);
    NewToken {
        hash: Uuid::new_v4().as_bytes().to_vec(),
        user_id: u.id,
        purpose,
        email_normalized: u.email_normalized.clone(),
        created_at: now,
        expires_at: now + ttl,
    }
}

async fn suite(backend: common::Backend) {
    let Some((store, db, schema, _dir)) = open(backend).await else {
        common::skipped("identity store suite on postgres");
        return;
    };
    round_trip_and_uniqueness(store.as_ref()).await;
    insert_is_all_or_nothing(store.as_ref()).await;
    token_is_spent_exactly_once_under_concurrency(store.clone()).await;
    expired_and_wrong_purpose_tokens_are_rejected_and_not_spent(store.as_ref()).await;
    reset_spends_every_reset_token_of_the_user(store.as_ref()).await;
    verification_is_bound_to_the_address(store.as_ref()).await;
    listing_is_keyset_ordered(store.as_ref()).await;
    db.close().await;
    if backend == common::Backend::Postgres {
        common::drop_schema(&schema).await;
    }
}

async fn round_trip_and_uniqueness(s: &dyn UserStore) {
    let u = user("rt");
    s.insert_user(&u, None, &[]).await.unwrap();
    assert_eq!(s.get_user(u.id).await.unwrap().unwrap(), u);
    assert_eq!(
        s.get_user_by_email(&u.email_normalized)
            .await
            .unwrap()
            .unwrap(),
        u
    );
    let mut twin = user("rt2");
    twin.email_normalized = u.email_normalized.clone();
    assert!(matches!(
        s.insert_user(&twin, None, &[]).await,
        Err(StoreError::Duplicate)
    ));
    assert!(s.get_user(twin.id).await.unwrap().is_none());
    assert!(s.delete_user(u.id, &[]).await.unwrap());
    assert!(!s.delete_user(u.id, &[]).await.unwrap());
    assert!(s.get_user(u.id).await.unwrap().is_none());
}

async fn insert_is_all_or_nothing(s: &dyn UserStore) {
    // The token insert fails (its hash is taken), so the user must not exist either.
    let a = user("atomic-a");
    let t = token(&a, TokenPurpose::VerifyEmail, Duration::hours(1));
    s.insert_user(&a, Some(&t), &[]).await.unwrap();
    let b = user("atomic-b");
    let mut clash = token(&b, TokenPurpose::VerifyEmail, Duration::hours(1));
    clash.hash = t.hash.clone();
    assert!(s.insert_user(&b, Some(&clash), &[]).await.is_err());
    assert!(
        s.get_user(b.id).await.unwrap().is_none(),
        "user written without its token"
    );
}

async fn token_is_spent_exactly_once_under_concurrency(s: Arc<dyn UserStore>) {
    let u = user("race");
    let t = token(&u, TokenPurpose::ResetPassword, Duration::hours(1));
    s.insert_user(&u, Some(&t), &[]).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        let hash = t.hash.clone();
        tasks.push(tokio::spawn(async move {
            s.apply_token(
                &hash,
                TokenPurpose::ResetPassword,
                Utc::now(),
                TokenAction::SetPassword(format!("hash-{i}")),
                &|_| Vec::new(),
            )
            .await
        }));
    }
    let mut applied = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(TokenOutcome::Applied(_)) => applied += 1,
            Ok(TokenOutcome::Rejected) => {}
            // SQLite may report a busy database to a loser of the race; that is a refusal too.
            Err(StoreError::Db(e)) => eprintln!("concurrent use refused by the database: {e}"),
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(applied, 1, "a single-use token was applied {applied} times");
    let stored = s.get_user(u.id).await.unwrap().unwrap();
    assert!(stored.password_hash.starts_with("hash-"));
}

async fn expired_and_wrong_purpose_tokens_are_rejected_and_not_spent(s: &dyn UserStore) {
    let u = user("exp");
    let expired = token(&u, TokenPurpose::VerifyEmail, Duration::seconds(-1));
    s.insert_user(&u, Some(&expired), &[]).await.unwrap();
    let out = s
        .apply_token(
            &expired.hash,
            TokenPurpose::VerifyEmail,
            Utc::now(),
            TokenAction::VerifyEmail,
            &|_| Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(out, TokenOutcome::Rejected);
    let verify = token(&u, TokenPurpose::VerifyEmail, Duration::hours(1));
    s.insert_token(&verify, &[]).await.unwrap();
    let wrong = s
        .apply_token(
            &verify.hash,
            TokenPurpose::ResetPassword,
            Utc::now(),
            TokenAction::SetPassword("x".into()),
            &|_| Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(wrong, TokenOutcome::Rejected);
    assert_eq!(
        s.get_user(u.id).await.unwrap().unwrap().password_hash,
        u.password_hash
    );
    // The wrong-purpose attempt did not spend it.
    let right = s
        .apply_token(
            &verify.hash,
            TokenPurpose::VerifyEmail,
            Utc::now(),
            TokenAction::VerifyEmail,
            &|_| Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(right, TokenOutcome::Applied(u.id));
    assert!(s.get_user(u.id).await.unwrap().unwrap().email_verified);
    let unknown = s
        .apply_token(
            b"no-such-token",
            TokenPurpose::VerifyEmail,
            Utc::now(),
            TokenAction::VerifyEmail,
            &|_| Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(unknown, TokenOutcome::Rejected);
}

async fn reset_spends_every_reset_token_of_the_user(s: &dyn UserStore) {
    let u = user("multi");
    s.insert_user(&u, None, &[]).await.unwrap();
    let first = token(&u, TokenPurpose::ResetPassword, Duration::hours(1));
    let second = token(&u, TokenPurpose::ResetPassword, Duration::hours(1));
    s.insert_token(&first, &[]).await.unwrap();
    s.insert_token(&second, &[]).await.unwrap();
    let now = Utc::now();
    assert_eq!(
        s.apply_token(
            &second.hash,
            TokenPurpose::ResetPassword,
            now,
            TokenAction::SetPassword("new".into()),
            &|_| Vec::new()
        )
        .await
        .unwrap(),
        TokenOutcome::Applied(u.id)
    );
    assert_eq!(
        s.apply_token(
            &first.hash,
            TokenPurpose::ResetPassword,
            now,
            TokenAction::SetPassword("old".into()),
            &|_| Vec::new()
        )
        .await
        .unwrap(),
        TokenOutcome::Rejected,
        "an older reset link still worked after a reset"
    );
    assert_eq!(
        s.get_user(u.id).await.unwrap().unwrap().password_hash,
        "new"
    );
}

async fn verification_is_bound_to_the_address(s: &dyn UserStore) {
    let mut u = user("bound");
    let t = token(&u, TokenPurpose::VerifyEmail, Duration::hours(1));
    s.insert_user(&u, Some(&t), &[]).await.unwrap();
    let fresh = user("bound-new");
    u.email = fresh.email.clone();
    u.email_normalized = fresh.email_normalized.clone();
    u.updated_at = Utc::now().trunc_subsecs(6);
    assert!(s.update_user(&u, None, &[]).await.unwrap());
    let out = s
        .apply_token(
            &t.hash,
            TokenPurpose::VerifyEmail,
            Utc::now(),
            TokenAction::VerifyEmail,
            &|_| Vec::new(),
        )
        .await
        .unwrap();
    assert_eq!(
        out,
        TokenOutcome::Rejected,
        "old address's token verified the new address"
    );
    assert!(!s.get_user(u.id).await.unwrap().unwrap().email_verified);
    let mut ghost = user("ghost");
    ghost.display_name = "nobody".into();
    assert!(!s.update_user(&ghost, None, &[]).await.unwrap());
}

async fn listing_is_keyset_ordered(s: &dyn UserStore) {
    let mut ids = Vec::new();
    for i in 0..5 {
        let u = user(&format!("l{i}"));
        s.insert_user(&u, None, &[]).await.unwrap();
        ids.push(u.id);
    }
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page = s.list_users(after, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        after = page.last().map(|u| u.id);
        all.extend(page.into_iter().map(|u| u.id));
    }
    let mut sorted = all.clone();
    sorted.sort();
    assert_eq!(all, sorted);
    for id in ids {
        assert_eq!(all.iter().filter(|x| **x == id).count(), 1);
    }
}

#[tokio::test]
async fn store_suite_on_sqlite() {
    suite(common::Backend::Sqlite).await;
}

#[tokio::test]
async fn store_suite_on_postgres() {
    suite(common::Backend::Postgres).await;
}
