//! plt-db: database pools for plt services. PostgreSQL gives each service its own schema
//! (its tables, and its migration history, live there via `search_path`); SQLite, the
//! embedded default, gives each service its own file `<data_dir>/<schema>.db`. Migrations are
//! embedded in each service's binary and applied at start or by a CLI command.
//!
//! Every pool sits behind a [`gate::Gate`]: once the database is known to be unreachable,
//! queries fail at once with an error [`is_unavailable`] recognises (services answer 503)
//! instead of each waiting out the acquire timeout, and the gate closes by itself when the
//! database answers again.

pub mod gate;

pub use gate::{Gate, GateConfig, Gated, is_gated, is_unavailable};

/// A gated PostgreSQL pool (what PostgreSQL stores hold).
pub type PgPool = Gated<sqlx::Postgres>;
/// A gated SQLite pool.
pub type SqlitePool = Gated<sqlx::Sqlite>;

use async_trait::async_trait;
use plt_kernel::{
    HealthCheck,
    config::{DatabaseConfig, DatabaseDriver},
};
use sqlx::{
    Executor,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use std::{str::FromStr, sync::Arc, time::Duration};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database name {0:?}: use a-z, 0-9 and '_', starting with a letter")]
    InvalidName(String),
    #[error("database.url: {0}")]
    Url(String),
    #[error("cannot prepare {0}: {1}")]
    Setup(String, String),
    #[error("connecting to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("applying migrations: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

/// One service's pool.
#[derive(Debug, Clone)]
pub enum Db {
    Postgres(PgPool),
    Sqlite(SqlitePool),
}

/// A service's migrations, one set per backend (their SQL dialects differ).
#[derive(Debug, Clone, Copy)]
pub struct Migrations {
    pub postgres: &'static Migrator,
    pub sqlite: &'static Migrator,
}

/// The calling crate's [`Migrations`], embedded at build time from its
/// `migrations/postgres` and `migrations/sqlite` folders (the crate needs `sqlx` with its
/// `migrate` feature): `pub static MIGRATIONS: Migrations = plt_db::embed_migrations!();`
#[macro_export]
macro_rules! embed_migrations {
    () => {{
        static POSTGRES: ::sqlx::migrate::Migrator = ::sqlx::migrate!("migrations/postgres");
        static SQLITE: ::sqlx::migrate::Migrator = ::sqlx::migrate!("migrations/sqlite");
        $crate::Migrations {
            postgres: &POSTGRES,
            sqlite: &SQLITE,
        }
    }};
}

/// Where the platform's own tables in every service database (the transactional `outbox` of
/// plt-outbox) record their migrations: a history table of their own, so their versions
/// never mix with a service's (`_sqlx_migrations`). [`Db::migrate`] applies them first.
pub const PLATFORM_MIGRATIONS_TABLE: &str = "_plt_migrations";

static PLATFORM_POSTGRES: Migrator = sqlx::migrate!("migrations/platform/postgres");
static PLATFORM_SQLITE: Migrator = sqlx::migrate!("migrations/platform/sqlite");

fn platform(embedded: &Migrator) -> Migrator {
    let mut m = Migrator::with_migrations(embedded.iter().cloned().collect());
    m.dangerous_set_table_name(PLATFORM_MIGRATIONS_TABLE);
    m
}

fn gate_config(cfg: &DatabaseConfig) -> GateConfig {
    GateConfig {
        probe_interval: cfg.probe_interval,
        probe_timeout: cfg.probe_timeout,
    }
}

fn check_name(name: &str) -> Result<(), DbError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(DbError::InvalidName(name.to_owned()))
    }
}

