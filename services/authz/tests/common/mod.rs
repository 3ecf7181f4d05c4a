//! Test support: the authz service built as the binary builds it, on port 0, on SQLite in a
//! temporary directory or on PostgreSQL in a fresh schema; admin callers carry access tokens
//! signed by a test key the service trusts (a static JWKS injected as an override); audit is
//! a recording fake that can be told to fail.
#![allow(dead_code)]

use async_trait::async_trait;
use authz_service::{Authz, Config, SECTION, core::AuthzCore};
use plt_authn::{AccessClaims, Signer, StaticJwks};
use plt_contracts::authz::AuthzServiceClient as _;
use plt_contracts::{
    Error, ErrorCode, RequestContext, Result,
    audit::{AuditPage, AuditQuery, AuditServiceClient, NewAuditEntry, VerifyReport},
    auth::Jwks,
};
use plt_kernel::Secret;
use plt_runtime::testing::{TestOptions, TestService};
use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};
use uuid::Uuid;

pub use plt_db::testing::Backend;

/// The configuration from the repository's config/ with these variables on top.
pub fn config(vars: &[(&str, &str)]) -> Config {
    plt_kernel::testing::config(SECTION, vars.iter().map(|(k, v)| (*k, *v)))
}

/// A recording audit service; `set_failing(true)` makes every `record` fail as if audit
/// were unreachable.
#[derive(Clone, Default)]
pub struct FakeAudit {
    records: Arc<Mutex<Vec<NewAuditEntry>>>,
    failing: Arc<AtomicBool>,
    attempts: Arc<AtomicU64>,
}

impl FakeAudit {
    pub fn failing() -> Self {
        let f = Self::default();
        f.set_failing(true);
        f
    }

    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    pub fn records(&self) -> Vec<NewAuditEntry> {
        self.records.lock().unwrap().clone()
    }

    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Waits until a record matching `pred` arrives, at most `within`.
    pub async fn wait_for(
        &self,
        within: Duration,
        pred: impl Fn(&NewAuditEntry) -> bool,
    ) -> Option<NewAuditEntry> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return Some(r);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[async_trait]
impl AuditServiceClient for FakeAudit {
    async fn record(&self, _ctx: &RequestContext, entry: NewAuditEntry) -> Result<u64> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(Error::unavailable("audit unreachable (fake)"));
        }
        let mut r = self.records.lock().unwrap();
        r.push(entry);
        Ok(r.len() as u64)
    }

    async fn query(&self, _ctx: &RequestContext, _f: AuditQuery) -> Result<AuditPage> {
        Err(Error::new(ErrorCode::Unimplemented, "fake"))
    }

    async fn verify(&self, _ctx: &RequestContext) -> Result<VerifyReport> {
        Err(Error::new(ErrorCode::Unimplemented, "fake"))
    }
}

/// Signs the service tokens of [`ctx`]; every instance's keys trust it too.
pub static SERVICES: std::sync::LazyLock<plt_authn::testing::TestAuthority> =
    std::sync::LazyLock::new(plt_authn::testing::TestAuthority::new);

/// A signing key whose public half the service under test trusts.
pub struct Keys {
    pub signer: Signer,
    pub jwks: StaticJwks,
}

impl Keys {
    pub fn new() -> Self {
        let signer = Signer::generate(format!(
            "test-{}",
            &Uuid::new_v4().simple().to_string()[..8]
        ))
        .unwrap();
        let jwks = StaticJwks::new(Jwks {
            keys: vec![signer.public_jwk(), SERVICES.signer().public_jwk()],
        });
        Self { signer, jwks }
    }

    pub fn token(&self, sub: &str) -> String {
        token_with(&self.signer, sub, 600, "plt", "plt-api")
    }
}

/// A token with these claims signed by `signer`; `ttl_secs` may be negative (expired).
pub fn token_with(signer: &Signer, sub: &str, ttl_secs: i64, iss: &str, aud: &str) -> String {
    let now = chrono::Utc::now().timestamp();
    let iat = if ttl_secs < 0 {
        now + ttl_secs - 60
    } else {
        now
    };
    signer.sign(&AccessClaims {
        iss: iss.into(),
        sub: sub.into(),
        aud: vec![aud.into()],
        exp: now + ttl_secs,
        nbf: iat,
        iat,
        jti: Uuid::new_v4().to_string(),
        scope: String::new(),
        client_id: String::new(),
        sid: String::new(),
    })
}

/// A context carrying `Authorization: Bearer <token>`.
pub fn bearer(token: &str) -> RequestContext {
    let mut ctx = RequestContext::new().with_request_id(format!("test-{}", Uuid::new_v4()));
    ctx.authorization = Some(Secret::new(format!("Bearer {token}")));
    ctx
}

/// How to start an instance.
pub struct Setup {
    pub backend: Backend,
    pub vars: Vec<(String, String)>,
    /// Share another instance's schema (PostgreSQL) or file name (SQLite).
    pub schema: Option<String>,
    /// Share another instance's SQLite directory.
    pub data_dir: Option<PathBuf>,
    /// The audit client; a recording `FakeAudit` by default.
    pub audit: Option<FakeAudit>,
    /// Use the configured (real) audit client instead of a fake.
    pub real_audit: bool,
    /// Use these keys instead of fresh ones.
    pub keys: Option<Arc<Keys>>,
    /// The event bus (default: an embedded one of its own, or the configured one).
    pub events: Option<Arc<dyn plt_events::Bus>>,
}

