//! The identity contract suite. Each case uses its own e-mail addresses, so cases may share
//! one service instance, in any order.

use crate::{
    ErrorCode, RequestContext,
    identity::{IdentityServiceClient, NewUser, PageRequest, User, UserStatus, UserUpdate},
};
use plt_kernel::{Secret, notify::MailReader};
use std::{collections::HashSet, sync::Arc};
use uuid::Uuid;

/// What a suite run needs: the implementation under test, and the mail it sends.
pub struct IdentityFixture {
    pub client: Arc<dyn IdentityServiceClient>,
    /// The context of a calling platform service: carries a service token for the service
    /// under test, or nothing when `client` attaches its own (the client factory's do).
    pub service: RequestContext,
    pub mail: Arc<dyn MailReader>,
}

pub const GOOD_PASSWORD: &str = "correct horse battery staple";
const OTHER_PASSWORD: &str = "violet umbrella harbour 93 quietly";

impl IdentityFixture {
    /// A fresh context: the fixture's `service` context with a new request id.
    pub fn ctx(&self) -> RequestContext {
        self.service
            .clone()
            .with_request_id(format!("suite-{}", Uuid::new_v4()))
    }
}

fn email(tag: &str) -> String {
    format!("{tag}.{}@example.com", Uuid::new_v4().simple())
}

fn new_user(email: &str) -> NewUser {
    NewUser {
        email: email.to_owned(),
        password: Secret::new(GOOD_PASSWORD.to_owned()),
        display_name: String::new(),
    }
}

/// The token in the newest mail to `to`.
pub fn token_from_mail(mail: &dyn MailReader, to: &str) -> String {
    let m = mail
        .latest_to(to)
        .expect("mail readable")
        .unwrap_or_else(|| panic!("no mail to {to}"));
    crate::identity::token_in_mail(&m.body)
        .unwrap_or_else(|| panic!("no token in mail body: {}", m.body))
        .to_owned()
}

/// Runs every case; panics naming the first that fails.
pub async fn run_all(fx: &IdentityFixture) {
    create_and_read_back(fx).await;
    duplicate_email_is_refused_case_insensitively(fx).await;
    bad_input_is_refused_and_nothing_is_written(fx).await;
    unknown_ids_are_not_found(fx).await;
    update_changes_only_given_fields(fx).await;
    changing_email_requires_new_verification(fx).await;
    verify_email_is_single_use(fx).await;
    password_reset_flow(fx).await;
    credential_failures_look_alike(fx).await;
    list_users_pages_through_everyone_once(fx).await;
    delete_frees_the_address(fx).await;
}

pub async fn create_and_read_back(fx: &IdentityFixture) {
    let c = &fx.client;
    let addr = email("Create");
    let created = c
        .create_user(
            &fx.ctx(),
            NewUser {
                display_name: "  Ada Lovelace ".into(),
                ..new_user(&addr)
            },
        )
        .await
        .expect("create_user");
    assert_eq!(created.email, addr);
    assert_eq!(created.display_name, "Ada Lovelace");
    assert_eq!(created.status, UserStatus::Active);
    assert!(!created.email_verified);
    assert_eq!(created.created_at, created.updated_at);
    let json = serde_json::to_string(&created).unwrap();
    assert!(
        !json.contains("argon2") && !json.contains(GOOD_PASSWORD),
        "secret material in {json}"
    );

    let by_id = c.get_user(&fx.ctx(), created.id).await.expect("get_user");
    assert_eq!(by_id, created);
    let by_email = c
        .get_user_by_email(&fx.ctx(), &addr.to_uppercase())
        .await
        .expect("get_user_by_email is case-insensitive");
    assert_eq!(by_email, created);
    let m = fx
        .mail
        .latest_to(&addr)
        .unwrap()
        .expect("verification mail sent");
    assert!(m.subject.to_lowercase().contains("verify"));

    let defaulted = c
        .create_user(&fx.ctx(), new_user(&email("dflt")))
        .await
        .unwrap();
    assert!(
        defaulted.display_name.starts_with("dflt."),
        "{}",
        defaulted.display_name
    );
}

pub async fn duplicate_email_is_refused_case_insensitively(fx: &IdentityFixture) {
    let addr = email("dup");
    fx.client
        .create_user(&fx.ctx(), new_user(&addr))
        .await
        .unwrap();
    let err = fx
        .client
        .create_user(&fx.ctx(), new_user(&addr.to_uppercase()))
        .await
        .expect_err("duplicate accepted");
    assert_eq!(err.code, ErrorCode::AlreadyExists, "{err}");
    assert_eq!(err.violations[0].field, "email");
}

