//! The `gateway` section of the configuration (see config/default.yaml, where every key has
//! its default and a comment).

use crate::net::Cidr;
use plt_kernel::{
    Secret,
    config::{ConfigError, Validate},
};
use serde::{Deserialize, Serialize};
use std::{net::SocketAddr, time::Duration};

/// The largest accepted `authz.staleness_bound`: the platform promises that a grant or revoke
/// reaches every decision within a bounded time; the gateway's cache adds at most this much.
pub const MAX_AUTHZ_STALENESS: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub listen: SocketAddr,
    /// Threads serving connections, each with its own runtime and listening socket (as
    /// nginx's and HAProxy's workers); 0: one per CPU in `worker_cpus`, or when that is
    /// empty, one per CPU core this process may use.
    pub workers: usize,
    /// CPUs the worker threads are pinned to, round robin (nginx's `worker_cpu_affinity`);
    /// empty: not pinned.
    #[serde(default)]
    pub worker_cpus: Vec<usize>,
    /// Largest accepted request body (413 beyond).
    pub body_limit_bytes: usize,
    /// Peers (IPs or CIDRs) whose `X-Forwarded-For`, `X-Forwarded-Proto` and
    /// `X-Forwarded-Host` are believed.
    pub trusted_proxies: Vec<String>,
    pub discovery: DiscoveryConfig,
    /// Routes from configuration; they win over announced routes of the same prefix.
    pub routes: Vec<RouteConfig>,
    pub upstream: UpstreamConfig,
    /// How access tokens are verified at the edge (locally, against auth's JWKS).
    pub auth: plt_authn::TokenConfig,
    pub token_cache: TokenCacheConfig,
    pub authz: EdgeAuthzConfig,
    pub rate_limit: RateLimitConfig,
    pub cors: CorsConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// Services whose announced route prefixes (registry metadata `routes`) are served.
    pub services: Vec<String>,
    /// Announced prefixes are served under this prefix, which is removed before forwarding
    /// (`/api/v1/users` → identity's `/v1/users`).
    pub api_prefix: String,
    /// Announced prefixes that start with one of these are served as they are, without
    /// `api_prefix` (`/.well-known/jwks.json`).
    pub root_prefixes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, matched on whole segments; the longest matching prefix wins.
    pub prefix: String,
    /// The registry name of the target service (empty only for a `blocked` route).
    #[serde(default)]
    pub service: String,
    /// Methods this route applies to (upper case); empty: all. `GET` also covers `HEAD`.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Removed from the start of the path before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip: Option<String>,
    /// Replaces the matched prefix before forwarding (instead of `strip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
    /// No access token needed. A valid one still identifies the caller; an invalid one is
    /// ignored (the request goes on anonymously, `Authorization` forwarded untouched).
    #[serde(default)]
    pub public: bool,
    /// Permission (`service.resource.action`) the caller must hold, checked with authz.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission: Option<String>,
    /// Checked instead of `permission` when the first path segment after the prefix is the
    /// caller's own user id (`GET /api/v1/users/<me>` → `identity.users.read_self`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_permission: Option<String>,
    /// Time allowed for the upstream's response head (default `upstream.timeout`).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Limits of this route instead of `rate_limit.client` / `rate_limit.user`; such a route
    /// has buckets of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RouteRateLimit>,
    /// Not served at all (404), e.g. internal endpoints inside an announced prefix.
    #[serde(default)]
    pub blocked: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteRateLimit {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<Limit>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Limit>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Default time allowed for an upstream's response head (504 after it).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Time allowed to open a TCP connection to an instance.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Idle pooled connections are closed after this long.
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    /// Attempts per idempotent request (GET, HEAD, OPTIONS, PUT, DELETE), the first included.
    pub max_attempts: u32,
    /// Retries may add at most this fraction of extra load.
    pub retry_budget_ratio: f64,
    /// Consecutive failures that open an instance's breaker, and how long it stays open.
    pub breaker_failures: u32,
    #[serde(with = "humantime_serde")]
    pub breaker_open_for: Duration,
    /// Request bodies up to this size (with a known length) are kept so that the request can
    /// be retried on another instance; larger or chunked bodies are streamed and never
    /// retried.
    pub retry_buffer_bytes: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenCacheConfig {
    /// Verified tokens kept (by SHA-256 of the token), least recently used dropped first.
    pub max_entries: u64,
    /// A verified token is re-verified after this long even if it expires later.
    #[serde(with = "humantime_serde")]
    pub max_ttl: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeAuthzConfig {
    /// Decisions (user, permission) are reused for at most this long (at most 5s; 0: none).
    #[serde(with = "humantime_serde")]
    pub staleness_bound: Duration,
    /// Decisions kept.
    pub max_entries: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitBackend {
    /// Per gateway instance.
    Memory,
    /// Shared by every instance through Redis (local fallback when Redis fails).
    Redis,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub backend: RateLimitBackend,
    /// `redis://[:password@]host:port/db` (backend redis). A secret: it may hold a password.
    pub redis_url: Secret<String>,
    /// A Redis answer slower than this counts as a failure (local limiter used instead).
    #[serde(with = "humantime_serde")]
    pub redis_timeout: Duration,
    /// After a failure Redis is not asked until a `PING`, sent this often, is answered.
    #[serde(with = "humantime_serde")]
    pub redis_probe_interval: Duration,
    /// Prefix of every Redis key.
    pub key_prefix: String,
    /// Keys (clients, users) tracked in memory by the local limiter.
    pub max_keys: u64,
    /// Per client address.
    pub client: Limit,
    /// Per authenticated user.
    pub user: Limit,
}

/// `requests` per `period` on average, with bursts of up to `burst` (GCRA).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub requests: u32,
    #[serde(with = "humantime_serde")]
    pub period: Duration,
    pub burst: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Exact origins (`https://app.example.com`) or `*`; empty: CORS off.
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    /// Request headers a browser may send (lower case compared).
    pub allowed_headers: Vec<String>,
    /// Response headers scripts may read.
    pub exposed_headers: Vec<String>,
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight answer.
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
}

pub(crate) const IDEMPOTENT_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS", "PUT", "DELETE"];
const KNOWN_METHODS: &[&str] = &[
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE",
];

fn valid_path_prefix(s: &str) -> bool {
    s.starts_with('/')
        && !s.contains(['?', '#', ' '])
        && !s.split('/').any(|seg| seg == "." || seg == "..")
}

fn valid_permission(p: &str) -> bool {
    plt_contracts::authz::validate_permission_name("permission", p).is_ok()
}

fn valid_service(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Limit {
    fn check(&self, key: &str) -> Result<(), ConfigError> {
        if self.requests == 0 {
            return Err(ConfigError::new(
                format!("{key}.requests"),
                "must be at least 1",
            ));
        }
        if self.period < Duration::from_millis(1) || self.period > Duration::from_secs(86_400) {
            return Err(ConfigError::new(
                format!("{key}.period"),
                "must be between 1ms and 24h",
            ));
        }
        if self.burst == 0 {
            return Err(ConfigError::new(
                format!("{key}.burst"),
                "must be at least 1",
            ));
        }
        if self.period.as_micros() / u128::from(self.requests) == 0 {
            return Err(ConfigError::new(
                format!("{key}.requests"),
                "too many for the period (more than one per microsecond)",
            ));
        }
        Ok(())
    }
}

impl RouteConfig {
    fn check(&self, key: &str) -> Result<(), ConfigError> {
        let k = |f: &str| format!("{key}.{f}");
        if !valid_path_prefix(&self.prefix) {
            return Err(ConfigError::new(
                k("prefix"),
                "must be a path starting with / (no query, no . or .. segments)",
            ));
        }
        for (i, m) in self.methods.iter().enumerate() {
            if !KNOWN_METHODS.contains(&m.as_str()) {
                return Err(ConfigError::new(
                    format!("{key}.methods[{i}]"),
                    format!("must be one of {}", KNOWN_METHODS.join(", ")),
                ));
            }
        }
        if self.blocked {
            return Ok(());
        }
        if !valid_service(&self.service) {
            return Err(ConfigError::new(
                k("service"),
                "must name a service (A-Z a-z 0-9 - _ .), unless the route is blocked",
            ));
        }
        if self.strip.is_some() && self.rewrite.is_some() {
            return Err(ConfigError::new(
                k("rewrite"),
                "cannot be combined with strip",
            ));
        }
        if let Some(s) = &self.strip
            && (!valid_path_prefix(s) || !self.prefix.starts_with(s.as_str()))
        {
            return Err(ConfigError::new(
                k("strip"),
                "must be a path that starts the prefix",
            ));
        }
        if let Some(r) = &self.rewrite
            && !valid_path_prefix(r)
        {
            return Err(ConfigError::new(
                k("rewrite"),
                "must be a path starting with /",
            ));
        }
        for (f, p) in [
            ("permission", &self.permission),
            ("self_permission", &self.self_permission),
        ] {
            if let Some(p) = p {
                if self.public {
                    return Err(ConfigError::new(
                        k(f),
                        "a public route cannot require a permission",
                    ));
                }
                if !valid_permission(p) {
                    return Err(ConfigError::new(
                        k(f),
                        "must have the form service.resource.action",
                    ));
                }
            }
        }
        if self.self_permission.is_some() && self.permission.is_none() {
            return Err(ConfigError::new(
                k("self_permission"),
                "needs permission (what everyone else must hold)",
            ));
        }
        if let Some(t) = self.timeout
            && (t.is_zero() || t > Duration::from_secs(3600))
        {
            return Err(ConfigError::new(k("timeout"), "must be between 1ms and 1h"));
        }
        if let Some(rl) = &self.rate_limit {
            if let Some(l) = &rl.client {
                l.check(&k("rate_limit.client"))?;
            }
            if let Some(l) = &rl.user {
                l.check(&k("rate_limit.user"))?;
            }
        }
        Ok(())
    }
}

impl GatewayConfig {
    /// `workers`, with 0 resolved to the cores this process may use.
    pub fn worker_threads(&self) -> usize {
        match self.workers {
            0 if !self.worker_cpus.is_empty() => self.worker_cpus.len(),
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
    }
}

impl Validate for GatewayConfig {
    fn validate(&self, p: &str) -> Result<(), ConfigError> {
        if self.workers > 1024 {
            return Err(ConfigError::new(
                format!("{p}.workers"),
                "must be at most 1024 (0: one per CPU core)",
            ));
        }
        for (i, cpu) in self.worker_cpus.iter().enumerate() {
            if self.worker_cpus[..i].contains(cpu) {
                return Err(ConfigError::new(
                    format!("{p}.worker_cpus[{i}]"),
                    format!("CPU {cpu} is listed twice"),
                ));
            }
        }
        let key = |k: &str| format!("{p}.{k}");
        if self.body_limit_bytes == 0 {
            return Err(ConfigError::new(
                key("body_limit_bytes"),
                "must be greater than 0",
            ));
        }
        for (i, proxy) in self.trusted_proxies.iter().enumerate() {
            if Cidr::parse(proxy).is_none() {
                return Err(ConfigError::new(
                    format!("{p}.trusted_proxies[{i}]"),
                    "must be an IP address or CIDR block",
                ));
            }
        }
        let d = &self.discovery;
        for (i, s) in d.services.iter().enumerate() {
            if !valid_service(s) {
                return Err(ConfigError::new(
                    format!("{p}.discovery.services[{i}]"),
                    "must be a service name (A-Z a-z 0-9 - _ .)",
                ));
            }
        }
        if !valid_path_prefix(&d.api_prefix)
            || d.api_prefix.len() < 2
            || d.api_prefix.ends_with('/')
        {
            return Err(ConfigError::new(
                key("discovery.api_prefix"),
                "must be a path such as /api (no trailing /)",
            ));
        }
        for (i, r) in d.root_prefixes.iter().enumerate() {
            if !valid_path_prefix(r) {
                return Err(ConfigError::new(
                    format!("{p}.discovery.root_prefixes[{i}]"),
                    "must be a path starting with /",
                ));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            r.check(&format!("{p}.routes[{i}]"))?;
        }
        let u = &self.upstream;
        if u.timeout.is_zero() || u.timeout > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                key("upstream.timeout"),
                "must be between 1ms and 1h",
            ));
        }
        if u.connect_timeout.is_zero() {
            return Err(ConfigError::new(
                key("upstream.connect_timeout"),
                "must be greater than 0",
            ));
        }
        if u.max_attempts == 0 || u.max_attempts > 10 {
            return Err(ConfigError::new(
                key("upstream.max_attempts"),
                "must be between 1 and 10",
            ));
        }
        if !(0.0..=1.0).contains(&u.retry_budget_ratio) {
            return Err(ConfigError::new(
                key("upstream.retry_budget_ratio"),
                "must be between 0 and 1",
            ));
        }
        if u.breaker_failures == 0 {
            return Err(ConfigError::new(
                key("upstream.breaker_failures"),
                "must be at least 1",
            ));
        }
        self.auth.check(&key("auth"))?;
        if self.token_cache.max_entries == 0 {
            return Err(ConfigError::new(
                key("token_cache.max_entries"),
                "must be at least 1",
            ));
        }
        if self.token_cache.max_ttl.is_zero() {
            return Err(ConfigError::new(
                key("token_cache.max_ttl"),
                "must be greater than 0",
            ));
        }
        if self.authz.staleness_bound > MAX_AUTHZ_STALENESS {
            return Err(ConfigError::new(
                key("authz.staleness_bound"),
                "must be at most 5s",
            ));
        }
        if self.authz.max_entries == 0 {
            return Err(ConfigError::new(
                key("authz.max_entries"),
                "must be at least 1",
            ));
        }
        let rl = &self.rate_limit;
        if rl.backend == RateLimitBackend::Redis && rl.enabled {
            let url = rl.redis_url.expose();
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError::new(
                    key("rate_limit.redis_url"),
                    "backend is redis, so this must be a redis:// URL",
                ));
            }
        }
        if rl.redis_timeout.is_zero() {
            return Err(ConfigError::new(
                key("rate_limit.redis_timeout"),
                "must be greater than 0",
            ));
        }
        if rl.redis_probe_interval.is_zero() {
            return Err(ConfigError::new(
                key("rate_limit.redis_probe_interval"),
                "must be greater than 0",
            ));
        }
        if rl.max_keys == 0 {
            return Err(ConfigError::new(
                key("rate_limit.max_keys"),
                "must be at least 1",
            ));
        }
        rl.client.check(&key("rate_limit.client"))?;
        rl.user.check(&key("rate_limit.user"))?;
        let c = &self.cors;
        for (i, o) in c.allowed_origins.iter().enumerate() {
            let ok = o == "*"
                || ((o.starts_with("http://") || o.starts_with("https://"))
                    && !o.ends_with('/')
                    && o.parse::<http::HeaderValue>().is_ok());
            if !ok {
                return Err(ConfigError::new(
                    format!("{p}.cors.allowed_origins[{i}]"),
                    "must be * or an origin such as https://app.example.com (no path)",
                ));
            }
        }
        if c.allow_credentials && c.allowed_origins.iter().any(|o| o == "*") {
            return Err(ConfigError::new(
                key("cors.allow_credentials"),
                "cannot be combined with the origin *",
            ));
        }
        for (i, m) in c.allowed_methods.iter().enumerate() {
            if !KNOWN_METHODS.contains(&m.as_str()) {
                return Err(ConfigError::new(
                    format!("{p}.cors.allowed_methods[{i}]"),
                    format!("must be one of {}", KNOWN_METHODS.join(", ")),
                ));
            }
        }
        for (f, list) in [
            ("allowed_headers", &c.allowed_headers),
            ("exposed_headers", &c.exposed_headers),
        ] {
            for (i, h) in list.iter().enumerate() {
                if h.parse::<http::HeaderName>().is_err() {
                    return Err(ConfigError::new(
                        format!("{p}.cors.{f}[{i}]"),
                        "must be a header name",
                    ));
                }
            }
        }
        Ok(())
    }
}

