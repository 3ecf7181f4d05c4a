//! Test support: the gateway built as the binary builds it, on port 0, with its own
//! in-memory registry; fake upstreams (small axum servers on port 0 that echo what they
//! received) registered in it; a JWKS server publishing the keys tokens are signed with; and
//! an authz fake that counts the questions it is asked.
#![allow(dead_code)]

use api_gateway::{ApiGateway, Config, Gateway, SECTION};
use async_trait::async_trait;
use axum::{
    Json, Router,
    body::Bytes,
    extract::{Request, State},
    http::HeaderMap,
    response::IntoResponse,
    routing::get,
};
use plt_authn::{AccessClaims, Signer};
use plt_contracts::{
    RequestContext, Result,
    auth::Jwks,
    authz::{AuthzServiceClient, Permission, Role},
    testsuite::fakes::FakeAuthz,
};
use plt_registry::{HealthSpec, Instance, Registration, ServiceRegistry, memory::MemoryRegistry};
use plt_runtime::testing::{Backend, TestOptions, TestService};
use serde_json::{Value, json};
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio::net::TcpListener;
use uuid::Uuid;

/// The configuration from the repository's config/ with these variables on top.
pub fn config(vars: &[(String, String)]) -> Config {
    plt_kernel::testing::config(SECTION, vars.iter().cloned())
}

async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    addr
}

// ---------------------------------------------------------------- keys and tokens

/// Signing keys and the JWKS server that publishes the current set.
pub struct Keys {
    pub signer: Signer,
    published: Arc<RwLock<Jwks>>,
    pub jwks_url: String,
}

impl Keys {
    pub async fn new() -> Self {
        let signer =
            Signer::generate(format!("k-{}", &Uuid::new_v4().simple().to_string()[..8])).unwrap();
        let published = Arc::new(RwLock::new(Jwks {
            keys: vec![signer.public_jwk()],
        }));
        let p = published.clone();
        let addr = serve(Router::new().route(
            "/.well-known/jwks.json",
            get(move || {
                let p = p.clone();
                async move { Json(p.read().unwrap().clone()) }
            }),
        ))
        .await;
        Self {
            signer,
            published,
            jwks_url: format!("http://{addr}/.well-known/jwks.json"),
        }
    }

    /// Publishes exactly these keys.
    pub fn publish(&self, signers: &[&Signer]) {
        *self.published.write().unwrap() = Jwks {
            keys: signers.iter().map(|s| s.public_jwk()).collect(),
        };
    }

    pub fn token(&self, sub: &str) -> String {
        token_with(&self.signer, sub, 600)
    }
}

/// A token for `sub` signed by `signer`, valid for `ttl_secs` (negative: expired).
pub fn token_with(signer: &Signer, sub: &str, ttl_secs: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    let iat = if ttl_secs < 0 {
        now + ttl_secs - 60
    } else {
        now
    };
    signer.sign(&AccessClaims {
        iss: "plt".into(),
        sub: sub.into(),
        aud: vec!["plt-api".into()],
        exp: now + ttl_secs,
        nbf: iat,
        iat,
        jti: Uuid::new_v4().to_string(),
        scope: String::new(),
        client_id: String::new(),
        sid: String::new(),
    })
}

// ---------------------------------------------------------------- authz

/// `FakeAuthz` counting `authorize` calls.
#[derive(Clone, Default)]
pub struct CountingAuthz {
    pub inner: FakeAuthz,
    pub calls: Arc<AtomicUsize>,
}

impl CountingAuthz {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
    }
}

