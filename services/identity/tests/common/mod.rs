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
    /// An operator: a signed-in user holding identity.users.read and .manage.
    pub operator: plt_contracts::RequestContext,
    /// The auth identity asks to end users' sessions.
    pub auth: plt_contracts::testsuite::fakes::FakeAuth,
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

    /// The context of a platform service calling identity on behalf of an operator: carries
    /// a service token (what VerifyCredentials needs) and [`Running::operator`]'s access token.
    pub fn service_ctx(&self) -> plt_contracts::RequestContext {
        plt_contracts::RequestContext {
            authorization: self.operator.authorization.clone(),
            ..self.svc.authority.service_ctx("auth", SECTION)
        }
    }

    /// An HTTP client whose requests carry the operator's access token.
    pub fn operator_client(&self) -> reqwest::Client {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(a) = &self.operator.authorization
            && let Ok(v) = a.expose().parse()
        {
            headers.insert(reqwest::header::AUTHORIZATION, v);
        }
        plt_kernel::tls::http_client_builder()
            .default_headers(headers)
            .build()
            .expect("HTTP client")
    }

    pub async fn stop(self) {
        self.svc.stop().await;
    }
}

/// Starts the service; `None` for PostgreSQL when `PLT_TEST_POSTGRES_URL` is not set.
pub async fn start(backend: Backend) -> Option<Running> {
    plt_kernel::telemetry::init_for_tests();
    let mail = MemoryNotifier::default();
    let auth = plt_contracts::testsuite::fakes::FakeAuth::default();
    let svc = TestService::start_with::<Identity>(
        backend,
        TestOptions::vars(&[("PLT_SERVER__SHUTDOWN_TIMEOUT", "5s")])
            .with(Arc::new(mail.clone()) as Arc<dyn Notifier>)
            .with(Arc::new(auth.clone()) as Arc<dyn plt_contracts::auth::AuthServiceClient>),
    )
    .await?;
    let app_core = svc
        .get::<Arc<dyn IdentityServiceClient>>()
        .expect("core exported");
    let (_, operator) = svc.user_with(&["identity.users.read", "identity.users.manage"]);
    Some(Running {
        svc,
        mail,
        app_core,
        operator,
        auth,
    })
}
