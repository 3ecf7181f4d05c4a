//! Authentication and authorisation of admin calls at the edge, over HTTP and gRPC: no token
//! → 401 / Unauthenticated; an expired, foreign-signed, wrong-issuer or wrong-audience token
//! → 401; a valid token of a user without `authz.roles.manage` → 403 / PermissionDenied; a
//! revoked admin is refused at once. The check methods need no token.

mod common;

use common::{Backend, Keys, Running, bearer, start, token_with};
use plt_authn::Signer;
use plt_contracts::{
    ErrorCode, RequestContext,
    authz::{ADMIN_ROLE, AuthzServiceClient, Role, grpc::AuthzGrpcClient},
    error::Problem,
};
use plt_kernel::Secret;
use uuid::Uuid;

/// (what, Authorization header value or none, expected HTTP status)
fn cases(svc: &Running) -> Vec<(&'static str, Option<String>, u16)> {
    let sub = svc.admin_id.to_string();
    let signer = &svc.keys.signer;
    let foreign = Signer::generate("foreign").unwrap();
    // Same kid as the trusted key, different key: a forgery.
    let impostor = Signer::generate(signer.kid()).unwrap();
    vec![
        ("no token", None, 401),
        ("empty bearer", Some("Bearer ".into()), 401),
        ("basic scheme", Some("Basic YWRtaW46YWRtaW4=".into()), 401),
        ("garbage", Some("Bearer not.a.token".into()), 401),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                token_with(signer, &sub, -120, "plt", "plt-api")
            )),
            401,
        ),
        (
            "foreign key",
            Some(format!(
                "Bearer {}",
                token_with(&foreign, &sub, 600, "plt", "plt-api")
            )),
            401,
        ),
        (
            "same kid, other key",
            Some(format!(
                "Bearer {}",
                token_with(&impostor, &sub, 600, "plt", "plt-api")
            )),
            401,
        ),
        (
            "wrong issuer",
            Some(format!(
                "Bearer {}",
                token_with(signer, &sub, 600, "evil", "plt-api")
            )),
            401,
        ),
        (
            "wrong audience",
            Some(format!(
                "Bearer {}",
                token_with(signer, &sub, 600, "plt", "other-api")
            )),
            401,
        ),
        (
            "user without authz.roles.manage",
            Some(format!(
                "Bearer {}",
                svc.keys.token(&svc.unprivileged_id.to_string())
            )),
            403,
        ),
        (
            "subject that is not a user id",
            Some(format!("Bearer {}", svc.keys.token("blog-service"))),
            403,
        ),
    ]
}

#[tokio::test]
async fn admin_calls_over_http() {
    let svc = start(Backend::Sqlite, &[]).await.unwrap();
    let http = plt_kernel::tls::http_client();
    let base = svc.url();
    let target = Uuid::new_v4();
    let requests = [
        (
            reqwest::Method::PUT,
            format!("/v1/authz/users/{target}/roles/admin"),
            None,
        ),
        (
            reqwest::Method::DELETE,
            format!("/v1/authz/users/{target}/roles/user"),
            None,
        ),
        (
            reqwest::Method::POST,
            "/v1/authz/roles".to_owned(),
            Some(serde_json::json!({"name": "sneaky", "permissions": ["audit.logs.read"]})),
        ),
        (
            reqwest::Method::PUT,
            "/v1/authz/roles/user/permissions".to_owned(),
            Some(serde_json::json!({"permissions": ["authz.roles.manage"]})),
        ),
        (
            reqwest::Method::DELETE,
            "/v1/authz/roles/user".to_owned(),
            None,
        ),
    ];
    for (what, auth, status) in cases(&svc) {
        for (method, path, body) in &requests {
            let mut rb = http.request(method.clone(), format!("{base}{path}"));
            if let Some(a) = &auth {
                rb = rb.header("authorization", a);
            }
            if let Some(b) = body {
                rb = rb.json(b);
            }
            let resp = rb.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), status, "{what}: {method} {path}");
            assert_eq!(
                resp.headers()["content-type"],
                "application/problem+json",
                "{what}"
            );
            let p: Problem = resp.json().await.unwrap();
            let code = if status == 401 {
                "unauthenticated"
            } else {
                "permission_denied"
            };
            assert_eq!(p.code, code, "{what}");
            assert!(
                !p.detail.contains("kid") && !p.detail.contains("signature"),
                "{p:?}"
            );
        }
    }
    // Nothing was changed by any of them.
    let roles = svc
        .core
        .get_user_roles(&RequestContext::new(), target)
        .await
        .unwrap();
    assert_eq!(
        roles,
        vec![plt_contracts::authz::USER_ROLE],
        "only the implicit role"
    );
    let all = svc.core.list_roles(&RequestContext::new()).await.unwrap();
    assert!(!all.iter().any(|r| r.name == "sneaky"));
    // The admin's token works; the check methods need a service token instead.
    let ok = http
        .put(format!("{base}/v1/authz/users/{target}/roles/user"))
        .header(
            "authorization",
            format!("Bearer {}", svc.keys.token(&svc.admin_id.to_string())),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 204);
    // Role user is every user's, implicitly: revoking it is refused, naming the field.
    let revoke = http
        .delete(format!("{base}/v1/authz/users/{target}/roles/user"))
        .header(
            "authorization",
            format!("Bearer {}", svc.keys.token(&svc.admin_id.to_string())),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 400);
    let p: serde_json::Value = revoke.json().await.unwrap();
    assert_eq!(p["errors"][0]["field"], "role", "{p}");
    let check_body =
        serde_json::json!({"user_id": target, "permission": "identity.users.read_self"});
    // A user's token does not make a caller a platform service.
    let as_user = http
        .post(format!("{base}/v1/authz/check"))
        .header(
            "authorization",
            format!("Bearer {}", svc.keys.token(&svc.admin_id.to_string())),
        )
        .json(&check_body)
        .send()
        .await
        .unwrap();
    assert_eq!(as_user.status(), 401);
    let service_token = common::ctx().service_token.unwrap();
    let check = http
        .post(format!("{base}/v1/authz/check"))
        .header(
            plt_contracts::service_identity::SERVICE_TOKEN_HEADER,
            service_token.expose(),
        )
        .json(&check_body)
        .send()
        .await
        .unwrap();
    assert_eq!(check.status(), 200);
    let v: serde_json::Value = check.json().await.unwrap();
    assert_eq!(v["allowed"], true);
    svc.stop().await;
}