impl Db {
    /// Connects the pool of the service that owns `schema` (PostgreSQL schema or SQLite file
    /// name), creating the schema or file if needed.
    pub async fn connect(cfg: &DatabaseConfig, schema: &str) -> Result<Self, DbError> {
        check_name(schema)?;
        match cfg.driver {
            DatabaseDriver::Postgres => {
                let opts = PgConnectOptions::from_str(cfg.url.expose())
                    .map_err(|e| DbError::Url(e.to_string()))?
                    .application_name(schema);
                // Create the schema once, outside the pool, so every pooled connection can
                // rely on it through its search_path.
                let setup = PgPoolOptions::new()
                    .max_connections(1)
                    .acquire_timeout(cfg.acquire_timeout)
                    .connect_with(opts.clone())
                    .await
                    .map_err(DbError::Connect)?;
                setup
                    .execute(sqlx::AssertSqlSafe(format!(
                        "CREATE SCHEMA IF NOT EXISTS \"{schema}\""
                    )))
                    .await
                    .map_err(|e| DbError::Setup(format!("schema {schema}"), e.to_string()))?;
                setup.close().await;
                let search_path = format!("SET search_path TO \"{schema}\"");
                let pool = PgPoolOptions::new()
                    .max_connections(cfg.max_connections)
                    .min_connections(cfg.min_connections)
                    .acquire_timeout(cfg.acquire_timeout)
                    .after_connect(move |conn, _meta| {
                        let sql = search_path.clone();
                        Box::pin(async move {
                            conn.execute(sqlx::AssertSqlSafe(sql)).await?;
                            Ok(())
                        })
                    })
                    .connect_with(opts)
                    .await
                    .map_err(DbError::Connect)?;
                Ok(Db::Postgres(Gated::new(pool, gate_config(cfg), true)))
            }
            DatabaseDriver::Sqlite => {
                std::fs::create_dir_all(&cfg.data_dir).map_err(|e| {
                    DbError::Setup(
                        format!("data directory {}", cfg.data_dir.display()),
                        e.to_string(),
                    )
                })?;
                let opts = SqliteConnectOptions::new()
                    .filename(cfg.data_dir.join(format!("{schema}.db")))
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
                    .foreign_keys(true)
                    .busy_timeout(Duration::from_secs(5));
                let pool = SqlitePoolOptions::new()
                    .max_connections(cfg.max_connections)
                    .min_connections(cfg.min_connections)
                    .acquire_timeout(cfg.acquire_timeout)
                    .connect_with(opts)
                    .await
                    .map_err(DbError::Connect)?;
                // A local file: no server to lose, so no probe; failures still trip the gate.
                Ok(Db::Sqlite(Gated::new(pool, gate_config(cfg), false)))
            }
        }
    }

    /// Connects (as [`Db::connect`]) and applies the pending `migrations`: what a service
    /// does before it serves, and what its `migrate` command does.
    pub async fn open(
        cfg: &DatabaseConfig,
        schema: &str,
        migrations: Migrations,
    ) -> Result<Self, DbError> {
        let db = Self::connect(cfg, schema).await?;
        if let Err(e) = db.migrate(migrations).await {
            db.close().await;
            return Err(e);
        }
        Ok(db)
    }

