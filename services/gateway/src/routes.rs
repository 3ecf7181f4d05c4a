//! The route table: routes from configuration and the route prefixes services announce in
//! the registry (metadata `routes`, comma-separated), matched by longest prefix on whole
//! path segments. A configured route wins over an announced one with the same prefix, and a
//! route limited to some methods is skipped for the others (a shorter prefix may then
//! match).

use crate::config::{DiscoveryConfig, Limit, RouteConfig};
use http::Method;
use plt_kernel::metrics::HandleCache;
use plt_registry::Instance;
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

/// How the upstream path is made from the request path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Forwarded as is.
    AsIs,
    /// This leading part removed.
    Strip(String),
    /// The matched prefix replaced by this.
    Rewrite(String),
}

/// Where a route came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Config,
    Announced,
}

#[derive(Debug, Clone)]
pub struct Route {
    /// The matched prefix, without a trailing `/` (except the root `/`).
    pub prefix: String,
    pub service: String,
    /// Empty: every method.
    pub methods: Vec<Method>,
    pub target: Target,
    pub public: bool,
    pub permission: Option<String>,
    pub self_permission: Option<String>,
    pub timeout: Duration,
    /// Limits of this route's own buckets, when it overrides the defaults.
    pub client_limit: Option<Limit>,
    pub user_limit: Option<Limit>,
    pub blocked: bool,
    pub origin: Origin,
    /// The handles of this route's request metrics.
    pub metrics: Arc<RouteMetrics>,
}

/// `gateway_requests_total` by method and status, `gateway_request_duration_seconds` by
/// method, for one route.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    pub requests: HandleCache<(Method, u16), metrics::Counter>,
    pub durations: HandleCache<Method, metrics::Histogram>,
}

fn normalise_prefix(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() { "/".into() } else { t.into() }
}

impl Route {
    pub fn from_config(c: &RouteConfig, default_timeout: Duration) -> Self {
        let target = match (&c.strip, &c.rewrite) {
            (Some(s), _) => Target::Strip(normalise_prefix(s)),
            (None, Some(r)) => Target::Rewrite(r.clone()),
            (None, None) => Target::AsIs,
        };
        Self {
            prefix: normalise_prefix(&c.prefix),
            service: c.service.clone(),
            methods: c
                .methods
                .iter()
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect(),
            target,
            public: c.public,
            permission: c.permission.clone(),
            self_permission: c.self_permission.clone(),
            timeout: c.timeout.unwrap_or(default_timeout),
            client_limit: c.rate_limit.as_ref().and_then(|r| r.client),
            user_limit: c.rate_limit.as_ref().and_then(|r| r.user),
            blocked: c.blocked,
            origin: Origin::Config,
            metrics: Arc::default(),
        }
    }

    /// The rest of `path` after this route's prefix, if the prefix matches on whole segments
    /// (empty or starting with `/`).
    pub fn rest<'p>(&self, path: &'p str) -> Option<&'p str> {
        if self.prefix == "/" {
            return Some(path);
        }
        let rest = path.strip_prefix(self.prefix.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then_some(rest)
    }

    fn applies_to(&self, method: &Method) -> bool {
        self.methods.is_empty()
            || self.methods.contains(method)
            || (method == Method::HEAD && self.methods.contains(&Method::GET))
    }

    /// The path to request upstream for `path` (which this route matched).
    pub fn upstream_path(&self, path: &str) -> String {
        let out = match &self.target {
            Target::AsIs => path.to_owned(),
            Target::Strip(s) => {
                if s == "/" {
                    path.to_owned()
                } else {
                    path.strip_prefix(s.as_str()).unwrap_or(path).to_owned()
                }
            }
            Target::Rewrite(r) => {
                let rest = self.rest(path).unwrap_or("");
                format!("{}{rest}", r.trim_end_matches('/'))
            }
        };
        if out.is_empty() { "/".into() } else { out }
    }

    /// The permission the caller `user_id` needs for `path`: `self_permission` when the first
    /// segment after the prefix is the caller's own id, else `permission`.
    pub fn required_permission(&self, path: &str, user_id: &str) -> Option<&str> {
        if let Some(own) = &self.self_permission {
            let first = self
                .rest(path)
                .unwrap_or("")
                .trim_start_matches('/')
                .split('/')
                .next()
                .unwrap_or("");
            if !first.is_empty() && first == user_id {
                return Some(own);
            }
        }
        self.permission.as_deref()
    }

    /// The label of this route in metrics.
    pub fn label(&self) -> &str {
        &self.prefix
    }
}

