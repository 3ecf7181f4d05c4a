//! The auth contract suite. The fixture's identity knows the users the cases sign in as.

use crate::{
    ErrorCode, RequestContext, auth::AuthServiceClient, identity::UserStatus,
    testsuite::fakes::FakeIdentity,
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use plt_kernel::Secret;
use std::sync::Arc;
use uuid::Uuid;

pub struct AuthFixture {
    pub client: Arc<dyn AuthServiceClient>,
    /// The context of a calling platform service: carries a service token for the service
    /// under test, or nothing when `client` attaches its own (the client factory's do).
    pub service: RequestContext,
    /// A service account the service under test knows: name and secret.
    pub service_account: (String, Secret<String>),
    pub identity: FakeIdentity,
    /// Whether the service under test has `refresh.reuse_grace` 0 (replays revoke at once).
    pub zero_grace: bool,
}

const PW: &str = "correct horse battery staple";

impl AuthFixture {
    /// A fresh context: the fixture's `service` context with a new request id.
    pub fn ctx(&self) -> RequestContext {
        self.service
            .clone()
            .with_request_id(format!("auth-suite-{}", Uuid::new_v4()))
    }
}

fn user(fx: &AuthFixture, tag: &str) -> (String, Uuid) {
    let email = format!("{tag}.{}@example.com", Uuid::new_v4().simple());
    let u = fx.identity.add_user(&email, PW);
    (email, u.id)
}

/// The `kid` in a JWT's header.
pub fn kid_of(token: &str) -> String {
    let header = token.split('.').next().unwrap_or_default();
    let json: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap_or_default())
            .unwrap_or_default();
    json["kid"].as_str().unwrap_or_default().to_owned()
}

pub async fn run_all(fx: &AuthFixture) {
    login_issues_a_valid_pair(fx).await;
    failed_sign_ins_look_alike(fx).await;
    refresh_rotates(fx).await;
    if fx.zero_grace {
        replaying_a_spent_refresh_token_revokes_the_family(fx).await;
    } else {
        retry_within_grace_returns_the_same_successor(fx).await;
    }
    logout_revokes_family_and_access_token(fx).await;
    garbage_is_refused(fx).await;
    service_tokens_need_the_right_secret(fx).await;
}

pub async fn login_issues_a_valid_pair(fx: &AuthFixture) {
    let c = &fx.client;
    let (email, id) = user(fx, "login");
    let t = c
        .login(&fx.ctx(), &email.to_uppercase(), Secret::new(PW.into()))
        .await
        .expect("login");
    assert_eq!(t.token_type, "Bearer");
    assert!(t.expires_in > 0 && t.expires_in <= 3600);
    assert_eq!(
        t.refresh_token.expose().len(),
        43,
        "refresh tokens carry 256 bits"
    );
    let claims = c
        .validate_token(&fx.ctx(), t.access_token.expose())
        .await
        .expect("validate");
    assert_eq!(claims.sub, id.to_string());
    assert!(!claims.jti.is_empty() && !claims.aud.is_empty() && !claims.iss.is_empty());
    assert_eq!(claims.exp - claims.iat, i64::from(t.expires_in));
    let jwks = c.get_jwks(&fx.ctx()).await.unwrap();
    let kid = kid_of(t.access_token.expose());
    assert!(
        jwks.keys.iter().any(|k| k.kid == kid),
        "signing key not published"
    );
    assert!(
        jwks.keys
            .iter()
            .all(|k| k.kty == "OKP" && k.alg == "EdDSA" && k.x.len() == 43)
    );
    let second = c
        .login(&fx.ctx(), &email, Secret::new(PW.into()))
        .await
        .unwrap();
    assert_ne!(second.refresh_token.expose(), t.refresh_token.expose());
}

pub async fn failed_sign_ins_look_alike(fx: &AuthFixture) {
    let c = &fx.client;
    let (email, _) = user(fx, "fail");
    let (disabled, _) = user(fx, "disabled");
    fx.identity.set_status(&disabled, UserStatus::Disabled);
    let wrong = c
        .login(&fx.ctx(), &email, Secret::new("not the password".into()))
        .await
        .unwrap_err();
    let unknown = c
        .login(
            &fx.ctx(),
            &format!("ghost.{}@example.com", Uuid::new_v4().simple()),
            Secret::new(PW.into()),
        )
        .await
        .unwrap_err();
    let off = c
        .login(&fx.ctx(), &disabled, Secret::new(PW.into()))
        .await
        .unwrap_err();
    for e in [&wrong, &unknown, &off] {
        assert_eq!(e.code, ErrorCode::Unauthenticated, "{e}");
        assert_eq!(e.message, wrong.message);
    }
}

pub async fn refresh_rotates(fx: &AuthFixture) {
    let c = &fx.client;
    let (email, id) = user(fx, "refresh");
    let first = c
        .login(&fx.ctx(), &email, Secret::new(PW.into()))
        .await
        .unwrap();
    let second = c
        .refresh_token(&fx.ctx(), first.refresh_token.clone())
        .await
        .expect("refresh");
    assert_ne!(second.refresh_token.expose(), first.refresh_token.expose());
    assert_ne!(second.access_token.expose(), first.access_token.expose());
    let claims = c
        .validate_token(&fx.ctx(), second.access_token.expose())
        .await
        .unwrap();
    assert_eq!(claims.sub, id.to_string());
    let third = c
        .refresh_token(&fx.ctx(), second.refresh_token.clone())
        .await
        .expect("chain continues");
    assert_ne!(third.refresh_token.expose(), second.refresh_token.expose());
}