#[tokio::test]
async fn admin_calls_over_grpc() {
    let svc = start(Backend::Sqlite, &[]).await.unwrap();
    let client = AuthzGrpcClient::connect_lazy(&svc.url()).unwrap();
    let target = Uuid::new_v4();
    for (what, auth, status) in cases(&svc) {
        let mut ctx = RequestContext::new();
        ctx.authorization = auth.map(Secret::new);
        let want = if status == 401 {
            ErrorCode::Unauthenticated
        } else {
            ErrorCode::PermissionDenied
        };
        let results = [
            client.grant_role(&ctx, target, ADMIN_ROLE).await,
            client.revoke_role(&ctx, target, "user").await,
            client.delete_role(&ctx, "user").await,
            client
                .set_role_permissions(&ctx, "user", vec![])
                .await
                .map(drop),
            client
                .create_role(
                    &ctx,
                    Role {
                        name: "sneaky".into(),
                        description: String::new(),
                        permissions: vec![],
                        built_in: false,
                    },
                )
                .await
                .map(drop),
        ];
        for r in results {
            assert_eq!(r.unwrap_err().code, want, "{what}");
        }
    }
    client.grant_role(&svc.admin, target, "user").await.unwrap();
    // Reading another user's roles needs authz.roles.read (the admin has it), not nothing.
    assert_eq!(
        client
            .get_user_roles(&RequestContext::new(), target)
            .await
            .unwrap_err()
            .code,
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        client.get_user_roles(&svc.admin, target).await.unwrap(),
        vec!["user"]
    );
    svc.stop().await;
}

#[tokio::test]
async fn a_revoked_admin_is_refused_at_once() {
    let svc = start(Backend::Sqlite, &[]).await.unwrap();
    let second = Uuid::new_v4();
    svc.core
        .grant_role(&svc.admin, second, ADMIN_ROLE)
        .await
        .unwrap();
    let second_ctx = bearer(&svc.keys.token(&second.to_string()));
    svc.core
        .grant_role(&second_ctx, Uuid::new_v4(), "user")
        .await
        .expect("a granted admin may administer");
    svc.core
        .revoke_role(&svc.admin, second, ADMIN_ROLE)
        .await
        .unwrap();
    let e = svc
        .core
        .grant_role(&second_ctx, Uuid::new_v4(), "user")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::PermissionDenied, "{e}");
    // A custom role holding authz.roles.manage is enough; admin is not required.
    let managers = svc
        .core
        .create_role(
            &svc.admin,
            Role {
                name: "managers".into(),
                description: String::new(),
                permissions: vec!["authz.roles.manage".into()],
                built_in: false,
            },
        )
        .await
        .unwrap();
    svc.core
        .grant_role(&svc.admin, second, &managers.name)
        .await
        .unwrap();
    svc.core
        .grant_role(&second_ctx, Uuid::new_v4(), "user")
        .await
        .expect("authz.roles.manage suffices");
    svc.stop().await;
}

#[tokio::test]
async fn tokens_from_keys_the_service_does_not_trust_are_refused_even_for_real_admins() {
    // Another deployment's keys, same issuer and audience.
    let svc = start(Backend::Sqlite, &[]).await.unwrap();
    let other = Keys::new();
    let ctx = bearer(&other.token(&svc.admin_id.to_string()));
    let e = svc
        .core
        .grant_role(&ctx, Uuid::new_v4(), "user")
        .await
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::Unauthenticated);
    svc.stop().await;
}