#[async_trait]
impl AuthzServiceClient for CountingAuthz {
    async fn authorize(&self, ctx: &RequestContext, user_id: Uuid, permission: &str) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.inner.authorize(ctx, user_id, permission).await
    }
    async fn has_permission(&self, ctx: &RequestContext, u: Uuid, p: &str) -> Result<bool> {
        self.inner.has_permission(ctx, u, p).await
    }
    async fn get_user_permissions(&self, ctx: &RequestContext, u: Uuid) -> Result<Vec<Permission>> {
        self.inner.get_user_permissions(ctx, u).await
    }
    async fn get_user_roles(&self, ctx: &RequestContext, u: Uuid) -> Result<Vec<String>> {
        self.inner.get_user_roles(ctx, u).await
    }
    async fn list_roles(&self, ctx: &RequestContext) -> Result<Vec<Role>> {
        self.inner.list_roles(ctx).await
    }
    async fn register_permissions(
        &self,
        ctx: &RequestContext,
        s: &str,
        p: Vec<Permission>,
    ) -> Result<()> {
        self.inner.register_permissions(ctx, s, p).await
    }
    async fn create_role(&self, ctx: &RequestContext, r: Role) -> Result<Role> {
        self.inner.create_role(ctx, r).await
    }
    async fn delete_role(&self, ctx: &RequestContext, n: &str) -> Result<()> {
        self.inner.delete_role(ctx, n).await
    }
    async fn set_role_permissions(
        &self,
        ctx: &RequestContext,
        n: &str,
        p: Vec<String>,
    ) -> Result<Role> {
        self.inner.set_role_permissions(ctx, n, p).await
    }
    async fn grant_role(&self, ctx: &RequestContext, u: Uuid, r: &str) -> Result<()> {
        self.inner.grant_role(ctx, u, r).await
    }
    async fn revoke_role(&self, ctx: &RequestContext, u: Uuid, r: &str) -> Result<()> {
        self.inner.revoke_role(ctx, u, r).await
    }
    async fn check(&self, ctx: &RequestContext, u: Uuid, p: &str, r: &str) -> Result<bool> {
        self.inner.check(ctx, u, p, r).await
    }
    async fn grant_resource(
        &self,
        ctx: &RequestContext,
        g: plt_contracts::authz::ResourceGrant,
    ) -> Result<bool> {
        self.inner.grant_resource(ctx, g).await
    }
    async fn revoke_resource(
        &self,
        ctx: &RequestContext,
        g: plt_contracts::authz::ResourceGrant,
    ) -> Result<bool> {
        self.inner.revoke_resource(ctx, g).await
    }
    async fn list_resource_grants(
        &self,
        ctx: &RequestContext,
        f: plt_contracts::authz::ResourceGrantFilter,
    ) -> Result<Vec<plt_contracts::authz::ResourceGrant>> {
        self.inner.list_resource_grants(ctx, f).await
    }
}

// ---------------------------------------------------------------- upstreams

/// What a fake upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body_len: usize,
}

#[derive(Clone)]
struct EchoState {
    name: String,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

/// An upstream instance that answers every request with JSON describing it:
/// `{instance, method, path, query, headers, body_len}`. `GET …/slow?ms=N` waits N ms first.
pub struct Echo {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn echo(State(s): State<EchoState>, req: Request) -> impl IntoResponse {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body: Bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if parts.uri.path().ends_with("/slow") {
        let ms: u64 = parts
            .uri
            .query()
            .and_then(|q| q.strip_prefix("ms="))
            .and_then(|v| v.parse().ok())
            .unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    s.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body_len: body.len(),
    });
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or(""))))
        .collect();
    Json(json!({
        "instance": s.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body_len": body.len(),
    }))
}

