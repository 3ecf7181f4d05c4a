//! The analytics contract, end to end: the service started by the runtime (its real start-up
//! path) on SQLite and on PostgreSQL (when PLT_TEST_POSTGRES_URL is set), with an embedded
//! event bus its consumer group reads, events published onto the bus as the platform's
//! services publish them, and the counts read back over gRPC and over HTTP/JSON through the
//! generated clients, with the access rule enforced.

use analytics_contract::{
    ANALYTICS_SERVICE, AnalyticsServiceClient, AnalyticsServiceGrpcClient,
    AnalyticsServiceHttpClient, pb,
};
use analytics_service::Analytics;
use chrono::{DateTime, NaiveDate, Utc};
use plt_contracts::{ErrorCode, RequestContext, events as platform};
use plt_events::{Bus, Event, Publisher, memory::MemoryBus};
use plt_kernel::Secret;
use plt_runtime::testing::{Backend, TestOptions, TestService};
use std::{sync::Arc, time::Duration};
use uuid::Uuid;

const POST_PUBLISHED: &str = "plt.blog.post.published.v1";
const INVOICE_ISSUED: &str = "plt.billing.invoice.issued.v1";
const READ: &str = "analytics.stats.read";

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("a test date")
}

/// Noon (UTC) of `d`, plus `minutes`.
fn at(d: &str, minutes: i64) -> DateTime<Utc> {
    day(d).and_hms_opt(12, 0, 0).expect("noon").and_utc() + chrono::Duration::minutes(minutes)
}

/// An event as its service publishes it (`cx.publisher()`: source `/plt/<service>`, a new
/// UUIDv7 id, subject `<kind>/<id>`), happening at `time`, with its key (what it is about).
fn event(event_type: &str, time: DateTime<Utc>) -> (String, Event) {
    let id = Uuid::now_v7();
    let (service, subject, data) = match event_type {
        platform::USER_CREATED | platform::USER_UPDATED => (
            "identity",
            format!("user/{id}"),
            serde_json::json!({"user": {"id": id, "email": format!("{id}@example.com")}}),
        ),
        platform::SESSION_STARTED => (
            "auth",
            format!("user/{id}"),
            serde_json::to_value(platform::SessionEvent {
                user_id: id,
                session_id: Uuid::new_v4().to_string(),
                reason: String::new(),
                at: time,
            })
            .expect("session event"),
        ),
        POST_PUBLISHED => (
            "blog",
            format!("post/{id}"),
            serde_json::json!({"post_id": id, "author_id": Uuid::new_v4()}),
        ),
        _ => (
            "billing",
            format!("invoice/{id}"),
            serde_json::json!({"invoice_id": id, "amount_minor": 1200, "currency": "EUR"}),
        ),
    };
    let mut e = Publisher::new(service, true).event(event_type, &subject, data);
    e.time = time;
    (id.to_string(), e)
}

async fn publish(bus: &dyn Bus, events: &[(String, Event)]) {
    let messages: Vec<_> = events
        .iter()
        .map(|(key, e)| e.to_message(&e.event_type, key))
        .collect();
    for r in bus.publish(&messages).await {
        r.expect("published");
    }
}

fn http_client(svc: &TestService) -> Arc<dyn AnalyticsServiceClient> {
    Arc::new(AnalyticsServiceHttpClient::new(
        plt_kernel::tls::http_client(),
        &svc.url(""),
    ))
}

fn series(metric: &str, from: &str, to: &str) -> pb::GetTimeSeriesRequest {
    pb::GetTimeSeriesRequest {
        metric: metric.into(),
        from: from.into(),
        to: to.into(),
        ..Default::default()
    }
}

fn totals(from: &str, to: &str) -> pb::GetTotalsRequest {
    pb::GetTotalsRequest {
        from: from.into(),
        to: to.into(),
    }
}

/// (metric, count) of every configured metric, in order.
async fn counts(
    client: &dyn AnalyticsServiceClient,
    ctx: &RequestContext,
    from: &str,
    to: &str,
) -> Vec<(String, i64)> {
    client
        .get_totals(ctx, totals(from, to))
        .await
        .expect("totals")
        .totals
        .into_iter()
        .map(|t| (t.metric, t.count))
        .collect()
}

