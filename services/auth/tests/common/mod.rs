//! Test support: the auth service built as the binary builds it, on port 0, with a fake
//! identity, on SQLite in a temporary directory or on PostgreSQL in a fresh schema.
#![allow(dead_code)]

use auth_service::{App, Config, Overrides, SECTION};
use plt_contracts::testsuite::fakes::FakeIdentity;
use std::{net::SocketAddr, sync::Arc};

pub use plt_db::testing::Backend;

/// The configuration from the repository's config/ with these variables on top.
pub fn config(vars: &[(&str, &str)]) -> Config {
    plt_kernel::testing::config(SECTION, vars.iter().map(|(k, v)| (*k, *v)))
}

pub struct Running {
    /// The registry the instance registered in (an in-memory one per instance).
    pub registry: std::sync::Arc<plt_registry::memory::MemoryRegistry>,
    pub addr: SocketAddr,
    pub identity: FakeIdentity,
    pub core: Arc<auth_service::core::AuthCore>,
    pub db: plt_db::Db,
    pub schema: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The context of the gateway calling auth: a service token issued for the development
    /// secret of `auth.service_accounts.gateway`.
    pub async fn service_ctx(&self) -> plt_contracts::RequestContext {
        use plt_contracts::auth::AuthServiceClient as _;
        let t = self
            .core
            .issue_service_token(
                &plt_contracts::RequestContext::new(),
                "gateway",
                plt_kernel::Secret::new(plt_client::development_secret("gateway")),
                SECTION,
            )
            .await
            .expect("service token for the gateway");
        plt_contracts::RequestContext::new().with_service_token(t.token)
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.expect("server task").expect("server ran");
        drop_schema(&self.schema).await;
    }
}

/// Starts auth with extra configuration variables; `None` for PostgreSQL without
/// `PLT_TEST_POSTGRES_URL`.
pub async fn start(backend: Backend, extra: &[(&str, &str)]) -> Option<Running> {
    plt_kernel::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().to_string();
    let mut vars = backend.vars(&data)?;
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let cfg = plt_kernel::testing::config(SECTION, vars);
    let schema = plt_db::testing::unique_schema("auth");
    let identity = FakeIdentity::default();
    let registry = std::sync::Arc::new(plt_registry::memory::MemoryRegistry::new());
    let app = App::build(
        &cfg,
        Overrides {
            schema: Some(schema.clone()),
            identity: Some(Arc::new(identity.clone())),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            registry: Some(registry.clone() as std::sync::Arc<dyn plt_registry::ServiceRegistry>),
        },
    )
    .await
    .expect("auth builds");
    let addr = app.local_addr();
    let core = app.core();
    let db = app.db().clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async move {
        let _ = rx.await;
    }));
    Some(Running {
        registry: registry.clone(),
        addr,
        identity,
        core,
        db,
        schema,
        shutdown: Some(tx),
        task,
        _dir: dir,
    })
}

#[allow(unused_imports)] // each test binary uses a part of this module
pub use plt_db::testing::{drop_schema, skipped};
