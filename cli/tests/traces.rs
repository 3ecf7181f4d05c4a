//! Observability from outside, as an operator's collector and error tracker see `plt dev`:
//! one trace per request across the gateway and the services it calls (parent links
//! included), each service exporting under its own `service.name`; the trace id in every log
//! line of the request and in the audit record it caused; a panic answered 500 and reported
//! with its request id to a Sentry-compatible receiver. With the feature services, a
//! published post is one trace from the gateway through Blog, the event bus and Analytics.

mod common;

use common::login;

use plt_kernel::testing::collectors::{OtlpReceiver, ReceivedSpan, SentryReceiver};
use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

const ADMIN_PASSWORD: &str = "traces admin passphrase 42";

struct Platform {
    child: Child,
    /// Every stdout line so far (the banner, then JSON log lines).
    lines: Arc<Mutex<Vec<String>>>,
    urls: Vec<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Platform {
    /// Ctrl-C, so that plt dev stops the feature services' processes too; killed if it
    /// does not stop in time.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Platform {
    fn url(&self, name: &str) -> String {
        self.urls
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, u)| u.clone())
            .unwrap_or_else(|| panic!("no {name} in the banner: {:?}", self.urls))
    }

    fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `plt dev` with JSON logs at info; `features`: run from the repository (Blog, Billing and
/// Analytics as processes), else in an empty directory (the core services only).
fn start(features: bool, vars: &[(&str, String)]) -> Platform {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_plt"));
    cmd.args(["dev", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PLT_CONFIG_DIR", repo().join("config"))
        .env("PLT_DEV_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("PLT_LOG__FORMAT", "json")
        .env("PLT_LOG__LEVEL", "info,sqlx=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for svc in ["IDENTITY", "AUTH", "AUTHZ", "AUDIT", "GATEWAY"] {
        cmd.env(format!("PLT_{svc}__LISTEN"), "127.0.0.1:0");
    }
    if features {
        // plt dev builds the workspace's feature services, as a developer's shell would.
        cmd.current_dir(repo()).envs(common::cargo_env());
    } else {
        cmd.current_dir(dir.path());
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let kept = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            kept.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    let mut platform = Platform {
        child,
        lines,
        urls: Vec::new(),
        _dir: Some(dir),
    };
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(900))
            .expect("plt dev prints its banner");
        let mut words = line.split_whitespace();
        if let (Some(name), Some(url)) = (words.next(), words.next())
            && url.starts_with("http://")
        {
            platform.urls.push((name.to_owned(), url.to_owned()));
        }
        if line.starts_with("Ctrl-C") {
            break;
        }
    }
    platform
}

/// The span of `trace` named `name` exported by `service`.
fn find<'a>(spans: &'a [ReceivedSpan], service: &str, name: &str) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.service == service && s.name == name)
}