    /// Applies the pending migrations of this backend: the platform's tables first (see
    /// [`PLATFORM_MIGRATIONS_TABLE`]), then the service's.
    pub async fn migrate(&self, migrations: Migrations) -> Result<(), DbError> {
        match self {
            Db::Postgres(p) => {
                platform(&PLATFORM_POSTGRES)
                    .run(&**p)
                    .await
                    .map_err(DbError::Migrate)?;
                migrations.postgres.run(&**p).await
            }
            Db::Sqlite(p) => {
                platform(&PLATFORM_SQLITE)
                    .run(&**p)
                    .await
                    .map_err(DbError::Migrate)?;
                migrations.sqlite.run(&**p).await
            }
        }
        .map_err(DbError::Migrate)
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Db::Postgres(_) => "postgres",
            Db::Sqlite(_) => "sqlite",
        }
    }

    /// `(open connections, idle connections)`.
    pub fn pool_size(&self) -> (u32, u32) {
        match self {
            Db::Postgres(p) => (p.size(), p.num_idle() as u32),
            Db::Sqlite(p) => (p.size(), p.num_idle() as u32),
        }
    }

    fn max_size(&self) -> u32 {
        match self {
            Db::Postgres(p) => p.options().get_max_connections(),
            Db::Sqlite(p) => p.options().get_max_connections(),
        }
    }

    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        match self {
            Db::Postgres(p) => p.execute("SELECT 1").await.map(drop),
            Db::Sqlite(p) => p.execute("SELECT 1").await.map(drop),
        }
    }

    /// The pool's availability gate.
    pub fn gate(&self) -> &std::sync::Arc<Gate> {
        match self {
            Db::Postgres(p) => p.gate(),
            Db::Sqlite(p) => p.gate(),
        }
    }

    pub async fn close(&self) {
        match self {
            Db::Postgres(p) => p.close().await,
            Db::Sqlite(p) => p.close().await,
        }
    }

    /// The readiness check for this pool, named `database`.
    pub fn health_check(&self) -> Arc<dyn HealthCheck> {
        Arc::new(DbHealth(self.clone()))
    }

    /// A metrics collector refreshing the pool gauges of `service`.
    pub fn metrics_collector(&self, service: &str) -> plt_kernel::metrics::Collector {
        let db = self.clone();
        let service = service.to_owned();
        Arc::new(move || {
            let (size, idle) = db.pool_size();
            let in_use = size.saturating_sub(idle);
            metrics::gauge!("db_pool_connections", "service" => service.clone(), "state" => "idle")
                .set(f64::from(idle));
            metrics::gauge!("db_pool_connections", "service" => service.clone(), "state" => "in_use").set(f64::from(in_use));
            metrics::gauge!("db_pool_max_connections", "service" => service.clone())
                .set(f64::from(db.max_size()));
        })
    }
}

struct DbHealth(Db);

#[async_trait]
impl HealthCheck for DbHealth {
    fn name(&self) -> &str {
        "database"
    }

    async fn check(&self) -> Result<(), String> {
        if let Some((_, for_)) = self.0.gate().down_for() {
            return Err(format!(
                "database unreachable for {:.1}s",
                for_.as_secs_f64()
            ));
        }
        self.0.ping().await.map_err(|e| {
            tracing::warn!(error = %e, "database readiness check failed");
            match e {
                sqlx::Error::PoolTimedOut => {
                    "no connection available (database unreachable?)".to_owned()
                }
                sqlx::Error::Io(_) => "database unreachable".to_owned(),
                _ => "database query failed".to_owned(),
            }
        })
    }
}

/// Test support: a PostgreSQL URL from `PLT_TEST_POSTGRES_URL`, and unique schema names.
#[cfg(feature = "testing")]
pub mod testing {
    /// The database a test runs on.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Backend {
        Sqlite,
        Postgres,
    }

    impl Backend {
        /// The configuration variables that put a service on this backend, its SQLite
        /// files under `data_dir`; `None` for PostgreSQL when `PLT_TEST_POSTGRES_URL` is
        /// not set (say so with [`skipped`]).
        pub fn vars(self, data_dir: &str) -> Option<Vec<(String, String)>> {
            let mut vars = vec![("PLT_DATABASE__DATA_DIR".to_owned(), data_dir.to_owned())];
            if self == Backend::Postgres {
                vars.push(("PLT_DATABASE__DRIVER".into(), "postgres".into()));
                vars.push(("PLT_DATABASE__URL".into(), postgres_url()?));
            }
            Some(vars)
        }
    }

    /// The PostgreSQL URL for tests, if the environment provides one.
    pub fn postgres_url() -> Option<String> {
        std::env::var("PLT_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
    }

    /// Drops a test schema (a no-op without `PLT_TEST_POSTGRES_URL`).
    pub async fn drop_schema(schema: &str) {
        let Some(url) = postgres_url() else {
            return;
        };
        if let Ok(pool) = sqlx::PgPool::connect(&url).await {
            let sql = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
            let _ = sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await;
            pool.close().await;
        }
    }

    /// Says loudly that a PostgreSQL test did not run because its variable is not set.
    pub fn skipped(name: &str) {
        eprintln!("SKIPPED {name}: PLT_TEST_POSTGRES_URL is not set");
    }

    /// A fresh schema name, unique per test run: `<prefix>_<random>`.
    pub fn unique_schema(prefix: &str) -> String {
        format!("{prefix}_t{}", uuid::Uuid::new_v4().simple())
    }
}
