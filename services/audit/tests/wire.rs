//! The audit API at the wire level: HTTP status codes, the problem+json shape and the JSON
//! bodies; the gRPC request checks of the adapter; and that refused input writes nothing.

mod common;

use common::{Backend, Running, start};
use plt_contracts::pb::audit::v1 as pb;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

async fn problem(resp: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(resp.status(), status);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status.as_u16());
    assert!(
        body["type"]
            .as_str()
            .unwrap()
            .starts_with("urn:plt:problem:")
    );
    body
}

fn field(body: &Value) -> &str {
    body["errors"][0]["field"].as_str().unwrap_or("")
}

fn reason(body: &Value) -> &str {
    body["errors"][0]["reason"].as_str().unwrap_or("")
}

fn good() -> Value {
    json!({
        "actor": "user:wire",
        "action": "wire.test",
        "resource": "thing/1",
        "outcome": "success",
        "metadata": {"k": "v"},
    })
}

async fn nothing_written(svc: &Running, c: &Client) {
    let r = c
        .post(format!("{}/v1/audit/verify", svc.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["checked"], 0, "refused input was written: {v}");
}

#[tokio::test]
async fn bad_records_over_http_name_the_field_and_write_nothing() {
    let svc = start(Backend::Sqlite).await.unwrap();
    let c = common::service_http_client();
    let records = format!("{}/v1/audit/records", svc.url());
    let with = |k: &str, v: Value| {
        let mut b = good();
        b[k] = v;
        b
    };
    let max = svc.cfg.service.max_metadata_bytes;
    let cases: Vec<(Value, &str, &str)> = vec![
        (with("metadata", json!([1, 2])), "metadata", "JSON object"),
        (with("metadata", json!("text")), "metadata", "JSON object"),
        (with("metadata", json!(42)), "metadata", "JSON object"),
        (
            with("metadata", json!({"blob": "x".repeat(max)})),
            "metadata",
            "bytes as compact JSON",
        ),
        (with("actor", json!("")), "actor", "is required"),
        (with("action", json!(" ")), "action", "is required"),
        (
            with("outcome", json!("maybe")),
            "outcome",
            "unknown variant",
        ),
        (with("source_ip", json!("localhost")), "source_ip", "IP"),
        (
            with("sequence", json!(7)),
            "sequence",
            "unknown field `sequence`",
        ),
        (with("hash", json!("00")), "hash", "unknown field `hash`"),
    ];
    for (body, f, why) in cases {
        let r = c.post(&records).json(&body).send().await.unwrap();
        let b = problem(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(b["code"], "invalid_argument");
        assert_eq!(field(&b), f, "{b}");
        assert!(reason(&b).contains(why), "{b}");
    }
    // Missing required field, malformed JSON, wrong content type.
    let mut missing = good();
    missing.as_object_mut().unwrap().remove("action");
    let r = c.post(&records).json(&missing).send().await.unwrap();
    let b = problem(r, StatusCode::BAD_REQUEST).await;
    assert!(reason(&b).contains("missing field `action`"), "{b}");
    let r = c
        .post(&records)
        .header("content-type", "application/json")
        .body("{\"actor\": ")
        .send()
        .await
        .unwrap();
    assert!(reason(&problem(r, StatusCode::BAD_REQUEST).await).contains("malformed JSON"));
    let r = c.post(&records).body("actor=x").send().await.unwrap();
    assert_eq!(
        field(&problem(r, StatusCode::BAD_REQUEST).await),
        "content-type"
    );
    nothing_written(&svc, &c).await;
    svc.stop().await;
}

#[tokio::test]
async fn bad_queries_over_http_name_the_parameter() {
    let svc = start(Backend::Sqlite).await.unwrap();
    let c = common::service_http_client();
    let logs = format!("{}/v1/audit/logs", svc.url());
    for (query, f) in [
        (
            vec![
                ("from", "2026-02-01T00:00:00Z"),
                ("to", "2026-01-01T00:00:00Z"),
            ],
            "from",
        ),
        (vec![("from", "yesterday")], "from"),
        (vec![("to", "2026-13-01T00:00:00Z")], "to"),
        (vec![("page_token", "%%%")], "page_token"),
        (vec![("page_token", "AAAAAAAA")], "page_token"),
        (vec![("page_size", "-1")], "page_size"),
        (vec![("page_size", "many")], "page_size"),
        (vec![("outcome", "maybe")], "outcome"),
        (vec![("colour", "blue")], "query"),
    ] {
        let r = c.get(&logs).query(&query).send().await.unwrap();
        let b = problem(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(b["code"], "invalid_argument");
        assert_eq!(field(&b), f, "{query:?}: {b}");
    }
    svc.stop().await;
}

#[tokio::test]
async fn http_bodies_have_the_documented_shape() {
    let svc = start(Backend::Sqlite).await.unwrap();
    let c = common::service_http_client();
    let base = svc.url();
    let r = c
        .post(format!("{base}/v1/audit/records"))
        .header("x-request-id", "rec-1")
        .json(&json!({
            "actor": "user:ada", "action": "authz.role.grant", "resource": "role/admin",
            "outcome": "denied", "metadata": {"role": "admin", "n": 2},
            "source_ip": "2001:db8::7", "user_agent": "curl/8", "trace_id": "abc"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["x-request-id"], "rec-1");
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"sequence": 1}));
    // Outcome and time filters as query parameters; `+` in an offset must be encoded.
    let r = c
        .get(format!("{base}/v1/audit/logs"))
        .query(&[
            ("actor", "user:ada"),
            ("outcome", "denied"),
            ("from", "2000-01-01T00:00:00+00:00"),
            ("page_size", "10"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page: Value = r.json().await.unwrap();
    assert!(page.get("next_page_token").is_none(), "{page}");
    let e = &page["entries"][0];
    let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "action",
            "actor",
            "hash",
            "metadata",
            "outcome",
            "resource",
            "sequence",
            "source_ip",
            "time",
            "trace_id",
            "user_agent"
        ]
    );
    assert_eq!(e["metadata"], json!({"n": 2, "role": "admin"}));
    assert_eq!(e["outcome"], "denied");
    assert_eq!(e["sequence"], 1);
    assert!(e["time"].as_str().unwrap().ends_with('Z'), "{e}");
    let r = c
        .post(format!("{base}/v1/audit/verify"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"ok": true, "checked": 1, "first_broken_sequence": null, "reason": ""})
    );
    svc.stop().await;
}

#[tokio::test]
async fn bad_grpc_records_name_the_field_and_write_nothing() {
    let svc = start(Backend::Sqlite).await.unwrap();
    let mut client = pb::audit_service_client::AuditServiceClient::connect(svc.url())
        .await
        .unwrap();
    let good = || pb::AuditEntry {
        actor: "svc:test".into(),
        action: "grpc.test".into(),
        outcome: pb::Outcome::Success as i32,
        metadata_json: r#"{"k":1}"#.into(),
        ..Default::default()
    };
    let cases: Vec<(Option<pb::AuditEntry>, &str)> = vec![
        (None, "entry"),
        (
            Some(pb::AuditEntry {
                metadata_json: "[1,2]".into(),
                ..good()
            }),
            "metadata",
        ),
        (
            Some(pb::AuditEntry {
                metadata_json: "{nope".into(),
                ..good()
            }),
            "metadata",
        ),
        (
            Some(pb::AuditEntry {
                outcome: pb::Outcome::Unspecified as i32,
                ..good()
            }),
            "outcome",
        ),
        (
            Some(pb::AuditEntry {
                outcome: 42,
                ..good()
            }),
            "outcome",
        ),
        (
            Some(pb::AuditEntry {
                sequence: 5,
                ..good()
            }),
            "sequence",
        ),
        (
            Some(pb::AuditEntry {
                hash: "ff".into(),
                ..good()
            }),
            "hash",
        ),
        (
            Some(pb::AuditEntry {
                actor: String::new(),
                ..good()
            }),
            "actor",
        ),
    ];
    for (entry, f) in cases {
        let status = client
            .record(common::as_service(pb::RecordRequest { entry }))
            .await
            .expect_err("bad record accepted");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let err = plt_contracts::Error::from(status);
        assert_eq!(err.violations[0].field, f, "{err}");
    }
    // Inverted range over gRPC.
    let now = prost_types_now();
    let status = client
        .query(common::as_service(pb::QueryRequest {
            from: Some(now),
            to: Some(prost_types::Timestamp {
                seconds: now.seconds - 60,
                nanos: 0,
            }),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(
        plt_contracts::Error::from(status).violations[0].field,
        "from"
    );
    let ok = client
        .record(common::as_service(pb::RecordRequest {
            entry: Some(good()),
        }))
        .await
        .unwrap();
    assert_eq!(
        ok.into_inner().sequence,
        1,
        "refused records took sequences"
    );
    svc.stop().await;
}

fn prost_types_now() -> prost_types::Timestamp {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: 0,
    }
}
