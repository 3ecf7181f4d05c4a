//! Security events reach the audit log durably, end to end, as the issue is checked from
//! outside: identity, auth and audit run on their real start-up path (the one harness),
//! find each other in one registry and call each other with service tokens.
//!
//! - While audit is stopped, a user signs up, a sign-in fails and the user is deleted; the
//!   records wait in identity's and auth's outboxes; once audit is back (restarted on its
//!   own database) they appear in the log — read over audit's HTTP API — each once, and the
//!   chain verifies.
//! - A service killed (SIGKILL, no graceful stop) after a change loses nothing: its record
//!   is in its database, and the next start delivers it.

use plt_contracts::{
    RequestContext,
    audit::{AuditEntry, AuditServiceClient, Outcome},
    authz::AuthzServiceClient,
    identity::IdentityServiceClient,
};
use plt_registry::{ServiceRegistry, memory::MemoryRegistry};
use plt_runtime::testing::{Backend, FakeAuthz, TestAuthority, TestOptions, TestService};
use serde_json::{Value, json};
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);
const PASSWORD: &str = "Correct-Horse-Battery-Staple-8431";

/// What every service of one platform shares: the registry, the authority that signs the
/// services' tokens (and users'), and settings that make retries quick.
#[derive(Clone)]
struct Platform {
    backend: Backend,
    /// Audit's PostgreSQL schema, kept across its restart (dropped at the end).
    audit_schema: Option<String>,
    registry: Arc<dyn ServiceRegistry>,
    authority: TestAuthority,
    /// Grants for audit's own access checks (reading the log).
    authz: FakeAuthz,
}

impl Platform {
    /// `None` when the backend is PostgreSQL and `PLT_TEST_POSTGRES_URL` is not set.
    fn new(backend: Backend) -> Option<Self> {
        if backend == Backend::Postgres && plt_db::testing::postgres_url().is_none() {
            plt_db::testing::skipped("audit trail on PostgreSQL");
            return None;
        }
        Some(Self {
            backend,
            audit_schema: (backend == Backend::Postgres)
                .then(|| plt_db::testing::unique_schema("audit")),
            registry: Arc::new(MemoryRegistry::new()),
            authority: TestAuthority::default(),
            authz: FakeAuthz::default(),
        })
    }

    fn options(&self, data_dir: &Path) -> TestOptions {
        TestOptions {
            vars: vec![
                ("PLT_OUTBOX__RETRY_INITIAL_BACKOFF".into(), "20ms".into()),
                ("PLT_OUTBOX__RETRY_MAX_BACKOFF".into(), "300ms".into()),
                ("PLT_OUTBOX__POLL_INTERVAL".into(), "200ms".into()),
                (
                    "PLT_CLIENTS__AUDIT__BREAKER_OPEN_FOR".into(),
                    "200ms".into(),
                ),
            ],
            authority: Some(self.authority.clone()),
            registry: Some(self.registry.clone()),
            data_dir: Some(data_dir.to_path_buf()),
            ..Default::default()
        }
    }

    async fn audit(&self, data_dir: &Path) -> TestService {
        let authz: Arc<dyn AuthzServiceClient> = Arc::new(self.authz.clone());
        let mut opts = self.options(data_dir).with(authz);
        opts.schema = self.audit_schema.clone();
        TestService::start_with::<audit_service::Audit>(self.backend, opts)
            .await
            .expect("audit starts")
    }

    async fn identity(&self, data_dir: &Path) -> TestService {
        // Ending users' sessions goes to a recording auth (this test is about the audit trail).
        let auth: Arc<dyn plt_contracts::auth::AuthServiceClient> =
            Arc::new(plt_contracts::testsuite::fakes::FakeAuth::default());
        TestService::start_with::<identity_service::Identity>(
            self.backend,
            self.options(data_dir).with(auth),
        )
        .await
        .expect("identity starts")
    }

    /// Auth signs its own service tokens with its key ring; here its clients present the
    /// platform authority's, which identity and audit trust (through the registry, as in
    /// production).
    async fn auth(&self, data_dir: &Path) -> TestService {
        let factory = plt_client::ClientFactory::new(self.registry.clone())
            .with_credentials(self.authority.credentials("auth"));
        let identity: Arc<dyn IdentityServiceClient> = factory.client().await.unwrap();
        let audit: Arc<dyn AuditServiceClient> = factory.client().await.unwrap();
        TestService::start_with::<auth_service::Auth>(
            self.backend,
            self.options(data_dir).with(identity).with(audit),
        )
        .await
        .expect("auth starts")
    }
}

