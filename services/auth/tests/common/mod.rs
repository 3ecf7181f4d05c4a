//! Test support: auth started by the runtime's one harness (its real start-up path, port 0,
//! SQLite or a fresh PostgreSQL schema), with a fake identity.
#![allow(dead_code)]

use auth_service::{Auth, Config, SECTION, core::AuthCore};
use plt_contracts::{identity::IdentityServiceClient, testsuite::fakes::FakeIdentity};
use plt_runtime::testing::{TestOptions, TestService};
use std::sync::Arc;

pub use plt_db::testing::Backend;

/// The configuration from the repository's config/ with these variables on top.
pub fn config(vars: &[(&str, &str)]) -> Config {
    plt_kernel::testing::config(SECTION, vars.iter().map(|(k, v)| (*k, *v)))
}

pub struct Running {
    pub svc: TestService,
    pub identity: FakeIdentity,
    pub core: Arc<AuthCore>,
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
        self.svc.db().expect("auth has a database")
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

    pub async fn stop(self) {
        self.svc.stop().await;
    }
}

/// Starts auth with extra configuration variables; `None` for PostgreSQL without
/// `PLT_TEST_POSTGRES_URL`.
pub async fn start(backend: Backend, extra: &[(&str, &str)]) -> Option<Running> {
    plt_kernel::telemetry::init_for_tests();
    let identity = FakeIdentity::default();
    let svc = TestService::start_with::<Auth>(
        backend,
        TestOptions::vars(extra).with(Arc::new(identity.clone()) as Arc<dyn IdentityServiceClient>),
    )
    .await?;
    let core = svc.get::<Arc<AuthCore>>().expect("core exported");
    Some(Running {
        svc,
        identity,
        core,
    })
}

#[allow(unused_imports)] // each test binary uses a part of this module
pub use plt_db::testing::{drop_schema, skipped};