fn show(spans: &[ReceivedSpan]) -> String {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} {} [{}] {} parent={}",
                s.service, s.name, s.kind, s.span_id, s.parent_span_id
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `child`'s parent is `parent`.
fn assert_child(spans: &[ReceivedSpan], child: &ReceivedSpan, parent: &ReceivedSpan) {
    assert_eq!(
        child.parent_span_id,
        parent.span_id,
        "{} ({}) should be a child of {} ({}); the trace:\n{}",
        child.name,
        child.service,
        parent.name,
        parent.service,
        show(spans)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sign_in_is_one_trace_and_a_panic_is_reported_with_its_request_id() {
    let otlp = OtlpReceiver::start().await;
    let sentry = SentryReceiver::start().await;
    let p = start(
        false,
        &[
            ("PLT_TRACING__ENDPOINT", otlp.grpc_endpoint()),
            ("PLT_TRACING__PROTOCOL", "grpc".into()),
            ("PLT_ERROR_REPORTING__DSN", sentry.dsn()),
            ("PLT_ERROR_REPORTING__PANIC_ROUTE", "true".into()),
        ],
    );
    let gw = p.url("gateway");
    let c = plt_kernel::tls::http_client();

    // The client starts the trace: its traceparent is continued, not replaced.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let r = c
        .post(format!("{gw}/api/v1/auth/login"))
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .json(&serde_json::json!({"email": "admin@example.com", "password": ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = otlp
        .wait_for(Duration::from_secs(30), |spans| {
            ["api-gateway", "auth-service", "identity-service"]
                .iter()
                .all(|svc| {
                    spans.iter().any(|s| {
                        s.trace_id == trace_id && s.service == *svc && s.kind == "SPAN_KIND_SERVER"
                    })
                })
        })
        .await;
    let trace: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .cloned()
        .collect();
    let gw_server = find(&trace, "api-gateway", "POST /api/v1/auth/login")
        .unwrap_or_else(|| panic!("the gateway's server span; the trace:\n{}", show(&trace)));
    assert_eq!(gw_server.kind, "SPAN_KIND_SERVER");
    assert_eq!(gw_server.parent_span_id, client_span);
    assert_eq!(
        gw_server.attribute("http.response.status_code"),
        Some("200")
    );
    let gw_client = find(&trace, "api-gateway", "auth/POST").expect("the gateway's call to auth");
    assert_eq!(gw_client.kind, "SPAN_KIND_CLIENT");
    assert_child(&trace, gw_client, gw_server);
    let auth_server = trace
        .iter()
        .find(|s| s.service == "auth-service" && s.kind == "SPAN_KIND_SERVER")
        .expect("auth's server span");
    assert_child(&trace, auth_server, gw_client);
    let auth_client = trace
        .iter()
        .find(|s| s.service == "auth-service" && s.name.starts_with("identity/"))
        .expect("auth's call to identity");
    assert_eq!(auth_client.kind, "SPAN_KIND_CLIENT");
    let identity_server = trace
        .iter()
        .find(|s| s.service == "identity-service" && s.kind == "SPAN_KIND_SERVER")
        .expect("identity's server span");
    assert_child(&trace, identity_server, auth_client);
    assert!(
        identity_server
            .name
            .starts_with("plt.identity.v1.IdentityService/"),
        "gRPC server span named by method: {}",
        identity_server.name
    );
    assert_eq!(identity_server.attribute("rpc.system"), Some("grpc"));
    // Its database queries are spans of their own under identity's server span.
    assert!(
        trace.iter().any(|s| s.service == "identity-service"
            && s.kind == "SPAN_KIND_CLIENT"
            && s.attribute("db.query.text").is_some()),
        "a database span in identity; the trace:\n{}",
        show(&trace)
    );

    // Every service's log lines of the request carry the trace id.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logged = p.log_lines_with(trace_id);
    for service in ["api-gateway", "auth-service", "identity-service"] {
        assert!(
            logged
                .iter()
                .any(|l| l.contains(&format!("\"service\":\"{service}\""))),
            "a log line of {service} with the trace id; lines with it:\n{}",
            logged.join("\n")
        );
    }

    // The audit record of the sign-in carries it too.
    let admin = login(&c, &gw, "admin@example.com", ADMIN_PASSWORD).await;
    let mut found = false;
    for _ in 0..100 {
        let page: serde_json::Value = c
            .get(format!("{gw}/api/v1/audit/logs?action=auth.login"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["entries"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["trace_id"] == trace_id))
        {
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(found, "the audit record of the sign-in has the trace id");

    // A panic: 500 problem+json with the request id, and a report carrying it (on the
    // gateway and on a service's own port).
    for (service, url) in [
        ("api-gateway", gw.clone()),
        ("identity-service", p.url("identity")),
    ] {
        let r = c
            .get(format!("{url}/plt/debug/panic"))
            .header("x-request-id", format!("panic-{service}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 500, "{service}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{service}"
        );
        assert_eq!(
            r.headers()["x-request-id"],
            format!("panic-{service}").as_str()
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["code"], "internal");
        let rid = format!("panic-{service}");
        let event = sentry
            .wait_for(Duration::from_secs(10), |e| {
                e["tags"]["request_id"] == rid.as_str()
            })
            .await
            .unwrap_or_else(|| panic!("a report of {service}'s panic: {:?}", sentry.events()));
        assert_eq!(event["tags"]["service"], service);
        assert_eq!(event["level"], "fatal");
        assert!(
            event["exception"]["values"][0]["value"]
                .as_str()
                .unwrap()
                .contains("induced panic"),
            "{event}"
        );
        assert_eq!(
            event["tags"]["trace_id"].as_str().map(str::len),
            Some(32),
            "{event}"
        );
    }
    assert!(
        sentry
            .auths()
            .iter()
            .all(|a| a.contains("sentry_key=testkey")),
        "{:?}",
        sentry.auths()
    );
    // The service still serves after its handler panicked.
    let r = c.get(format!("{gw}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_published_post_is_one_trace_from_the_gateway_through_the_bus() {
    let otlp = OtlpReceiver::start().await;
    let mut vars = vec![
        ("PLT_TRACING__ENDPOINT", otlp.http_endpoint()),
        ("PLT_TRACING__PROTOCOL", "http".to_owned()),
    ];
    // On Kafka when one is given (CI), else on plt dev's embedded bus.
    if let Ok(brokers) = std::env::var("PLT_TEST_KAFKA_BROKERS") {
        vars.push(("PLT_EVENTS__BACKEND", "kafka".into()));
        vars.push(("PLT_EVENTS__KAFKA__BROKERS", brokers));
    }
    let p = start(true, &vars);
    let gw = p.url("gateway");
    let c = plt_kernel::tls::http_client();
    let ada = {
        let r = c
            .post(format!("{gw}/api/v1/users"))
            .json(&serde_json::json!({"email": "ada@example.com", "password": "correct horse battery staple"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        login(&c, &gw, "ada@example.com", "correct horse battery staple").await
    };
    let post: serde_json::Value = c
        .post(format!("{gw}/api/v1/blog/posts"))
        .bearer_auth(&ada)
        .json(&serde_json::json!({"title": "Traced", "body": "one trace"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = post["id"].as_str().expect("a post id").to_owned();
    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let r = c
        .post(format!("{gw}/api/v1/blog/posts/{id}/publish"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .bearer_auth(&ada)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let spans = otlp
        .wait_for(Duration::from_secs(90), |spans| {
            // Each process exports on its own schedule: wait for all four.
            [
                ("api-gateway", "SPAN_KIND_SERVER"),
                ("blog-service", "SPAN_KIND_SERVER"),
                ("blog-service", "SPAN_KIND_PRODUCER"),
                ("analytics-service", "SPAN_KIND_CONSUMER"),
            ]
            .iter()
            .all(|(service, kind)| {
                spans
                    .iter()
                    .any(|s| s.trace_id == trace_id && s.service == *service && s.kind == *kind)
            })
        })
        .await;
    let trace: Vec<ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == trace_id)
        .cloned()
        .collect();
    let gw_server = trace
        .iter()
        .find(|s| s.service == "api-gateway" && s.kind == "SPAN_KIND_SERVER")
        .unwrap_or_else(|| panic!("the gateway's span; the trace:\n{}", show(&trace)));
    let gw_client = trace
        .iter()
        .find(|s| s.service == "api-gateway" && s.name == "blog/POST")
        .unwrap_or_else(|| panic!("the gateway's call to blog; the trace:\n{}", show(&trace)));
    assert_child(&trace, gw_client, gw_server);
    let blog_server = trace
        .iter()
        .find(|s| s.service == "blog-service" && s.kind == "SPAN_KIND_SERVER")
        .unwrap_or_else(|| panic!("blog's span; the trace:\n{}", show(&trace)));
    assert_child(&trace, blog_server, gw_client);
    let publish = trace
        .iter()
        .find(|s| {
            s.service == "blog-service"
                && s.kind == "SPAN_KIND_PRODUCER"
                && s.name.contains("plt.blog.post.published")
        })
        .unwrap_or_else(|| panic!("blog's producer span; the trace:\n{}", show(&trace)));
    assert_child(&trace, publish, blog_server);
    let process = trace
        .iter()
        .find(|s| s.service == "analytics-service" && s.kind == "SPAN_KIND_CONSUMER")
        .unwrap_or_else(|| {
            // What analytics and the bus said meanwhile, to tell a slow group join from a
            // lost event.
            let tail = |needle: &str| {
                let l = p.log_lines_with(needle);
                l[l.len().saturating_sub(40)..].join("\n")
            };
            panic!(
                "analytics' consumer span; the trace:\n{}\nanalytics' log:\n{}\nwarnings:\n{}",
                show(&trace),
                tail("analytics"),
                tail("WARN")
            )
        });
    assert_child(&trace, process, publish);
    assert!(process.attribute("messaging.consumer.group.name").is_some());
}
