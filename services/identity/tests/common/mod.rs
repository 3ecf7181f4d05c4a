//! Test support: identity started by the runtime's one harness (its real start-up path,
//! port 0, SQLite or a fresh PostgreSQL schema), with an in-memory mail sink.
#![allow(dead_code)]

use identity_service::{Identity, SECTION};
use plt_contracts::identity::IdentityServiceClient;
use plt_kernel::notify::{MemoryNotifier, Notifier};
use plt_runtime::testing::{TestOptions, TestService};
use std::sync::Arc;

#[allow(unused_imports)] // each test binary uses a part of this module
pub use plt_db::testing::{Backend, drop_schema, skipped};

pub struct Running {
    pub svc: TestService,
    pub mail: MemoryNotifier,
    pub app_core: Arc<dyn IdentityServiceClient>,
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
        self.svc.db().expect("identity has a database")
    }

    /// A service token from auth to identity, for the `x-plt-service-token` header.
    pub fn service_token(&self) -> String {
        self.svc
            .authority
            .service_token("auth", SECTION)
            .expose()
            .clone()
    }

    /// The context of a platform service calling identity (carries a service token).
    pub fn service_ctx(&self) -> plt_contracts::RequestContext {
        self.svc.authority.service_ctx("auth", SECTION)
    }

    pub async fn stop(self) {
        self.svc.stop().await;
    }
}

/// Starts the service; `None` for PostgreSQL when `PLT_TEST_POSTGRES_URL` is not set.
pub async fn start(backend: Backend) -> Option<Running> {
    plt_kernel::telemetry::init_for_tests();
    let mail = MemoryNotifier::default();
    let svc = TestService::start_with::<Identity>(
        backend,
        TestOptions::vars(&[("PLT_SERVER__SHUTDOWN_TIMEOUT", "5s")])
            .with(Arc::new(mail.clone()) as Arc<dyn Notifier>),
    )
    .await?;
    let app_core = svc
        .get::<Arc<dyn IdentityServiceClient>>()
        .expect("core exported");
    Some(Running {
        svc,
        mail,
        app_core,
    })
}