pub async fn bad_input_is_refused_and_nothing_is_written(fx: &IdentityFixture) {
    let c = &fx.client;
    let cases: Vec<(NewUser, &str)> = vec![
        (new_user("not-an-email"), "email"),
        (
            new_user(&format!("{}@example.com", "a".repeat(300))),
            "email",
        ),
        (
            NewUser {
                password: Secret::new("short".into()),
                ..new_user(&email("pw"))
            },
            "password",
        ),
        (
            NewUser {
                password: Secret::new("password123".into()),
                ..new_user(&email("pw"))
            },
            "password",
        ),
        (
            NewUser {
                password: Secret::new("x".repeat(5000)),
                ..new_user(&email("pw"))
            },
            "password",
        ),
        (
            NewUser {
                display_name: "n".repeat(101),
                ..new_user(&email("name"))
            },
            "display_name",
        ),
    ];
    for (input, field) in cases {
        let addr = input.email.clone();
        let err = c
            .create_user(&fx.ctx(), input)
            .await
            .expect_err("bad input accepted");
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
        assert_eq!(
            err.violations.first().map(|v| v.field.as_str()),
            Some(field),
            "{err}"
        );
        if addr.contains('@') && addr.len() < 254 {
            let lookup = c
                .get_user_by_email(&fx.ctx(), &addr)
                .await
                .expect_err("half-written user");
            assert_eq!(lookup.code, ErrorCode::NotFound);
        }
    }
}