fn expect(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(m, c)| ((*m).to_owned(), *c)).collect()
}

/// Waits (up to 30 s) until the totals from `from` to `to` are `want`; fails showing the
/// last ones otherwise.
async fn wait_for_counts(svc: &TestService, from: &str, to: &str, want: &[(&str, i64)]) {
    let (_, ctx) = svc.user_with(&[READ]);
    let client = http_client(svc);
    let want = expect(want);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let got = counts(client.as_ref(), &ctx, from, to).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "counts {from}..{to}: got {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn code<T: std::fmt::Debug>(r: plt_contracts::Result<T>) -> ErrorCode {
    r.expect_err("expected an error").code
}

fn field<T: std::fmt::Debug>(r: plt_contracts::Result<T>) -> String {
    let err = r.expect_err("expected an error");
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err:?}");
    err.violations
        .first()
        .map(|v| v.field.clone())
        .unwrap_or_default()
}

/// The fixture every contract test counts: (key, event) in publishing order.
fn fixture() -> Vec<(String, Event)> {
    vec![
        event(platform::USER_CREATED, at("2026-12-01", 0)),
        event(platform::USER_CREATED, at("2026-12-01", 5)),
        event(platform::USER_CREATED, at("2026-12-03", 0)),
        // Years old: still counted, on its own day (no retention cut-off).
        event(platform::USER_CREATED, at("2020-02-29", 0)),
        event(platform::SESSION_STARTED, at("2026-12-01", 1)),
        event(platform::SESSION_STARTED, at("2026-12-01", 2)),
        event(platform::SESSION_STARTED, at("2026-12-01", 3)),
        event(POST_PUBLISHED, at("2026-12-02", 0)),
        event(INVOICE_ISSUED, at("2026-12-03", 0)),
        // 23:59:59 UTC is still the 3rd.
        event(
            INVOICE_ISSUED,
            day("2026-12-03")
                .and_hms_opt(23, 59, 59)
                .expect("time")
                .and_utc(),
        ),
        // Not a counted type: its topic is not read.
        event(platform::USER_UPDATED, at("2026-12-01", 0)),
    ]
}

