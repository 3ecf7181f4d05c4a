//! Test support: build the audit service exactly as the binary does, on port 0, on SQLite
//! in a temporary directory or on PostgreSQL in a fresh schema.
#![allow(dead_code)]

use audit_service::{App, Config, Overrides, SECTION};
use plt_contracts::{
    RequestContext,
    audit::{AuditServiceClient, NewAuditEntry, Outcome},
};
use std::{net::SocketAddr, sync::Arc};

/// The configuration from the repository's config/ with these variables on top.
pub fn config(vars: &[(&str, &str)]) -> Config {
    plt_kernel::testing::config(SECTION, vars.iter().map(|(k, v)| (*k, *v)))
}

pub use plt_db::testing::Backend;

pub struct Running {
    /// The registry the instance registered in (an in-memory one per instance).
    pub registry: std::sync::Arc<plt_registry::memory::MemoryRegistry>,
    pub addr: SocketAddr,
    pub app_core: Arc<dyn AuditServiceClient>,
    pub db: plt_db::Db,
    pub schema: String,
    pub cfg: Config,
    pub shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub dir: tempfile::TempDir,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the service gracefully and, on PostgreSQL, drops the test's schema.
    pub async fn stop(self) {
        let schema = self.schema.clone();
        self.stop_keeping_data().await;
        drop_schema(&schema).await;
    }

    /// Stops the service gracefully; the database (and its temp dir) stay.
    pub async fn stop_keeping_data(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.expect("server task").expect("server ran");
        self.dir
    }
}

pub fn backend_vars(backend: Backend, data_dir: &str) -> Option<Vec<(String, String)>> {
    let mut vars = backend.vars(data_dir)?;
    vars.push(("PLT_SERVER__SHUTDOWN_TIMEOUT".to_owned(), "5s".to_owned()));
    // Access control has its own test (tests/access.rs); the suites test the log itself.
    vars.push(("PLT_AUDIT__ACCESS_CONTROL".to_owned(), "false".to_owned()));
    Some(vars)
}

/// Starts the service with extra configuration variables; `None` for PostgreSQL when
/// `PLT_TEST_POSTGRES_URL` is not set.
pub async fn start_with(backend: Backend, extra: &[(&str, &str)]) -> Option<Running> {
    plt_kernel::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().to_string();
    let owned = backend_vars(backend, &data)?;
    let mut vars: Vec<(&str, &str)> = owned
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    vars.extend_from_slice(extra);
    let cfg = config(&vars);
    let schema = plt_db::testing::unique_schema("audit");
    let registry = std::sync::Arc::new(plt_registry::memory::MemoryRegistry::new());
    let app = App::build(
        &cfg,
        Overrides {
            schema: Some(schema.clone()),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            registry: Some(registry.clone() as std::sync::Arc<dyn plt_registry::ServiceRegistry>),
            jwks: Some(SERVICES.jwks()),
            ..Default::default()
        },
    )
    .await
    .expect("app builds");
    let addr = app.local_addr();
    let app_core = app.core();
    let db = app.db().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    Some(Running {
        registry: registry.clone(),
        addr,
        app_core,
        db,
        schema,
        cfg,
        shutdown: Some(tx),
        task,
        dir,
    })
}

/// Starts the service; `None` for PostgreSQL when `PLT_TEST_POSTGRES_URL` is not set.
pub async fn start(backend: Backend) -> Option<Running> {
    start_with(backend, &[]).await
}

/// Signs the service tokens of [`ctx`]; the service under test trusts it.
pub static SERVICES: std::sync::LazyLock<plt_authn::testing::TestAuthority> =
    std::sync::LazyLock::new(plt_authn::testing::TestAuthority::new);

/// The context of a platform service (authz) calling audit: carries a service token.
pub fn ctx() -> RequestContext {
    SERVICES.service_ctx("authz", SECTION)
}

/// An HTTP client whose requests carry a service token for audit (as authz's would).
pub fn service_http_client() -> reqwest::Client {
    SERVICES.http_client("authz", SECTION)
}

/// A raw gRPC request carrying a service token for audit.
pub fn as_service<T>(message: T) -> tonic::Request<T> {
    ctx().grpc_request(message)
}

/// A valid entry by `actor`.
pub fn entry(actor: &str, i: usize) -> NewAuditEntry {
    NewAuditEntry {
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
