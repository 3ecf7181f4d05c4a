//! K1 configuration: `config/default.yaml` ← `config/<env>.yaml` ← `PLT_*` environment
//! variables ← secrets read from files, merged in that order, typed and validated at start.
//!
//! Environment mapping: strip the `PLT_` prefix, lower-case, and read `__` as a level
//! separator: `PLT_IDENTITY__LISTEN=0.0.0.0:9000` sets `identity.listen`. A variable ending in
//! `_FILE` names a file whose trimmed content becomes the value of the key without the suffix:
//! `PLT_DATABASE__URL_FILE=/run/secrets/db` sets `database.url`. A list is written as a YAML
//! flow sequence: `PLT_AUTH__TRUSTED_PROXIES='[10.0.0.0/8, "::1"]'`. `PLT_ENV` selects the
//! environment file; `PLT_CONFIG_DIR` the directory (default `config`).
//!
//! The repository's `config/default.yaml` is built into every binary ([`EMBEDDED_DEFAULT`]):
//! a config directory without `default.yaml` (or no `./config` at all) uses it, so an
//! installed binary starts from any directory. A `PLT_CONFIG_DIR` that names a missing
//! directory is an error.
//!
//! Variables of the tools around the services are not configuration and are ignored:
//! `PLT_DEV_<NAME>` (`plt dev`'s options), `PLT_TEST_<NAME>` and `PLT_BENCH_<NAME>` (what
//! tests and benchmarks read) — see [`is_reserved_var`].

use crate::secret::Secret;
use figment::{
    Figment, Provider,
    providers::{Format, Serialized, Yaml},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Duration,
};

/// A configuration problem: the key it concerns and why it was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            reason: reason.into(),
        }
    }

    fn from_figment(err: figment::Error) -> Self {
        Self::from_figment_in(err, "")
    }

    /// Like `from_figment`, for an error from a figment focused on section `prefix`.
    fn from_figment_in(err: figment::Error, prefix: &str) -> Self {
        // figment reports one error per problem; report the first with its full path.
        let err = err
            .into_iter()
            .next()
            .expect("figment error has at least one entry");
        let mut parts: Vec<&str> = Vec::new();
        if !prefix.is_empty() {
            parts.push(prefix);
        }
        parts.extend(err.path.iter().map(String::as_str));
        let key = if parts.is_empty() {
            "(root)".to_string()
        } else {
            parts.join(".")
        };
        let mut reason = err.kind.to_string();
        if let Some(md) = &err.metadata {
            // Environment overrides are merged as one serialized value; name them plainly.
            // A file is named by its path, since default.yaml and <env>.yaml are both YAML.
            let source = if md.name.contains("serde_json") {
                "environment variables".into()
            } else if let Some(path) = md.source.as_ref().and_then(|s| s.file_path()) {
                format!("{} {}", md.name, path.display())
            } else {
                md.name.to_string()
            };
            reason.push_str(&format!(" (from {source})"));
        }
        Self { key, reason }
    }
}

/// Checks a typed section after it was read. `prefix` is the section's key path.
pub trait Validate {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError>;
}