/// What every implementation reached through `client` must answer about the fixture.
async fn contract_suite(svc: &TestService, client: Arc<dyn AnalyticsServiceClient>) {
    let week = series("signups", "2026-12-01", "2026-12-03");
    // Anonymous and forged tokens: refused before the core runs; without the permission
    // (users do not hold it): forbidden.
    assert_eq!(
        code(
            client
                .get_time_series(&RequestContext::new(), week.clone())
                .await
        ),
        ErrorCode::Unauthenticated
    );
    let mut forged = RequestContext::new();
    forged.authorization = Some(Secret::new("Bearer not-a-token".into()));
    assert_eq!(
        code(client.get_totals(&forged, totals("", "")).await),
        ErrorCode::Unauthenticated
    );
    let (_, user) = svc.user_with(&[]);
    assert_eq!(
        code(client.get_time_series(&user, week.clone()).await),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        code(client.get_totals(&user, totals("", "")).await),
        ErrorCode::PermissionDenied
    );

    let (_, ctx) = svc.user_with(&[READ]);
    // One point per day, days without events at zero.
    let s = client.get_time_series(&ctx, week.clone()).await.unwrap();
    assert_eq!(
        (s.metric.as_str(), s.event_type.as_str()),
        ("signups", platform::USER_CREATED)
    );
    assert_eq!(
        (s.from.as_str(), s.to.as_str()),
        ("2026-12-01", "2026-12-03")
    );
    let points: Vec<(&str, i64)> = s.points.iter().map(|p| (p.day.as_str(), p.count)).collect();
    assert_eq!(
        points,
        vec![("2026-12-01", 2), ("2026-12-02", 0), ("2026-12-03", 1)]
    );
    assert_eq!(s.total, 3);
    let per_day = |s: pb::TimeSeries| s.points.iter().map(|p| p.count).collect::<Vec<_>>();
    for (metric, want) in [
        ("sessions", vec![3, 0, 0]),
        ("posts_published", vec![0, 1, 0]),
        ("invoices_issued", vec![0, 0, 2]),
    ] {
        let s = client
            .get_time_series(&ctx, series(metric, "2026-12-01", "2026-12-03"))
            .await
            .unwrap();
        assert_eq!(per_day(s), want, "{metric}");
    }
    // By raw type: the same counts, with the metric that names it; a type nobody counts is
    // all zeros.
    let by_type = |t: &str| pb::GetTimeSeriesRequest {
        event_type: t.into(),
        from: "2026-12-01".into(),
        to: "2026-12-03".into(),
        ..Default::default()
    };
    let s = client
        .get_time_series(&ctx, by_type(platform::USER_CREATED))
        .await
        .unwrap();
    assert_eq!(s.metric, "signups");
    assert_eq!(per_day(s), vec![2, 0, 1]);
    let s = client
        .get_time_series(&ctx, by_type(platform::USER_UPDATED))
        .await
        .unwrap();
    assert_eq!((s.metric.as_str(), s.total), ("", 0));
    assert_eq!(per_day(s), vec![0, 0, 0]);
    // A single day; an old day.
    let s = client
        .get_time_series(&ctx, series("signups", "2020-02-29", "2020-02-29"))
        .await
        .unwrap();
    assert_eq!(per_day(s), vec![1]);
    // Defaults: up to today, 30 days.
    let s = client
        .get_time_series(&ctx, series("signups", "", ""))
        .await
        .unwrap();
    assert_eq!(s.points.len(), 30);
    assert_eq!(s.to, Utc::now().date_naive().format("%Y-%m-%d").to_string());

    // Totals: every metric in configuration order, over a range or all time.
    assert_eq!(
        counts(client.as_ref(), &ctx, "2026-12-01", "2026-12-03").await,
        expect(&[
            ("signups", 3),
            ("sessions", 3),
            ("posts_published", 1),
            ("invoices_issued", 2)
        ])
    );
    let all = client.get_totals(&ctx, totals("", "")).await.unwrap();
    assert_eq!((all.from.as_str(), all.to.as_str()), ("", ""));
    assert_eq!(
        all.totals[0],
        pb::Total {
            metric: "signups".into(),
            event_type: platform::USER_CREATED.into(),
            count: 4
        }
    );
    assert_eq!(
        counts(client.as_ref(), &ctx, "", "2026-01-01").await,
        expect(&[
            ("signups", 1),
            ("sessions", 0),
            ("posts_published", 0),
            ("invoices_issued", 0)
        ])
    );
    assert_eq!(
        counts(client.as_ref(), &ctx, "2026-12-02", "").await,
        expect(&[
            ("signups", 1),
            ("sessions", 0),
            ("posts_published", 1),
            ("invoices_issued", 2)
        ])
    );

    // Validation errors name the field.
    let req = |metric: &str, event_type: &str, from: &str, to: &str| pb::GetTimeSeriesRequest {
        metric: metric.into(),
        event_type: event_type.into(),
        from: from.into(),
        to: to.into(),
    };
    for (r, want) in [
        (req("", "", "2026-12-01", "2026-12-03"), "metric"),
        (req("nope", "", "2026-12-01", "2026-12-03"), "metric"),
        (
            req(
                "signups",
                platform::USER_CREATED,
                "2026-12-01",
                "2026-12-03",
            ),
            "event_type",
        ),
        (
            req("", "not a type!", "2026-12-01", "2026-12-03"),
            "event_type",
        ),
        (req("signups", "", "2026-12-32", "2026-12-03"), "from"),
        (req("signups", "", "2026-12-01", "tomorrow"), "to"),
        (req("signups", "", "2026-12-04", "2026-12-03"), "from"),
        // 367 days: over the default limit of 366.
        (req("signups", "", "2026-01-01", "2027-01-02"), "to"),
    ] {
        assert_eq!(
            field(client.get_time_series(&ctx, r.clone()).await),
            want,
            "{r:?}"
        );
    }
    let s = client
        .get_time_series(&ctx, req("signups", "", "2026-01-01", "2027-01-01"))
        .await
        .unwrap();
    assert_eq!(s.points.len(), 366);
    assert_eq!(
        field(client.get_totals(&ctx, totals("x", "")).await),
        "from"
    );
    assert_eq!(
        field(client.get_totals(&ctx, totals("", "2026-02-30")).await),
        "to"
    );
    assert_eq!(
        field(
            client
                .get_totals(&ctx, totals("2026-12-02", "2026-12-01"))
                .await
        ),
        "from"
    );
}