/// One immutable set of routes, most specific first.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    pub fn new(mut routes: Vec<Route>) -> Self {
        // Longest prefix first; at equal length configured before announced, and routes
        // limited to some methods before catch-alls; otherwise the given order.
        routes.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then_with(|| (a.origin == Origin::Announced).cmp(&(b.origin == Origin::Announced)))
                .then_with(|| a.methods.is_empty().cmp(&b.methods.is_empty()))
        });
        Self {
            routes: routes.into_iter().map(Arc::new).collect(),
        }
    }

    /// The route for this request, if any.
    pub fn find(&self, method: &Method, path: &str) -> Option<Arc<Route>> {
        self.routes
            .iter()
            .find(|r| r.rest(path).is_some() && r.applies_to(method))
            .cloned()
    }

    /// The methods served at `path` when no route applies to the request's method but
    /// method-limited routes match the path (for a 405 with `Allow`); empty otherwise.
    pub fn allowed_methods(&self, path: &str) -> Vec<Method> {
        let mut out: Vec<Method> = Vec::new();
        for r in self
            .routes
            .iter()
            .filter(|r| r.rest(path).is_some() && !r.blocked)
        {
            if r.methods.is_empty() {
                // A catch-all would have applied; nothing to report.
                return Vec::new();
            }
            for m in &r.methods {
                if !out.contains(m) {
                    out.push(m.clone());
                }
                if *m == Method::GET && !out.contains(&Method::HEAD) {
                    out.push(Method::HEAD);
                }
            }
        }
        out
    }

    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }
}

/// The live route table: configured routes plus what the watched services announce now.
pub struct Routes {
    config: Vec<RouteConfig>,
    discovery: DiscoveryConfig,
    default_timeout: Duration,
    announced: Mutex<BTreeMap<String, BTreeSet<String>>>,
    table: RwLock<Arc<RouteTable>>,
    /// Identifies this set of routes in the threads' own copies.
    id: u64,
    /// Bumped whenever the table changes.
    version: AtomicU64,
}