impl Echo {
    pub async fn start(name: &str) -> Self {
        let state = EchoState {
            name: name.to_owned(),
            hits: Arc::default(),
            seen: Arc::default(),
        };
        let addr = serve(Router::new().fallback(echo).with_state(state.clone())).await;
        Self {
            addr,
            name: name.to_owned(),
            hits: state.hits,
            seen: state.seen,
        }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// An instance that accepts connections and drops them: after reading the request head when
/// `read_first`, at once otherwise. Counts connections.
pub struct BlackHole {
    pub addr: SocketAddr,
    conns: Arc<AtomicUsize>,
}

impl BlackHole {
    pub async fn start(read_first: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let c = conns.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    if read_first {
                        use tokio::io::AsyncReadExt;
                        let mut buf = vec![0u8; 8192];
                        let mut got = Vec::new();
                        while let Ok(n) = sock.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                            got.extend_from_slice(&buf[..n]);
                            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                                break;
                            }
                        }
                    }
                    drop(sock);
                });
            }
        });
        Self { addr, conns }
    }

    pub fn connections(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

/// Registers `addr` as an instance of `service` announcing `routes` (comma-separated).
pub async fn register(
    registry: &MemoryRegistry,
    service: &str,
    addr: SocketAddr,
    routes: &str,
) -> Registration {
    let mut metadata = std::collections::BTreeMap::new();
    if !routes.is_empty() {
        metadata.insert("routes".to_owned(), routes.to_owned());
    }
    registry
        .register(
            Instance {
                id: format!("{service}-{}", Uuid::new_v4().simple()),
                service: service.to_owned(),
                address: addr.to_string(),
                version: "test".into(),
                tags: vec![],
                metadata,
            },
            HealthSpec {
                ttl: Duration::from_secs(2),
                ready: None,
            },
        )
        .await
        .unwrap()
}

// ---------------------------------------------------------------- the gateway

/// How to start a gateway.
pub struct Setup {
    pub vars: Vec<(String, String)>,
    pub registry: MemoryRegistry,
    pub authz: Option<Arc<dyn AuthzServiceClient>>,
}

impl Setup {
    /// With `keys`' JWKS trusted, discovery watching `services`, and `routes` (JSON) as the
    /// configured routes.
    pub fn new(keys: &Keys, services: &[&str], routes: Value) -> Self {
        let services: Vec<String> = services.iter().map(|s| (*s).to_owned()).collect();
        Self {
            vars: vec![
                ("PLT_GATEWAY__AUTH__JWKS_URL".into(), keys.jwks_url.clone()),
                (
                    "PLT_GATEWAY__DISCOVERY__SERVICES".into(),
                    serde_json::to_string(&services).unwrap(),
                ),
                ("PLT_GATEWAY__ROUTES".into(), routes.to_string()),
            ],
            registry: MemoryRegistry::new(),
            authz: None,
        }
    }

    pub fn var(mut self, k: &str, v: &str) -> Self {
        self.vars.push((k.to_owned(), v.to_owned()));
        self
    }

    pub fn authz(mut self, a: Arc<dyn AuthzServiceClient>) -> Self {
        self.authz = Some(a);
        self
    }

    pub fn registry(mut self, r: MemoryRegistry) -> Self {
        self.registry = r;
        self
    }
}

pub struct Running {
    pub svc: TestService,
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    pub registry: MemoryRegistry,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        self.svc.url(path)
    }

    pub async fn stop(self) {
        self.svc.stop().await;
    }

    /// Waits until `service` has `n` instances in the gateway's pool.
    pub async fn wait_instances(&self, service: &str, n: usize) {
        for _ in 0..200 {
            if self.gateway.instances(service).len() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "{service} has {:?} in the pool, expected {n}",
            self.gateway.instances(service)
        );
    }
}

/// Starts the gateway through the runtime's one harness, on `setup`'s registry, verifying
/// tokens against the configured JWKS URL (the test's key server).
pub async fn start(setup: Setup) -> Running {
    plt_kernel::telemetry::init_for_tests();
    let authz = setup
        .authz
        .unwrap_or_else(|| Arc::new(CountingAuthz::default()));
    let svc = TestService::start_with::<ApiGateway>(
        Backend::Sqlite,
        TestOptions {
            vars: setup.vars.clone(),
            registry: Some(Arc::new(setup.registry.clone())),
            keys_from_config: true,
            ..TestOptions::default().with(authz)
        },
    )
    .await
    .expect("the gateway needs no database");
    Running {
        addr: svc.addr,
        gateway: svc.get::<Arc<Gateway>>().expect("gateway exported"),
        registry: setup.registry,
        svc,
    }
}

pub fn http() -> reqwest::Client {
    plt_kernel::tls::http_client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Asserts an RFC 9457 problem answer with this status and code, returning its body.
pub async fn assert_problem(resp: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(resp.status().as_u16(), status, "status");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(ct, "application/problem+json");
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["type"], format!("urn:plt:problem:{code}"));
    body
}