pub async fn unknown_ids_are_not_found(fx: &IdentityFixture) {
    let c = &fx.client;
    let id = Uuid::now_v7();
    assert_eq!(
        c.get_user(&fx.ctx(), id).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    let upd = UserUpdate {
        display_name: Some("x".into()),
        ..Default::default()
    };
    assert_eq!(
        c.update_user(&fx.ctx(), id, upd).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        c.delete_user(&fx.ctx(), id).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    assert_eq!(
        c.get_user_by_email(&fx.ctx(), &email("nobody"))
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
}

pub async fn update_changes_only_given_fields(fx: &IdentityFixture) {
    let c = &fx.client;
    let u = c
        .create_user(&fx.ctx(), new_user(&email("upd")))
        .await
        .unwrap();
    let renamed = c
        .update_user(
            &fx.ctx(),
            u.id,
            UserUpdate {
                display_name: Some("Grace".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(renamed.display_name, "Grace");
    assert_eq!(renamed.email, u.email);
    assert!(renamed.updated_at >= u.updated_at);
    let disabled = c
        .update_user(
            &fx.ctx(),
            u.id,
            UserUpdate {
                status: Some(UserStatus::Disabled),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(disabled.status, UserStatus::Disabled);
    assert_eq!(disabled.display_name, "Grace");
    assert_eq!(c.get_user(&fx.ctx(), u.id).await.unwrap(), disabled);
    let err = c
        .update_user(
            &fx.ctx(),
            u.id,
            UserUpdate {
                display_name: Some(" ".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(
        c.get_user(&fx.ctx(), u.id).await.unwrap(),
        disabled,
        "failed update changed data"
    );
}

pub async fn changing_email_requires_new_verification(fx: &IdentityFixture) {
    let c = &fx.client;
    let first = email("chg");
    let u = c.create_user(&fx.ctx(), new_user(&first)).await.unwrap();
    let old_token = token_from_mail(fx.mail.as_ref(), &first);
    c.verify_email(&fx.ctx(), &old_token).await.unwrap();
    assert!(c.get_user(&fx.ctx(), u.id).await.unwrap().email_verified);

    let taken = email("taken");
    c.create_user(&fx.ctx(), new_user(&taken)).await.unwrap();
    let err = c
        .update_user(
            &fx.ctx(),
            u.id,
            UserUpdate {
                email: Some(taken.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::AlreadyExists);

    let second = email("chg2");
    let moved = c
        .update_user(
            &fx.ctx(),
            u.id,
            UserUpdate {
                email: Some(second.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(moved.email, second);
    assert!(!moved.email_verified, "a new address starts unverified");
    let token = token_from_mail(fx.mail.as_ref(), &second);
    c.verify_email(&fx.ctx(), &token).await.unwrap();
    assert!(c.get_user(&fx.ctx(), u.id).await.unwrap().email_verified);
    assert_eq!(
        c.get_user_by_email(&fx.ctx(), &first)
            .await
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
}

pub async fn verify_email_is_single_use(fx: &IdentityFixture) {
    let c = &fx.client;
    let addr = email("verify");
    let u = c.create_user(&fx.ctx(), new_user(&addr)).await.unwrap();
    let token = token_from_mail(fx.mail.as_ref(), &addr);
    for bad in ["", "not-a-token", &"A".repeat(43)] {
        let err = c.verify_email(&fx.ctx(), bad).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad:?}: {err}");
        assert_eq!(err.violations[0].field, "token");
    }
    assert!(!c.get_user(&fx.ctx(), u.id).await.unwrap().email_verified);
    c.verify_email(&fx.ctx(), &token).await.expect("first use");
    assert!(c.get_user(&fx.ctx(), u.id).await.unwrap().email_verified);
    let err = c.verify_email(&fx.ctx(), &token).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "second use: {err}");
}

pub async fn password_reset_flow(fx: &IdentityFixture) {
    let c = &fx.client;
    let unknown = email("ghost");
    c.request_password_reset(&fx.ctx(), &unknown)
        .await
        .expect("same answer for unknown address");
    assert!(fx.mail.latest_to(&unknown).unwrap().is_none());
    let err = c
        .request_password_reset(&fx.ctx(), "not an email")
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);

    let addr = email("reset");
    c.create_user(&fx.ctx(), new_user(&addr)).await.unwrap();
    c.request_password_reset(&fx.ctx(), &addr).await.unwrap();
    let m = fx.mail.latest_to(&addr).unwrap().unwrap();
    assert!(m.subject.to_lowercase().contains("reset"));
    let token = token_from_mail(fx.mail.as_ref(), &addr);

    // A verification token is not a reset token, and vice versa.
    let verify_err = c.verify_email(&fx.ctx(), &token).await.unwrap_err();
    assert_eq!(verify_err.code, ErrorCode::InvalidArgument);

    let weak = c
        .reset_password(&fx.ctx(), &token, Secret::new("password".into()))
        .await
        .unwrap_err();
    assert_eq!(weak.violations[0].field, "password");
    c.reset_password(&fx.ctx(), &token, Secret::new(OTHER_PASSWORD.into()))
        .await
        .expect("reset with a fresh token");
    c.verify_credentials(&fx.ctx(), &addr, Secret::new(OTHER_PASSWORD.into()))
        .await
        .expect("new password works");
    let old = c
        .verify_credentials(&fx.ctx(), &addr, Secret::new(GOOD_PASSWORD.into()))
        .await
        .unwrap_err();
    assert_eq!(old.code, ErrorCode::Unauthenticated);
    let reuse = c
        .reset_password(
            &fx.ctx(),
            &token,
            Secret::new("a different fine passphrase 7".into()),
        )
        .await
        .unwrap_err();
    assert_eq!(reuse.code, ErrorCode::InvalidArgument);
}

pub async fn credential_failures_look_alike(fx: &IdentityFixture) {
    let c = &fx.client;
    let addr = email("cred");
    let u = c.create_user(&fx.ctx(), new_user(&addr)).await.unwrap();
    let ok: User = c
        .verify_credentials(
            &fx.ctx(),
            &addr.to_uppercase(),
            Secret::new(GOOD_PASSWORD.into()),
        )
        .await
        .expect("right password");
    assert_eq!(ok.id, u.id);

    let wrong = c
        .verify_credentials(
            &fx.ctx(),
            &addr,
            Secret::new("wrong password entirely".into()),
        )
        .await
        .unwrap_err();
    let unknown = c
        .verify_credentials(
            &fx.ctx(),
            &email("nobody"),
            Secret::new(GOOD_PASSWORD.into()),
        )
        .await
        .unwrap_err();
    let malformed = c
        .verify_credentials(
            &fx.ctx(),
            "not-an-address",
            Secret::new(GOOD_PASSWORD.into()),
        )
        .await
        .unwrap_err();
    c.update_user(
        &fx.ctx(),
        u.id,
        UserUpdate {
            status: Some(UserStatus::Disabled),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let disabled = c
        .verify_credentials(&fx.ctx(), &addr, Secret::new(GOOD_PASSWORD.into()))
        .await
        .unwrap_err();
    for e in [&wrong, &unknown, &malformed, &disabled] {
        assert_eq!(e.code, ErrorCode::Unauthenticated, "{e}");
        assert_eq!(e.message, wrong.message, "failure messages differ");
        assert!(e.violations.is_empty());
    }
}

pub async fn list_users_pages_through_everyone_once(fx: &IdentityFixture) {
    let c = &fx.client;
    let mut mine = Vec::new();
    for i in 0..5 {
        mine.push(
            c.create_user(&fx.ctx(), new_user(&email(&format!("list{i}"))))
                .await
                .unwrap()
                .id,
        );
    }
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let page = c
            .list_users(
                &fx.ctx(),
                PageRequest {
                    page_size: 2,
                    page_token: token.clone(),
                },
            )
            .await
            .expect("list_users");
        assert!(page.users.len() <= 2);
        seen.extend(page.users.iter().map(|u| u.id));
        match page.next_page_token {
            Some(t) => token = Some(t),
            None => break,
        }
        assert!(seen.len() < 100_000, "pagination does not end");
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a user appeared twice");
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(sorted, seen, "not in creation (id) order");
    for id in &mine {
        assert!(unique.contains(id), "created user missing from listing");
    }
    let err = c
        .list_users(
            &fx.ctx(),
            PageRequest {
                page_size: 2,
                page_token: Some("%%%".into()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(err.violations[0].field, "page_token");
    let capped = c
        .list_users(
            &fx.ctx(),
            PageRequest {
                page_size: 1_000_000,
                page_token: None,
            },
        )
        .await
        .unwrap();
    assert!(capped.users.len() <= 1000);
}

pub async fn delete_frees_the_address(fx: &IdentityFixture) {
    let c = &fx.client;
    let addr = email("del");
    let u = c.create_user(&fx.ctx(), new_user(&addr)).await.unwrap();
    c.delete_user(&fx.ctx(), u.id).await.unwrap();
    assert_eq!(
        c.get_user(&fx.ctx(), u.id).await.unwrap_err().code,
        ErrorCode::NotFound
    );
    let again = c
        .create_user(&fx.ctx(), new_user(&addr))
        .await
        .expect("address reusable");
    assert_ne!(again.id, u.id);
}
