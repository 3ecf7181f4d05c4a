//! K1 configuration: layering, key-naming errors and redacted printing, against a copy of the
//! repository's `config/default.yaml` in a temporary directory.

use plt_kernel::{
    ConfigError, Loaded,
    config::{ConfigSource, DatabaseDriver, LogFormat, Validate},
};
use serde::{Deserialize, Serialize};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};
use tempfile::TempDir;

/// A service section shaped like `identity` in default.yaml (every key, unknown ones refused).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSection {
    listen: SocketAddr,
    #[serde(with = "humantime_serde")]
    verification_token_ttl: Duration,
    #[serde(with = "humantime_serde")]
    reset_token_ttl: Duration,
    verification_link: String,
    reset_link: String,
    password: TestPassword,
    argon2: TestArgon2,
    max_page_size: u32,
    auth: TestAuth,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestAuth {
    jwks_url: String,
    issuer: String,
    audience: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestPassword {
    min_length: usize,
    max_length: usize,
    min_strength: u8,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestArgon2 {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

impl Validate for TestSection {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.max_page_size == 0 {
            return Err(ConfigError::new(
                format!("{prefix}.max_page_size"),
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

const SECTION: &str = "identity";

/// A temporary config directory holding a copy of the repository's default.yaml.
fn config_dir() -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let default = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/default.yaml");
    std::fs::copy(&default, dir.path().join("default.yaml")).expect("copy default.yaml");
    dir
}

fn write(dir: &Path, name: &str, content: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write file");
    path
}

fn source(dir: &Path, vars: &[(&str, &str)]) -> ConfigSource {
    ConfigSource {
        dir: dir.to_path_buf(),
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        sections: Vec::new(),
    }
}

fn load(dir: &Path, vars: &[(&str, &str)]) -> Result<Loaded<TestSection>, ConfigError> {
    source(dir, vars).load::<TestSection>(SECTION)
}

fn load_err(dir: &Path, vars: &[(&str, &str)]) -> ConfigError {
    match load(dir, vars) {
        Ok(cfg) => panic!("expected a configuration error, got:\n{}", cfg.to_yaml()),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------
// Layering
// ---------------------------------------------------------------------------------------

#[test]
fn default_yaml_alone_gives_the_documented_defaults() {
    let dir = config_dir();
    let cfg = load(dir.path(), &[]).expect("defaults load");
    let k = &cfg.kernel;
    assert_eq!(k.env, "development");
    assert_eq!(k.log.format, LogFormat::Pretty);
    assert_eq!(k.log.level, "info,sqlx=warn");
    assert_eq!(k.server.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(k.server.body_limit_bytes, 1_048_576);
    assert_eq!(k.server.readiness_timeout, Duration::from_secs(2));
    assert_eq!(k.database.driver, DatabaseDriver::Sqlite);
    assert!(k.database.url.is_empty());
    assert_eq!(k.database.max_connections, 10);
    assert_eq!(k.database.acquire_timeout, Duration::from_secs(5));
    assert_eq!(cfg.section_name, SECTION);
    assert_eq!(cfg.service.listen, "127.0.0.1:8082".parse().unwrap());
    assert_eq!(cfg.service.reset_token_ttl, Duration::from_secs(3600));
    assert_eq!(cfg.service.argon2.memory_kib, 19456);
    assert_eq!(cfg.service.max_page_size, 100);
}

#[test]
fn without_default_yaml_the_built_in_defaults_apply_and_env_files_still_override() {
    // A config directory holding only an environment file: the defaults come from the
    // binary (the repository's default.yaml, built in).
    let dir = tempfile::tempdir().unwrap();
    let cfg = load(dir.path(), &[]).expect("built-in defaults load");
    assert_eq!(cfg.kernel.env, "development");
    assert_eq!(cfg.kernel.server.body_limit_bytes, 1_048_576);
    assert_eq!(cfg.service.listen, "127.0.0.1:8082".parse().unwrap());
    assert_eq!(cfg.service.argon2.memory_kib, 19456);
    write(
        dir.path(),
        "staging.yaml",
        "server:\n  body_limit_bytes: 4096\n",
    );
    let cfg = load(
        dir.path(),
        &[("PLT_ENV", "staging"), ("PLT_IDENTITY__MAX_PAGE_SIZE", "9")],
    )
    .expect("loads");
    assert_eq!(cfg.kernel.server.body_limit_bytes, 4096);
    assert_eq!(cfg.service.max_page_size, 9);
    assert_eq!(
        plt_kernel::config::EMBEDDED_DEFAULT,
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/default.yaml")
        )
        .unwrap()
    );
}

#[test]
fn a_config_dir_that_does_not_exist_is_an_error_naming_plt_config_dir() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let missing_str = missing.display().to_string();
    let err = load_err(&missing, &[("PLT_CONFIG_DIR", &missing_str)]);
    assert_eq!(err.key, "PLT_CONFIG_DIR");
    assert!(err.reason.contains("not a directory"), "{err}");
    // Also when the directory is given in code rather than by the variable.
    let err = load_err(&missing, &[]);
    assert_eq!(err.key, "PLT_CONFIG_DIR");
}

#[test]
fn the_tools_own_variables_are_not_configuration() {
    let dir = config_dir();
    // plt dev's options, the tests' and benchmarks' backends: ignored, not unknown keys.
    let cfg = load(
        dir.path(),
        &[
            ("PLT_DEV_ADMIN_PASSWORD", "a secret"),
            ("PLT_DEV_ADMIN_EMAIL", "x@example.com"),
            (
                "PLT_TEST_POSTGRES_URL",
                "postgres://postgres@127.0.0.1/postgres",
            ),
            (
                "PLT_BENCH_POSTGRES_URL",
                "postgres://postgres@127.0.0.1/postgres",
            ),
            ("PLT_DEV_ADMIN_PASSWORD_FILE", "/nonexistent"),
        ],
    )
    .expect("loads");
    assert_eq!(cfg.kernel.env, "development");
    // A key path (double underscore) stays configuration: here an unknown section `dev`.
    let err = load_err(dir.path(), &[("PLT_DEV__LISTEN", "127.0.0.1:1")]);
    assert_eq!(err.key, "dev");
    // Lookalikes without the separator are configuration too.
    let err = load_err(dir.path(), &[("PLT_DEVELOPER", "1")]);
    assert_eq!(err.key, "developer");
    for (name, reserved) in [
        ("PLT_DEV_ADMIN_PASSWORD", true),
        ("PLT_TEST_REDIS_URL", true),
        ("PLT_BENCH_X", true),
        ("PLT_DEV_", false),
        ("PLT_DEV__LISTEN", false),
        ("PLT_DEVICES__LISTEN", false),
        ("PLT_LOG__LEVEL", false),
    ] {
        assert_eq!(
            plt_kernel::config::is_reserved_var(name),
            reserved,
            "{name}"
        );
    }
    // No section of the platform can be reached only through a reserved name.
    for section in plt_kernel::config::KNOWN_SECTIONS {
        let var = format!("PLT_{}_X", section.to_uppercase());
        assert!(!plt_kernel::config::is_reserved_var(&var), "{section}");
    }
}

#[test]
fn env_file_selected_by_plt_env_overrides_default() {
    let dir = config_dir();
    write(
        dir.path(),
        "staging.yaml",
        "log:\n  format: json\nserver:\n  body_limit_bytes: 2048\nidentity:\n  max_page_size: 7\n",
    );
    let cfg = load(dir.path(), &[("PLT_ENV", "staging")]).expect("staging loads");
    assert_eq!(cfg.kernel.env, "staging");
    assert_eq!(cfg.kernel.log.format, LogFormat::Json);
    // Keys the env file does not mention keep their defaults (deep merge, not replace).
    assert_eq!(cfg.kernel.log.level, "info,sqlx=warn");
    assert_eq!(cfg.kernel.server.body_limit_bytes, 2048);
    assert_eq!(cfg.kernel.server.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(cfg.service.max_page_size, 7);
    assert_eq!(cfg.service.password.min_length, 8);

    // Without PLT_ENV the file is not read (env defaults to development).
    let cfg = load(dir.path(), &[]).expect("development loads");
    assert_eq!(cfg.kernel.env, "development");
    assert_eq!(cfg.kernel.log.format, LogFormat::Pretty);
    assert_eq!(cfg.kernel.server.body_limit_bytes, 1_048_576);
}

#[test]
fn env_key_in_default_yaml_selects_the_env_file_when_plt_env_is_unset() {
    let dir = config_dir();
    write(dir.path(), "development.yaml", "log:\n  level: trace\n");
    let cfg = load(dir.path(), &[]).expect("loads");
    assert_eq!(cfg.kernel.log.level, "trace");
}

#[test]
fn a_missing_env_file_is_not_an_error() {
    let dir = config_dir();
    let cfg = load(dir.path(), &[("PLT_ENV", "qa")]).expect("loads without qa.yaml");
    assert_eq!(cfg.kernel.env, "qa");
    assert_eq!(cfg.kernel.log.level, "info,sqlx=warn");
}

#[test]
fn plt_env_with_path_characters_is_refused() {
    let dir = config_dir();
    let err = load_err(dir.path(), &[("PLT_ENV", "../etc/passwd")]);
    assert_eq!(err.key, "env");
}

#[test]
fn environment_variables_override_files_with_double_underscore_nesting() {
    let dir = config_dir();
    write(
        dir.path(),
        "staging.yaml",
        "log:\n  level: warn\nserver:\n  body_limit_bytes: 2048\n",
    );
    let cfg = load(
        dir.path(),
        &[
            ("PLT_ENV", "staging"),
            ("PLT_LOG__LEVEL", "debug"),
            ("PLT_SERVER__SHUTDOWN_TIMEOUT", "5s"),
            ("PLT_DATABASE__MAX_CONNECTIONS", "3"),
            ("PLT_IDENTITY__PASSWORD__MIN_LENGTH", "12"),
            ("PLT_IDENTITY__LISTEN", "0.0.0.0:9000"),
            // Not PLT_: ignored.
            ("LOG__LEVEL", "error"),
            ("PATH", "/usr/bin"),
        ],
    )
    .expect("loads");
    // The variable beats both default.yaml and staging.yaml.
    assert_eq!(cfg.kernel.log.level, "debug");
    // The env file still applies where no variable is set.
    assert_eq!(cfg.kernel.server.body_limit_bytes, 2048);
    assert_eq!(cfg.kernel.server.shutdown_timeout, Duration::from_secs(5));
    assert_eq!(cfg.kernel.database.max_connections, 3);
    assert_eq!(cfg.service.password.min_length, 12);
    // Siblings of an overridden nested key are kept.
    assert_eq!(cfg.service.password.max_length, 256);
    assert_eq!(cfg.service.listen, "0.0.0.0:9000".parse().unwrap());
}

#[test]
fn a_secret_file_sets_its_key_trimmed_and_wins_over_the_plain_variable() {
    let dir = config_dir();
    let secrets = tempfile::tempdir().unwrap();
    let url = "postgres://plt:s3cr3t-from-file@db:5432/plt";
    let file = write(secrets.path(), "database_url", &format!("{url}\n"));
    let file = file.to_str().unwrap();
    // The _FILE variable comes first in the list: order of variables must not matter.
    for vars in [
        [
            ("PLT_DATABASE__URL_FILE", file),
            ("PLT_DATABASE__URL", "postgres://plain:plain@db/plt"),
        ],
        [
            ("PLT_DATABASE__URL", "postgres://plain:plain@db/plt"),
            ("PLT_DATABASE__URL_FILE", file),
        ],
    ] {
        let mut vars = vars.to_vec();
        vars.push(("PLT_DATABASE__DRIVER", "postgres"));
        let cfg = load(dir.path(), &vars).expect("loads");
        assert_eq!(cfg.kernel.database.driver, DatabaseDriver::Postgres);
        assert_eq!(cfg.kernel.database.url.expose(), url);
    }
}

#[test]
fn a_secret_file_with_crlf_is_trimmed_and_keeps_inner_whitespace() {
    let dir = config_dir();
    let secrets = tempfile::tempdir().unwrap();
    let file = write(secrets.path(), "from", "plt team <team@example.com>\r\n");
    let cfg = load(
        dir.path(),
        &[("PLT_NOTIFIER__FROM_FILE", file.to_str().unwrap())],
    )
    .expect("loads");
    assert_eq!(cfg.kernel.notifier.from, "plt team <team@example.com>");
}

#[test]
fn a_secret_file_content_that_looks_like_a_number_stays_a_string() {
    let dir = config_dir();
    let secrets = tempfile::tempdir().unwrap();
    let file = write(secrets.path(), "data_dir", "12345\n");
    let cfg = load(
        dir.path(),
        &[("PLT_DATABASE__DATA_DIR_FILE", file.to_str().unwrap())],
    )
    .expect("loads");
    assert_eq!(cfg.kernel.database.data_dir, PathBuf::from("12345"));
}

#[test]
fn variables_that_look_like_numbers_or_booleans_stay_strings_for_string_keys() {
    let dir = config_dir();
    let cfg = load(
        dir.path(),
        &[
            ("PLT_ENV", "2024"),
            ("PLT_LOG__LEVEL", "12345"),
            ("PLT_DATABASE__DATA_DIR", "1.5"),
            ("PLT_NOTIFIER__OUTBOX_DIR", "true"),
            // ...while numeric keys still read numbers from the same kind of text.
            ("PLT_DATABASE__MIN_CONNECTIONS", "2"),
            ("PLT_IDENTITY__PASSWORD__MIN_STRENGTH", "3"),
        ],
    )
    .expect("numeric-looking text is accepted for string keys");
    assert_eq!(cfg.kernel.env, "2024");
    assert_eq!(cfg.kernel.log.level, "12345");
    assert_eq!(cfg.kernel.database.data_dir, PathBuf::from("1.5"));
    assert_eq!(cfg.kernel.notifier.outbox_dir, PathBuf::from("true"));
    assert_eq!(cfg.kernel.database.min_connections, 2);
    assert_eq!(cfg.service.password.min_strength, 3);
}

// ---------------------------------------------------------------------------------------
// Errors name the key
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_top_level_key_in_an_env_file_is_named() {
    let dir = config_dir();
    write(dir.path(), "staging.yaml", "loggin:\n  level: debug\n");
    let err = load_err(dir.path(), &[("PLT_ENV", "staging")]);
    assert_eq!(err.key, "loggin", "{err}");
    assert!(err.reason.contains("unknown"), "{err}");
}

#[test]
fn unknown_top_level_key_in_default_yaml_is_named() {
    let dir = config_dir();
    let mut text = std::fs::read_to_string(dir.path().join("default.yaml")).unwrap();
    text.push_str("\nmystery:\n  x: 1\n");
    write(dir.path(), "default.yaml", &text);
    let err = load_err(dir.path(), &[]);
    assert_eq!(err.key, "mystery", "{err}");
}

#[test]
fn unknown_top_level_key_from_a_variable_is_named() {
    let dir = config_dir();
    let err = load_err(dir.path(), &[("PLT_SERVR__BODY_LIMIT_BYTES", "10")]);
    assert_eq!(err.key, "servr", "{err}");
}

#[test]
fn unknown_nested_kernel_field_is_named_with_its_full_path() {
    let dir = config_dir();
    write(dir.path(), "staging.yaml", "log:\n  colour: true\n");
    let err = load_err(dir.path(), &[("PLT_ENV", "staging")]);
    assert_eq!(err.key, "log.colour", "{err}");
    assert!(err.reason.contains("colour"), "{err}");
}

#[test]
fn unknown_nested_field_from_a_variable_is_named_with_its_full_path() {
    let dir = config_dir();
    let err = load_err(dir.path(), &[("PLT_DATABASE__PASWORD", "x")]);
    assert_eq!(err.key, "database.pasword", "{err}");
}

#[test]
fn unknown_field_in_the_service_section_is_named_with_its_full_path() {
    let dir = config_dir();
    write(
        dir.path(),
        "staging.yaml",
        "identity:\n  password:\n    min_lenght: 10\n",
    );
    let err = load_err(dir.path(), &[("PLT_ENV", "staging")]);
    assert_eq!(err.key, "identity.password.min_lenght", "{err}");
}

#[test]
fn wrong_type_from_a_variable_names_the_key() {
    let dir = config_dir();
    let err = load_err(dir.path(), &[("PLT_SERVER__BODY_LIMIT_BYTES", "lots")]);
    assert_eq!(err.key, "server.body_limit_bytes", "{err}");
    assert!(err.reason.contains("environment"), "{err}");
}

#[test]
fn wrong_type_in_a_file_names_the_key() {
    let dir = config_dir();
    write(
        dir.path(),
        "staging.yaml",
        "server:\n  readiness_timeout: soon\n",
    );
    let err = load_err(dir.path(), &[("PLT_ENV", "staging")]);
    assert_eq!(err.key, "server.readiness_timeout", "{err}");
    assert!(err.reason.contains("staging.yaml"), "{err}");
}

#[test]
fn wrong_enum_value_names_the_key() {
    let dir = config_dir();
    let err = load_err(dir.path(), &[("PLT_DATABASE__DRIVER", "mysql")]);
    assert_eq!(err.key, "database.driver", "{err}");
}

#[test]
fn wrong_type_in_the_service_section_names_the_full_key() {
    let dir = config_dir();
    let err = load_err(dir.path(), &[("PLT_IDENTITY__ARGON2__ITERATIONS", "many")]);
    assert_eq!(err.key, "identity.argon2.iterations", "{err}");
}

#[test]
fn postgres_driver_with_an_empty_url_fails_validation_on_database_url() {
    let dir = config_dir();
    let err = load_err(dir.path(), &[("PLT_DATABASE__DRIVER", "postgres")]);
    assert_eq!(err.key, "database.url", "{err}");
}

#[test]
fn a_bad_database_url_is_refused_without_echoing_it() {
    let dir = config_dir();
    let err = load_err(
        dir.path(),
        &[
            ("PLT_DATABASE__DRIVER", "postgres"),
            ("PLT_DATABASE__URL", "mysql://root:hunter2@db/plt"),
        ],
    );
    assert_eq!(err.key, "database.url");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn kernel_validation_failures_name_their_keys() {
    let dir = config_dir();
    for (vars, key) in [
        (
            vec![("PLT_SERVER__BODY_LIMIT_BYTES", "0")],
            "server.body_limit_bytes",
        ),
        (
            vec![("PLT_SERVER__SHUTDOWN_TIMEOUT", "0s")],
            "server.shutdown_timeout",
        ),
        (
            vec![("PLT_DATABASE__MAX_CONNECTIONS", "0")],
            "database.max_connections",
        ),
        (
            vec![
                ("PLT_DATABASE__MAX_CONNECTIONS", "2"),
                ("PLT_DATABASE__MIN_CONNECTIONS", "3"),
            ],
            "database.min_connections",
        ),
        (vec![("PLT_NOTIFIER__FROM", "nobody")], "notifier.from"),
        (vec![("PLT_LOG__LEVEL", "info,=[")], "log.level"),
    ] {
        let err = load_err(dir.path(), &vars);
        assert_eq!(err.key, key, "{vars:?}: {err}");
    }
}

#[test]
fn service_section_validation_gets_its_prefix() {
    let dir = config_dir();
    let err = load_err(dir.path(), &[("PLT_IDENTITY__MAX_PAGE_SIZE", "0")]);
    assert_eq!(err.key, "identity.max_page_size", "{err}");
}

#[test]
fn a_missing_secret_file_names_the_key() {
    let dir = config_dir();
    let missing = dir.path().join("no-such-secret");
    let err = load_err(
        dir.path(),
        &[("PLT_DATABASE__URL_FILE", missing.to_str().unwrap())],
    );
    assert_eq!(err.key, "database.url", "{err}");
    assert!(err.reason.contains("no-such-secret"), "{err}");
}

#[test]
fn the_error_message_names_key_and_reason() {
    let dir = config_dir();
    let err = load_err(dir.path(), &[("PLT_SERVER__BODY_LIMIT_BYTES", "lots")]);
    let text = err.to_string();
    assert!(
        text.starts_with("invalid configuration: server.body_limit_bytes: "),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------------------

#[test]
fn to_yaml_prints_the_effective_config_with_the_database_url_redacted() {
    let dir = config_dir();
    let secrets = tempfile::tempdir().unwrap();
    let password = "pa55-w0rd-never-printed";
    let file = write(
        secrets.path(),
        "database_url",
        &format!("postgres://plt:{password}@db:5432/plt\n"),
    );
    let cfg = load(
        dir.path(),
        &[
            ("PLT_DATABASE__DRIVER", "postgres"),
            ("PLT_DATABASE__URL_FILE", file.to_str().unwrap()),
            ("PLT_LOG__LEVEL", "debug"),
            ("PLT_IDENTITY__MAX_PAGE_SIZE", "42"),
        ],
    )
    .expect("loads");
    let yaml = cfg.to_yaml();
    assert!(!yaml.contains(password), "secret printed:\n{yaml}");
    assert!(!yaml.contains("postgres://"), "url printed:\n{yaml}");
    assert!(!format!("{cfg:?}").contains(password), "secret in Debug");

    let printed: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("printed yaml parses");
    assert_eq!(printed["database"]["url"].as_str(), Some("[redacted]"));
    assert_eq!(printed["database"]["driver"].as_str(), Some("postgres"));
    // Effective values, not the defaults.
    assert_eq!(printed["log"]["level"].as_str(), Some("debug"));
    assert_eq!(printed["env"].as_str(), Some("development"));
    assert_eq!(printed["server"]["shutdown_timeout"].as_str(), Some("30s"));
    // The service section is printed under its own name.
    assert_eq!(printed["identity"]["max_page_size"].as_u64(), Some(42));
    assert_eq!(printed["identity"]["reset_token_ttl"].as_str(), Some("1h"));
    // Nothing that is not configuration.
    let top: Vec<&str> = printed
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap())
        .collect();
    for key in &top {
        assert!(
            plt_kernel::config::KNOWN_SECTIONS.contains(key),
            "printed key {key} is not a config key:\n{yaml}"
        );
    }
}

#[test]
fn printed_config_loads_back_as_the_same_config() {
    let dir = config_dir();
    let cfg = load(
        dir.path(),
        &[
            ("PLT_LOG__LEVEL", "debug"),
            ("PLT_IDENTITY__MAX_PAGE_SIZE", "42"),
        ],
    )
    .expect("loads");
    let yaml = cfg.to_yaml();
    let again = tempfile::tempdir().unwrap();
    write(again.path(), "default.yaml", &yaml);
    let reloaded = load(again.path(), &[]).expect("printed config is a valid config");
    assert_eq!(reloaded.to_yaml(), yaml);
    assert_eq!(reloaded.kernel.log.level, "debug");
    assert_eq!(reloaded.service.max_page_size, 42);
}

// ---------------------------------------------------------------------------------------
// The notifier
// ---------------------------------------------------------------------------------------

#[test]
fn smtp_settings_are_checked_naming_their_keys() {
    let dir = config_dir();
    let smtp = [
        ("PLT_NOTIFIER__KIND", "smtp"),
        ("PLT_NOTIFIER__SMTP__HOST", "mail.example.com"),
    ];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut v = smtp.to_vec();
        v.extend_from_slice(extra);
        v
    };
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![("PLT_NOTIFIER__KIND", "smtp")], "notifier.smtp.host"),
        (vec![("PLT_NOTIFIER__KIND", "mailgun")], "notifier.kind"),
        (
            with(&[("PLT_NOTIFIER__SMTP__PORT", "0")]),
            "notifier.smtp.port",
        ),
        (
            with(&[("PLT_NOTIFIER__SMTP__TLS", "ssl")]),
            "notifier.smtp.tls",
        ),
        (
            with(&[("PLT_NOTIFIER__SMTP__TIMEOUT", "0s")]),
            "notifier.smtp.timeout",
        ),
        (
            with(&[("PLT_NOTIFIER__SMTP__USERNAME", "mailer")]),
            "notifier.smtp.password",
        ),
        (
            with(&[
                ("PLT_NOTIFIER__SMTP__TLS", "none"),
                ("PLT_NOTIFIER__SMTP__USERNAME", "mailer"),
                ("PLT_NOTIFIER__SMTP__PASSWORD", "pw"),
            ]),
            "notifier.smtp.tls",
        ),
        (
            with(&[
                ("PLT_NOTIFIER__SMTP__TLS", "none"),
                ("PLT_NOTIFIER__SMTP__CA_CERTS", "/etc/ca.pem"),
            ]),
            "notifier.smtp.ca_certs",
        ),
        (
            with(&[("PLT_NOTIFIER__SMTP__HELLO_NAME", "a b\r\nRCPT TO:<x@y>")]),
            "notifier.smtp.hello_name",
        ),
        (
            with(&[("PLT_NOTIFIER__SMTP__BCC", "x")]),
            "notifier.smtp.bcc",
        ),
    ];
    for (vars, key) in cases {
        let err = load_err(dir.path(), &vars);
        assert_eq!(err.key, key, "{vars:?}: {err}");
    }
    // The outbox ignores the smtp block.
    load(dir.path(), &[("PLT_NOTIFIER__SMTP__PORT", "0")]).expect("outbox: smtp unused");
}

#[test]
fn the_smtp_password_comes_from_a_file_and_is_never_printed() {
    let dir = config_dir();
    let secrets = tempfile::tempdir().unwrap();
    let file = write(secrets.path(), "smtp", "smtp-pa55word-never-printed\n");
    let cfg = load(
        dir.path(),
        &[
            ("PLT_NOTIFIER__KIND", "smtp"),
            ("PLT_NOTIFIER__SMTP__HOST", "mail.example.com"),
            ("PLT_NOTIFIER__SMTP__USERNAME", "mailer"),
            ("PLT_NOTIFIER__SMTP__PASSWORD_FILE", file.to_str().unwrap()),
        ],
    )
    .expect("loads");
    let smtp = &cfg.kernel.notifier.smtp;
    assert_eq!(smtp.password.expose(), "smtp-pa55word-never-printed");
    assert_eq!(
        smtp.tls,
        plt_kernel::config::SmtpTls::Starttls,
        "the default"
    );
    assert_eq!(smtp.port, 587);
    let yaml = cfg.to_yaml();
    assert!(!yaml.contains("pa55word"), "{yaml}");
    assert!(!format!("{cfg:?}").contains("pa55word"));
    let notifier = plt_kernel::notify::from_config(&cfg.kernel).expect("builds");
    drop(notifier);
}

#[test]
fn production_refuses_the_development_outbox() {
    let dir = config_dir();
    let cfg = load(dir.path(), &[("PLT_ENV", "production")]).expect("loads");
    let err = plt_kernel::notify::from_config(&cfg.kernel)
        .err()
        .expect("outbox refused in production");
    assert_eq!(err.key, "notifier.kind", "{err}");
    assert!(err.reason.contains("smtp"), "{err}");
    // Development may use it; production may use smtp.
    let dev = load(dir.path(), &[]).expect("loads");
    assert!(plt_kernel::notify::from_config(&dev.kernel).is_ok());
    let prod = load(
        dir.path(),
        &[
            ("PLT_ENV", "production"),
            ("PLT_NOTIFIER__KIND", "smtp"),
            ("PLT_NOTIFIER__SMTP__HOST", "mail.example.com"),
        ],
    )
    .expect("loads");
    assert!(plt_kernel::notify::from_config(&prod.kernel).is_ok());
}

#[test]
fn an_unreadable_ca_certs_or_bad_sender_names_its_key() {
    let dir = config_dir();
    let smtp = [
        ("PLT_NOTIFIER__KIND", "smtp"),
        ("PLT_NOTIFIER__SMTP__HOST", "mail.example.com"),
    ];
    let mut vars = smtp.to_vec();
    vars.push(("PLT_NOTIFIER__SMTP__CA_CERTS", "/no/such/ca.pem"));
    let cfg = load(dir.path(), &vars).expect("loads");
    let err = plt_kernel::notify::from_config(&cfg.kernel).err().unwrap();
    assert_eq!(err.key, "notifier.smtp.ca_certs", "{err}");

    let garbage = write(
        dir.path(),
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    let mut vars = smtp.to_vec();
    vars.push(("PLT_NOTIFIER__SMTP__CA_CERTS", garbage.to_str().unwrap()));
    let cfg = load(dir.path(), &vars).expect("loads");
    let err = plt_kernel::notify::from_config(&cfg.kernel).err().unwrap();
    assert_eq!(err.key, "notifier.smtp.ca_certs", "{err}");

    let empty = write(dir.path(), "empty.pem", "# no certificates here\n");
    let mut vars = smtp.to_vec();
    vars.push(("PLT_NOTIFIER__SMTP__CA_CERTS", empty.to_str().unwrap()));
    let cfg = load(dir.path(), &vars).expect("loads");
    let err = plt_kernel::notify::from_config(&cfg.kernel).err().unwrap();
    assert_eq!(err.key, "notifier.smtp.ca_certs", "{err}");
    assert!(err.reason.contains("no PEM certificate"), "{err}");

    let mut vars = smtp.to_vec();
    vars.push(("PLT_NOTIFIER__FROM", "plt <no reply@@example.com>"));
    let cfg = load(dir.path(), &vars).expect("loads");
    let err = plt_kernel::notify::from_config(&cfg.kernel).err().unwrap();
    assert_eq!(err.key, "notifier.from", "{err}");
}
