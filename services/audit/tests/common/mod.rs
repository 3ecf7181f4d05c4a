//! Test support: audit started by the runtime's one harness (its real start-up path, port
//! 0, SQLite or a fresh PostgreSQL schema), trusting the service tokens of [`SERVICES`].
#![allow(dead_code)]

use audit_service::{Audit, Config, SECTION};
use plt_contracts::{
    RequestContext,
    audit::{AuditServiceClient, NewAuditEntry, Outcome},
};
use plt_runtime::testing::{TestOptions, TestService};
use std::sync::Arc;

/// The configuration from the repository's config/ with these variables on top.
pub fn config(vars: &[(&str, &str)]) -> Config {
    plt_kernel::testing::config(SECTION, vars.iter().map(|(k, v)| (*k, *v)))
}

pub use plt_db::testing::Backend;

pub struct Running {
    pub svc: TestService,
    pub app_core: Arc<dyn AuditServiceClient>,
    pub cfg: Config,
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
        self.svc.db().expect("audit has a database")
    }

    /// Stops the service gracefully and, on PostgreSQL, drops the test's schema.
    pub async fn stop(self) {
        self.svc.stop().await;
    }
}

/// What the suites run with: a short drain.
pub fn backend_vars(backend: Backend, data_dir: &str) -> Option<Vec<(String, String)>> {
    let mut vars = backend.vars(data_dir)?;
    vars.extend(
        suite_vars()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    Some(vars)
}

fn suite_vars() -> Vec<(&'static str, &'static str)> {
    vec![("PLT_SERVER__SHUTDOWN_TIMEOUT", "5s")]
}

/// Starts the service with extra configuration variables; `None` for PostgreSQL when
/// `PLT_TEST_POSTGRES_URL` is not set.
pub async fn start_with(backend: Backend, extra: &[(&str, &str)]) -> Option<Running> {
    plt_kernel::telemetry::init_for_tests();
    let mut vars = suite_vars();
    vars.extend_from_slice(extra);
    let svc = TestService::start_with::<Audit>(
        backend,
        TestOptions {
            authority: Some(SERVICES.clone()),
            ..TestOptions::vars(&vars)
        },
    )
    .await?;
    svc.authz.grant(AUDITOR, "audit.logs.read");
    svc.authz.grant(AUDITOR, "audit.logs.verify");
    let app_core = svc
        .get::<Arc<dyn AuditServiceClient>>()
        .expect("core exported");
    let cfg = config(&vars);
    Some(Running { svc, app_core, cfg })
}

/// Starts the service; `None` for PostgreSQL when `PLT_TEST_POSTGRES_URL` is not set.
pub async fn start(backend: Backend) -> Option<Running> {
    start_with(backend, &[]).await
}

/// Signs the service tokens of [`ctx`]; the service under test trusts it.
pub static SERVICES: std::sync::LazyLock<plt_authn::testing::TestAuthority> =
    std::sync::LazyLock::new(plt_authn::testing::TestAuthority::new);

/// The user on whose behalf [`ctx`] reads and verifies the log (granted both permissions).
pub const AUDITOR: uuid::Uuid = uuid::Uuid::from_u128(0x0197_0000_0000_7000_8000_0000_0000_0a0d);

/// The context of a platform service (authz) calling audit: carries a service token (what
/// recording needs) and [`AUDITOR`]'s access token (what reading and verifying need).
pub fn ctx() -> RequestContext {
    RequestContext {
        authorization: auditor_ctx().authorization,
        ..SERVICES.service_ctx("authz", SECTION)
    }
}

/// [`AUDITOR`]'s access token alone (for clients that attach their own service token).
pub fn auditor_ctx() -> RequestContext {
    RequestContext {
        authorization: Some(plt_kernel::Secret::new(format!(
            "Bearer {}",
            SERVICES.access_token(&AUDITOR.to_string())
        ))),
        ..Default::default()
    }
}

/// An HTTP client whose requests carry a service token for audit (as authz's would) and
/// [`AUDITOR`]'s access token.
pub fn service_http_client() -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    let ctx = ctx();
    for (name, value) in [
        (
            plt_contracts::service_identity::SERVICE_TOKEN_HEADER,
            ctx.service_token.as_ref().map(|t| t.expose().clone()),
        ),
        (
            "authorization",
            ctx.authorization.as_ref().map(|t| t.expose().clone()),
        ),
    ] {
        if let Some(v) = value.and_then(|v| v.parse().ok()) {
            headers.insert(name, v);
        }
    }
    plt_kernel::tls::http_client_builder()
        .default_headers(headers)
        .build()
        .expect("HTTP client")
}

/// A raw gRPC request carrying a service token for audit.
pub fn as_service<T>(message: T) -> tonic::Request<T> {
    ctx().grpc_request(message)
}

/// A valid entry by `actor`.
pub fn entry(actor: &str, i: usize) -> NewAuditEntry {
    NewAuditEntry {
        id: None,
        actor: actor.to_owned(),
        action: "test.thing.do".into(),
        resource: format!("thing/{i}"),
        outcome: Outcome::Success,
        metadata: serde_json::json!({"i": i, "why": "testing"})
            .as_object()
            .unwrap()
            .clone(),
        source_ip: "198.51.100.7".into(),
        user_agent: "audit-tests".into(),
        trace_id: format!("trace-{i}"),
    }
}

#[allow(unused_imports)] // each test binary uses a part of this module
pub use plt_db::testing::{drop_schema, skipped};
