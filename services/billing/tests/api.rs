//! The billing contract, end to end: the service started by the runtime (its real start-up
//! path) on SQLite and on PostgreSQL (when PLT_TEST_POSTGRES_URL is set), called over gRPC
//! and over HTTP/JSON through the generated clients, with its access rules enforced; 50
//! concurrent requests with one idempotency key; two instances on one database issuing each
//! period's invoice once; events on the bus and audit records.

use billing_contract::{
    BillingServiceClient, BillingServiceGrpcClient, BillingServiceHttpClient, events, pb,
};
use billing_service::{Billing, core::BillingCore};
use chrono::{DateTime, Utc};
use plt_contracts::{ErrorCode, RequestContext};
use plt_db::Db;
use plt_events::memory::MemoryBus;
use plt_kernel::Secret;
use plt_runtime::testing::{Backend, TestOptions, TestService};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use uuid::Uuid;

fn as_user(svc: &TestService, user: Uuid) -> RequestContext {
    RequestContext {
        authorization: Some(Secret::new(format!("Bearer {}", svc.user_token(user)))),
        ..Default::default()
    }
}

fn with_key(mut ctx: RequestContext, key: &str) -> RequestContext {
    ctx.idempotency_key = Some(key.to_owned());
    ctx
}

fn code<T: std::fmt::Debug>(r: plt_contracts::Result<T>) -> ErrorCode {
    r.expect_err("expected an error").code
}

fn field<T: std::fmt::Debug>(r: plt_contracts::Result<T>) -> String {
    let e = r.expect_err("expected an error");
    e.violations
        .first()
        .map(|v| v.field.clone())
        .unwrap_or_else(|| panic!("no field in {e:?}"))
}

fn plan_req(code: &str, price: i64, currency: &str) -> pb::CreatePlanRequest {
    pb::CreatePlanRequest {
        code: code.into(),
        name: format!("Plan {code}"),
        price_minor: price,
        currency: currency.into(),
        interval: "month".into(),
        metered_prices: vec![pb::MeteredPrice {
            metric: "api.calls".into(),
            unit_price_minor: 2,
        }],
    }
}