pub async fn replaying_a_spent_refresh_token_revokes_the_family(fx: &AuthFixture) {
    let c = &fx.client;
    let (email, _) = user(fx, "reuse");
    let first = c
        .login(&fx.ctx(), &email, Secret::new(PW.into()))
        .await
        .unwrap();
    let second = c
        .refresh_token(&fx.ctx(), first.refresh_token.clone())
        .await
        .unwrap();
    let replay = c
        .refresh_token(&fx.ctx(), first.refresh_token.clone())
        .await
        .unwrap_err();
    assert_eq!(replay.code, ErrorCode::Unauthenticated);
    let successor = c
        .refresh_token(&fx.ctx(), second.refresh_token.clone())
        .await
        .unwrap_err();
    assert_eq!(
        successor.code,
        ErrorCode::Unauthenticated,
        "the stolen family still works"
    );
    // Another sign-in of the same user is unaffected.
    let other = c
        .login(&fx.ctx(), &email, Secret::new(PW.into()))
        .await
        .unwrap();
    c.refresh_token(&fx.ctx(), other.refresh_token)
        .await
        .expect("other family untouched");
}

pub async fn retry_within_grace_returns_the_same_successor(fx: &AuthFixture) {
    let c = &fx.client;
    let (email, _) = user(fx, "grace");
    let first = c
        .login(&fx.ctx(), &email, Secret::new(PW.into()))
        .await
        .unwrap();
    let second = c
        .refresh_token(&fx.ctx(), first.refresh_token.clone())
        .await
        .unwrap();
    let retried = c
        .refresh_token(&fx.ctx(), first.refresh_token.clone())
        .await
        .expect("retry in grace");
    assert_eq!(
        retried.refresh_token.expose(),
        second.refresh_token.expose()
    );
    // Once the successor has been used, the old token is a replay: the family goes.
    let third = c
        .refresh_token(&fx.ctx(), second.refresh_token.clone())
        .await
        .unwrap();
    let replay = c
        .refresh_token(&fx.ctx(), first.refresh_token.clone())
        .await
        .unwrap_err();
    assert_eq!(replay.code, ErrorCode::Unauthenticated);
    assert!(
        c.refresh_token(&fx.ctx(), third.refresh_token)
            .await
            .is_err(),
        "family survived reuse"
    );
}

pub async fn logout_revokes_family_and_access_token(fx: &AuthFixture) {
    let c = &fx.client;
    let (email, _) = user(fx, "logout");
    let t = c
        .login(&fx.ctx(), &email, Secret::new(PW.into()))
        .await
        .unwrap();
    c.validate_token(&fx.ctx(), t.access_token.expose())
        .await
        .unwrap();
    c.logout(
        &fx.ctx(),
        Some(t.refresh_token.clone()),
        Some(t.access_token.clone()),
    )
    .await
    .expect("logout");
    assert_eq!(
        c.validate_token(&fx.ctx(), t.access_token.expose())
            .await
            .unwrap_err()
            .code,
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        c.refresh_token(&fx.ctx(), t.refresh_token.clone())
            .await
            .unwrap_err()
            .code,
        ErrorCode::Unauthenticated
    );
    // Logging out again, or with garbage, still succeeds and reveals nothing.
    c.logout(
        &fx.ctx(),
        Some(t.refresh_token),
        Some(Secret::new("garbage".into())),
    )
    .await
    .unwrap();
    assert_eq!(
        c.logout(&fx.ctx(), None, None).await.unwrap_err().code,
        ErrorCode::InvalidArgument
    );
}

pub async fn garbage_is_refused(fx: &AuthFixture) {
    let c = &fx.client;
    for bad in ["", "x", &"A".repeat(43), &"!".repeat(43), &"a".repeat(5000)] {
        let e = c
            .refresh_token(&fx.ctx(), Secret::new(bad.to_owned()))
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated, "{bad:?}");
        let e = c.validate_token(&fx.ctx(), bad).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthenticated, "{bad:?}");
    }
}

/// Service tokens are issued only for a known service and its secret (both failures look
/// alike), for a well-formed audience; an issued token is a service token, not an access token.
pub async fn service_tokens_need_the_right_secret(fx: &AuthFixture) {
    let c = &fx.client;
    let (name, secret) = &fx.service_account;
    let t = c
        .issue_service_token(&fx.ctx(), name, secret.clone(), "identity")
        .await
        .expect("issue service token");
    assert!(t.expires_in >= 30, "{}", t.expires_in);
    assert_eq!(t.token.expose().split('.').count(), 3);
    // A service token is not an access token.
    let e = c
        .validate_token(&fx.ctx(), t.token.expose())
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthenticated);
    let wrong = Secret::new(format!("{}-wrong", secret.expose()));
    let e1 = c
        .issue_service_token(&fx.ctx(), name, wrong, "identity")
        .await
        .unwrap_err();
    let e2 = c
        .issue_service_token(&fx.ctx(), "no-such-service", secret.clone(), "identity")
        .await
        .unwrap_err();
    assert_eq!(e1.code, ErrorCode::Unauthenticated);
    assert_eq!((e1.code, e1.message), (e2.code, e2.message));
    for bad in ["", "Identity", "a b", &"a".repeat(65)] {
        let e = c
            .issue_service_token(&fx.ctx(), name, secret.clone(), bad)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{bad:?}");
        assert!(e.violations.iter().any(|v| v.field == "audience"), "{e}");
    }
}