async fn pending(svc: &TestService) -> u64 {
    let outbox = svc.get::<plt_outbox::Outbox>().expect("outbox exported");
    outbox.pending(plt_outbox::audit::TOPIC).await.unwrap().0
}

/// Every entry of the log, read over audit's HTTP API by a user allowed to.
async fn log(audit: &TestService, reader: &str) -> Vec<AuditEntry> {
    let http = plt_kernel::tls::http_client();
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut q = vec![("page_size".to_owned(), "100".to_owned())];
        if let Some(t) = &token {
            q.push(("page_token".into(), t.clone()));
        }
        let res = http
            .get(audit.url("/v1/audit/logs"))
            .bearer_auth(reader)
            .query(&q)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
        let page: Value = res.json().await.unwrap();
        let entries: Vec<AuditEntry> =
            serde_json::from_value(page["entries"].clone()).expect("entries");
        out.extend(entries);
        match page["next_page_token"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => return out,
        }
    }
}

async fn eventually_logged(
    audit: &TestService,
    reader: &str,
    what: &str,
    pred: impl Fn(&AuditEntry) -> bool,
) -> AuditEntry {
    let deadline = Instant::now() + WAIT;
    loop {
        let entries = log(audit, reader).await;
        let hits: Vec<&AuditEntry> = entries.iter().filter(|e| pred(e)).collect();
        match hits.len() {
            0 => {}
            1 => return hits[0].clone(),
            n => panic!("{what} recorded {n} times: {hits:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "{what} not in the log: {entries:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn drained(svc: &TestService, name: &str) {
    let deadline = Instant::now() + WAIT;
    while pending(svc).await > 0 {
        assert!(Instant::now() < deadline, "{name}'s outbox did not drain");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sqlite_records_written_while_audit_is_down_arrive_after_it_restarts() {
    records_written_while_audit_is_down_arrive_after_it_restarts(Backend::Sqlite).await;
}

#[tokio::test]
async fn postgres_records_written_while_audit_is_down_arrive_after_it_restarts() {
    records_written_while_audit_is_down_arrive_after_it_restarts(Backend::Postgres).await;
}

async fn records_written_while_audit_is_down_arrive_after_it_restarts(backend: Backend) {
    plt_kernel::telemetry::init_for_tests();
    let Some(p) = Platform::new(backend) else {
        return;
    };
    let audit_dir = tempfile::tempdir().unwrap();
    let services_dir = tempfile::tempdir().unwrap();
    let audit = p.audit(audit_dir.path()).await;
    let identity = p.identity(services_dir.path()).await;
    let auth = p.auth(services_dir.path()).await;
    let http = plt_kernel::tls::http_client();

    // Audit goes away.
    audit.stop().await;

    // A sign-up, a failed sign-in, and the user's deletion by an administrator.
    let email = format!("ada-{}@example.com", Uuid::new_v4().simple());
    let res = http
        .post(identity.url("/v1/users"))
        .header("user-agent", "audit-trail-test/1.0")
        .json(&json!({"email": email, "password": PASSWORD, "display_name": "Ada"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let user: Value = res.json().await.unwrap();
    let user_id: Uuid = user["id"].as_str().unwrap().parse().unwrap();
    let request_id = format!("req-{}", Uuid::new_v4().simple());
    let res = http
        .post(auth.url("/v1/auth/login"))
        .header("user-agent", "audit-trail-test/1.0")
        .header("x-request-id", &request_id)
        .json(&json!({"email": email, "password": "not the password at all"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "{}", res.text().await.unwrap());
    let admin = Uuid::new_v4();
    identity.authz.grant(admin, "identity.users.manage");
    let res = http
        .delete(identity.url(&format!("/v1/users/{user_id}")))
        .bearer_auth(identity.user_token(admin))
        .header("user-agent", "audit-trail-test/1.0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "{}", res.text().await.unwrap());

    // Nothing could be delivered: the records wait in the services' databases.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(pending(&identity).await >= 2, "created and deleted wait");
    assert!(pending(&auth).await >= 1, "the failed sign-in waits");

    // Audit comes back, on its own database.
    let audit = p.audit(audit_dir.path()).await;
    let reader = Uuid::new_v4();
    audit.authz.grant(reader, "audit.logs.read");
    let reader = audit.user_token(reader);

    let failed = eventually_logged(&audit, &reader, "the failed sign-in", |e| {
        e.entry.action == "auth.login" && e.entry.resource == format!("account/{email}")
    })
    .await;
    assert_eq!(failed.entry.outcome, Outcome::Failure);
    assert_eq!(failed.entry.actor, "anonymous");
    assert_eq!(failed.entry.user_agent, "audit-trail-test/1.0");
    assert_eq!(failed.entry.source_ip, "127.0.0.1");
    assert_eq!(failed.entry.metadata["request_id"], request_id.as_str());
    assert_eq!(failed.entry.metadata["reason"], "invalid_credentials");
    assert!(failed.entry.id.is_some(), "delivered with its record id");
    let text = serde_json::to_string(&failed).unwrap();
    assert!(
        !text.contains("not the password"),
        "a password in the log: {text}"
    );

    let deleted = eventually_logged(&audit, &reader, "the user's deletion", |e| {
        e.entry.action == "identity.user.deleted"
    })
    .await;
    assert_eq!(deleted.entry.resource, format!("user/{user_id}"));
    assert_eq!(deleted.entry.actor, admin.to_string());
    assert_eq!(deleted.entry.outcome, Outcome::Success);
    assert_eq!(deleted.entry.user_agent, "audit-trail-test/1.0");
    let created = eventually_logged(&audit, &reader, "the sign-up", |e| {
        e.entry.action == "identity.user.created"
    })
    .await;
    assert_eq!(created.entry.resource, format!("user/{user_id}"));
    // Audit's own times are when it recorded them; when they happened travels along.
    assert!(
        created.entry.metadata["occurred_at"].as_str()
            < deleted.entry.metadata["occurred_at"].as_str()
    );

    // Delivered and deleted from the outboxes; each record once; the chain intact.
    drained(&identity, "identity").await;
    drained(&auth, "auth").await;
    let core = audit
        .get::<Arc<dyn AuditServiceClient>>()
        .expect("audit core");
    let report = core.verify(&RequestContext::new()).await.unwrap();
    assert!(report.ok, "{report:?}");
    let entries = log(&audit, &reader).await;
    let mut ids: Vec<Uuid> = entries.iter().filter_map(|e| e.entry.id).collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a record id appears twice in the log");

    auth.stop().await;
    identity.stop().await;
    audit.stop().await;
    if let Some(schema) = &p.audit_schema {
        plt_db::testing::drop_schema(schema).await;
    }
}

/// A free TCP port on the loopback interface.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config")
}

#[tokio::test]
async fn a_killed_service_loses_no_record() {
    plt_kernel::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // identity as its own process, audit unreachable: its records stay in its outbox.
    let mut child = Command::new(env!("CARGO_BIN_EXE_plt"))
        .args(["serve", "identity", "--data-dir"])
        .arg(dir.path())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PLT_CONFIG_DIR", config_dir())
        .env("PLT_IDENTITY__LISTEN", format!("127.0.0.1:{port}"))
        .env("PLT_REGISTRY__STATIC__AUDIT", "[127.0.0.1:1]")
        .env("PLT_REGISTRY__STATIC__AUTH", "[127.0.0.1:1]")
        .env("PLT_OUTBOX__RETRY_MAX_BACKOFF", "200ms")
        // A row in delivery at the kill is claimed again after its lease.
        .env("PLT_OUTBOX__TIMEOUT", "1s")
        .env("PLT_OUTBOX__LEASE", "2s")
        .env("PLT_LOG__LEVEL", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    struct KillOnDrop(u32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .arg("-KILL")
                .arg(self.0.to_string())
                .stderr(Stdio::null())
                .status();
        }
    }
    let _guard = KillOnDrop(child.id());
    let http = plt_kernel::tls::http_client();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status() == 200
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "identity exited before it was ready"
        );
        assert!(Instant::now() < deadline, "identity never became ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let email = format!("grace-{}@example.com", Uuid::new_v4().simple());
    let res = http
        .post(format!("{base}/v1/users"))
        .json(&json!({"email": email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let user: Value = res.json().await.unwrap();
    let user_id = user["id"].as_str().unwrap().to_owned();
    // Killed: no drain, no on_stop, no graceful anything.
    child.kill().unwrap();
    child.wait().unwrap();

    // The next start of identity, now with audit reachable, delivers the record.
    let p = Platform::new(Backend::Sqlite).unwrap();
    let audit_dir = tempfile::tempdir().unwrap();
    let audit = p.audit(audit_dir.path()).await;
    let identity = p.identity(dir.path()).await;
    let reader = Uuid::new_v4();
    audit.authz.grant(reader, "audit.logs.read");
    let reader = audit.user_token(reader);
    let created = eventually_logged(&audit, &reader, "the sign-up before the kill", |e| {
        e.entry.action == "identity.user.created" && e.entry.resource == format!("user/{user_id}")
    })
    .await;
    assert_eq!(created.entry.outcome, Outcome::Success);
    drained(&identity, "identity").await;
    identity.stop().await;
    audit.stop().await;
}
