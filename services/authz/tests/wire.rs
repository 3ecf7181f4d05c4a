//! Bad input and error shapes on the wire: malformed user ids in paths, bodies and gRPC
//! messages (InvalidArgument naming `user_id`); unknown and malformed permissions; unknown
//! JSON fields; wrong content type; a denied Authorize as 403 problem+json; unknown routes.

mod common;

use common::{Backend, start};
use plt_contracts::{ErrorCode, error::Problem, pb::authz::v1 as pb};
use serde_json::json;
use uuid::Uuid;

async fn problem(resp: reqwest::Response, status: u16) -> Problem {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    resp.json().await.unwrap()
}

fn field(p: &Problem) -> &str {
    p.errors.first().map(|e| e.field.as_str()).unwrap_or("")
}

#[tokio::test]
async fn http_bad_input() {
    let svc = start(Backend::Sqlite, &[]).await.unwrap();
    let http = common::SERVICES.http_client("gateway", authz_service::SECTION);
    let base = svc.url();
    let admin = format!("Bearer {}", svc.keys.token(&svc.admin_id.to_string()));

    for path in [
        "/v1/authz/users/not-a-uuid/permissions",
        "/v1/authz/users/12345/roles",
    ] {
        let p = problem(http.get(format!("{base}{path}")).send().await.unwrap(), 400).await;
        assert_eq!(p.code, "invalid_argument");
        assert_eq!(field(&p), "user_id", "{path}");
    }
    let p = problem(
        http.put(format!("{base}/v1/authz/users/nope/roles/user"))
            .header("authorization", &admin)
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(field(&p), "user_id");
    for route in ["check", "authorize"] {
        let p = problem(
            http.post(format!("{base}/v1/authz/{route}"))
                .json(&json!({"user_id": "x", "permission": "audit.logs.read"}))
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;
        assert_eq!(field(&p), "user_id", "{route}");
        for bad in ["nope", "a.b.c.d", "audit.logs.*", "unknown.things.do"] {
            let p = problem(
                http.post(format!("{base}/v1/authz/{route}"))
                    .json(&json!({"user_id": Uuid::new_v4(), "permission": bad}))
                    .send()
                    .await
                    .unwrap(),
                400,
            )
            .await;
            assert_eq!(field(&p), "permission", "{route} {bad}");
        }
        let p = problem(
            http.post(format!("{base}/v1/authz/{route}"))
                .json(&json!({"user_id": Uuid::new_v4(), "permission": "audit.logs.read", "admin": true}))
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;
        assert!(p.detail.contains("admin"), "unknown field named: {p:?}");
        let p = problem(
            http.post(format!("{base}/v1/authz/{route}"))
                .header("content-type", "text/plain")
                .body("{}")
                .send()
                .await
                .unwrap(),
            400,
        )
        .await;
        assert_eq!(field(&p), "content-type");
    }
    // A denial is 403 problem+json, an allowed check 204.
    let user = Uuid::new_v4();
    let p = problem(
        http.post(format!("{base}/v1/authz/authorize"))
            .json(&json!({"user_id": user, "permission": "audit.logs.read"}))
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;
    assert_eq!(p.code, "permission_denied");
    let resp = http
        .post(format!("{base}/v1/authz/authorize"))
        .json(&json!({"user_id": svc.admin_id, "permission": "audit.logs.read"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    // Undeclared permission in a role: 400 naming the index and the permission.
    let p = problem(
        http.post(format!("{base}/v1/authz/roles"))
            .header("authorization", &admin)
            .json(&json!({"name": "r1", "permissions": ["audit.logs.read", "ghost.things.haunt"]}))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(field(&p), "permissions[1]");
    assert!(p.errors[0].reason.contains("ghost.things.haunt"), "{p:?}");
    // Deleting a built-in role: 412; an unknown role: 404.
    let p = problem(
        http.delete(format!("{base}/v1/authz/roles/admin"))
            .header("authorization", &admin)
            .send()
            .await
            .unwrap(),
        412,
    )
    .await;
    assert_eq!(p.code, "failed_precondition");
    let p = problem(
        http.put(format!("{base}/v1/authz/users/{user}/roles/nosuchrole"))
            .header("authorization", &admin)
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_eq!(p.code, "not_found");
    // Registering a malformed name.
    let p = problem(
        http.post(format!("{base}/v1/authz/permissions"))
            .json(&json!({"service": "blog", "permissions": [{"name": "blog.posts"}]}))
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(field(&p), "permissions[0].name");
    // Created role: 201 with the role.
    let resp = http
        .post(format!("{base}/v1/authz/roles"))
        .header("authorization", &admin)
        .json(&json!({"name": "r1", "description": "d", "permissions": ["audit.logs.read"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let role: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        role,
        json!({"name": "r1", "description": "d", "permissions": ["audit.logs.read"], "built_in": false})
    );
    let p = problem(
        http.get(format!("{base}/v1/authz/nothing"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_eq!(p.code, "not_found");
    svc.stop().await;
}

#[tokio::test]
async fn grpc_bad_input() {
    let svc = start(Backend::Sqlite, &[]).await.unwrap();
    let mut raw = pb::authz_service_client::AuthzServiceClient::connect(svc.url())
        .await
        .unwrap();
    let field_of = |s: tonic::Status| {
        let e = plt_contracts::Error::from(s);
        assert_eq!(e.code, ErrorCode::InvalidArgument, "{e}");
        e.violations[0].field.clone()
    };
    let s = raw
        .has_permission(common::ctx().grpc_request(pb::HasPermissionRequest {
            user_id: "not-a-uuid".into(),
            permission: "audit.logs.read".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(field_of(s), "user_id");
    let s = raw
        .authorize(common::ctx().grpc_request(pb::AuthorizeRequest {
            user_id: Uuid::new_v4().to_string(),
            permission: "Audit.Logs.Read".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(field_of(s), "permission");
    let s = raw
        .get_user_roles(common::ctx().grpc_request(pb::GetUserRolesRequest {
            user_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(field_of(s), "user_id");
    let s = raw
        .authorize(common::ctx().grpc_request(pb::AuthorizeRequest {
            user_id: Uuid::new_v4().to_string(),
            permission: "audit.logs.read".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(s.code(), tonic::Code::PermissionDenied);
    let s = raw
        .register_permissions(common::ctx().grpc_request(pb::RegisterPermissionsRequest {
            service: "blog".into(),
            permissions: vec![pb::Permission {
                name: "identity.users.read".into(),
                description: String::new(),
                granted_to_users: false,
                relations: vec![],
            }],
        }))
        .await
        .unwrap_err();
    assert_eq!(field_of(s), "permissions[0].name");
    svc.stop().await;
}