fn suffix() -> String {
    Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// Moves a subscription's period end to `at` (time passing, for the invoice job).
async fn end_period(db: &Db, subscription: &str, at: DateTime<Utc>) {
    let id = Uuid::parse_str(subscription).unwrap();
    const SQL: &str = "UPDATE subscriptions SET period_end = $1 WHERE id = $2";
    let n = match db {
        Db::Postgres(p) => sqlx::query(SQL)
            .bind(at)
            .bind(id)
            .execute(p)
            .await
            .unwrap()
            .rows_affected(),
        Db::Sqlite(p) => sqlx::query(SQL)
            .bind(at)
            .bind(id)
            .execute(p)
            .await
            .unwrap()
            .rows_affected(),
    };
    assert_eq!(n, 1);
}

async fn count(db: &Db, sql: &str) -> i64 {
    match db {
        Db::Postgres(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(p)
            .await
            .unwrap(),
        Db::Sqlite(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(p)
            .await
            .unwrap(),
    }
}

/// The audit records waiting in the outbox (no audit service in these tests), as JSON.
async fn audit_records(db: &Db) -> Vec<serde_json::Value> {
    let rows: Vec<String> = match db {
        Db::Postgres(p) => {
            sqlx::query_scalar("SELECT payload::text FROM outbox WHERE topic = 'audit' ORDER BY id")
                .fetch_all(p)
                .await
                .unwrap()
        }
        Db::Sqlite(p) => {
            sqlx::query_scalar("SELECT payload FROM outbox WHERE topic = 'audit' ORDER BY id")
                .fetch_all(p)
                .await
                .unwrap()
        }
    };
    rows.iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect()
}

/// What every implementation reached through `client` must do.
async fn contract_suite(svc: &TestService, client: Arc<dyn BillingServiceClient>) {
    let core = svc.get::<Arc<BillingCore>>().expect("the core is exported");
    let db = svc.db().expect("a database");
    let (op, alice, bob) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let s = suffix();

    // Plans: operators only; fields are checked and named.
    assert_eq!(
        code(
            client
                .create_plan(
                    &RequestContext::new(),
                    plan_req(&format!("basic-{s}"), 1000, "EUR")
                )
                .await
        ),
        ErrorCode::Unauthenticated
    );
    assert_eq!(
        code(
            client
                .create_plan(
                    &as_user(svc, alice),
                    plan_req(&format!("basic-{s}"), 1000, "EUR")
                )
                .await
        ),
        ErrorCode::PermissionDenied
    );
    svc.authz.grant(op, "billing.plans.manage");
    svc.authz.grant(op, "billing.invoices.manage");
    svc.authz.grant(op, "billing.usage.write");
    let o = as_user(svc, op);
    assert_eq!(
        field(
            client
                .create_plan(&o, plan_req(&format!("x-{s}"), 1000, "eur"))
                .await
        ),
        "currency"
    );
    assert_eq!(
        field(
            client
                .create_plan(&o, plan_req(&format!("x-{s}"), 0, "EUR"))
                .await
        ),
        "price_minor"
    );
    assert_eq!(
        field(
            client
                .create_plan(&o, plan_req("Bad Code", 10, "EUR"))
                .await
        ),
        "code"
    );
    let basic = client
        .create_plan(&o, plan_req(&format!("basic-{s}"), 3000, "EUR"))
        .await
        .unwrap();
    assert_eq!((basic.price_minor, basic.active), (3000, true));
    assert_eq!(
        code(
            client
                .create_plan(&o, plan_req(&format!("basic-{s}"), 1, "EUR"))
                .await
        ),
        ErrorCode::AlreadyExists
    );
    let pro = client
        .create_plan(&o, plan_req(&format!("pro-{s}"), 6000, "EUR"))
        .await
        .unwrap();
    let dollars = client
        .create_plan(&o, plan_req(&format!("usd-{s}"), 1000, "USD"))
        .await
        .unwrap();
    let old = client
        .create_plan(&o, plan_req(&format!("old-{s}"), 500, "EUR"))
        .await
        .unwrap();
    let archived = client
        .archive_plan(&o, pb::ArchivePlanRequest { id: old.id.clone() })
        .await
        .unwrap();
    assert!(!archived.active);
    // Listing is public and shows active plans only.
    let listed = client
        .list_plans(&RequestContext::new(), pb::ListPlansRequest {})
        .await
        .unwrap();
    assert!(listed.plans.iter().any(|p| p.id == basic.id));
    assert!(!listed.plans.iter().any(|p| p.id == old.id));

    // Subscribing: oneself, to an active plan, once.
    let a = as_user(svc, alice);
    let sub_req = |plan: &pb::Plan| pb::CreateSubscriptionRequest {
        plan_id: plan.id.clone(),
    };
    assert_eq!(
        code(client.create_subscription(&a, sub_req(&basic)).await),
        ErrorCode::PermissionDenied
    );
    svc.authz.grant(alice, "billing.subscriptions.write");
    svc.authz.grant(bob, "billing.subscriptions.write");
    assert_eq!(
        code(client.create_subscription(&a, sub_req(&old)).await),
        ErrorCode::FailedPrecondition
    );
    assert_eq!(
        field(
            client
                .create_subscription(
                    &a,
                    pb::CreateSubscriptionRequest {
                        plan_id: "nope".into()
                    }
                )
                .await
        ),
        "plan_id"
    );
    let sub = client
        .create_subscription(&a, sub_req(&basic))
        .await
        .unwrap();
    assert_eq!(sub.user_id, alice.to_string());
    assert_eq!(
        (sub.status.as_str(), sub.currency.as_str()),
        ("active", "EUR")
    );
    assert_eq!(
        code(client.create_subscription(&a, sub_req(&pro)).await),
        ErrorCode::AlreadyExists
    );
    let got = client
        .get_subscription(&a, pb::GetSubscriptionRequest {})
        .await
        .unwrap();
    assert_eq!(got, sub);
    let b = as_user(svc, bob);
    assert_eq!(
        code(
            client
                .get_subscription(&b, pb::GetSubscriptionRequest {})
                .await
        ),
        ErrorCode::NotFound
    );

    // Changing the plan: same currency only; proration items wait for the invoice.
    assert_eq!(
        code(
            client
                .change_plan(
                    &a,
                    pb::ChangePlanRequest {
                        plan_id: dollars.id.clone()
                    }
                )
                .await
        ),
        ErrorCode::FailedPrecondition
    );
    assert_eq!(
        field(
            client
                .change_plan(
                    &a,
                    pb::ChangePlanRequest {
                        plan_id: basic.id.clone()
                    }
                )
                .await
        ),
        "plan_id"
    );
    let changed = client
        .change_plan(
            &a,
            pb::ChangePlanRequest {
                plan_id: pro.id.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(changed.plan_id, pro.id);
    let kinds: Vec<_> = changed
        .pending_items
        .iter()
        .map(|i| i.kind.as_str())
        .collect();
    assert_eq!(kinds, ["proration_credit", "proration_charge"]);
    // A moment into a month: nearly the whole old price back, nearly the whole new one due.
    let credit = changed.pending_items[0].amount_minor;
    let charge = changed.pending_items[1].amount_minor;
    assert!((-3000..=-2990).contains(&credit), "{credit}");
    assert!((5980..=6000).contains(&charge), "{charge}");

    // Usage: services or operators, on an active subscription.
    let usage = |q: i64| pb::RecordUsageRequest {
        subscription_id: sub.id.clone(),
        metric: "api.calls".into(),
        quantity: q,
    };
    assert_eq!(
        code(client.record_usage(&a, usage(5)).await),
        ErrorCode::PermissionDenied
    );
    assert_eq!(field(client.record_usage(&o, usage(0)).await), "quantity");
    client.record_usage(&o, usage(5)).await.unwrap();
    client.record_usage(&o, usage(7)).await.unwrap();

    // Cancel at period end: still active until the invoice job ends it.
    let canceled = client
        .cancel_subscription(&a, pb::CancelSubscriptionRequest {})
        .await
        .unwrap();
    assert!(canceled.cancel_at_period_end);
    assert_eq!(canceled.status, "active");

    // The period ends; the job issues its invoice and ends the subscription.
    end_period(db, &sub.id, Utc::now() - chrono::Duration::seconds(1)).await;
    assert!(core.issue_due(Utc::now(), None).await.unwrap() >= 1);
    assert_eq!(core.issue_due(Utc::now(), None).await.unwrap(), 0);
    assert_eq!(
        code(
            client
                .get_subscription(&a, pb::GetSubscriptionRequest {})
                .await
        ),
        ErrorCode::NotFound
    );
    let invoices = client
        .list_invoices(&a, pb::ListInvoicesRequest::default())
        .await
        .unwrap()
        .invoices;
    assert_eq!(invoices.len(), 1);
    let inv = &invoices[0];
    assert_eq!(inv.subscription_id, sub.id);
    assert_eq!(inv.status, "open");
    let kinds: Vec<_> = inv.items.iter().map(|i| i.kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["plan", "proration_credit", "proration_charge", "usage"]
    );
    assert_eq!(inv.items[0].amount_minor, 3000);
    assert_eq!((inv.items[3].quantity, inv.items[3].amount_minor), (12, 24));
    assert_eq!(inv.total_minor, 3000 + credit + charge + 24);
    // Another user's invoice does not exist for them; the owner rule for listing.
    assert_eq!(
        code(
            client
                .get_invoice(&b, pb::GetInvoiceRequest { id: inv.id.clone() })
                .await
        ),
        ErrorCode::NotFound
    );
    let by_user = |u: Uuid| pb::ListUserInvoicesRequest {
        user_id: u.to_string(),
        ..Default::default()
    };
    assert_eq!(
        code(client.list_user_invoices(&b, by_user(alice)).await),
        ErrorCode::PermissionDenied
    );
    assert_eq!(
        client
            .list_user_invoices(&o, by_user(alice))
            .await
            .unwrap()
            .invoices
            .len(),
        1
    );
    // A subscriber may subscribe again once the old one ended.
    let again = client
        .create_subscription(&a, sub_req(&basic))
        .await
        .unwrap();
    assert_ne!(again.id, sub.id);

    // Paid or void: operators, from open only; both final.
    let pay = pb::MarkInvoicePaidRequest { id: inv.id.clone() };
    assert_eq!(
        code(client.mark_invoice_paid(&a, pay.clone()).await),
        ErrorCode::PermissionDenied
    );
    let paid = client.mark_invoice_paid(&o, pay.clone()).await.unwrap();
    assert_eq!(paid.status, "paid");
    assert!(!paid.paid_at.is_empty());
    assert_eq!(
        code(client.mark_invoice_paid(&o, pay.clone()).await),
        ErrorCode::FailedPrecondition
    );
    assert_eq!(
        code(
            client
                .void_invoice(&o, pb::VoidInvoiceRequest { id: inv.id.clone() })
                .await
        ),
        ErrorCode::FailedPrecondition
    );
    // Void an open one: bob's period ends too.
    let bsub = client
        .create_subscription(&b, sub_req(&basic))
        .await
        .unwrap();
    end_period(db, &bsub.id, Utc::now() - chrono::Duration::seconds(1)).await;
    core.issue_due(Utc::now(), None).await.unwrap();
    let binv = client
        .list_invoices(&b, pb::ListInvoicesRequest::default())
        .await
        .unwrap()
        .invoices;
    assert_eq!(binv.len(), 1);
    assert_eq!(binv[0].total_minor, 3000);
    // Bob's subscription goes on: the next period starts where the last ended.
    let next = client
        .get_subscription(&b, pb::GetSubscriptionRequest {})
        .await
        .unwrap();
    assert_eq!(next.period_start, binv[0].period_end);
    let void = client
        .void_invoice(
            &o,
            pb::VoidInvoiceRequest {
                id: binv[0].id.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(void.status, "void");
    assert_eq!(
        code(
            client
                .mark_invoice_paid(
                    &o,
                    pb::MarkInvoicePaidRequest {
                        id: binv[0].id.clone()
                    }
                )
                .await
        ),
        ErrorCode::FailedPrecondition
    );

    // Every change audited, with the caller as actor.
    let records = audit_records(db).await;
    let has = |actor: &str, action: &str| {
        records
            .iter()
            .any(|r| r["actor"] == actor && r["action"] == action)
    };
    let (op_s, alice_s) = (op.to_string(), alice.to_string());
    for (actor, action) in [
        (op_s.as_str(), "billing.plan.create"),
        (op_s.as_str(), "billing.plan.archive"),
        (alice_s.as_str(), "billing.subscription.create"),
        (alice_s.as_str(), "billing.subscription.change_plan"),
        (alice_s.as_str(), "billing.subscription.cancel"),
        (op_s.as_str(), "billing.usage.record"),
        ("billing", "billing.invoice.issue"),
        ("billing", "billing.subscription.end"),
        (op_s.as_str(), "billing.invoice.mark_paid"),
        (op_s.as_str(), "billing.invoice.void"),
    ] {
        assert!(has(actor, action), "{action} by {actor} not audited");
    }
}

async fn both_protocols(backend: Backend) {
    let Some(svc) = TestService::start::<Billing>(backend, &[]).await else {
        return;
    };
    let base = svc.url("");
    let grpc = BillingServiceGrpcClient::connect_lazy(&base).unwrap();
    contract_suite(&svc, Arc::new(grpc)).await;
    let http = BillingServiceHttpClient::new(plt_kernel::tls::http_client(), &base);
    contract_suite(&svc, Arc::new(http)).await;
    // Its permissions were declared to authz at start, by the service itself.
    let registered = svc.registered_permissions().await;
    for p in [
        "billing.plans.manage",
        "billing.invoices.manage",
        "billing.subscriptions.write",
        "billing.usage.write",
    ] {
        assert_eq!(
            registered.get(p).map(String::as_str),
            Some("billing"),
            "{p}"
        );
    }
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

/// 50 concurrent subscribe requests with one key over HTTP: one subscription, 50 identical
/// answers; the key with another body is refused naming `idempotency_key`; over gRPC too.
async fn one_key_one_effect(backend: Backend) {
    let Some(svc) = TestService::start::<Billing>(backend, &[]).await else {
        return;
    };
    let db = svc.db().unwrap();
    let base = svc.url("");
    let (op, alice) = (Uuid::new_v4(), Uuid::new_v4());
    svc.authz.grant(op, "billing.plans.manage");
    svc.authz.grant(alice, "billing.subscriptions.write");
    let grpc = BillingServiceGrpcClient::connect_lazy(&base).unwrap();
    let s = suffix();
    let basic = grpc
        .create_plan(
            &as_user(&svc, op),
            plan_req(&format!("basic-{s}"), 1000, "EUR"),
        )
        .await
        .unwrap();
    let pro = grpc
        .create_plan(
            &as_user(&svc, op),
            plan_req(&format!("pro-{s}"), 2000, "EUR"),
        )
        .await
        .unwrap();

    let http = plt_kernel::tls::http_client();
    let token = svc.user_token(alice);
    let key = format!("subscribe-{}", Uuid::new_v4());
    let send = |plan: String| {
        let (http, url, token, key) = (
            http.clone(),
            svc.url("/v1/billing/subscription"),
            token.clone(),
            key.clone(),
        );
        async move {
            let r = http
                .post(url)
                .bearer_auth(token)
                .header("Idempotency-Key", key)
                .json(&serde_json::json!({ "plan_id": plan }))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let answers =
        futures_util::future::join_all((0..50).map(|_| tokio::spawn(send(basic.id.clone())))).await;
    let answers: Vec<(u16, String)> = answers.into_iter().map(Result::unwrap).collect();
    let first = answers[0].clone();
    assert_eq!(first.0, 200, "{first:?}");
    assert!(
        answers.iter().all(|a| *a == first),
        "answers differ: {answers:#?}"
    );
    let sub: serde_json::Value = serde_json::from_str(&first.1).unwrap();
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM subscriptions").await,
        1,
        "exactly one subscription"
    );
    // One audit record of the one effect.
    let created = audit_records(db)
        .await
        .into_iter()
        .filter(|r| r["action"] == "billing.subscription.create")
        .count();
    assert_eq!(created, 1);
    // Later repeats still get the same answer.
    assert_eq!(send(basic.id.clone()).await, first);
    // The key with another request: 400 naming the field.
    let (status, body) = send(pro.id.clone()).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("idempotency_key"), "{body}");
    // Keys are 1 to 255 visible ASCII characters.
    let r = http
        .post(svc.url("/v1/billing/subscription"))
        .bearer_auth(&token)
        .header("Idempotency-Key", "x".repeat(256))
        .json(&serde_json::json!({ "plan_id": basic.id }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("idempotency_key"));

    // Over gRPC (metadata `idempotency-key`): a repeated change of plan changes it once.
    let a = with_key(as_user(&svc, alice), "change-1");
    let once = grpc
        .change_plan(
            &a,
            pb::ChangePlanRequest {
                plan_id: pro.id.clone(),
            },
        )
        .await
        .unwrap();
    let twice = grpc
        .change_plan(
            &a,
            pb::ChangePlanRequest {
                plan_id: pro.id.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(once, twice);
    assert_eq!(once.pending_items.len(), 2);
    // Without the key the same request is a new one (and refused: it is the plan already).
    assert_eq!(
        code(
            grpc.change_plan(
                &as_user(&svc, alice),
                pb::ChangePlanRequest {
                    plan_id: pro.id.clone()
                }
            )
            .await
        ),
        ErrorCode::InvalidArgument
    );
    // A stored error is replayed: the same key again answers the same error.
    let c = with_key(as_user(&svc, alice), "change-2");
    let e1 = grpc
        .change_plan(
            &c,
            pb::ChangePlanRequest {
                plan_id: "nope".into(),
            },
        )
        .await
        .unwrap_err();
    let e2 = grpc
        .change_plan(
            &c,
            pb::ChangePlanRequest {
                plan_id: "nope".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!((e1.code, &e1.violations), (e2.code, &e2.violations));
    assert_eq!(sub["plan_id"], basic.id);
    svc.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_on_sqlite() {
    one_key_one_effect(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_on_postgres() {
    one_key_one_effect(Backend::Postgres).await;
}

/// Two instances on one database, both running the invoice job every 50 ms: every
/// subscription's period is invoiced exactly once; their cores racing directly (no
/// scheduler fence) issue nothing twice either; the events reach the bus.
async fn two_instances_one_invoice(backend: Backend) {
    let bus = Arc::new(MemoryBus::new());
    let vars = [
        ("PLT_BILLING__INVOICE_INTERVAL", "50ms"),
        ("PLT_SCHEDULER__POLL_INTERVAL", "20ms"),
    ];
    let mut opts = TestOptions::vars(&vars);
    opts.events = Some(bus.clone());
    let Some(a) = TestService::start_with::<Billing>(backend, opts).await else {
        return;
    };
    let mut opts = TestOptions::vars(&vars);
    opts.events = Some(bus.clone());
    opts.authority = Some(a.authority.clone());
    opts.schema = a.schema().map(str::to_owned);
    opts.data_dir = Some(a.data_dir().to_path_buf());
    let b = TestService::start_with::<Billing>(backend, opts)
        .await
        .expect("the second instance");
    let db = a.db().unwrap();
    let client = BillingServiceGrpcClient::connect_lazy(&a.url("")).unwrap();
    let op = Uuid::new_v4();
    a.authz.grant(op, "billing.plans.manage");
    let plan = client
        .create_plan(
            &as_user(&a, op),
            plan_req(&format!("p-{}", suffix()), 1500, "EUR"),
        )
        .await
        .unwrap();
    const N: usize = 8;
    let mut subs = Vec::new();
    for _ in 0..N {
        let u = Uuid::new_v4();
        a.authz.grant(u, "billing.subscriptions.write");
        subs.push(
            client
                .create_subscription(
                    &as_user(&a, u),
                    pb::CreateSubscriptionRequest {
                        plan_id: plan.id.clone(),
                    },
                )
                .await
                .unwrap(),
        );
    }
    // Their periods end: both instances' jobs race for them.
    let past = Utc::now() - chrono::Duration::seconds(1);
    for s in &subs {
        end_period(db, &s.id, past).await;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(db, "SELECT COUNT(*) FROM invoices").await < N as i64 {
        assert!(Instant::now() < deadline, "invoices not issued in time");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // More runs of both jobs change nothing.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(count(db, "SELECT COUNT(*) FROM invoices").await, N as i64);
    assert_eq!(
        count(db, "SELECT COUNT(DISTINCT subscription_id) FROM invoices").await,
        N as i64
    );

    // The next periods end too; this time the two cores race directly, many times.
    let (ca, cb) = (
        a.get::<Arc<BillingCore>>().unwrap(),
        b.get::<Arc<BillingCore>>().unwrap(),
    );
    for s in &subs {
        end_period(db, &s.id, Utc::now() - chrono::Duration::milliseconds(10)).await;
    }
    let runs = (0..4).flat_map(|_| {
        [ca.clone(), cb.clone()]
            .map(|c| tokio::spawn(async move { c.issue_due(Utc::now(), None).await }))
    });
    for r in futures_util::future::join_all(runs).await {
        r.unwrap().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while count(db, "SELECT COUNT(*) FROM invoices").await < 2 * N as i64 {
        assert!(
            Instant::now() < deadline,
            "second invoices not issued in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        count(db, "SELECT COUNT(*) FROM invoices").await,
        2 * N as i64
    );
    assert_eq!(
        count(
            db,
            "SELECT COUNT(*) FROM (SELECT subscription_id, period_start FROM invoices \
             GROUP BY subscription_id, period_start) t"
        )
        .await,
        2 * N as i64
    );

    // The invoice events reached the bus (relayed from the outbox), one per invoice.
    let deadline = Instant::now() + Duration::from_secs(10);
    while bus.len(events::INVOICE_ISSUED) < 2 * N {
        assert!(Instant::now() < deadline, "invoice events not relayed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let issued = bus.read_all(events::INVOICE_ISSUED);
    assert_eq!(issued.len(), 2 * N);
    let event = issued[0].event().unwrap();
    assert_eq!(event.event_type, events::INVOICE_ISSUED);
    let data: events::InvoiceIssued = serde_json::from_value(event.data).unwrap();
    assert_eq!(data.invoice.total_minor, 1500);
    assert!(bus.len(events::SUBSCRIPTION_CHANGED) >= N);
    b.stop().await;
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_one_invoice_on_sqlite() {
    two_instances_one_invoice(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_one_invoice_on_postgres() {
    two_instances_one_invoice(Backend::Postgres).await;
}

#[tokio::test]
async fn http_errors_name_the_field_and_openapi_describes_the_routes() {
    let Some(svc) = TestService::start::<Billing>(Backend::Sqlite, &[]).await else {
        return;
    };
    let http = plt_kernel::tls::http_client();
    let op = Uuid::new_v4();
    svc.authz.grant(op, "billing.plans.manage");
    let resp = http
        .post(svc.url("/v1/billing/plans"))
        .bearer_auth(svc.user_token(op))
        .json(&serde_json::json!({"code": "a", "colour": "red"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let problem: serde_json::Value = resp.json().await.unwrap();
    assert!(problem.to_string().contains("colour"), "{problem}");
    // Plans are public; invoices are not.
    let resp = http.get(svc.url("/v1/billing/plans")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http
        .get(svc.url("/v1/billing/invoices"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let doc: serde_json::Value = http
        .get(svc.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/billing/plans",
        "/v1/billing/subscription",
        "/v1/billing/subscription/plan",
        "/v1/billing/usage",
        "/v1/billing/invoices/{id}/pay",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing: {doc}");
    }
    assert_eq!(
        doc["paths"]["/v1/billing/invoices/{id}/void"]["post"]["x-plt-access"],
        "permission billing.invoices.manage"
    );
    // Its scheduled jobs, as the runtime reports them: the next run of each is known.
    let jobs: serde_json::Value = http
        .get(svc.url(plt_runtime::JOBS_PATH))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"billing.invoices"), "{jobs}");
    assert!(
        jobs["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| !j["next_run_at"].is_null()),
        "{jobs}"
    );
    svc.stop().await;
}
