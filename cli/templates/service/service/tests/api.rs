//! The __name__ contract, end to end: the service started by the runtime (its real start-up
//! path) on SQLite and on PostgreSQL (when PLT_TEST_POSTGRES_URL is set), called over gRPC
//! and over HTTP/JSON through the generated clients, with its access rules enforced.

use __name___contract::{__Name__ServiceClient, __Name__ServiceGrpcClient, __Name__ServiceHttpClient, pb};
use __name___service::__Name__;
use plt_contracts::{ErrorCode, RequestContext};
use plt_kernel::Secret;
use plt_runtime::testing::{Backend, TestService};
use std::sync::Arc;
use uuid::Uuid;

fn as_user(svc: &TestService, user: Uuid) -> RequestContext {
    RequestContext {
        authorization: Some(Secret::new(format!("Bearer {}", svc.user_token(user)))),
        ..Default::default()
    }
}

fn code<T: std::fmt::Debug>(r: plt_contracts::Result<T>) -> ErrorCode {
    r.expect_err("expected an error").code
}

/// What every implementation reached through `client` must do.
async fn contract_suite(svc: &TestService, client: Arc<dyn __Name__ServiceClient>) {
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    let new = |title: &str| pb::Create__Item__Request {
        title: title.into(),
        body: "text".into(),
    };
    // Anonymous: refused before the core runs; without the permission: forbidden.
    assert_eq!(
        code(client.create___item__(&RequestContext::new(), new("x")).await),
        ErrorCode::Unauthenticated
    );
    let mut forged = as_user(svc, alice);
    forged.authorization = Some(Secret::new("Bearer not-a-token".into()));
    assert_eq!(
        code(client.create___item__(&forged, new("x")).await),
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        code(client.create___item__(&as_user(svc, alice), new("x")).await),
        ErrorCode::PermissionDenied
    );

    svc.authz.grant(alice, "__name__.__name__.write");
    let a = as_user(svc, alice);
    let err = client.create___item__(&a, new("  ")).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(err.violations[0].field, "title", "{err:?}");
    let first = client.create___item__(&a, new("first")).await.unwrap();
    assert_eq!(first.owner_id, alice.to_string());
    assert_eq!(first.title, "first");
    let second = client.create___item__(&a, new("second")).await.unwrap();

    // Reading: one's own only; another user's __item__ does not exist for them.
    let got = client
        .get___item__(
            &a,
            pb::Get__Item__Request {
                id: first.id.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(got, first);
    let b = as_user(svc, bob);
    assert_eq!(
        code(
            client
                .get___item__(
                    &b,
                    pb::Get__Item__Request {
                        id: first.id.clone()
                    }
                )
                .await
        ),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(
            client
                .get___item__(&a, pb::Get__Item__Request { id: "nope".into() })
                .await
        ),
        ErrorCode::InvalidArgument
    );

    // Paging, oldest first.
    let page = client
        .list___name__(
            &a,
            pb::List__Name__Request {
                page_size: 1,
                page_token: String::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(page.__name__, vec![first.clone()]);
    assert!(!page.next_page_token.is_empty());
    let rest = client
        .list___name__(
            &a,
            pb::List__Name__Request {
                page_size: 1,
                page_token: page.next_page_token,
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.__name__, vec![second.clone()]);
    assert!(
        client
            .list___name__(&b, pb::List__Name__Request::default())
            .await
            .unwrap()
            .__name__
            .is_empty()
    );

    // Owner rule: alice may list her own; bob only with __name__.__name__.read_all.
    let by_owner = |owner: Uuid| pb::ListUser__Name__Request {
        owner_id: owner.to_string(),
        ..Default::default()
    };
    assert_eq!(
        client
            .list_user___name__(&a, by_owner(alice))
            .await
            .unwrap()
            .__name__
            .len(),
        2
    );
    assert_eq!(
        code(client.list_user___name__(&b, by_owner(alice)).await),
        ErrorCode::PermissionDenied
    );
    svc.authz.grant(bob, "__name__.__name__.read_all");
    assert_eq!(
        client
            .list_user___name__(&b, by_owner(alice))
            .await
            .unwrap()
            .__name__
            .len(),
        2
    );

    // Changing and deleting.
    let changed = client
        .update___item__(
            &a,
            pb::Update__Item__Request {
                id: first.id.clone(),
                title: "renamed".into(),
                body: String::new(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        (changed.title.as_str(), changed.body.as_str()),
        ("renamed", "text")
    );
    client
        .delete___item__(
            &a,
            pb::Delete__Item__Request {
                id: first.id.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        code(
            client
                .delete___item__(
                    &a,
                    pb::Delete__Item__Request {
                        id: first.id.clone()
                    }
                )
                .await
        ),
        ErrorCode::NotFound
    );
}

async fn both_protocols(backend: Backend) {
    let Some(svc) = TestService::start::<__Name__>(backend, &[]).await else {
        return;
    };
    let base = svc.url("");
    let grpc = __Name__ServiceGrpcClient::connect_lazy(&base).unwrap();
    contract_suite(&svc, Arc::new(grpc)).await;
    let http = __Name__ServiceHttpClient::new(plt_kernel::tls::http_client(), &base);
    contract_suite(&svc, Arc::new(http)).await;
    // Its permissions were declared to authz at start, by the service itself.
    let registered = svc.registered_permissions().await;
    assert_eq!(
        registered.get("__name__.__name__.write").map(String::as_str),
        Some("__name__")
    );
    assert_eq!(
        registered.get("__name__.__name__.read_all").map(String::as_str),
        Some("__name__")
    );
    svc.stop().await;
}

#[tokio::test]
async fn contract_on_sqlite() {
    both_protocols(Backend::Sqlite).await;
}

#[tokio::test]
async fn contract_on_postgres() {
    both_protocols(Backend::Postgres).await;
}

#[tokio::test]
async fn http_errors_name_the_field_and_openapi_describes_the_routes() {
    let Some(svc) = TestService::start::<__Name__>(Backend::Sqlite, &[]).await else {
        return;
    };
    let http = plt_kernel::tls::http_client();
    let alice = Uuid::new_v4();
    svc.authz.grant(alice, "__name__.__name__.write");
    let resp = http
        .post(svc.url("/v1/__name__"))
        .bearer_auth(svc.user_token(alice))
        .json(&serde_json::json!({"title": "t", "colour": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let problem: serde_json::Value = resp.json().await.unwrap();
    assert!(problem.to_string().contains("colour"), "{problem}");
    let resp = http.get(svc.url("/v1/__name__")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let doc: serde_json::Value = http
        .get(svc.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/__name__"]["post"].is_object(), "{doc}");
    assert_eq!(
        doc["paths"]["/v1/__name__/{id}"]["delete"]["x-plt-access"],
        "permission __name__.__name__.write"
    );
    svc.stop().await;
}