/// Settings every service shares. (Unknown top-level keys are refused by the loader against
/// [`KNOWN_SECTIONS`]; every nested section denies unknown fields itself.)
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelConfig {
    /// The environment name (`development`, `production`, …); selects `config/<env>.yaml`.
    pub env: String,
    pub log: LogConfig,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub notifier: NotifierConfig,
    /// Outbound TLS: roots trusted besides the system's, and the certificate presented.
    #[serde(default)]
    pub client_tls: crate::tls::ClientTlsConfig,
    /// Traces: OTLP export and sampling (K6).
    #[serde(default)]
    pub tracing: crate::trace::TracingConfig,
    /// Panics and internal errors sent to a Sentry-compatible server (K7).
    #[serde(default)]
    pub error_reporting: crate::report::ErrorReportingConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines, for development.
    Pretty,
    /// One JSON object per line, for production.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter: `info`, `debug`, `info,plt_kernel=debug`, …
    pub level: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Largest accepted HTTP request body, in bytes.
    pub body_limit_bytes: usize,
    /// How long a readiness check may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub readiness_timeout: Duration,
    /// TLS on the service's port (off while `cert_path` is empty).
    #[serde(default)]
    pub tls: crate::tls::ServerTlsConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatabaseDriver {
    Sqlite,
    Postgres,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub driver: DatabaseDriver,
    /// PostgreSQL connection URL (driver `postgres`); a secret, since it may hold a password.
    pub url: Secret<String>,
    /// Where SQLite files live (driver `sqlite`): one `<service>.db` per service.
    pub data_dir: PathBuf,
    pub max_connections: u32,
    pub min_connections: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// PostgreSQL: how often a dedicated connection pings the server, so that an outage is
    /// noticed (and requests fail fast with 503) without waiting out `acquire_timeout`.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// A ping (or reconnection) slower than this counts as the database being down.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotifierKind {
    /// Development: mail is written as JSON files to `outbox_dir`, readable by people and tests.
    /// Refused when `env` is `production`.
    Outbox,
    /// Mail is sent to an SMTP server (`notifier.smtp`).
    Smtp,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifierConfig {
    pub kind: NotifierKind,
    pub outbox_dir: PathBuf,
    /// The sender of every message (`name <address>` or an address).
    pub from: String,
    pub smtp: SmtpConfig,
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain text (a relay on the same host or network only).
    None,
    /// Plain connection upgraded with STARTTLS, which the server must offer (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Empty: no authentication. Otherwise AUTH with `password` (needs TLS).
    pub username: String,
    /// Secret: prefer PLT_NOTIFIER__SMTP__PASSWORD_FILE.
    pub password: Secret<String>,
    /// PEM file with the CA certificates the server's certificate must chain to, instead of
    /// the public (Mozilla) roots. Empty: the public roots.
    pub ca_certs: PathBuf,
    /// The name this client gives in EHLO. Empty: the machine's host name.
    pub hello_name: String,
    /// The whole delivery of one message (connect, TLS, AUTH, transfer) must finish within
    /// this; otherwise sending fails.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl NotifierConfig {
    /// Rules that depend on the environment: production refuses the development outbox.
    /// Checked by the services that send mail.
    pub fn validate_for_env(&self, env: &str) -> Result<(), ConfigError> {
        if env == "production" && self.kind == NotifierKind::Outbox {
            return Err(ConfigError::new(
                "notifier.kind",
                "outbox is for development (mail is only written to files); production needs \
                 smtp (notifier.smtp)",
            ));
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.from.contains('@') {
            return Err(ConfigError::new(
                "notifier.from",
                "must be an e-mail address",
            ));
        }
        if self.kind != NotifierKind::Smtp {
            return Ok(());
        }
        let smtp = &self.smtp;
        if smtp.host.trim().is_empty() {
            return Err(ConfigError::new(
                "notifier.smtp.host",
                "must not be empty when notifier.kind is smtp",
            ));
        }
        if smtp.port == 0 {
            return Err(ConfigError::new(
                "notifier.smtp.port",
                "must be greater than 0",
            ));
        }
        if !smtp
            .hello_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(ConfigError::new(
                "notifier.smtp.hello_name",
                "must be a host name (letters, digits, '-' and '.')",
            ));
        }
        if smtp.timeout.is_zero() {
            return Err(ConfigError::new(
                "notifier.smtp.timeout",
                "must be greater than 0",
            ));
        }
        if !smtp.username.is_empty() && smtp.password.is_empty() {
            return Err(ConfigError::new(
                "notifier.smtp.password",
                "must be set when notifier.smtp.username is (PLT_NOTIFIER__SMTP__PASSWORD_FILE)",
            ));
        }
        if smtp.tls == SmtpTls::None {
            if !smtp.username.is_empty() {
                return Err(ConfigError::new(
                    "notifier.smtp.tls",
                    "must be starttls or tls when notifier.smtp.username is set: the password \
                     would cross the network in plain text",
                ));
            }
            if !smtp.ca_certs.as_os_str().is_empty() {
                return Err(ConfigError::new(
                    "notifier.smtp.ca_certs",
                    "is only used with notifier.smtp.tls starttls or tls",
                ));
            }
        }
        Ok(())
    }
}

impl Validate for KernelConfig {
    fn validate(&self, _prefix: &str) -> Result<(), ConfigError> {
        if self.env.trim().is_empty() {
            return Err(ConfigError::new("env", "must not be empty"));
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            return Err(ConfigError::new(
                "log.level",
                format!("not a valid filter: {e}"),
            ));
        }
        if self.server.body_limit_bytes == 0 {
            return Err(ConfigError::new(
                "server.body_limit_bytes",
                "must be greater than 0",
            ));
        }
        if self.server.shutdown_timeout.is_zero() {
            return Err(ConfigError::new(
                "server.shutdown_timeout",
                "must be greater than 0",
            ));
        }
        self.server.tls.check("server.tls")?;
        self.client_tls.check("client_tls")?;
        self.tracing.check("tracing")?;
        self.error_reporting.check("error_reporting")?;
        let db = &self.database;
        if db.max_connections == 0 {
            return Err(ConfigError::new(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        if db.min_connections > db.max_connections {
            return Err(ConfigError::new(
                "database.min_connections",
                "must not exceed database.max_connections",
            ));
        }
        if db.probe_interval.is_zero() {
            return Err(ConfigError::new(
                "database.probe_interval",
                "must be greater than 0",
            ));
        }
        if db.probe_timeout.is_zero() || db.probe_timeout > db.acquire_timeout {
            return Err(ConfigError::new(
                "database.probe_timeout",
                "must be greater than 0 and at most database.acquire_timeout",
            ));
        }
        match db.driver {
            DatabaseDriver::Postgres => {
                let url = db.url.expose();
                if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                    return Err(ConfigError::new(
                        "database.url",
                        "driver is postgres, so this must be a postgres:// URL",
                    ));
                }
            }
            DatabaseDriver::Sqlite => {
                if db.data_dir.as_os_str().is_empty() {
                    return Err(ConfigError::new("database.data_dir", "must not be empty"));
                }
            }
        }
        self.notifier.validate()?;
        Ok(())
    }
}

/// The loaded configuration of one service: the shared kernel part and its own section.
#[derive(Debug, Clone, Serialize)]
pub struct Loaded<S> {
    #[serde(flatten)]
    pub kernel: KernelConfig,
    #[serde(skip)]
    pub section_name: &'static str,
    #[serde(skip)]
    pub service: S,
    /// Where this was read from, to read shared sections (`registry`, `clients`) the same way.
    #[serde(skip)]
    pub source: ConfigSource,
    /// The service section as printed (same values, under its own key).
    #[serde(flatten)]
    printed: serde_json::Map<String, serde_json::Value>,
}

impl<S: Serialize> Loaded<S> {
    /// The effective configuration as YAML, secrets redacted.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# cannot print config: {e}\n"))
    }
}

/// Every top-level key the platform knows. Anything else in a file or variable is an error,
/// so that a typo never silently falls back to a default.
pub const KNOWN_SECTIONS: &[&str] = &[
    "env",
    "log",
    "server",
    "database",
    "notifier",
    "identity",
    "auth",
    "authz",
    "audit",
    "gateway",
    "registry",
    "clients",
    "service_identity",
    "outbox",
    "events",
    "client_tls",
    "tracing",
    "error_reporting",
    "cache",
    "scheduler",
    "blob",
];

/// The repository's `config/default.yaml`, built in: the defaults when the config directory
/// has no `default.yaml`.
pub const EMBEDDED_DEFAULT: &str = include_str!("../../../config/default.yaml");

/// Prefixes of variables that belong to the tools around the services, not to configuration:
/// `PLT_DEV_` (`plt dev`'s own options), `PLT_TEST_` and `PLT_BENCH_` (tests, benchmarks).
pub const RESERVED_VAR_PREFIXES: &[&str] = &["PLT_DEV_", "PLT_TEST_", "PLT_BENCH_"];

/// Whether variable `name` is one the loader ignores: a [`RESERVED_VAR_PREFIXES`] prefix
/// followed by a name (`PLT_DEV_ADMIN_PASSWORD`). A double underscore there is a key path
/// and stays configuration (`PLT_DEV__LISTEN` sets `dev.listen` of a section `dev`).
pub fn is_reserved_var(name: &str) -> bool {
    RESERVED_VAR_PREFIXES.iter().any(|p| {
        name.strip_prefix(p)
            .is_some_and(|rest| !rest.is_empty() && !rest.starts_with('_'))
    })
}

/// Where configuration is read from.
#[derive(Debug, Clone)]
pub struct ConfigSource {
    /// The config directory: `default.yaml` (else the built-in [`EMBEDDED_DEFAULT`]) and
    /// `<env>.yaml`. It may be absent when it is the implicit `config` (no
    /// `PLT_CONFIG_DIR`).
    pub dir: PathBuf,
    /// Environment variables as `(name, value)`; normally `std::env::vars()`.
    pub vars: Vec<(String, String)>,
    /// Sections of feature services, beyond [`KNOWN_SECTIONS`]: `(name, defaults)`, the
    /// defaults being YAML with the section at its top level, read beneath
    /// `config/default.yaml` (a feature service ships its defaults in its own crate).
    pub sections: Vec<(&'static str, &'static str)>,
}

impl ConfigSource {
    /// `PLT_CONFIG_DIR` (default `config`) and the process environment.
    pub fn from_env() -> Self {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        let dir = vars
            .iter()
            .find(|(k, _)| k == "PLT_CONFIG_DIR")
            .map(|(_, v)| PathBuf::from(v))
            .unwrap_or_else(|| PathBuf::from("config"));
        Self {
            dir,
            vars,
            sections: Vec::new(),
        }
    }

    /// This source, also knowing section `name` with these defaults (YAML with `name` at
    /// its top level).
    pub fn with_section(mut self, name: &'static str, defaults: &'static str) -> Self {
        if !self.sections.iter().any(|(n, _)| *n == name) {
            self.sections.push((name, defaults));
        }
        self
    }

    /// Loads one more top-level section (shared ones such as `registry` or `clients`).
    pub fn section<T>(&self, name: &str) -> Result<T, ConfigError>
    where
        T: DeserializeOwned + Validate,
    {
        let figment = self.figment()?;
        self.check_known_keys(&figment)?;
        let value: T = figment
            .focus(name)
            .extract_lossy()
            .map_err(|e| ConfigError::from_figment_in(e, name))?;
        value.validate(name)?;
        Ok(value)
    }

    /// Loads the kernel settings and the service's own section `section`.
    pub fn load<S>(&self, section: &'static str) -> Result<Loaded<S>, ConfigError>
    where
        S: DeserializeOwned + Serialize + Validate,
    {
        let figment = self.figment()?;
        self.check_known_keys(&figment)?;
        // Lossy: variables are strings, read as numbers or booleans where the key needs one.
        let kernel: KernelConfig = figment.extract_lossy().map_err(ConfigError::from_figment)?;
        kernel.validate("")?;
        let service: S = figment
            .focus(section)
            .extract_lossy()
            .map_err(|e| ConfigError::from_figment_in(e, section))?;
        service.validate(section)?;
        let mut printed = serde_json::Map::new();
        printed.insert(
            section.to_string(),
            serde_json::to_value(&service).map_err(|e| ConfigError::new(section, e.to_string()))?,
        );
        Ok(Loaded {
            kernel,
            section_name: section,
            service,
            source: self.clone(),
            printed,
        })
    }

    fn figment(&self) -> Result<Figment, ConfigError> {
        let default = self.dir.join("default.yaml");
        let implicit = self.var("PLT_CONFIG_DIR").is_none() && self.dir == Path::new("config");
        if !implicit && !self.dir.is_dir() {
            return Err(ConfigError::new(
                "PLT_CONFIG_DIR",
                format!(
                    "{} is not a directory (unset PLT_CONFIG_DIR to use the built-in defaults)",
                    self.dir.display()
                ),
            ));
        }
        let mut figment = Figment::new();
        for (_, defaults) in &self.sections {
            figment = figment.merge(Yaml::string(defaults));
        }
        figment = if default.is_file() {
            figment.merge(Yaml::file(&default))
        } else {
            figment.merge(Yaml::string(EMBEDDED_DEFAULT))
        };
        let env_name = self
            .var("PLT_ENV")
            .map(str::to_owned)
            .or_else(|| figment.extract_inner::<String>("env").ok())
            .unwrap_or_else(|| "development".into());
        if !env_name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::new(
                "env",
                "may hold only letters, digits, '-' and '_'",
            ));
        }
        let env_file = self.dir.join(format!("{env_name}.yaml"));
        if env_file.is_file() {
            figment = figment.merge(Yaml::file(&env_file));
        }
        let overrides = self.env_overrides()?;
        if !overrides.is_empty() {
            figment = figment.merge(Serialized::defaults(serde_json::Value::Object(overrides)));
        }
        Ok(figment)
    }

    fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `PLT_*` variables as a nested map; `*_FILE` variables replaced by their file's content,
    /// applied after the plain variables so a secret file wins.
    fn env_overrides(&self) -> Result<serde_json::Map<String, serde_json::Value>, ConfigError> {
        let mut root = serde_json::Map::new();
        let mut files = Vec::new();
        for (name, value) in &self.vars {
            let Some(key) = name.strip_prefix("PLT_") else {
                continue;
            };
            if key == "CONFIG_DIR" || key.is_empty() || is_reserved_var(name) {
                continue;
            }
            if let Some(key) = key.strip_suffix("_FILE") {
                files.push((key.to_ascii_lowercase(), value));
                continue;
            }
            let key = key.to_ascii_lowercase();
            let parts: Vec<&str> = key.split("__").collect();
            // Kept as a string: `PLT_ENV=2024` or a numeric password must stay text. The
            // lossy extraction turns it into a number or boolean where the key needs one.
            insert_path(&mut root, &parts, env_value(value));
        }
        for (key, path) in files {
            let content = read_secret_file(Path::new(path)).map_err(|reason| {
                ConfigError::new(
                    key.replace("__", "."),
                    format!("secret file {path}: {reason}"),
                )
            })?;
            let parts: Vec<&str> = key.split("__").collect();
            insert_path(&mut root, &parts, serde_json::Value::String(content));
        }
        Ok(root)
    }
}

/// A variable's value: a YAML flow sequence (`[a, b]`) becomes a list, anything else stays a
/// string (read as a number or boolean later, where the key needs one).
fn env_value(raw: &str) -> serde_json::Value {
    let t = raw.trim();
    if t.starts_with('[')
        && t.ends_with(']')
        && let Ok(list @ serde_json::Value::Array(_)) = serde_yaml::from_str::<serde_json::Value>(t)
    {
        return list;
    }
    serde_json::Value::String(raw.to_owned())
}

fn read_secret_file(path: &Path) -> Result<String, String> {
    let content = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    Ok(content.trim_end_matches(['\n', '\r']).to_string())
}

fn insert_path(
    map: &mut serde_json::Map<String, serde_json::Value>,
    parts: &[&str],
    value: serde_json::Value,
) {
    match parts {
        [] => {}
        [last] => {
            map.insert((*last).to_string(), value);
        }
        [first, rest @ ..] => {
            let entry = map
                .entry((*first).to_string())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if !entry.is_object() {
                *entry = serde_json::Value::Object(Default::default());
            }
            if let serde_json::Value::Object(inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

impl ConfigSource {
    fn check_known_keys(&self, figment: &Figment) -> Result<(), ConfigError> {
        check_known_keys(figment, &self.sections)
    }
}

fn check_known_keys(
    figment: &Figment,
    sections: &[(&'static str, &'static str)],
) -> Result<(), ConfigError> {
    let mut known: BTreeSet<&str> = KNOWN_SECTIONS.iter().copied().collect();
    known.extend(sections.iter().map(|(n, _)| *n));
    let data = figment.data().map_err(ConfigError::from_figment)?;
    for dict in data.values() {
        for key in dict.keys() {
            if !known.contains(key.as_str()) {
                return Err(ConfigError::new(
                    key.clone(),
                    format!(
                        "unknown top-level key; expected one of: {}",
                        known.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Convenience for sections: parse `value` as a socket address or report `key`.
pub fn check_nonzero(key: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        Err(ConfigError::new(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}