thread_local! {
    /// Per thread: (routes id, version, this thread's own copy of that table). A copy per
    /// thread, so that taking the table and its routes for a request touches no reference
    /// count another thread touches too.
    static COPIES: std::cell::RefCell<Vec<(u64, u64, Arc<RouteTable>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

static NEXT_ROUTES_ID: AtomicU64 = AtomicU64::new(1);

/// Whether an announced prefix is acceptable: a path, no dot segments, no query.
fn valid_announced(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= 512
        && !p.contains(['?', '#', ' ', '%'])
        && !p.split('/').any(|s| s == "." || s == "..")
}

impl Routes {
    pub fn new(
        config: Vec<RouteConfig>,
        discovery: DiscoveryConfig,
        default_timeout: Duration,
    ) -> Self {
        let routes = Self {
            config,
            discovery,
            default_timeout,
            announced: Mutex::new(BTreeMap::new()),
            table: RwLock::new(Arc::new(RouteTable::default())),
            id: NEXT_ROUTES_ID.fetch_add(1, Ordering::Relaxed),
            version: AtomicU64::new(0),
        };
        routes.rebuild();
        routes
    }

    /// The table now in force (this thread's copy of it).
    pub fn current(&self) -> Arc<RouteTable> {
        let version = self.version.load(Ordering::Acquire);
        COPIES.with_borrow_mut(|copies| {
            if let Some((_, v, table)) = copies.iter_mut().find(|(id, _, _)| *id == self.id) {
                if *v != version {
                    *table = self.own_copy();
                    *v = version;
                }
                return table.clone();
            }
            let table = self.own_copy();
            // Bounded: a process holds few route sets (tests build many gateways).
            if copies.len() >= 16 {
                copies.remove(0);
            }
            copies.push((self.id, version, table.clone()));
            table
        })
    }

    /// A copy of the shared table whose routes this thread alone references.
    fn own_copy(&self) -> Arc<RouteTable> {
        let shared = self.table.read().unwrap_or_else(|p| p.into_inner()).clone();
        Arc::new(RouteTable {
            routes: shared
                .routes
                .iter()
                .map(|r| Arc::new(Route::clone(r)))
                .collect(),
        })
    }

    /// Records what the healthy instances of `service` announce now and rebuilds the table.
    pub fn set_instances(&self, service: &str, instances: &[Instance]) {
        let mut prefixes = BTreeSet::new();
        for i in instances {
            let Some(list) = i.metadata.get("routes") else {
                continue;
            };
            for p in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                if valid_announced(p) {
                    prefixes.insert(p.to_owned());
                } else {
                    tracing::warn!(service, instance = %i.id, prefix = p, "ignoring an invalid announced route");
                }
            }
            // Methods the service declares public (`GET /v1/blog/posts`): no token is needed
            // at the gateway for them (the service enforces its own rules on every call).
            for p in i
                .metadata
                .get("public")
                .map(String::as_str)
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
            {
                let ok = p.split_once(' ').is_some_and(|(m, path)| {
                    Method::from_bytes(m.as_bytes()).is_ok()
                        && m.bytes().all(|c| c.is_ascii_uppercase())
                        && valid_announced(path)
                        && prefixes.iter().any(|r| path.starts_with(r.as_str()))
                });
                if ok {
                    prefixes.insert(p.to_owned());
                } else {
                    tracing::warn!(service, instance = %i.id, route = p, "ignoring an invalid public route");
                }
            }
        }
        {
            let mut a = self.announced.lock().unwrap_or_else(|p| p.into_inner());
            if a.get(service) == Some(&prefixes) {
                return;
            }
            tracing::info!(service, routes = ?prefixes, "announced routes changed");
            a.insert(service.to_owned(), prefixes);
        }
        self.rebuild();
    }

    fn rebuild(&self) {
        let mut routes: Vec<Route> = self
            .config
            .iter()
            .map(|c| Route::from_config(c, self.default_timeout))
            .collect();
        let announced = self
            .announced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (service, prefixes) in &announced {
            for entry in prefixes {
                let (public, p) = match entry.split_once(' ') {
                    Some((m, path)) => (Method::from_bytes(m.as_bytes()).ok(), path),
                    None => (None, entry.as_str()),
                };
                let root = self
                    .discovery
                    .root_prefixes
                    .iter()
                    .any(|r| p.starts_with(r.as_str()));
                let (prefix, target) = if root {
                    (normalise_prefix(p), Target::AsIs)
                } else {
                    (
                        normalise_prefix(&format!("{}{p}", self.discovery.api_prefix)),
                        Target::Strip(self.discovery.api_prefix.clone()),
                    )
                };
                let key = match &public {
                    Some(m) => format!("{m} {prefix}"),
                    None => prefix.clone(),
                };
                if let Some(other) = seen.get(&key) {
                    tracing::warn!(
                        prefix,
                        service,
                        other,
                        "two services announce one route; keeping the first"
                    );
                    continue;
                }
                seen.insert(key, service.clone());
                routes.push(Route {
                    prefix,
                    service: service.clone(),
                    methods: public.iter().cloned().collect(),
                    target,
                    public: public.is_some(),
                    permission: None,
                    self_permission: None,
                    timeout: self.default_timeout,
                    client_limit: None,
                    user_limit: None,
                    blocked: false,
                    origin: Origin::Announced,
                    metrics: Arc::default(),
                });
            }
        }
        *self.table.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(RouteTable::new(routes));
        self.version.fetch_add(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(prefix: &str, service: &str) -> RouteConfig {
        RouteConfig {
            prefix: prefix.into(),
            service: service.into(),
            methods: vec![],
            strip: None,
            rewrite: None,
            public: false,
            permission: None,
            self_permission: None,
            timeout: None,
            rate_limit: None,
            blocked: false,
        }
    }

    #[test]
    fn longest_prefix_on_whole_segments() {
        let mut users = cfg("/api/v1/users", "identity");
        users.strip = Some("/api".into());
        let mut signup = cfg("/api/v1/users", "identity");
        signup.methods = vec!["POST".into()];
        signup.public = true;
        let mut x = cfg("/api/x/", "x");
        x.rewrite = Some("/internal".into());
        let t = RouteTable::new(
            [users, signup, x, cfg("/api", "fallback")]
                .iter()
                .map(|c| Route::from_config(c, Duration::from_secs(1)))
                .collect(),
        );
        let get = |p: &str| t.find(&Method::GET, p).map(|r| r.service.clone());
        assert_eq!(get("/api/v1/users").as_deref(), Some("identity"));
        assert_eq!(get("/api/v1/users/42").as_deref(), Some("identity"));
        assert_eq!(get("/api/v1/usersx").as_deref(), Some("fallback"));
        assert_eq!(get("/other"), None);
        // No route for the method, but method-limited ones for the path: those methods.
        let t2 = RouteTable::new(vec![Route::from_config(
            &{
                let mut c = cfg("/only-get", "x");
                c.methods = vec!["GET".into()];
                c
            },
            Duration::from_secs(1),
        )]);
        assert!(t2.find(&Method::DELETE, "/only-get/1").is_none());
        assert_eq!(
            t2.allowed_methods("/only-get/1"),
            vec![Method::GET, Method::HEAD]
        );
        assert!(t2.allowed_methods("/elsewhere").is_empty());
        // A catch-all applies to every method, so there is nothing to refuse.
        assert!(t.allowed_methods("/api/v1/users").is_empty());
        let post = t.find(&Method::POST, "/api/v1/users").unwrap();
        assert!(post.public);
        let head = t.find(&Method::HEAD, "/api/v1/users").unwrap();
        assert!(!head.public);
        let r = t.find(&Method::GET, "/api/v1/users/7").unwrap();
        assert_eq!(r.upstream_path("/api/v1/users/7"), "/v1/users/7");
        let r = t.find(&Method::GET, "/api/x/a/b").unwrap();
        assert_eq!(r.upstream_path("/api/x/a/b"), "/internal/a/b");
        assert_eq!(r.upstream_path("/api/x"), "/internal");
    }

    #[test]
    fn self_permission_only_for_own_id() {
        let mut c = cfg("/api/v1/users", "identity");
        c.permission = Some("identity.users.read".into());
        c.self_permission = Some("identity.users.read_self".into());
        let r = Route::from_config(&c, Duration::from_secs(1));
        assert_eq!(
            r.required_permission("/api/v1/users/u1", "u1"),
            Some("identity.users.read_self")
        );
        assert_eq!(
            r.required_permission("/api/v1/users/u1/x", "u1"),
            Some("identity.users.read_self")
        );
        assert_eq!(
            r.required_permission("/api/v1/users/u2", "u1"),
            Some("identity.users.read")
        );
        assert_eq!(
            r.required_permission("/api/v1/users", "u1"),
            Some("identity.users.read")
        );
    }

    #[test]
    fn announced_routes_under_the_api_prefix() {
        let routes = Routes::new(
            vec![],
            DiscoveryConfig {
                services: vec!["auth".into()],
                api_prefix: "/api".into(),
                root_prefixes: vec!["/.well-known/".into()],
            },
            Duration::from_secs(1),
        );
        let inst = Instance {
            id: "auth-1".into(),
            service: "auth".into(),
            address: "127.0.0.1:1".into(),
            version: String::new(),
            tags: vec![],
            metadata: [(
                "routes".to_owned(),
                "/v1/auth, /.well-known/jwks.json,/../evil".to_owned(),
            )]
            .into(),
        };
        routes.set_instances("auth", &[inst]);
        let t = routes.current();
        let r = t.find(&Method::POST, "/api/v1/auth/login").unwrap();
        assert_eq!(r.upstream_path("/api/v1/auth/login"), "/v1/auth/login");
        let r = t.find(&Method::GET, "/.well-known/jwks.json").unwrap();
        assert_eq!(
            r.upstream_path("/.well-known/jwks.json"),
            "/.well-known/jwks.json"
        );
        assert_eq!(t.routes().len(), 2);
        routes.set_instances("auth", &[]);
        assert!(
            routes
                .current()
                .find(&Method::POST, "/api/v1/auth/login")
                .is_none()
        );
    }

    #[test]
    fn public_methods_announced_by_a_service_need_no_token_here() {
        let routes = Routes::new(
            vec![],
            DiscoveryConfig {
                services: vec!["blog".into()],
                api_prefix: "/api".into(),
                root_prefixes: vec![],
            },
            Duration::from_secs(1),
        );
        let inst = Instance {
            id: "blog-1".into(),
            service: "blog".into(),
            address: "127.0.0.1:1".into(),
            version: String::new(),
            tags: vec![],
            metadata: [
                ("routes".to_owned(), "/v1/blog".to_owned()),
                (
                    "public".to_owned(),
                    "GET /v1/blog/posts, GET /v1/other, get /v1/blog/x, POST /../evil".to_owned(),
                ),
            ]
            .into(),
        };
        routes.set_instances("blog", &[inst]);
        let t = routes.current();
        let r = t.find(&Method::GET, "/api/v1/blog/posts/123").unwrap();
        assert!(r.public);
        assert_eq!(
            r.upstream_path("/api/v1/blog/posts/123"),
            "/v1/blog/posts/123"
        );
        for (m, p) in [
            (Method::PATCH, "/api/v1/blog/posts/123"),
            (Method::GET, "/api/v1/blog/my/posts"),
            (Method::GET, "/api/v1/blog/x"),
        ] {
            let r = t.find(&m, p).unwrap();
            assert!(!r.public, "{m} {p}");
        }
        // Only entries under its own announced prefixes, with an upper-case method.
        assert!(t.find(&Method::GET, "/api/v1/other").is_none());
        assert_eq!(t.routes().len(), 2);
    }
}