impl Setup {
    pub fn new(backend: Backend) -> Self {
        Self {
            backend,
            vars: Vec::new(),
            schema: None,
            data_dir: None,
            audit: None,
            real_audit: false,
            keys: None,
            events: None,
        }
    }

    pub fn var(mut self, k: &str, v: &str) -> Self {
        self.vars.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn audit(mut self, a: FakeAudit) -> Self {
        self.audit = Some(a);
        self
    }

    /// A second instance on the same database as `other`.
    pub fn beside(mut self, other: &Running) -> Self {
        self.schema = Some(other.schema.clone());
        self.data_dir = Some(other.data_dir.clone());
        self.keys = Some(other.keys.clone());
        self.events = other.events.clone();
        self.vars.push((
            "PLT_AUTHZ__BOOTSTRAP_ADMINS".into(),
            format!("[{}]", other.admin_id),
        ));
        self
    }
}

pub struct Running {
    pub svc: TestService,
    pub core: Arc<AuthzCore>,
    pub schema: String,
    pub data_dir: PathBuf,
    pub keys: Arc<Keys>,
    pub audit: FakeAudit,
    /// Bootstrap admin (holds `admin`).
    pub admin_id: Uuid,
    /// Carries the admin's token.
    pub admin: RequestContext,
    /// Carries a valid token of a user without roles.
    pub unprivileged: RequestContext,
    pub unprivileged_id: Uuid,
    pub cfg: Config,
    pub events: Option<Arc<dyn plt_events::Bus>>,
}

impl std::ops::Deref for Running {
    type Target = TestService;
    fn deref(&self) -> &TestService {
        &self.svc
    }
}

impl Running {
    pub fn url(&self) -> String {
        self.svc.url("")
    }

    pub fn db(&self) -> &plt_db::Db {
        self.svc.db().expect("authz has a database")
    }

    pub async fn stop(self) {
        self.svc.stop().await;
    }
}

/// Starts authz with extra configuration variables; `None` for PostgreSQL without
/// `PLT_TEST_POSTGRES_URL`.
pub async fn start(backend: Backend, extra: &[(&str, &str)]) -> Option<Running> {
    let mut s = Setup::new(backend);
    for (k, v) in extra {
        s = s.var(k, v);
    }
    start_with(s).await
}

pub async fn start_with(setup: Setup) -> Option<Running> {
    plt_kernel::telemetry::init_for_tests();
    let admin_id = setup
        .vars
        .iter()
        .find(|(k, _)| k == "PLT_AUTHZ__BOOTSTRAP_ADMINS")
        .and_then(|(_, v)| Uuid::parse_str(v.trim_matches(|c| c == '[' || c == ']')).ok())
        .unwrap_or_else(Uuid::new_v4);
    let mut vars = vec![(
        "PLT_AUTHZ__BOOTSTRAP_ADMINS".to_owned(),
        format!("[{admin_id}]"),
    )];
    vars.extend(
        setup
            .vars
            .iter()
            .filter(|(k, _)| k != "PLT_AUTHZ__BOOTSTRAP_ADMINS")
            .cloned(),
    );
    let keys = setup.keys.clone().unwrap_or_else(|| Arc::new(Keys::new()));
    let audit = setup.audit.clone().unwrap_or_default();
    let mut opts = TestOptions {
        vars: vars.clone(),
        authority: Some(SERVICES.clone()),
        jwks: Some(Arc::new(keys.jwks.clone())),
        schema: setup.schema.clone(),
        data_dir: setup.data_dir.clone(),
        events: setup.events.clone(),
        ..Default::default()
    };
    if !setup.real_audit {
        opts = opts.with(Arc::new(audit.clone()) as Arc<dyn AuditServiceClient>);
    }
    let svc = TestService::start_with::<Authz>(setup.backend, opts).await?;
    let core = svc.get::<Arc<AuthzCore>>().expect("core exported");
    // What identity and audit declare when they start.
    for info in [
        &plt_contracts::serve::IDENTITY,
        &plt_contracts::serve::AUDIT,
    ] {
        let declared = info
            .permissions
            .iter()
            .map(|p| plt_contracts::authz::Permission {
                name: p.name.into(),
                description: p.description.into(),
                granted_to_users: p.granted_to_users,
                relations: Vec::new(),
            })
            .collect();
        core.register_permissions(&ctx(), info.service, declared)
            .await
            .expect("platform services declare their permissions");
    }
    let mut cfg_vars: Vec<(&str, &str)> =
        vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let data = svc.data_dir().to_string_lossy().into_owned();
    cfg_vars.push(("PLT_DATABASE__DATA_DIR", &data));
    let cfg = config(&cfg_vars);
    let unprivileged_id = Uuid::new_v4();
    Some(Running {
        core,
        schema: svc.schema().unwrap_or(SECTION).to_owned(),
        data_dir: svc.data_dir().to_path_buf(),
        admin: bearer(&keys.token(&admin_id.to_string())),
        unprivileged: bearer(&keys.token(&unprivileged_id.to_string())),
        unprivileged_id,
        keys,
        audit,
        admin_id,
        cfg,
        svc,
        events: setup.events.clone(),
    })
}

/// The context of a platform service (the gateway) calling authz: carries a service token.
pub fn ctx() -> RequestContext {
    SERVICES
        .service_ctx("gateway", authz_service::SECTION)
        .with_request_id(format!("test-{}", Uuid::new_v4()))
}

#[allow(unused_imports)] // each test binary uses a part of this module
pub use plt_db::testing::{drop_schema, skipped};