impl plt_runtime::ServiceSettings for GatewayConfig {
    fn listen(&self) -> std::net::SocketAddr {
        self.listen
    }

    fn auth(&self) -> Option<&plt_authn::TokenConfig> {
        Some(&self.auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plt_kernel::config::ConfigSource;

    fn load(vars: &[(&str, &str)]) -> Result<GatewayConfig, ConfigError> {
        ConfigSource {
            dir: concat!(env!("CARGO_MANIFEST_DIR"), "/../../config").into(),
            vars: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            sections: Vec::new(),
        }
        .load::<GatewayConfig>(crate::SECTION)
        .map(|l| l.service)
    }

    #[test]
    fn defaults_load() {
        let c = load(&[]).unwrap();
        assert_eq!(c.listen.port(), 8080);
        assert!(
            c.routes
                .iter()
                .any(|r| r.blocked && r.prefix == "/api/v1/auth/validate")
        );
        assert_eq!(c.rate_limit.backend, RateLimitBackend::Memory);
        assert!(c.worker_cpus.is_empty());
        let pinned = load(&[("PLT_GATEWAY__WORKER_CPUS", "[3, 1]")]).unwrap();
        assert_eq!(pinned.worker_threads(), 2, "one worker per listed CPU");
        let prod = load(&[
            ("PLT_ENV", "production"),
            ("PLT_DATABASE__URL", "postgres://u@h/db"),
        ])
        .unwrap();
        assert_eq!(prod.rate_limit.backend, RateLimitBackend::Redis);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (var, value, key) in [
            (
                "PLT_GATEWAY__WORKER_CPUS",
                "[1, 0, 1]",
                "gateway.worker_cpus[2]",
            ),
            (
                "PLT_GATEWAY__TRUSTED_PROXIES",
                "[10.0.0.0/99]",
                "gateway.trusted_proxies[0]",
            ),
            (
                "PLT_GATEWAY__AUTHZ__STALENESS_BOUND",
                "6s",
                "gateway.authz.staleness_bound",
            ),
            (
                "PLT_GATEWAY__RATE_LIMIT__CLIENT__REQUESTS",
                "0",
                "gateway.rate_limit.client.requests",
            ),
            (
                "PLT_GATEWAY__RATE_LIMIT__BACKEND",
                "redis",
                "gateway.rate_limit.redis_url",
            ),
            (
                "PLT_GATEWAY__CORS__ALLOWED_ORIGINS",
                "[https://a.example/]",
                "gateway.cors.allowed_origins[0]",
            ),
            (
                "PLT_GATEWAY__ROUTES",
                "[{prefix: x, service: s}]",
                "gateway.routes[0].prefix",
            ),
            (
                "PLT_GATEWAY__ROUTES",
                "[{prefix: /x}]",
                "gateway.routes[0].service",
            ),
            (
                "PLT_GATEWAY__ROUTES",
                "[{prefix: /x, service: s, strip: /y}]",
                "gateway.routes[0].strip",
            ),
            (
                "PLT_GATEWAY__ROUTES",
                "[{prefix: /x, service: s, public: true, permission: a.b.c}]",
                "gateway.routes[0].permission",
            ),
            (
                "PLT_GATEWAY__ROUTES",
                "[{prefix: /x, service: s, permission: nope}]",
                "gateway.routes[0].permission",
            ),
            (
                "PLT_GATEWAY__ROUTES",
                "[{prefix: /x, service: s, methods: [FETCH]}]",
                "gateway.routes[0].methods[0]",
            ),
            (
                "PLT_GATEWAY__ROUTES",
                "[{prefix: /x, service: s, colour: red}]",
                "gateway.routes",
            ),
        ] {
            let mut vars = vec![(var, value)];
            if key.ends_with("redis_url") {
                vars.push(("PLT_GATEWAY__RATE_LIMIT__REDIS_URL", "http://nope"));
            }
            let err = load(&vars).expect_err(value);
            assert!(err.key.starts_with(key), "{var}={value}: {err}");
        }
    }
}
