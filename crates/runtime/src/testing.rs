//! One test harness for every runtime service: start it on port 0 with its real start-up
//! path, on SQLite or on a fresh PostgreSQL schema, with a token authority of its own and
//! an in-memory authz, in one call.
//!
//! ```ignore
//! let Some(svc) = TestService::start::<Notes>(Backend::Sqlite, &[]).await else { return };
//! let alice = Uuid::new_v4();
//! svc.authz.grant(alice, "notes.notes.write");
//! let client = reqwest::Client::new();
//! client.post(svc.url("/v1/notes")).bearer_auth(svc.user_token(alice)) …
//! ```

pub use plt_authn::testing::TestAuthority;
pub use plt_contracts::testsuite::fakes::FakeAuthz;
pub use plt_db::testing::Backend;

use crate::{Overrides, Running, Service, load_config, start};
use plt_client::ClientFactory;
use plt_kernel::config::ConfigSource;
use plt_registry::{ServiceRegistry, memory::MemoryRegistry};
use std::{net::SocketAddr, path::PathBuf, sync::Arc};
use tokio::{sync::watch, task::JoinHandle};
use uuid::Uuid;

/// A service started for a test. Stops (and drops its PostgreSQL schema) on [`TestService::stop`].
pub struct TestService {
    pub addr: SocketAddr,
    pub backend: Backend,
    /// Signs the users' access tokens and the services' tokens the service accepts.
    pub authority: TestAuthority,
    /// The authz the service asks: grant permissions here.
    pub authz: FakeAuthz,
    pub registry: Arc<dyn ServiceRegistry>,
    name: &'static str,
    schema: Option<String>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// The repository's `config/` (the nearest one above the current directory), as the
/// binaries read it.
pub fn config_dir() -> PathBuf {
    let mut dir = std::env::current_dir().unwrap_or_default();
    loop {
        if dir.join("config/default.yaml").is_file() {
            return dir.join("config");
        }
        if !dir.pop() {
            return PathBuf::from("config");
        }
    }
}

impl TestService {
    /// Starts `S` on `backend` with `vars` (`PLT_…`) on top of the configuration. `None`
    /// when the backend is PostgreSQL and `PLT_TEST_POSTGRES_URL` is not set (reported as
    /// skipped). Panics when the service does not start: that is the test failing.
    pub async fn start<S: Service>(backend: Backend, vars: &[(&str, &str)]) -> Option<Self> {
        let m = S::MANIFEST;
        let dir = tempfile::tempdir().expect("temporary directory");
        let Some(mut all) = backend.vars(&dir.path().to_string_lossy()) else {
            plt_db::testing::skipped(m.binary);
            return None;
        };
        all.push((
            "PLT_NOTIFIER__OUTBOX_DIR".into(),
            dir.path().join("mail").to_string_lossy().into_owned(),
        ));
        all.push(("PLT_LOG__LEVEL".into(), "warn".into()));
        all.extend(vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let source = ConfigSource {
            dir: config_dir(),
            vars: all,
            sections: Vec::new(),
        };
        let cfg = load_config::<S>(source).expect("test configuration");
        let schema = (backend == Backend::Postgres)
            .then(|| plt_db::testing::unique_schema(&m.name.replace('-', "_")));
        let authority = TestAuthority::new();
        let authz = FakeAuthz::default();
        let registry: Arc<dyn ServiceRegistry> = Arc::new(MemoryRegistry::new());
        let running: Running = start::<S>(
            cfg,
            Overrides {
                listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                schema: schema.clone(),
                registry: Some(registry.clone()),
                jwks: Some(authority.jwks()),
                clients: Some(
                    ClientFactory::new(registry.clone())
                        .with_credentials(authority.credentials(m.name)),
                ),
                authz: Some(Arc::new(authz.clone())),
                // A grant in the test takes effect at once.
                permission_cache_ttl: Some(std::time::Duration::ZERO),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("starting {}: {e:#}", m.binary));
        let addr = running.local_addr();
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(running.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        Some(Self {
            addr,
            backend,
            authority,
            authz,
            registry,
            name: m.name,
            schema,
            stop,
            task: Some(task),
            _dir: dir,
        })
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// An access token of `user`, accepted by the service.
    pub fn user_token(&self, user: Uuid) -> String {
        self.authority.access_token(&user.to_string())
    }

    /// A service token from `caller` addressed to this service.
    pub fn service_token(&self, caller: &str) -> String {
        self.authority
            .service_token(caller, self.name)
            .expose()
            .clone()
    }

    /// Waits until the service registered its permissions with authz (it does so in the
    /// background at start), then returns them (name -> service).
    pub async fn registered_permissions(&self) -> std::collections::BTreeMap<String, String> {
        for _ in 0..200 {
            let r = self.authz.registered();
            if !r.is_empty() {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.authz.registered()
    }

    /// Stops the service (deregister, drain, close) and drops its test schema.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.await
                .expect("service task")
                .expect("service stopped cleanly");
        }
        if let Some(schema) = &self.schema {
            plt_db::testing::drop_schema(schema).await;
        }
    }
}
