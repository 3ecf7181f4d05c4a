//! Authentication and authorisation at the edge: tokens verified locally (rotated-out keys
//! refused), identity headers from clients stripped and the verified one forwarded, route
//! permissions checked with authz (403, cached per user and permission, 503 when authz
//! cannot answer), and the real authz client built from `clients.authz` over the registry.

mod common;

use common::{CountingAuthz, Echo, Keys, Setup, assert_problem, http, register, start, token_with};
use plt_authn::Signer;
use plt_contracts::testsuite::fakes::{FakeAuth, FakeAuthz};
use serde_json::{Value, json};
use std::sync::Arc;
use uuid::Uuid;

fn routes() -> Value {
    json!([
        {"prefix": "/open", "service": "up", "public": true},
        {"prefix": "/private", "service": "up"},
        {"prefix": "/reports", "service": "up", "permission": "reports.items.read"},
        {"prefix": "/users", "service": "up", "permission": "identity.users.read",
         "self_permission": "identity.users.read_self"},
    ])
}

#[tokio::test]
async fn private_routes_need_a_valid_token() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let setup = Setup::new(&keys, &[], routes());
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    let c = http();
    let user = Uuid::new_v4().to_string();

    // No token.
    let resp = c.get(gw.url("/private/x")).send().await.unwrap();
    assert_eq!(resp.headers()["www-authenticate"], r#"Bearer realm="plt""#);
    assert_problem(resp, 401, "unauthenticated").await;

    let foreign = Signer::generate("foreign").unwrap();
    let impostor = Signer::generate(keys.signer.kid()).unwrap();
    for (what, auth) in [
        ("garbage", "Bearer not.a.token".to_owned()),
        ("basic scheme", "Basic YWRtaW46YWRtaW4=".to_owned()),
        ("empty bearer", "Bearer ".to_owned()),
        (
            "expired",
            format!("Bearer {}", token_with(&keys.signer, &user, -120)),
        ),
        (
            "foreign key",
            format!("Bearer {}", token_with(&foreign, &user, 600)),
        ),
        (
            "same kid, other key",
            format!("Bearer {}", token_with(&impostor, &user, 600)),
        ),
    ] {
        let resp = c
            .get(gw.url("/private/x"))
            .header("authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 401, "{what}");
        assert!(
            resp.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{what}"
        );
        assert_problem(resp, 401, "unauthenticated").await;
    }
    assert_eq!(up.hits(), 0);

    // A valid token: forwarded with Authorization untouched and the verified identity.
    let token = keys.token(&user);
    let resp = c
        .get(gw.url("/private/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["headers"]["authorization"], format!("Bearer {token}"));
    assert_eq!(body["headers"]["x-user-id"], user);
    // Cached: a second request works the same.
    let resp = c
        .get(gw.url("/private/y"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn public_routes_work_without_and_ignore_bad_tokens() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let setup = Setup::new(&keys, &[], routes());
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    let c = http();

    let body: Value = c
        .get(gw.url("/open/a"))
        .header("x-user-id", "admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body["headers"].get("x-user-id").is_none(), "{body}");

    // An invalid token on a public route is not used: anonymous, forwarded untouched.
    let body: Value = c
        .get(gw.url("/open/a"))
        .header("authorization", "Bearer junk")
        .header("x-user-id", "admin")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body["headers"].get("x-user-id").is_none(), "{body}");
    assert_eq!(body["headers"]["authorization"], "Bearer junk");

    // A valid one identifies the caller.
    let user = Uuid::new_v4().to_string();
    let body: Value = c
        .get(gw.url("/open/a"))
        .bearer_auth(keys.token(&user))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["headers"]["x-user-id"], user);
    gw.stop().await;
}

#[tokio::test]
async fn spoofed_identity_headers_are_replaced() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let setup = Setup::new(&keys, &[], routes());
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    let user = Uuid::new_v4().to_string();
    let body: Value = http()
        .get(gw.url("/private/me"))
        .bearer_auth(keys.token(&user))
        .header("x-user-id", "00000000-0000-0000-0000-000000000001")
        .header("X-User-Email", "root@example.com")
        .header("x-user-roles", "admin")
        .header("x-plt-service-token", "forged")
        .header("x-plt-anything", "forged")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let h = body["headers"].as_object().unwrap();
    assert_eq!(h["x-user-id"], user);
    for gone in ["x-user-email", "x-user-roles", "x-plt-anything"] {
        assert!(!h.contains_key(gone), "{gone} forwarded: {body}");
    }
    // The client's service token never passes; the gateway vouches with its own.
    assert_ne!(
        h.get("x-plt-service-token"),
        Some(&Value::from("forged")),
        "{body}"
    );
    // Exactly one x-user-id arrived.
    let seen = up.seen();
    assert_eq!(seen[0].headers.get_all("x-user-id").iter().count(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn rotated_out_keys_are_refused() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let old = Signer::generate("old-key").unwrap();
    // The old key has been rotated out: only the current one is published.
    keys.publish(&[&keys.signer]);
    let setup = Setup::new(&keys, &[], routes());
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    let c = http();
    let user = Uuid::new_v4().to_string();
    let resp = c
        .get(gw.url("/private/x"))
        .bearer_auth(token_with(&old, &user, 600))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 401, "unauthenticated").await;
    let resp = c
        .get(gw.url("/private/x"))
        .bearer_auth(keys.token(&user))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn permissions_are_checked_and_cached_per_user() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let authz = CountingAuthz::default();
    let alice = Uuid::new_v4();
    let bob = Uuid::new_v4();
    authz.inner.grant(alice, "reports.items.read");
    let setup = Setup::new(&keys, &[], routes()).authz(Arc::new(authz.clone()));
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    let c = http();

    let resp = c
        .get(gw.url("/reports/1"))
        .bearer_auth(keys.token(&alice.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(authz.calls(), 1);
    // Cached for Alice (a new token, same user: the key is the user, not the token).
    let resp = c
        .get(gw.url("/reports/2"))
        .bearer_auth(keys.token(&alice.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(authz.calls(), 1);
    // Alice's decision is not Bob's.
    let resp = c
        .get(gw.url("/reports/1"))
        .bearer_auth(keys.token(&bob.to_string()))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 403, "permission_denied").await;
    assert_eq!(authz.calls(), 2);
    // Bob's denial is cached too.
    let resp = c
        .get(gw.url("/reports/1"))
        .bearer_auth(keys.token(&bob.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(authz.calls(), 2);
    // A subject that is not a user id holds no permission.
    let resp = c
        .get(gw.url("/reports/1"))
        .bearer_auth(keys.token("blog-service"))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 403, "permission_denied").await;
    assert_eq!(up.hits(), 2);

    // Own record with the self permission; others' with the general one.
    authz.inner.grant(bob, "identity.users.read_self");
    let resp = c
        .get(gw.url(&format!("/users/{bob}")))
        .bearer_auth(keys.token(&bob.to_string()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = c
        .get(gw.url(&format!("/users/{alice}")))
        .bearer_auth(keys.token(&bob.to_string()))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 403, "permission_denied").await;
    gw.stop().await;
}

#[tokio::test]
async fn authz_down_fails_closed() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let authz = CountingAuthz::default();
    let user = Uuid::new_v4();
    authz.inner.grant(user, "reports.items.read");
    authz.set_down(true);
    let setup = Setup::new(&keys, &[], routes())
        .authz(Arc::new(authz.clone()))
        .var("PLT_GATEWAY__AUTHZ__STALENESS_BOUND", "0s");
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    let token = keys.token(&user.to_string());
    let resp = http()
        .get(gw.url("/reports/1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let p = assert_problem(resp, 503, "unavailable").await;
    assert!(!p["detail"].as_str().unwrap().contains("fake"), "{p}");
    assert_eq!(up.hits(), 0);
    // Nothing was cached from the failure, and without a cache every request asks.
    authz.set_down(false);
    for _ in 0..2 {
        let resp = http()
            .get(gw.url("/reports/1"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(authz.calls(), 3);
    gw.stop().await;
}

#[tokio::test]
async fn the_configured_authz_client_goes_through_the_registry() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    // A real authz HTTP API (over a fake core), found in the registry as `authz`.
    let core = FakeAuthz::default();
    let user = Uuid::new_v4();
    core.grant(user, "reports.items.read");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authz_addr = listener.local_addr().unwrap();
    let api = plt_contracts::authz::http::routes(Arc::new(core.clone()));
    tokio::spawn(async move {
        let _ = axum::serve(listener, api).await;
    });
    let setup = Setup::new(&keys, &[], routes())
        .var("PLT_CLIENTS__AUTHZ__PROTOCOL", "http")
        .var("PLT_CLIENTS__AUTH__PROTOCOL", "http");
    let registry = setup.registry.clone();
    let _r = register(&registry, "up", up.addr, "").await;
    // Started as the binary starts it (no injected client): authz through the client
    // factory, with the gateway's service credentials, from configuration.
    plt_kernel::telemetry::init_for_tests();
    let cfg = common::config(&setup.vars);
    let app = plt_runtime::start::<api_gateway::ApiGateway>(
        cfg,
        plt_runtime::Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            registry: Some(Arc::new(registry.clone())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let addr = app.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    let url = format!("http://{addr}/reports/1");
    // No authz instance (nor auth to issue the gateway's service token) yet: fail closed.
    let resp = http()
        .get(&url)
        .bearer_auth(keys.token(&user.to_string()))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 503, "unavailable").await;
    // Auth issues the gateway's service token (for its development secret).
    let auth = FakeAuth::default();
    let auth_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let auth_addr = auth_listener.local_addr().unwrap();
    let auth_api = plt_contracts::auth::http::routes(Arc::new(auth.clone()));
    tokio::spawn(async move {
        let _ = axum::serve(auth_listener, auth_api).await;
    });
    let _auth = register(&registry, "auth", auth_addr, "").await;
    let _a = register(&registry, "authz", authz_addr, "").await;
    let mut status = 0;
    for _ in 0..100 {
        status = http()
            .get(&url)
            .bearer_auth(keys.token(&user.to_string()))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200);
    // The gateway vouches to the upstream with its own service token and the client address
    // it determined; what a client sends in their place never passes.
    let mut seen = serde_json::Value::Null;
    for _ in 0..100 {
        seen = http()
            .get(&url)
            .bearer_auth(keys.token(&user.to_string()))
            .header("x-plt-client-ip", "6.6.6.6")
            .header("x-plt-service-token", "forged")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if seen["headers"].get("x-plt-service-token").is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let token = seen["headers"]["x-plt-service-token"]
        .as_str()
        .unwrap_or("");
    assert!(!token.is_empty() && token != "forged", "{seen}");
    assert_eq!(seen["headers"]["x-plt-client-ip"], "127.0.0.1", "{seen}");
    let other = Uuid::new_v4();
    let resp = http()
        .get(&url)
        .bearer_auth(keys.token(&other.to_string()))
        .send()
        .await
        .unwrap();
    assert_problem(resp, 403, "permission_denied").await;
    // Every check carried the gateway's service token for authz, issued once (the others
    // are the gateway's tokens for the routed service, which it vouches with).
    let issued = auth.issued();
    assert_eq!(
        issued.iter().filter(|(_, aud)| aud == "authz").count(),
        1,
        "{issued:?}"
    );
    assert!(issued.iter().all(|(svc, _)| svc == "gateway"), "{issued:?}");
    let tokens = core.service_tokens();
    assert!(!tokens.is_empty());
    assert!(
        tokens
            .iter()
            .all(|t| t.as_deref() == Some("svc:gateway:authz")),
        "{tokens:?}"
    );
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn undocumented_methods_are_405_before_authentication() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let setup = Setup::new(
        &keys,
        &[],
        json!([{"prefix": "/api/v1/users", "service": "up", "strip": "/api"}]),
    );
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    let c = http();
    let user = Uuid::new_v4();
    let url = gw.url(&format!("/api/v1/users/{user}"));

    // PUT is not in the document for /api/v1/users/{id}: 405 with what is, token or not.
    let resp = c.put(&url).send().await.unwrap();
    let allow = resp.headers()["allow"].to_str().unwrap().to_owned();
    for m in ["GET", "HEAD", "PATCH", "DELETE"] {
        assert!(allow.contains(m), "{allow}");
    }
    assert!(!allow.contains("POST") && !allow.contains("PUT"), "{allow}");
    assert_problem(resp, 405, "invalid_argument").await;
    // A documented method still needs the token, and the upstream saw nothing.
    let resp = c.get(&url).send().await.unwrap();
    assert_problem(resp, 401, "unauthenticated").await;
    let resp = c.post(gw.url("/api/v1/users")).send().await.unwrap();
    assert_ne!(resp.status(), 405, "POST /api/v1/users is documented");
    assert_eq!(up.hits(), 0);
    gw.stop().await;
}
