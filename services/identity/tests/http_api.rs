//! The identity HTTP API at the wire level: status codes, the problem+json shape, request
//! ids, and that no password material ever appears in a response.

mod common;

use common::{Backend, start};
use reqwest::StatusCode;
use serde_json::{Value, json};

const PW: &str = "correct horse battery staple";

async fn problem(resp: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:plt:problem:")
    );
    assert!(body["title"].is_string() && body["detail"].is_string() && body["code"].is_string());
    body
}

fn field(body: &Value) -> &str {
    body["errors"][0]["field"].as_str().unwrap_or("")
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_nothing_is_written() {
    let svc = start(Backend::Sqlite).await.unwrap();
    let c = svc.operator_client();
    let users = format!("{}/v1/users", svc.url());

    // Malformed JSON.
    let r = c
        .post(&users)
        .header("content-type", "application/json")
        .body("{\"email\": ")
        .send()
        .await
        .unwrap();
    let b = problem(r, StatusCode::BAD_REQUEST).await;
    assert_eq!(b["code"], "invalid_argument");
    assert!(
        b["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("malformed JSON")
    );

    // Unknown field.
    let r = c
        .post(&users)
        .json(&json!({"email": "u1@example.com", "password": PW, "admin": true}))
        .send()
        .await
        .unwrap();
    let b = problem(r, StatusCode::BAD_REQUEST).await;
    assert!(
        b["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("unknown field `admin`"),
        "{b}"
    );

    // Missing field, wrong type.
    let r = c
        .post(&users)
        .json(&json!({"email": "u1@example.com"}))
        .send()
        .await
        .unwrap();
    let b = problem(r, StatusCode::BAD_REQUEST).await;
    assert!(
        b["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("password"),
        "{b}"
    );
    let r = c
        .post(&users)
        .json(&json!({"email": 42, "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(field(&problem(r, StatusCode::BAD_REQUEST).await), "email");

    // Wrong content type.
    let r = c.post(&users).body("email=a@b.c").send().await.unwrap();
    assert_eq!(
        field(&problem(r, StatusCode::BAD_REQUEST).await),
        "content-type"
    );

    // Invalid e-mail, oversize display name, weak password.
    for (body, f) in [
        (json!({"email": "nope", "password": PW}), "email"),
        (
            json!({"email": "u2@example.com", "password": PW, "display_name": "x".repeat(500)}),
            "display_name",
        ),
        (
            json!({"email": "u2@example.com", "password": "12345678"}),
            "password",
        ),
    ] {
        let r = c.post(&users).json(&body).send().await.unwrap();
        assert_eq!(field(&problem(r, StatusCode::BAD_REQUEST).await), f);
    }

    // Body over the configured limit (1 MiB): 413.
    let huge = json!({"email": "u3@example.com", "password": PW, "display_name": "y".repeat(2 * 1024 * 1024)});
    let r = c.post(&users).json(&huge).send().await.unwrap();
    assert_eq!(
        problem(r, StatusCode::PAYLOAD_TOO_LARGE).await["code"],
        "payload_too_large"
    );

    // None of the refused requests created anything.
    let r = c.get(&users).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let list: Value = r.json().await.unwrap();
    assert_eq!(list["users"].as_array().unwrap().len(), 0, "{list}");

    // Duplicate: 409; unknown id: 404; malformed id: 400.
    let r = c
        .post(&users)
        .json(&json!({"email": "dup@example.com", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = c
        .post(&users)
        .json(&json!({"email": "DUP@example.com", "password": PW}))
        .send()
        .await
        .unwrap();
    let b = problem(r, StatusCode::CONFLICT).await;
    assert_eq!(b["code"], "already_exists");
    assert_eq!(field(&b), "email");
    let r = c
        .get(format!("{users}/01a20efb-92ba-76bf-843e-22e4b3e45c7c"))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND).await;
    let r = c.get(format!("{users}/not-a-uuid")).send().await.unwrap();
    assert_eq!(field(&problem(r, StatusCode::BAD_REQUEST).await), "id");
    let r = c
        .patch(format!("{users}/not-a-uuid"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::BAD_REQUEST).await;

    // Wrong password: 401 with a generic message.
    let r = c
        .post(format!("{}/v1/credentials/verify", svc.url()))
        .header("x-plt-service-token", svc.service_token())
        .json(&json!({"email": "dup@example.com", "password": "not the password at all"}))
        .send()
        .await
        .unwrap();
    let b = problem(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(b["detail"], "invalid e-mail or password");

    // Checking a password is for platform services only: without a service token, or with
    // one addressed to another service, 401 before any password is looked at.
    let foreign = svc.authority.service_token("auth", "authz");
    for token in [None, Some("garbage"), Some(foreign.expose().as_str())] {
        let mut rb = c
            .post(format!("{}/v1/credentials/verify", svc.url()))
            .json(&json!({"email": "dup@example.com", "password": "not the password at all"}));
        if let Some(t) = token {
            rb = rb.header("x-plt-service-token", t);
        }
        let b = problem(rb.send().await.unwrap(), StatusCode::UNAUTHORIZED).await;
        assert!(
            b["detail"].as_str().unwrap().contains("service credential"),
            "{b}"
        );
    }
    // Another platform service (the gateway) holds a valid service token, but only auth may
    // check passwords: 403.
    let gateway = svc.authority.service_token("gateway", "identity");
    let r = c
        .post(format!("{}/v1/credentials/verify", svc.url()))
        .header("x-plt-service-token", gateway.expose())
        .json(&json!({"email": "dup@example.com", "password": "not the password at all"}))
        .send()
        .await
        .unwrap();
    let b = problem(r, StatusCode::FORBIDDEN).await;
    assert!(b["detail"].as_str().unwrap().contains("gateway"), "{b}");

    // Unknown route: 404 problem+json.
    let r = c
        .get(format!("{}/v1/nothing-here", svc.url()))
        .send()
        .await
        .unwrap();
    problem(r, StatusCode::NOT_FOUND).await;
    svc.stop().await;
}

#[tokio::test]
async fn responses_never_carry_password_material() {
    let svc = start(Backend::Sqlite).await.unwrap();
    let c = svc.operator_client();
    let base = svc.url();
    let r = c
        .post(format!("{base}/v1/users"))
        .header("x-request-id", "req-abc-123")
        .json(&json!({"email": "Mixed.Case@Example.com", "password": PW, "display_name": "Mixed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["x-request-id"], "req-abc-123");
    let created: Value = r.json().await.unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let mut bodies = vec![created.to_string()];
    for url in [
        format!("{base}/v1/users/{id}"),
        format!("{base}/v1/users?email=mixed.case@example.com"),
        format!("{base}/v1/users?page_size=10"),
    ] {
        let r = c.get(url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        bodies.push(r.text().await.unwrap());
    }
    let r = c
        .post(format!("{base}/v1/credentials/verify"))
        .header("x-plt-service-token", svc.service_token())
        .json(&json!({"email": "mixed.case@example.com", "password": PW}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    bodies.push(r.text().await.unwrap());
    for b in &bodies {
        assert!(b.contains(&id), "{b}");
        for secret in ["argon2", "password", PW] {
            assert!(!b.contains(secret), "{secret:?} in {b}");
        }
    }
    // The stored hash is Argon2id with at least the OWASP parameters.
    let plt_db::Db::Sqlite(pool) = svc.db() else {
        unreachable!()
    };
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(
        hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{hash}"
    );
    svc.stop().await;
}

#[tokio::test]
async fn password_reset_answers_the_same_for_unknown_addresses() {
    let svc = start(Backend::Sqlite).await.unwrap();
    let c = svc.operator_client();
    let base = svc.url();
    c.post(format!("{base}/v1/users"))
        .json(&json!({"email": "known@example.com", "password": PW}))
        .send()
        .await
        .unwrap();
    let mut answers = Vec::new();
    for email in ["known@example.com", "unknown@example.com"] {
        let r = c
            .post(format!("{base}/v1/password-reset"))
            .json(&json!({ "email": email }))
            .send()
            .await
            .unwrap();
        answers.push((r.status(), r.text().await.unwrap()));
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].0, StatusCode::ACCEPTED);
    svc.stop().await;
}

#[tokio::test]
async fn readiness_names_the_database_when_it_goes_away() {
    let svc = start(Backend::Sqlite).await.unwrap();
    let c = svc.operator_client();
    let r = c.get(format!("{}/readyz", svc.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    svc.db().close().await;
    let r = c.get(format!("{}/readyz", svc.url())).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["failing"], json!(["database"]), "{body}");
    let r = c
        .get(format!("{}/healthz", svc.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn postgres_tables_live_in_the_service_schema() {
    let Some(svc) = start(Backend::Postgres).await else {
        common::skipped("postgres_tables_live_in_the_service_schema");
        return;
    };
    let plt_db::Db::Postgres(pool) = svc.db() else {
        unreachable!()
    };
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
    )
    .bind(svc.schema())
    .fetch_all(pool)
    .await
    .unwrap();
    // The service's tables, and the platform's (the outbox, with its migration history).
    assert_eq!(
        tables,
        vec![
            "_plt_migrations",
            "_sqlx_migrations",
            "inbox",
            "outbox",
            "user_tokens",
            "users"
        ]
    );
    let in_public: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public' AND table_name IN ('users', 'user_tokens')",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(in_public, 0);
    svc.stop().await;
}

#[tokio::test]
async fn metrics_pass_promtool_when_available() {
    let svc = start(Backend::Sqlite).await.unwrap();
    let c = svc.operator_client();
    let base = svc.url();
    c.post(format!("{base}/v1/users"))
        .json(&json!({"email": "m@example.com", "password": PW}))
        .send()
        .await
        .unwrap();
    c.get(format!("{base}/v1/users/not-a-uuid"))
        .send()
        .await
        .unwrap();
    let grpc = plt_contracts::identity::grpc::IdentityGrpcClient::connect_lazy(&base).unwrap();
    use plt_contracts::identity::IdentityServiceClient as _;
    let ctx = svc.operator.clone();
    grpc.get_user_by_email(&ctx, "m@example.com").await.unwrap();
    let _ = grpc.get_user_by_email(&ctx, "nobody@example.com").await;
    let text = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "http_server_requests_total{",
        "http_server_request_duration_seconds_bucket{",
        "grpc_server_handled_total{",
        "grpc_server_handling_seconds_bucket{",
        "db_pool_connections{",
        "db_pool_max_connections{",
    ] {
        assert!(text.contains(series), "{series} missing from /metrics");
    }
    assert!(
        text.contains(r#"grpc_method="GetUserByEmail",grpc_code="NotFound""#),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/v1/users/{id}",status="400""#),
        "{text}"
    );
    match std::env::var("PLT_TEST_PROMTOOL") {
        Ok(promtool) if !promtool.is_empty() => {
            use std::io::Write;
            let mut child = std::process::Command::new(promtool)
                .args(["check", "metrics"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("promtool runs");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        _ => eprintln!("SKIPPED promtool check: PLT_TEST_PROMTOOL is not set"),
    }
    svc.stop().await;
}

#[tokio::test]
async fn a_reset_a_disable_and_a_delete_end_the_users_sessions_at_auth() {
    let svc = start(Backend::Sqlite).await.unwrap();
    let c = svc.operator_client();
    let base = svc.url();
    let mut ids = Vec::new();
    for name in ["reset", "disabled", "deleted"] {
        let r = c
            .post(format!("{base}/v1/users"))
            .json(&json!({"email": format!("{name}@example.com"), "password": PW}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let u: Value = r.json().await.unwrap();
        ids.push(u["id"].as_str().unwrap().parse::<uuid::Uuid>().unwrap());
    }
    assert!(svc.auth.sessions_ended().is_empty());
    // The request to auth is committed with the change and delivered by the outbox relay:
    // right after the commit, and, while auth is down, as soon as it is back.
    let ended = |user: uuid::Uuid, reason: &str| {
        svc.auth
            .sessions_ended()
            .contains(&(user, reason.to_owned()))
    };
    let eventually = |user: uuid::Uuid, reason: &'static str| {
        let ended = &ended;
        async move {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !ended(user, reason) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{user}: sessions not ended ({reason})"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    // A password reset (the token from the mail) ends the user's sessions, also when auth is
    // down at that moment: the reset succeeds and the sessions end once auth is back.
    svc.auth.set_down(true);
    let r = c
        .post(format!("{base}/v1/password-reset"))
        .json(&json!({"email": "reset@example.com"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let mail = plt_kernel::notify::MailReader::latest_to(&svc.mail, "reset@example.com")
        .unwrap()
        .unwrap();
    let token = plt_contracts::identity::token_in_mail(&mail.body).unwrap();
    let r = c
        .post(format!("{base}/v1/password-reset/confirm"))
        .json(&json!({"token": token, "new_password": "another horse battery staple"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(!ended(ids[0], "password_reset"), "auth is down");
    svc.auth.set_down(false);
    eventually(ids[0], "password_reset").await;
    // Disabling ends them (before and after the change); renaming does not.
    let r = c
        .patch(format!("{base}/v1/users/{}", ids[1]))
        .json(&json!({"display_name": "renamed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!svc.auth.sessions_ended().iter().any(|(u, _)| *u == ids[1]));
    let r = c
        .patch(format!("{base}/v1/users/{}", ids[1]))
        .json(&json!({"status": "disabled"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    eventually(ids[1], "user_disabled").await;
    let r = c
        .delete(format!("{base}/v1/users/{}", ids[2]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    eventually(ids[2], "user_deleted").await;
    svc.stop().await;
}
