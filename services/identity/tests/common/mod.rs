//! Test support: build the identity service exactly as the binary does, on port 0, on
//! SQLite in a temporary directory or on PostgreSQL in a fresh schema.
#![allow(dead_code)]

use identity_service::{App, Overrides, SECTION};
use plt_authn::testing::TestAuthority;
use plt_kernel::notify::MemoryNotifier;
use std::{net::SocketAddr, sync::Arc};

pub use plt_db::testing::Backend;

pub struct Running {
    /// The registry the instance registered in (an in-memory one per instance).
    pub registry: std::sync::Arc<plt_registry::memory::MemoryRegistry>,
    pub addr: SocketAddr,
    pub mail: MemoryNotifier,
    pub app_core: Arc<dyn plt_contracts::identity::IdentityServiceClient>,
    pub db: plt_db::Db,
    pub schema: String,
    /// Signs the service tokens identity trusts.
    pub authority: TestAuthority,
    pub shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A service token from auth to identity, for the `x-plt-service-token` header.
    pub fn service_token(&self) -> String {
        self.authority
            .service_token("auth", SECTION)
            .expose()
            .clone()
    }

    /// The context of a platform service calling identity (carries a service token).
    pub fn service_ctx(&self) -> plt_contracts::RequestContext {
        self.authority.service_ctx("auth", SECTION)
    }

    /// Stops the service gracefully and, on PostgreSQL, drops the test's schema.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.expect("server task").expect("server ran");
        drop_schema(&self.schema).await;
    }
}

/// Starts the service; `None` for PostgreSQL when `PLT_TEST_POSTGRES_URL` is not set.
pub async fn start(backend: Backend) -> Option<Running> {
    plt_kernel::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().to_string();
    let mut vars = backend.vars(&data)?;
    vars.push(("PLT_SERVER__SHUTDOWN_TIMEOUT".into(), "5s".into()));
    let cfg = plt_kernel::testing::config(SECTION, vars);
    let schema = plt_db::testing::unique_schema("identity");
    let mail = MemoryNotifier::default();
    let authority = TestAuthority::new();
    let registry = std::sync::Arc::new(plt_registry::memory::MemoryRegistry::new());
    let app = App::build(
        &cfg,
        Overrides {
            schema: Some(schema.clone()),
            notifier: Some(Arc::new(mail.clone())),
            listen: Some("127.0.0.1:0".parse().unwrap()),
            registry: Some(registry.clone() as std::sync::Arc<dyn plt_registry::ServiceRegistry>),
            jwks: Some(authority.jwks()),
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
        mail,
        app_core,
        db,
        schema,
        authority,
        shutdown: Some(tx),
        task,
        _dir: dir,
    })
}

#[allow(unused_imports)] // each test binary uses a part of this module
pub use plt_db::testing::{drop_schema, skipped};
