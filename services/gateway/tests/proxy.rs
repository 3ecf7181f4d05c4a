//! Routing and forwarding: configured and announced routes, longest prefix, rewrites, 404,
//! forwarded headers, body limits, timeouts, retries across instances, CORS, OpenAPI.

mod common;

use common::{BlackHole, Echo, Keys, Setup, assert_problem, http, register, start};
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn routes_by_longest_prefix_with_rewrites() {
    let keys = Keys::new().await;
    let users = Echo::start("users").await;
    let admin = Echo::start("admin").await;
    let files = Echo::start("files").await;
    let routes = json!([
        {"prefix": "/api/v1/users", "service": "users", "strip": "/api", "public": true},
        {"prefix": "/api/v1/users/admin", "service": "admin", "rewrite": "/internal", "public": true},
        {"prefix": "/files", "service": "files", "public": true},
        {"prefix": "/read-only", "service": "files", "public": true, "methods": ["GET"]},
    ]);
    let setup = Setup::new(&keys, &[], routes);
    let _r1 = register(&setup.registry, "users", users.addr, "").await;
    let _r2 = register(&setup.registry, "admin", admin.addr, "").await;
    let _r3 = register(&setup.registry, "files", files.addr, "").await;
    let gw = start(setup).await;
    let c = http();

    let body: Value = c
        .get(gw.url("/api/v1/users/42?x=1&y=two"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["instance"], "users");
    assert_eq!(body["path"], "/v1/users/42");
    assert_eq!(body["query"], "x=1&y=two");

    // The longer prefix wins, and its rewrite replaces the matched prefix.
    let body: Value = c
        .get(gw.url("/api/v1/users/admin/audit"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["instance"], "admin");
    assert_eq!(body["path"], "/internal/audit");

    // Prefixes match whole segments only.
    let body: Value = c
        .get(gw.url("/api/v1/users/administrators"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["instance"], "users");
    let resp = c.get(gw.url("/filesystem")).send().await.unwrap();
    assert_problem(resp, 404, "not_found").await;

    // No strip: the path goes as it came.
    let body: Value = c
        .post(gw.url("/files/a.txt"))
        .body("hello")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["path"], "/files/a.txt");
    assert_eq!(body["method"], "POST");
    assert_eq!(body["body_len"], 5);

    // A method no route takes at a routed path: 405 with what is taken.
    let resp = c.delete(gw.url("/read-only/x")).send().await.unwrap();
    assert_eq!(resp.status(), 405);
    assert_eq!(resp.headers()["allow"], "GET, HEAD");
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    let resp = c.head(gw.url("/read-only/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    // Unknown routes and dot segments are refused by the gateway itself.
    let resp = c.get(gw.url("/nowhere")).send().await.unwrap();
    let p = assert_problem(resp, 404, "not_found").await;
    assert_eq!(p["detail"], "no such route");
    // (Raw: an HTTP client library would resolve the dot segments itself.)
    for path in ["/api/v1/users/%2e%2e/secret", "/api/v1/users/../secret"] {
        let raw = raw_get(gw.addr, path).await;
        assert!(raw.starts_with("HTTP/1.1 400"), "{path}: {raw}");
        assert!(raw.contains("application/problem+json"), "{raw}");
    }
    assert_eq!(users.hits(), 2);
    gw.stop().await;
}

#[tokio::test]
async fn announced_routes_follow_the_registry() {
    let keys = Keys::new().await;
    let catalog = Echo::start("catalog").await;
    let setup = Setup::new(
        &keys,
        &["catalog"],
        json!([{"prefix": "/api/v1/catalog/secret", "blocked": true}]),
    );
    let registry = setup.registry.clone();
    let gw = start(setup).await;
    let c = http();
    let token = keys.token("u-1");

    // Nothing announced yet.
    let resp = c.get(gw.url("/api/v1/catalog/items")).send().await.unwrap();
    assert_problem(resp, 404, "not_found").await;

    let reg = register(
        &registry,
        "catalog",
        catalog.addr,
        "/v1/catalog,/.well-known/catalog.json",
    )
    .await;
    let mut ok = false;
    for _ in 0..100 {
        let resp = c
            .get(gw.url("/api/v1/catalog/items"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["path"], "/v1/catalog/items");
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ok, "announced route never appeared");
    // Announced routes need a token.
    let resp = c.get(gw.url("/api/v1/catalog/items")).send().await.unwrap();
    assert_problem(resp, 401, "unauthenticated").await;
    // Root prefixes are served as they are.
    let body: Value = c
        .get(gw.url("/.well-known/catalog.json"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["path"], "/.well-known/catalog.json");
    // A blocked prefix inside an announced one stays unreachable.
    let resp = c
        .get(gw.url("/api/v1/catalog/secret/x"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_problem(resp, 404, "not_found").await;

    // Gone from the registry: gone from the gateway.
    reg.deregister().await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        let resp = c
            .get(gw.url("/api/v1/catalog/items"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        if resp.status() == 404 {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "route stayed after its service left");
    gw.stop().await;
}

#[tokio::test]
async fn forwarded_headers_and_hop_by_hop() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let setup = Setup::new(
        &keys,
        &[],
        json!([{"prefix": "/p", "service": "up", "public": true}]),
    );
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    let resp = http()
        .get(gw.url("/p"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("x-forwarded-proto", "https")
        .header("connection", "x-secret-hop")
        .header("x-secret-hop", "1")
        .header("x-request-id", "req-abc-123")
        .header("x-plt-timeout-ms", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-request-id"], "req-abc-123");
    let body: Value = resp.json().await.unwrap();
    let h = &body["headers"];
    // Appended, not replaced; the peer (not trusted) is the last hop.
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    // From an untrusted peer, the gateway's own view.
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], gw.addr.to_string());
    assert!(h.get("x-secret-hop").is_none(), "{h}");
    assert_eq!(h["x-request-id"], "req-abc-123");
    // The gateway's own deadline, not the client's.
    let ms: u64 = h["x-plt-timeout-ms"].as_str().unwrap().parse().unwrap();
    assert!(ms > 1000, "{ms}");
    gw.stop().await;
}

#[tokio::test]
async fn body_limit_and_streaming() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let setup = Setup::new(
        &keys,
        &[],
        json!([{"prefix": "/p", "service": "up", "public": true}]),
    )
    .var("PLT_GATEWAY__BODY_LIMIT_BYTES", "100000")
    .var("PLT_GATEWAY__UPSTREAM__RETRY_BUFFER_BYTES", "1000");
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    let c = http();

    // Declared too large: refused before anything is read or sent.
    let resp = c
        .post(gw.url("/p"))
        .body(vec![b'x'; 100_001])
        .send()
        .await
        .unwrap();
    assert_problem(resp, 413, "payload_too_large").await;
    assert_eq!(up.hits(), 0);

    // Large but allowed: streamed through whole.
    let body: Value = c
        .post(gw.url("/p"))
        .body(vec![b'x'; 99_000])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["body_len"], 99_000);

    // Chunked (no length): counted while streaming, refused once over.
    let raw = chunked_request(gw.addr, "/p", 150_000).await;
    assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
    assert!(raw.contains("application/problem+json"), "{raw}");
    let ok = chunked_request(gw.addr, "/p", 50_000).await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("\"body_len\":50000"), "{ok}");
    gw.stop().await;
}

/// Sends `GET path` exactly as given over a raw connection; returns the raw answer.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: gw\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Sends a chunked POST of `n` bytes over a raw connection; returns the raw answer.
async fn chunked_request(addr: std::net::SocketAddr, path: &str, n: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: gw\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'y'; 10_000];
    let mut sent = 0;
    while sent < n {
        let len = chunk.len().min(n - sent);
        let frame = format!("{len:x}\r\n");
        if s.write_all(frame.as_bytes()).await.is_err()
            || s.write_all(&chunk[..len]).await.is_err()
            || s.write_all(b"\r\n").await.is_err()
        {
            break;
        }
        sent += len;
    }
    let _ = s.write_all(b"0\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn route_timeout_is_504() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let setup = Setup::new(
        &keys,
        &[],
        json!([
            {"prefix": "/fast", "service": "up", "public": true, "timeout": "200ms"},
            {"prefix": "/patient", "service": "up", "public": true, "timeout": "5s"},
        ]),
    );
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    let c = http();
    let started = std::time::Instant::now();
    let resp = c.get(gw.url("/fast/slow?ms=2000")).send().await.unwrap();
    let p = assert_problem(resp, 504, "deadline_exceeded").await;
    assert!(started.elapsed() < Duration::from_millis(1500));
    // No internal detail.
    assert_eq!(p["detail"], "the service did not answer in time");
    let resp = c.get(gw.url("/patient/slow?ms=300")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn idempotent_requests_retry_on_another_instance() {
    let keys = Keys::new().await;
    let good = Echo::start("good").await;
    let dead = BlackHole::start(false).await;
    let setup = Setup::new(
        &keys,
        &[],
        json!([{"prefix": "/p", "service": "up", "public": true}]),
    )
    // Every failure may be retried (the default budget allows 20% extra load plus a few).
    .var("PLT_GATEWAY__UPSTREAM__RETRY_BUDGET_RATIO", "1");
    let _a = register(&setup.registry, "up", good.addr, "").await;
    let _b = register(&setup.registry, "up", dead.addr, "").await;
    let gw = start(setup).await;
    gw.wait_instances("up", 2).await;
    let c = http();
    for i in 0..30 {
        let resp = c.get(gw.url(&format!("/p/{i}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        if dead.connections() > 0 && i > 5 {
            break;
        }
    }
    assert!(
        dead.connections() > 0,
        "the broken instance was never tried"
    );
    gw.stop().await;
}

#[tokio::test]
async fn requests_that_reached_an_instance_are_not_retried_unless_idempotent() {
    let keys = Keys::new().await;
    let good = Echo::start("good").await;
    let hole = BlackHole::start(true).await;
    let setup = Setup::new(
        &keys,
        &[],
        json!([{"prefix": "/p", "service": "up", "public": true}]),
    )
    // Keep the broken instance in the pool for the whole test.
    .var("PLT_GATEWAY__UPSTREAM__BREAKER_FAILURES", "1000")
    .var("PLT_GATEWAY__UPSTREAM__RETRY_BUDGET_RATIO", "1");
    let _a = register(&setup.registry, "up", good.addr, "").await;
    let _b = register(&setup.registry, "up", hole.addr, "").await;
    let gw = start(setup).await;
    gw.wait_instances("up", 2).await;
    let c = http();
    let mut ok = 0;
    let mut failed = 0;
    for i in 0..40 {
        let resp = c
            .post(gw.url(&format!("/p/{i}")))
            .body("payload")
            .send()
            .await
            .unwrap();
        match resp.status().as_u16() {
            200 => ok += 1,
            503 => {
                assert_problem(resp, 503, "unavailable").await;
                failed += 1;
            }
            s => panic!("unexpected {s}"),
        }
        if failed >= 2 && ok >= 2 {
            break;
        }
    }
    assert!(failed > 0, "the broken instance was never picked");
    // Every POST that reached the broken instance failed; none was sent again.
    assert_eq!(good.hits(), ok);
    assert_eq!(hole.connections(), failed);
    // The same instance, but a GET: retried elsewhere, so it succeeds.
    let before = hole.connections();
    for i in 0..40 {
        let resp = c.get(gw.url(&format!("/p/{i}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        if hole.connections() > before + 1 {
            break;
        }
    }
    assert!(hole.connections() > before);
    gw.stop().await;
}

#[tokio::test]
async fn refused_connections_are_retried_for_any_method() {
    let keys = Keys::new().await;
    let good = Echo::start("good").await;
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let setup = Setup::new(
        &keys,
        &[],
        json!([{"prefix": "/p", "service": "up", "public": true}]),
    )
    .var("PLT_GATEWAY__UPSTREAM__BREAKER_FAILURES", "1000")
    .var("PLT_GATEWAY__UPSTREAM__RETRY_BUDGET_RATIO", "1");
    let _a = register(&setup.registry, "up", good.addr, "").await;
    let _b = register(&setup.registry, "up", closed, "").await;
    let gw = start(setup).await;
    gw.wait_instances("up", 2).await;
    for i in 0..10 {
        let resp = http()
            .post(gw.url(&format!("/p/{i}")))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(good.hits(), 10);
    gw.stop().await;
}

#[tokio::test]
async fn no_instance_is_503() {
    let keys = Keys::new().await;
    let gw = start(Setup::new(
        &keys,
        &[],
        json!([{"prefix": "/p", "service": "nobody", "public": true}]),
    ))
    .await;
    let resp = http().get(gw.url("/p")).send().await.unwrap();
    let p = assert_problem(resp, 503, "unavailable").await;
    assert!(!p["detail"].as_str().unwrap().contains("nobody"), "{p}");
    gw.stop().await;
}

#[tokio::test]
async fn cors_preflight_and_actual_requests() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let setup = Setup::new(&keys, &[], json!([{"prefix": "/p", "service": "up"}]))
        .var(
            "PLT_GATEWAY__CORS__ALLOWED_ORIGINS",
            "[\"https://app.example.com\"]",
        )
        .var("PLT_GATEWAY__CORS__MAX_AGE", "5m");
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    let c = http();

    let resp = c
        .request(reqwest::Method::OPTIONS, gw.url("/p/x"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PATCH")
        .header(
            "access-control-request-headers",
            "Authorization, Content-Type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    let h = resp.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("PATCH")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("authorization")
    );
    assert_eq!(h["access-control-max-age"], "300");
    // Answered by the gateway: no token needed, nothing forwarded.
    assert_eq!(up.hits(), 0);

    for (origin, method, headers) in [
        ("https://evil.example.com", "GET", ""),
        ("https://app.example.com", "TRACE", ""),
        ("https://app.example.com", "GET", "x-evil"),
    ] {
        let mut rb = c
            .request(reqwest::Method::OPTIONS, gw.url("/p/x"))
            .header("origin", origin)
            .header("access-control-request-method", method);
        if !headers.is_empty() {
            rb = rb.header("access-control-request-headers", headers);
        }
        let resp = rb.send().await.unwrap();
        assert!(!resp.headers().contains_key("access-control-allow-origin"));
        assert_problem(resp, 403, "permission_denied").await;
    }

    // An actual request from the allowed origin: CORS headers even on errors.
    let resp = c
        .get(gw.url("/p/x"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    assert!(
        resp.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
    // From another origin: no CORS headers.
    let resp = c
        .get(gw.url("/p/x"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .unwrap();
    assert!(!resp.headers().contains_key("access-control-allow-origin"));
    gw.stop().await;
}

#[tokio::test]
async fn openapi_document_describes_the_public_api() {
    let keys = Keys::new().await;
    // The default configuration's routes.
    let mut setup = Setup::new(&keys, &["identity", "auth", "authz", "audit"], json!([]));
    setup.vars.retain(|(k, _)| k != "PLT_GATEWAY__ROUTES");
    let gw = start(setup).await;
    let resp = http().get(gw.url("/openapi.json")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().unwrap();
    let users = &paths["/api/v1/users"];
    // Sign-up is public; listing needs a token and a permission.
    assert!(users["post"].get("security").is_none());
    assert_eq!(
        users["post"]["responses"]["201"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/User"
    );
    assert!(users["post"]["responses"]["409"].is_object());
    assert!(users["post"]["responses"]["413"].is_object());
    assert_eq!(users["get"]["security"][0]["bearer"], json!([]));
    assert!(users["get"]["responses"]["401"].is_object());
    assert!(users["get"]["responses"]["403"].is_object());
    assert!(paths.contains_key("/api/v1/users/{id}"));
    assert!(paths.contains_key("/api/v1/auth/login"));
    assert!(paths.contains_key("/.well-known/jwks.json"));
    assert!(paths.contains_key("/api/v1/authz/roles"));
    assert!(paths.contains_key("/api/v1/audit/logs"));
    // Internal endpoints are not part of it.
    assert!(!paths.contains_key("/api/v1/auth/validate"));
    assert!(!paths.contains_key("/api/v1/credentials/verify"));
    assert!(!paths.contains_key("/api/v1/audit/records"));
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for s in [
        "User",
        "UserPage",
        "CreateUserBody",
        "Problem",
        "TokenPair",
        "Role",
        "AuditPage",
    ] {
        assert!(schemas.contains_key(s), "schema {s} missing");
    }
    // Strict bodies, as the services are.
    assert_eq!(schemas["CreateUserBody"]["additionalProperties"], false);
    let required = schemas["CreateUserBody"]["required"].as_array().unwrap();
    assert!(required.contains(&json!("email")) && !required.contains(&json!("display_name")));
    assert_eq!(
        doc["components"]["responses"]["TooManyRequests"]["content"]["application/problem+json"]["schema"]
            ["$ref"],
        "#/components/schemas/Problem"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // What the services check beyond JSON types is stated too.
    assert_eq!(
        schemas["CheckBody"]["properties"]["permission"]["pattern"],
        "^[a-z][a-z0-9_-]{0,63}\\.[a-z][a-z0-9_-]{0,63}\\.[a-z][a-z0-9_-]{0,63}$"
    );
    assert_eq!(
        schemas["CreateUserBody"]["properties"]["password"]["minLength"],
        8
    );
    gw.stop().await;
}

#[tokio::test]
async fn health_and_metrics_are_the_gateways_own() {
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let setup = Setup::new(
        &keys,
        &[],
        json!([{"prefix": "/", "service": "up", "public": true}]),
    );
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    let c = http();
    assert_eq!(
        c.get(gw.url("/healthz")).send().await.unwrap().status(),
        200
    );
    assert_eq!(c.get(gw.url("/readyz")).send().await.unwrap().status(), 200);
    let body: Value = c
        .get(gw.url("/anything"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["path"], "/anything");
    let metrics = c
        .get(gw.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        up.hits(),
        1,
        "health, readiness and metrics are not forwarded"
    );
    assert!(metrics.contains("gateway_requests_total{"), "{metrics}");
    assert!(metrics.contains("route=\"/\""), "{metrics}");
    assert!(
        metrics.contains("gateway_upstream_duration_seconds"),
        "{metrics}"
    );
    gw.stop().await;
}

/// A 1 MB `Authorization` header, sent on a raw connection: the gateway (its front handler,
/// on its worker threads) answers 431 problem+json and closes, instead of dropping the
/// connection without an answer; the upstream never sees the request.
#[tokio::test]
async fn an_oversized_header_gets_431_problem_json() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let keys = Keys::new().await;
    let up = Echo::start("up").await;
    let setup = Setup::new(
        &keys,
        &[],
        json!([{"prefix": "/p", "service": "up", "public": true}]),
    )
    .var("PLT_GATEWAY__WORKERS", "2");
    let _r = register(&setup.registry, "up", up.addr, "").await;
    let gw = start(setup).await;
    for _ in 0..3 {
        let s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let head = format!(
            "GET /p/x HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\n\r\n",
            "a".repeat(1 << 20)
        );
        let writer = tokio::spawn(async move {
            let _ = w.write_all(head.as_bytes()).await;
            w
        });
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut out))
            .await
            .expect("the gateway closes after answering")
            .expect("an answer, not a reset");
        drop(writer);
        let out = String::from_utf8(out).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").expect("a whole answer");
        assert!(
            head.starts_with("HTTP/1.1 431 Request Header Fields Too Large"),
            "{head}"
        );
        assert!(
            head.contains("content-type: application/problem+json"),
            "{head}"
        );
        let problem: Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 431);
        assert_eq!(problem["code"], "invalid_argument");
    }
    assert_eq!(up.hits(), 0);
    // Still serving.
    let resp = http().get(gw.url("/p/x")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    gw.stop().await;
}
