//! One test harness for every runtime service: start it on port 0 with its real start-up
//! path, on SQLite or on a fresh PostgreSQL schema, with a token authority of its own and
//! an in-memory authz, in one call.
//!
//! ```ignore
//! let Some(svc) = TestService::start::<Notes>(Backend::Sqlite, &[]).await else { return };
//! let alice = Uuid::new_v4();
//! svc.authz.grant(alice, "notes.notes.write");
//! let client = plt_kernel::tls::http_client();
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

/// What a test may change about the service it starts.
#[derive(Default)]
pub struct TestOptions {
    /// `PLT_…` variables on top of the configuration.
    pub vars: Vec<(String, String)>,
    /// Service-specific replacements (`Overrides::extensions`): a fake client of another
    /// service, a mail sink, …
    pub extensions: http::Extensions,
    /// The token authority (default: a new one); share one to sign tokens elsewhere.
    pub authority: Option<TestAuthority>,
    /// The keys the service trusts (default: the authority's).
    pub jwks: Option<Arc<dyn plt_authn::JwksSource>>,
    /// Another instance's PostgreSQL schema (or SQLite file name) to share; not dropped at
    /// stop (its owner drops it).
    pub schema: Option<String>,
    /// Another instance's SQLite directory to share.
    pub data_dir: Option<PathBuf>,
    /// The registry to register in and discover from (default: a new in-memory one).
    pub registry: Option<Arc<dyn ServiceRegistry>>,
    /// Verify tokens against the configured `auth.jwks_url` instead of the authority's keys.
    pub keys_from_config: bool,
    /// The event bus (default: none, unless the variables configure one). Share one
    /// between instances.
    pub events: Option<Arc<dyn plt_events::Bus>>,
}

impl TestOptions {
    /// Options with these variables.
    pub fn vars(vars: &[(&str, &str)]) -> Self {
        Self {
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..Default::default()
        }
    }

    /// These options, with `value` among the extensions.
    pub fn with<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }
}

/// A service started for a test. Stops (and drops its PostgreSQL schema) on [`TestService::stop`].
pub struct TestService {
    pub addr: SocketAddr,
    /// Whether it serves TLS (`PLT_SERVER__TLS__…` among the variables).
    pub tls: bool,
    pub backend: Backend,
    /// Signs the users' access tokens and the services' tokens the service accepts.
    pub authority: TestAuthority,
    /// The authz the service asks: grant permissions here.
    pub authz: FakeAuthz,
    pub registry: Arc<dyn ServiceRegistry>,
    name: &'static str,
    db: Option<plt_db::Db>,
    exports: http::Extensions,
    owns_schema: bool,
    data_dir: PathBuf,
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
        Self::start_with::<S>(
            backend,
            TestOptions {
                vars: vars
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            },
        )
        .await
    }

    /// Like [`TestService::start`], with [`TestOptions`].
    pub async fn start_with<S: Service>(backend: Backend, opts: TestOptions) -> Option<Self> {
        let TestOptions {
            vars,
            extensions,
            authority,
            jwks,
            schema: shared_schema,
            data_dir: shared_dir,
            registry,
            keys_from_config,
            events,
        } = opts;
        let m = S::MANIFEST;
        let dir = tempfile::tempdir().expect("temporary directory");
        let data_dir = shared_dir.unwrap_or_else(|| dir.path().to_path_buf());
        let Some(mut all) = backend.vars(&data_dir.to_string_lossy()) else {
            plt_db::testing::skipped(m.binary);
            return None;
        };
        all.push((
            "PLT_NOTIFIER__OUTBOX_DIR".into(),
            data_dir.join("mail").to_string_lossy().into_owned(),
        ));
        all.push(("PLT_LOG__LEVEL".into(), "warn".into()));
        // No bus unless the test gives one or configures one: a test's services do not
        // share the process's embedded bus with other tests.
        if events.is_none() && !vars.iter().any(|(k, _)| k == "PLT_EVENTS__BACKEND") {
            all.push(("PLT_EVENTS__BACKEND".into(), "none".into()));
        }
        all.extend(vars);
        let source = ConfigSource {
            dir: config_dir(),
            vars: all,
            sections: Vec::new(),
        };
        let cfg = load_config::<S>(source).expect("test configuration");
        let owns_schema = shared_schema.is_none();
        let schema = shared_schema.or_else(|| {
            (backend == Backend::Postgres)
                .then(|| plt_db::testing::unique_schema(&m.name.replace('-', "_")))
        });
        let authority = authority.unwrap_or_default();
        let jwks = match jwks {
            Some(j) => Some(j),
            None if keys_from_config => None,
            None => Some(authority.jwks()),
        };
        let authz = FakeAuthz::default();
        let registry: Arc<dyn ServiceRegistry> =
            registry.unwrap_or_else(|| Arc::new(MemoryRegistry::new()));
        let running: Running = start::<S>(
            cfg,
            Overrides {
                listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                schema: schema.clone(),
                registry: Some(registry.clone()),
                jwks,
                clients: Some(
                    ClientFactory::new(registry.clone())
                        .with_credentials(authority.credentials(m.name)),
                ),
                authz: Some(Arc::new(authz.clone())),
                revocation_feed: None,
                // A grant in the test takes effect at once.
                permission_cache_ttl: Some(std::time::Duration::ZERO),
                events,
                extensions,
            },
        )
        .await
        .unwrap_or_else(|e| panic!("starting {}: {e:#}", m.binary));
        let addr = running.local_addr();
        let tls = running.is_tls();
        let db = running.db().cloned();
        let exports = running.exports();
        let (stop, mut rx) = watch::channel(false);
        let task = tokio::spawn(running.run(async move {
            let _ = rx.wait_for(|s| *s).await;
        }));
        Some(Self {
            addr,
            tls,
            backend,
            authority,
            authz,
            registry,
            name: m.name,
            db,
            exports,
            schema,
            owns_schema,
            data_dir,
            stop,
            task: Some(task),
            _dir: dir,
        })
    }

    /// What the service exported of type `T` (its core, …).
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        self.exports.get::<T>().cloned()
    }

    /// The service's database (shares the pool the service uses).
    pub fn db(&self) -> Option<&plt_db::Db> {
        self.db.as_ref()
    }

    /// Where its SQLite files (and mail) are.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The PostgreSQL schema of this test (None on SQLite, unless shared).
    pub fn schema(&self) -> Option<&str> {
        self.schema.as_deref()
    }

    /// `http://<addr><path>` (`https://` when it serves TLS).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.addr)
    }

    /// An access token of `user`, accepted by the service.
    pub fn user_token(&self, user: Uuid) -> String {
        self.authority.access_token(&user.to_string())
    }

    /// A new signed-in user holding `permissions` (granted in [`TestService::authz`]): its id
    /// and a context carrying its access token, to call the service as that user.
    pub fn user_with(&self, permissions: &[&str]) -> (Uuid, plt_contracts::RequestContext) {
        let user = Uuid::now_v7();
        for p in permissions {
            self.authz.grant(user, p);
        }
        let ctx = plt_contracts::RequestContext {
            authorization: Some(plt_kernel::Secret::new(format!(
                "Bearer {}",
                self.user_token(user)
            ))),
            ..Default::default()
        };
        (user, ctx)
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
        if let Some(schema) = &self.schema
            && self.owns_schema
        {
            plt_db::testing::drop_schema(schema).await;
        }
    }
}