/// The same event delivered again counts once: published twice more, then a sentinel with
/// the same key (so in the same partition, handled after them) on a day of its own.
async fn redelivery(svc: &TestService, bus: &dyn Bus, counted: &(String, Event)) {
    let (key, e) = counted;
    let mut sentinel = event(&e.event_type, at("2026-12-09", 0));
    sentinel.0 = key.clone();
    publish(bus, &[counted.clone(), counted.clone(), sentinel]).await;
    wait_for_counts(
        svc,
        "2026-12-09",
        "2026-12-09",
        &[
            ("signups", 1),
            ("sessions", 0),
            ("posts_published", 0),
            ("invoices_issued", 0),
        ],
    )
    .await;
    // The repeats came before the sentinel in its partition: handled, and changed nothing.
    let (_, ctx) = svc.user_with(&[READ]);
    assert_eq!(
        counts(http_client(svc).as_ref(), &ctx, "2026-12-01", "2026-12-01").await,
        expect(&[
            ("signups", 2),
            ("sessions", 3),
            ("posts_published", 0),
            ("invoices_issued", 0),
        ])
    );
}

async fn both_protocols(backend: Backend) {
    let bus = Arc::new(MemoryBus::new());
    let Some(svc) = TestService::start_with::<Analytics>(
        backend,
        TestOptions {
            events: Some(bus.clone()),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let events = fixture();
    publish(bus.as_ref(), &events).await;
    wait_for_counts(
        &svc,
        "",
        "",
        &[
            ("signups", 4),
            ("sessions", 3),
            ("posts_published", 1),
            ("invoices_issued", 2),
        ],
    )
    .await;
    let base = svc.url("");
    let grpc = AnalyticsServiceGrpcClient::connect_lazy(&base).unwrap();
    contract_suite(&svc, Arc::new(grpc)).await;
    contract_suite(&svc, http_client(&svc)).await;
    redelivery(&svc, bus.as_ref(), &events[0]).await;
    // Its permission was declared to authz at start, by the service itself, and is not
    // given to every user.
    let registered = svc.registered_permissions().await;
    assert_eq!(registered.get(READ).map(String::as_str), Some("analytics"));
    assert!(
        ANALYTICS_SERVICE
            .permissions
            .iter()
            .any(|p| p.name == READ && !p.granted_to_users)
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
async fn http_query_parameters_statuses_and_openapi() {
    let bus = Arc::new(MemoryBus::new());
    let Some(svc) = TestService::start_with::<Analytics>(
        Backend::Sqlite,
        TestOptions {
            events: Some(bus.clone()),
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    publish(
        bus.as_ref(),
        &[
            event(platform::USER_CREATED, at("2026-12-01", 0)),
            event(POST_PUBLISHED, at("2026-12-07", 0)),
        ],
    )
    .await;
    wait_for_counts(
        &svc,
        "",
        "",
        &[
            ("signups", 1),
            ("sessions", 0),
            ("posts_published", 1),
            ("invoices_issued", 0),
        ],
    )
    .await;
    let http = plt_kernel::tls::http_client();
    let url = svc.url("/v1/analytics/timeseries?metric=signups&from=2026-12-01&to=2026-12-07");
    // 401 without a token, 403 without analytics.stats.read.
    let resp = http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let user = Uuid::new_v4();
    let resp = http
        .get(&url)
        .bearer_auth(svc.user_token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let resp = http
        .get(svc.url("/v1/analytics/totals"))
        .bearer_auth(svc.user_token(user))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    svc.authz.grant(user, READ);
    let body: serde_json::Value = http
        .get(&url)
        .bearer_auth(svc.user_token(user))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["metric"], "signups");
    assert_eq!(body["points"].as_array().map(Vec::len), Some(7), "{body}");
    assert_eq!(body["points"][0]["day"], "2026-12-01");
    assert_eq!(body["points"][0]["count"], 1, "{body}");
    let body: serde_json::Value = http
        .get(svc.url("/v1/analytics/totals?from=2026-12-02&to=2026-12-07"))
        .bearer_auth(svc.user_token(user))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["totals"][0]["metric"], "signups");
    assert_eq!(body["totals"][0]["count"], 0, "{body}");
    assert_eq!(body["totals"][2]["metric"], "posts_published");
    assert_eq!(body["totals"][2]["count"], 1, "{body}");
    // A problem+json naming the field: a bad date, an unknown parameter.
    for (path, name) in [
        (
            "/v1/analytics/timeseries?metric=signups&from=2026-1-1x",
            "from",
        ),
        ("/v1/analytics/totals?colour=red", "colour"),
    ] {
        let resp = http
            .get(svc.url(path))
            .bearer_auth(svc.user_token(user))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{path}");
        let problem: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], name, "{problem}");
    }
    let doc: serde_json::Value = http
        .get(svc.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let op = &doc["paths"]["/v1/analytics/timeseries"]["get"];
    assert_eq!(
        op["x-plt-access"], "permission analytics.stats.read",
        "{doc}"
    );
    let params: Vec<&str> = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert_eq!(params, ["metric", "event_type", "from", "to"], "{op}");
    assert!(
        doc["paths"]["/v1/analytics/totals"]["get"].is_object(),
        "{doc}"
    );
    svc.stop().await;
}

/// On a real broker (`PLT_TEST_KAFKA_BROKERS`): the consumer group reads Kafka topics, a
/// redelivered event counts once. The counted types are this run's own (through
/// `PLT_ANALYTICS__EVENTS`), so events other tests left on the broker do not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_events_from_kafka() {
    let Some(brokers) = std::env::var("PLT_TEST_KAFKA_BROKERS")
        .ok()
        .filter(|b| !b.is_empty())
    else {
        eprintln!("PLT_TEST_KAFKA_BROKERS is not set: skipping the Kafka run");
        return;
    };
    let run = Uuid::new_v4().simple().to_string();
    let signups = format!("test.analytics{run}.user.created.v1");
    let posts = format!("test.analytics{run}.post.published.v1");
    let list = format!(
        "[{{metric: signups, type: {signups}}}, {{metric: posts_published, type: {posts}}}]"
    );
    let bus = Arc::new(
        plt_events::kafka::KafkaBus::new(
            &plt_events::config::KafkaConfig {
                brokers: brokers.clone(),
                ..Default::default()
            },
            "analytics-test",
        )
        .expect("kafka bus"),
    );
    let Some(svc) = TestService::start_with::<Analytics>(
        Backend::Sqlite,
        TestOptions {
            events: Some(bus.clone()),
            ..TestOptions::vars(&[
                ("PLT_EVENTS__BACKEND", "kafka"),
                ("PLT_EVENTS__KAFKA__BROKERS", &brokers),
                ("PLT_ANALYTICS__EVENTS", &list),
            ])
        },
    )
    .await
    else {
        return;
    };
    let retyped = |t: &str, time| {
        let (key, mut e) = event(platform::USER_CREATED, time);
        e.event_type = t.to_owned();
        (key, e)
    };
    let first = retyped(&signups, at("2026-12-01", 0));
    publish(
        bus.as_ref(),
        &[
            first.clone(),
            retyped(&signups, at("2026-12-01", 1)),
            retyped(&signups, at("2026-12-02", 0)),
            retyped(&posts, at("2026-12-02", 0)),
        ],
    )
    .await;
    let want2 = |s, p| [("signups", s), ("posts_published", p)];
    wait_for_counts(&svc, "", "", &want2(3, 1)).await;
    // Again, then a sentinel under the same key (same partition, handled after it).
    let mut sentinel = retyped(&signups, at("2026-12-09", 0));
    sentinel.0 = first.0.clone();
    publish(bus.as_ref(), &[first.clone(), sentinel]).await;
    wait_for_counts(&svc, "2026-12-09", "2026-12-09", &want2(1, 0)).await;
    let (_, ctx) = svc.user_with(&[READ]);
    assert_eq!(
        counts(http_client(&svc).as_ref(), &ctx, "", "").await,
        expect(&want2(4, 1))
    );
    svc.stop().await;
}
