//! plt-build: generates a plt contract from its `.proto`, in the contract crate's build
//! script, with no system `protoc`:
//!
//! ```no_run
//! // build.rs of a contract crate
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     plt_build::Contract::new("notes").proto("proto/notes.proto").compile()
//! }
//! // lib.rs
//! // include!(concat!(env!("OUT_DIR"), "/plt_contract.rs"));
//! ```
//!
//! For every service of the file, `<Service>Client` is the contract trait (one async method
//! per RPC, messages as arguments), and beside it, all generated from the same source:
//!
//! | item | what |
//! |---|---|
//! | `pb` | prost messages (with serde, snake_case JSON) and tonic client/server |
//! | `<Service>Grpc` | the gRPC server adapter over `Arc<dyn <Service>Client>` |
//! | `<Service>GrpcClient` | the trait over a tonic channel |
//! | `<service>_http` | axum routes from each RPC's `google.api.http` rule |
//! | `<Service>HttpClient` | the trait over HTTP/JSON |
//! | `<Service>Balanced` | the trait over the client factory's pool (retries only where idempotent) |
//! | `<SERVICE>` | its [`ContractInfo`]: access rules, permissions, HTTP prefixes, OpenAPI fragment |
//! | `<Service>Serve` | what the service runtime mounts: both adapters behind the access guard |
//!
//! Every RPC must say who may call it (`option (plt.api.v1.access) = {...}`); the adapters
//! ask the runtime's guard before the method runs, over both protocols. A method with an
//! HTTP rule with verb GET, PUT or DELETE is idempotent (retried by clients); others are not.
//!
//! [`ContractInfo`]: https://docs.rs/plt-contracts (plt_contracts::access::ContractInfo)

use prost::Message as _;
use prost_reflect::{
    DescriptorPool, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, MethodDescriptor,
    ServiceDescriptor, Value,
};
use serde_json::{Map, Value as Json, json};
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::{Path, PathBuf},
};

type BoxError = Box<dyn std::error::Error>;

/// The annotation files every contract may import, shipped with this crate.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "google/api/http.proto",
        include_str!("../proto/google/api/http.proto"),
    ),
    (
        "google/api/annotations.proto",
        include_str!("../proto/google/api/annotations.proto"),
    ),
    (
        "plt/api/v1/access.proto",
        include_str!("../proto/plt/api/v1/access.proto"),
    ),
];

struct Embedded;

impl protox::file::FileResolver for Embedded {
    fn open_file(&self, name: &str) -> Result<protox::file::File, protox::Error> {
        match EMBEDDED.iter().find(|(n, _)| *n == name) {
            Some((n, src)) => protox::file::File::from_source(n, src),
            None => Err(protox::Error::file_not_found(name)),
        }
    }
}

/// A contract to generate.
#[derive(Debug, Clone)]
pub struct Contract {
    service: String,
    protos: Vec<PathBuf>,
    includes: Vec<PathBuf>,
    out: Option<PathBuf>,
}

impl Contract {
    /// `service`: the registry name of the service implementing it (`notes`).
    pub fn new(service: &str) -> Self {
        Self {
            service: service.to_owned(),
            protos: Vec::new(),
            includes: Vec::new(),
            out: None,
        }
    }

    /// A `.proto` of the contract; its directory is an include path.
    pub fn proto(mut self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent() {
            let dir = dir.to_path_buf();
            if !self.includes.contains(&dir) {
                self.includes.push(dir);
            }
        }
        self.protos.push(path);
        self
    }

    /// Another include directory.
    pub fn include(mut self, dir: impl AsRef<Path>) -> Self {
        self.includes.push(dir.as_ref().to_path_buf());
        self
    }

    /// Where to write (default `OUT_DIR`).
    pub fn out_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.out = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Generates `plt_contract.rs` (and the prost/tonic code it includes) in the output
    /// directory. Errors name the file, service, method or field and what is wrong.
    pub fn compile(self) -> Result<(), BoxError> {
        let out = match &self.out {
            Some(d) => d.clone(),
            None => PathBuf::from(std::env::var("OUT_DIR")?),
        };
        for p in &self.protos {
            println!("cargo:rerun-if-changed={}", p.display());
        }
        let mut resolver = protox::file::ChainFileResolver::new();
        for dir in &self.includes {
            resolver.add(protox::file::IncludeFileResolver::new(dir.clone()));
        }
        resolver.add(Embedded);
        resolver.add(protox::file::GoogleFileResolver::new());
        let mut compiler = protox::Compiler::with_file_resolver(resolver);
        compiler.include_source_info(true);
        for p in &self.protos {
            let name = self
                .includes
                .iter()
                .find_map(|d| p.strip_prefix(d).ok())
                .unwrap_or(p);
            compiler.open_file(name)?;
        }
        let own = compiler.file_descriptor_set();
        compiler.include_imports(true);
        let all = compiler.file_descriptor_set();
        std::fs::write(out.join("plt_descriptor.bin"), all.encode_to_vec())?;
        let pool = compiler.descriptor_pool();

        let packages: Vec<String> = own
            .file
            .iter()
            .map(|f| f.package().to_owned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let [package] = packages.as_slice() else {
            return Err(format!(
                "a contract is one protobuf package; found {}",
                packages.join(", ")
            )
            .into());
        };
        let mut builder = tonic_prost_build::configure()
            .build_client(true)
            .build_server(true)
            .out_dir(&out)
            .type_attribute(
                ".",
                "#[derive(::serde::Serialize, ::serde::Deserialize)] #[serde(default)]",
            );
        // Request messages refuse unknown JSON fields (a typo is an error, not ignored).
        let own_files: Vec<String> = own.file.iter().map(|f| f.name().to_owned()).collect();
        let services: Vec<ServiceDescriptor> = pool
            .services()
            .filter(|s| own_files.iter().any(|f| f == s.parent_file().name()))
            .collect();
        // Once per message, even when several methods take it.
        let inputs: std::collections::BTreeSet<String> = services
            .iter()
            .flat_map(|svc| svc.methods().map(|m| m.input().full_name().to_owned()))
            .collect();
        for input in inputs {
            builder =
                builder.message_attribute(format!(".{input}"), "#[serde(deny_unknown_fields)]");
        }
        builder.compile_fds(own)?;

        let mut code = String::new();
        let _ = writeln!(
            code,
            "// Generated by plt-build from the contract's .proto. Do not edit.\n\
             /// Protobuf messages (serde: snake_case JSON) and the tonic client and server.\n\
             #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]\n\
             pub mod pb {{\n    include!(concat!(env!(\"OUT_DIR\"), \"/{package}.rs\"));\n}}\n\n\
             /// The encoded `FileDescriptorSet` of the contract and its imports (gRPC reflection).\n\
             pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/plt_descriptor.bin\"));\n"
        );
        for svc in &services {
            let generator = Generator::new(&pool, svc, &self.service)?;
            code.push_str(&generator.emit()?);
        }
        std::fs::write(out.join("plt_contract.rs"), code)?;
        Ok(())
    }
}

/// Rust's snake case of a proto name, as prost writes it.
fn snake(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let prev_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            let prev_upper = i > 0 && chars[i - 1].is_uppercase();
            if i > 0 && (prev_lower || (prev_upper && next_lower)) && !out.ends_with('_') {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

fn field_ident(name: &str) -> String {
    let s = snake(name);
    const KEYWORDS: &[&str] = &[
        "as", "break", "const", "continue", "else", "enum", "false", "fn", "for", "if", "impl",
        "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "static",
        "struct", "trait", "true", "type", "unsafe", "use", "where", "while", "async", "await",
        "dyn", "abstract", "become", "box", "do", "final", "macro", "override", "priv", "typeof",
        "unsized", "virtual", "yield", "try", "gen",
    ];
    if KEYWORDS.contains(&s.as_str()) {
        format!("r#{s}")
    } else {
        s
    }
}

fn rust_str(s: &str) -> String {
    format!("{s:?}")
}

#[derive(Debug, Clone)]
enum AccessRule {
    Public,
    Authenticated,
    Permission(String),
    Owner {
        field: String,
        permission: Option<String>,
    },
    Services(Vec<String>),
}

impl AccessRule {
    fn rust(&self) -> String {
        let access = "::plt_contracts::access::Access";
        match self {
            AccessRule::Public => format!("{access}::Public"),
            AccessRule::Authenticated => format!("{access}::Authenticated"),
            AccessRule::Permission(p) => format!("{access}::Permission({})", rust_str(p)),
            AccessRule::Owner { field, permission } => format!(
                "{access}::Owner {{ field: {}, permission: {} }}",
                rust_str(field),
                match permission {
                    Some(p) => format!("Some({})", rust_str(p)),
                    None => "None".into(),
                }
            ),
            AccessRule::Services(s) => format!(
                "{access}::Services(&[{}])",
                s.iter().map(|x| rust_str(x)).collect::<Vec<_>>().join(", ")
            ),
        }
    }

    fn describe(&self) -> String {
        match self {
            AccessRule::Public => "public".into(),
            AccessRule::Authenticated => "any signed-in user".into(),
            AccessRule::Permission(p) => format!("permission {p}"),
            AccessRule::Owner {
                field,
                permission: None,
            } => format!("the user whose id is {field}"),
            AccessRule::Owner {
                field,
                permission: Some(p),
            } => format!("the user whose id is {field}, or permission {p}"),
            AccessRule::Services(s) => format!("platform services: {}", s.join(", ")),
        }
    }
}

#[derive(Debug, Clone)]
struct HttpRule {
    verb: &'static str,
    path: String,
    /// Path parameters, in order.
    params: Vec<String>,
    body: bool,
}

struct Method {
    desc: MethodDescriptor,
    rust: String,
    input: String,
    output: String,
    output_empty: bool,
    access: AccessRule,
    http: Option<HttpRule>,
    doc: String,
}

struct Generator<'a> {
    pool: &'a DescriptorPool,
    svc: ServiceDescriptor,
    registry_name: String,
    methods: Vec<Method>,
    permissions: Vec<(String, String, bool, Vec<String>)>,
}

fn ext_field<'m>(msg: &'m DynamicMessage, name: &str) -> Option<std::borrow::Cow<'m, Value>> {
    msg.get_field_by_name(name)
}

fn comments(svc: &ServiceDescriptor, path: &[i32]) -> String {
    let file = svc.parent_file();
    let proto = file.file_descriptor_proto();
    proto
        .source_code_info
        .as_ref()
        .and_then(|info| info.location.iter().find(|l| l.path == path))
        .and_then(|l| l.leading_comments.clone())
        .map(|c| c.trim().to_owned())
        .unwrap_or_default()
}

impl<'a> Generator<'a> {
    fn new(
        pool: &'a DescriptorPool,
        svc: &ServiceDescriptor,
        registry_name: &str,
    ) -> Result<Self, BoxError> {
        let package = svc.package_name().to_owned();
        let access_ext = pool
            .get_extension_by_name("plt.api.v1.access")
            .ok_or("plt/api/v1/access.proto must be imported")?;
        let http_ext = pool.get_extension_by_name("google.api.http");
        let mut methods = Vec::new();
        for (i, m) in svc.methods().enumerate() {
            let at = format!("{}.{}", svc.full_name(), m.name());
            if m.is_client_streaming() || m.is_server_streaming() {
                return Err(
                    format!("{at}: streaming methods are not supported by plt contracts").into(),
                );
            }
            for (what, msg) in [("input", m.input()), ("output", m.output())] {
                if msg.package_name() != package || msg.parent_message().is_some() {
                    return Err(format!(
                        "{at}: the {what} message {} must be a top-level message of package {package}",
                        msg.full_name()
                    )
                    .into());
                }
            }
            let opts = m.options();
            if !opts.has_extension(&access_ext) {
                return Err(format!(
                    "{at}: no access rule; add option (plt.api.v1.access) = {{ public: true }} or {{ permission: \"...\" }}, {{ owner_field: \"...\" }}, {{ authenticated: true }}, {{ services: [\"...\"] }}"
                )
                .into());
            }
            let access = parse_access(&at, &opts.get_extension(&access_ext), &m.input())?;
            let http = match &http_ext {
                Some(ext) if opts.has_extension(ext) => {
                    Some(parse_http(&at, &opts.get_extension(ext), &m.input())?)
                }
                _ => None,
            };
            methods.push(Method {
                rust: snake(m.name()),
                input: m.input().name().to_owned(),
                output: m.output().name().to_owned(),
                output_empty: m.output().fields().len() == 0,
                access,
                http,
                doc: comments(svc, &[6, svc.index() as i32, 2, i as i32]),
                desc: m,
            });
        }
        let mut permissions = Vec::new();
        if let Some(ext) = pool.get_extension_by_name("plt.api.v1.permissions") {
            let opts = svc.options();
            if opts.has_extension(&ext)
                && let Value::List(list) = opts.get_extension(&ext).as_ref()
            {
                for v in list {
                    if let Value::Message(p) = v {
                        let name = ext_str(p, "name");
                        let description = ext_str(p, "description");
                        check_permission_name(
                            &format!("{}: permissions", svc.full_name()),
                            &name,
                            registry_name,
                        )?;
                        let users = matches!(
                            ext_field(p, "granted_to_users").as_deref(),
                            Some(Value::Bool(true))
                        );
                        let mut relations = Vec::new();
                        if let Some(v) = ext_field(p, "relations")
                            && let Value::List(rs) = v.as_ref()
                        {
                            for r in rs {
                                if let Value::String(r) = r {
                                    let ok = !r.is_empty()
                                        && r.len() <= 64
                                        && r.starts_with(|c: char| c.is_ascii_lowercase())
                                        && r.bytes().all(|c| {
                                            c.is_ascii_lowercase()
                                                || c.is_ascii_digit()
                                                || c == b'_'
                                                || c == b'-'
                                        });
                                    if !ok {
                                        return Err(format!(
                                            "{}: permission {name}: relation {r:?} must be 1-64 characters of a-z, 0-9, '_' or '-', starting with a letter",
                                            svc.full_name()
                                        )
                                        .into());
                                    }
                                    relations.push(r.clone());
                                }
                            }
                        }
                        permissions.push((name, description, users, relations));
                    }
                }
            }
        }
        for m in &methods {
            let used = match &m.access {
                AccessRule::Permission(p) => Some(p),
                AccessRule::Owner {
                    permission: Some(p),
                    ..
                } => Some(p),
                _ => None,
            };
            if let Some(p) = used
                && p.starts_with(&format!("{registry_name}."))
                && !permissions.iter().any(|(n, _, _, _)| n == p)
            {
                return Err(format!(
                    "{}.{}: permission {p} is not declared in the service's option (plt.api.v1.permissions)",
                    svc.full_name(),
                    m.desc.name()
                )
                .into());
            }
        }
        Ok(Self {
            pool,
            svc: svc.clone(),
            registry_name: registry_name.to_owned(),
            methods,
            permissions,
        })
    }

    fn emit(&self) -> Result<String, BoxError> {
        let svc_name = self.svc.name();
        let trait_name = format!("{svc_name}Client");
        let snake_svc = snake(svc_name);
        let upper = snake_svc.to_uppercase();
        let server_mod = format!("pb::{snake_svc}_server");
        let client_mod = format!("pb::{snake_svc}_client");
        let ctx = "::plt_contracts::RequestContext";
        let res = "::plt_contracts::Result";
        let rt = "::plt_contracts::rt";
        let mut c = String::new();
        let svc_doc = comments(&self.svc, &[6, self.svc.index() as i32]);

        // The trait.
        let _ = writeln!(c, "/// The `{}` contract.", self.svc.full_name());
        for l in svc_doc.lines() {
            let _ = writeln!(c, "///{}{}", if l.is_empty() { "" } else { " " }, l);
        }
        let _ = writeln!(
            c,
            "#[{rt}::async_trait]\npub trait {trait_name}: Send + Sync + 'static {{"
        );
        for m in &self.methods {
            for l in m.doc.lines() {
                let _ = writeln!(c, "    ///{}{}", if l.is_empty() { "" } else { " " }, l);
            }
            let _ = writeln!(c, "    /// Access: {}.", m.access.describe());
            let _ = writeln!(
                c,
                "    async fn {}(&self, ctx: &{ctx}, req: pb::{}) -> {res}<pb::{}>;",
                m.rust, m.input, m.output
            );
        }
        let _ = writeln!(c, "}}\n");

        // Access rules, idempotency, info.
        let _ = writeln!(
            c,
            "/// Each method's access rule, in declaration order.\npub const {upper}_METHODS: &[::plt_contracts::access::MethodAccess] = &["
        );
        for m in &self.methods {
            let _ = writeln!(
                c,
                "    ::plt_contracts::access::MethodAccess {{ method: {}, access: {} }},",
                rust_str(m.desc.name()),
                m.access.rust()
            );
        }
        let _ = writeln!(c, "];\n");
        let idempotent: Vec<String> = self
            .methods
            .iter()
            .filter(|m| {
                m.http
                    .as_ref()
                    .is_some_and(|h| matches!(h.verb, "get" | "put" | "delete"))
            })
            .map(|m| rust_str(m.desc.name()))
            .collect();
        let _ = writeln!(
            c,
            "/// Methods clients may retry (HTTP verb GET, PUT or DELETE).\npub const {upper}_IDEMPOTENT_METHODS: &[&str] = &[{}];\n",
            idempotent.join(", ")
        );
        let prefixes = self.http_prefixes();
        let openapi = serde_json::to_string(&self.openapi())?;
        let _ = writeln!(
            c,
            "/// What the runtime needs to serve `{full}`.\npub const {upper}: ::plt_contracts::access::ContractInfo = ::plt_contracts::access::ContractInfo {{\n    service: {reg},\n    grpc_service: {full_s},\n    http_prefixes: &[{prefixes}],\n    openapi: {openapi},\n    methods: {upper}_METHODS,\n    permissions: &[{perms}],\n    descriptor_set: FILE_DESCRIPTOR_SET,\n}};\n",
            full = self.svc.full_name(),
            reg = rust_str(&self.registry_name),
            full_s = rust_str(self.svc.full_name()),
            prefixes = prefixes
                .iter()
                .map(|p| rust_str(p))
                .collect::<Vec<_>>()
                .join(", "),
            openapi = rust_str(&openapi),
            perms = self
                .permissions
                .iter()
                .map(|(n, d, u, r)| format!(
                    "::plt_contracts::access::PermissionDecl {{ name: {}, description: {}, granted_to_users: {u}, relations: &[{}] }}",
                    rust_str(n),
                    rust_str(d),
                    r.iter().map(|r| rust_str(r)).collect::<Vec<_>>().join(", ")
                ))
                .collect::<Vec<_>>()
                .join(", "),
        );

        // gRPC server adapter.
        let _ = writeln!(
            c,
            "/// Serves `{trait_name}` over gRPC, each call admitted by the guard first.\n#[derive(Clone)]\npub struct {svc_name}Grpc {{\n    inner: ::std::sync::Arc<dyn {trait_name}>,\n    guard: ::std::sync::Arc<dyn ::plt_contracts::access::AccessGuard>,\n}}\n\nimpl {svc_name}Grpc {{\n    pub fn server(inner: ::std::sync::Arc<dyn {trait_name}>, guard: ::std::sync::Arc<dyn ::plt_contracts::access::AccessGuard>) -> {server_mod}::{svc_name}Server<Self> {{\n        {server_mod}::{svc_name}Server::new(Self {{ inner, guard }})\n    }}\n}}\n\n#[{rt}::async_trait]\nimpl {server_mod}::{svc_name} for {svc_name}Grpc {{"
        );
        for (i, m) in self.methods.iter().enumerate() {
            let owner = owner_expr(&m.access);
            let _ = writeln!(
                c,
                "    async fn {r}(&self, request: {rt}::tonic::Request<pb::{inp}>) -> ::std::result::Result<{rt}::tonic::Response<pb::{out}>, {rt}::tonic::Status> {{\n        let mut ctx = {ctx}::from_grpc(&request);\n        let req = request.into_inner();\n        ctx.principal = self.guard.admit(&ctx, &{upper}_METHODS[{i}], {owner}).await?;\n        Ok({rt}::tonic::Response::new(self.inner.{r}(&ctx, req).await?))\n    }}",
                r = m.rust,
                inp = m.input,
                out = m.output,
            );
        }
        let _ = writeln!(c, "}}\n");

        // gRPC client.
        let _ = writeln!(
            c,
            "/// `{trait_name}` over a gRPC channel.\n#[derive(Clone)]\npub struct {svc_name}GrpcClient({client_mod}::{svc_name}Client<{rt}::tonic::transport::Channel>);\n\nimpl {svc_name}GrpcClient {{\n    pub fn new(channel: {rt}::tonic::transport::Channel) -> Self {{\n        Self({client_mod}::{svc_name}Client::new(channel))\n    }}\n\n    /// Connects on first use.\n    pub fn connect_lazy(endpoint: &str) -> {res}<Self> {{\n        Ok(Self::new({rt}::lazy_channel(endpoint)?))\n    }}\n}}\n\n#[{rt}::async_trait]\nimpl {trait_name} for {svc_name}GrpcClient {{"
        );
        for m in &self.methods {
            let _ = writeln!(
                c,
                "    async fn {r}(&self, ctx: &{ctx}, req: pb::{inp}) -> {res}<pb::{out}> {{\n        Ok(self.0.clone().{r}(ctx.grpc_request(req)).await?.into_inner())\n    }}",
                r = m.rust,
                inp = m.input,
                out = m.output
            );
        }
        let _ = writeln!(c, "}}\n");

        // HTTP routes.
        let mut by_path: BTreeMap<&str, Vec<(usize, &Method, &HttpRule)>> = BTreeMap::new();
        for (i, m) in self.methods.iter().enumerate() {
            if let Some(h) = &m.http {
                by_path.entry(h.path.as_str()).or_default().push((i, m, h));
            }
        }
        let _ = writeln!(
            c,
            "type {svc_name}HttpState = {rt}::HttpState<dyn {trait_name}>;\n\n/// The HTTP/JSON routes of `{trait_name}` (from each method's `google.api.http`), each call admitted by the guard first.\npub fn {snake_svc}_http(inner: ::std::sync::Arc<dyn {trait_name}>, guard: ::std::sync::Arc<dyn ::plt_contracts::access::AccessGuard>) -> {rt}::axum::Router {{\n    {rt}::axum::Router::new()"
        );
        for (path, ms) in &by_path {
            let chain = ms
                .iter()
                .map(|(_, m, h)| {
                    format!(
                        "{rt}::axum::routing::{}(http_{snake_svc}_{})",
                        h.verb, m.rust
                    )
                })
                .collect::<Vec<_>>();
            let mut route = chain[0].clone();
            for more in &chain[1..] {
                let (verb_fn, rest) = more.rsplit_once("::").unwrap_or(("", more));
                let _ = verb_fn;
                route.push_str(&format!(".{rest}"));
            }
            let _ = writeln!(c, "        .route({}, {route})", rust_str(path));
        }
        let _ = writeln!(
            c,
            "        .with_state({rt}::HttpState {{ inner, guard }})\n}}\n"
        );
        for (i, m) in self.methods.iter().enumerate() {
            let Some(h) = &m.http else { continue };
            let path_arg = if h.params.is_empty() {
                String::new()
            } else {
                format!(
                    "{rt}::axum::extract::Path(path): {rt}::axum::extract::Path<::std::collections::HashMap<String, String>>, "
                )
            };
            let mut sets = String::new();
            for p in &h.params {
                let _ = writeln!(
                    sets,
                    "        req.{} = {rt}::path_param(&path, {})?;",
                    field_ident(p),
                    rust_str(p)
                );
            }
            let owner = owner_expr(&m.access);
            let respond = if m.output_empty {
                "respond_empty"
            } else {
                "respond"
            };
            let _ = writeln!(
                c,
                "async fn http_{snake_svc}_{r}({rt}::axum::extract::State(s): {rt}::axum::extract::State<{svc_name}HttpState>, mut ctx: {ctx}, {path_arg}{rt}::axum::extract::RawQuery(query): {rt}::axum::extract::RawQuery, headers: {rt}::http::HeaderMap, body: {rt}::Bytes) -> {rt}::axum::response::Response {{\n    {rt}::{respond}(async move {{\n        #[allow(unused_mut)]\n        let mut req: pb::{inp} = {rt}::decode_request(&headers, query.as_deref(), &body, {has_body})?;\n{sets}        ctx.principal = s.guard.admit(&ctx, &{upper}_METHODS[{i}], {owner}).await?;\n        s.inner.{r}(&ctx, req).await\n    }}.await)\n}}\n",
                r = m.rust,
                inp = m.input,
                has_body = h.body,
            );
        }

        // HTTP client.
        let _ = writeln!(
            c,
            "/// `{trait_name}` over HTTP/JSON.\n#[derive(Clone)]\npub struct {svc_name}HttpClient(::plt_contracts::http_api::JsonClient);\n\nimpl {svc_name}HttpClient {{\n    pub fn new(http: {rt}::reqwest::Client, base_url: &str) -> Self {{\n        Self(::plt_contracts::http_api::JsonClient::new(http, base_url, {reg}))\n    }}\n}}\n\n#[{rt}::async_trait]\nimpl {trait_name} for {svc_name}HttpClient {{",
            reg = rust_str(&self.registry_name)
        );
        for m in &self.methods {
            let body = match &m.http {
                None => format!(
                    "        let _ = (ctx, req);\n        Err(::plt_contracts::Error::new(::plt_contracts::ErrorCode::Unimplemented, {}))",
                    rust_str(&format!(
                        "{} has no HTTP mapping; call it over gRPC",
                        m.desc.name()
                    ))
                ),
                Some(h) => {
                    let mut fmt_path = String::new();
                    let mut args = Vec::new();
                    let mut rest = h.path.as_str();
                    while let Some(open) = rest.find('{') {
                        fmt_path.push_str(&rest[..open]);
                        let close = rest[open..]
                            .find('}')
                            .map(|x| x + open)
                            .unwrap_or(rest.len());
                        fmt_path.push_str("{}");
                        args.push(format!(
                            "{rt}::path_segment(&req.{}.to_string())",
                            field_ident(&rest[open + 1..close])
                        ));
                        rest = &rest[(close + 1).min(rest.len())..];
                    }
                    fmt_path.push_str(rest);
                    let path_expr = if args.is_empty() {
                        rust_str(&fmt_path)
                    } else {
                        format!("&format!({}, {})", rust_str(&fmt_path), args.join(", "))
                    };
                    let verb = h.verb.to_uppercase();
                    let attach = if h.body {
                        ".json(&req)"
                    } else {
                        ".query(&req)"
                    };
                    let finish = if m.output_empty {
                        "        self.0.send(rb).await?;\n        Ok(Default::default())".to_owned()
                    } else {
                        "        self.0.json(rb).await".to_owned()
                    };
                    format!(
                        "        let rb = self.0.request(ctx, {rt}::reqwest::Method::{verb}, {path_expr}){attach};\n{finish}"
                    )
                }
            };
            let _ = writeln!(
                c,
                "    async fn {r}(&self, ctx: &{ctx}, req: pb::{inp}) -> {res}<pb::{out}> {{\n{body}\n    }}",
                r = m.rust,
                inp = m.input,
                out = m.output
            );
        }
        let _ = writeln!(c, "}}\n");

        // Balanced client and the factory's hook.
        let _ = writeln!(
            c,
            "/// `{trait_name}` over the healthy instances (the client factory's pool).\n#[derive(Clone)]\npub struct {svc_name}Balanced(pub ::std::sync::Arc<::plt_client::Pool<::std::sync::Arc<dyn {trait_name}>>>);\n\n#[{rt}::async_trait]\nimpl {trait_name} for {svc_name}Balanced {{"
        );
        for m in &self.methods {
            let _ = writeln!(
                c,
                "    async fn {r}(&self, ctx: &{ctx}, req: pb::{inp}) -> {res}<pb::{out}> {{\n        self.0.call({name}, {upper}_IDEMPOTENT_METHODS.contains(&{name}), ctx, |c, cx| {{\n            // (UFCS: a message without fields is `Copy`.)\n            let req = ::std::clone::Clone::clone(&req);\n            async move {{ c.{r}(&cx, req).await }}\n        }}).await\n    }}",
                r = m.rust,
                inp = m.input,
                out = m.output,
                name = rust_str(m.desc.name())
            );
        }
        let _ = writeln!(
            c,
            "}}\n\nimpl ::plt_client::Contract for dyn {trait_name} {{\n    const SERVICE: &'static str = {reg};\n    fn grpc(base_url: &str) -> Option<::std::sync::Arc<Self>> {{\n        {svc_name}GrpcClient::connect_lazy(base_url).ok().map(|c| ::std::sync::Arc::new(c) as ::std::sync::Arc<Self>)\n    }}\n    fn http(http: {rt}::reqwest::Client, base_url: &str) -> ::std::sync::Arc<Self> {{\n        ::std::sync::Arc::new({svc_name}HttpClient::new(http, base_url))\n    }}\n    fn balanced(pool: ::std::sync::Arc<::plt_client::Pool<::std::sync::Arc<Self>>>) -> ::std::sync::Arc<Self> {{\n        ::std::sync::Arc::new({svc_name}Balanced(pool))\n    }}\n}}\n",
            reg = rust_str(&self.registry_name)
        );

        // What the runtime mounts.
        let _ = writeln!(
            c,
            "/// `{trait_name}` as the service runtime serves it: HTTP routes and gRPC service, behind the runtime's guard.\npub struct {svc_name}Serve(pub ::std::sync::Arc<dyn {trait_name}>);\n\nimpl ::plt_contracts::access::Serve for {svc_name}Serve {{\n    fn info(&self) -> &'static ::plt_contracts::access::ContractInfo {{\n        &{upper}\n    }}\n\n    fn mount(&self, host: {rt}::ServiceHost, guard: ::std::sync::Arc<dyn ::plt_contracts::access::AccessGuard>) -> {rt}::ServiceHost {{\n        host.http({snake_svc}_http(self.0.clone(), guard.clone()))\n            .grpc({svc_name}Grpc::server(self.0.clone(), guard))\n    }}\n}}\n"
        );
        let _ = self.pool;
        Ok(c)
    }

    /// The distinct first two segments of the HTTP paths (`/v1/notes`).
    fn http_prefixes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for m in &self.methods {
            if let Some(h) = &m.http {
                let segs: Vec<&str> = h
                    .path
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .take(2)
                    .collect();
                let p = format!("/{}", segs.join("/"));
                if !out.contains(&p) {
                    out.push(p);
                }
            }
        }
        out
    }

    fn openapi(&self) -> Json {
        let mut paths = Map::new();
        let mut schemas = Map::new();
        let tag = self.registry_name.clone();
        for m in &self.methods {
            let Some(h) = &m.http else { continue };
            let input = m.desc.input();
            collect_schemas(&input, &mut schemas);
            collect_schemas(&m.desc.output(), &mut schemas);
            let mut params = Vec::new();
            for p in &h.params {
                let f = input.get_field_by_name(p);
                params.push(json!({
                    "name": p, "in": "path", "required": true,
                    "schema": f.as_ref().map(field_schema).unwrap_or(json!({"type": "string"})),
                }));
            }
            if !h.body {
                for f in input.fields() {
                    if h.params.iter().any(|p| p == f.name()) {
                        continue;
                    }
                    params.push(json!({
                        "name": f.name(), "in": "query", "required": false,
                        "schema": field_schema(&f),
                    }));
                }
            }
            let mut op = Map::new();
            op.insert(
                "operationId".into(),
                json!(format!("{}.{}", self.svc.full_name(), m.desc.name())),
            );
            let summary = m.doc.lines().next().unwrap_or(m.desc.name()).to_owned();
            op.insert("summary".into(), json!(summary));
            if !m.doc.is_empty() {
                op.insert("description".into(), json!(m.doc));
            }
            op.insert("tags".into(), json!([tag]));
            op.insert("x-plt-access".into(), json!(m.access.describe()));
            if !params.is_empty() {
                op.insert("parameters".into(), Json::Array(params));
            }
            if h.body {
                op.insert(
                    "requestBody".into(),
                    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", input.full_name())}}}}),
                );
            }
            let mut responses = Map::new();
            if m.output_empty {
                responses.insert("204".into(), json!({"description": "Done"}));
            } else {
                responses.insert(
                    "200".into(),
                    json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", m.desc.output().full_name())}}}}),
                );
            }
            responses.insert(
                "default".into(),
                json!({"description": "An error (RFC 9457 problem+json)", "content": {"application/problem+json": {"schema": {"type": "object"}}}}),
            );
            op.insert("responses".into(), Json::Object(responses));
            if !matches!(m.access, AccessRule::Public) {
                op.insert("security".into(), json!([{"bearer": []}]));
            }
            let item = paths
                .entry(h.path.clone())
                .or_insert_with(|| Json::Object(Map::new()));
            if let Json::Object(item) = item {
                item.insert(h.verb.to_owned(), Json::Object(op));
            }
        }
        json!({
            "openapi": "3.1.0",
            "info": {"title": self.svc.full_name(), "version": "v1"},
            "paths": paths,
            "components": {
                "schemas": schemas,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            },
        })
    }
}

fn ext_str(msg: &DynamicMessage, name: &str) -> String {
    match ext_field(msg, name).as_deref() {
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn check_permission_name(at: &str, name: &str, service: &str) -> Result<(), BoxError> {
    let parts: Vec<&str> = name.split('.').collect();
    let ok = parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    if !ok {
        return Err(format!(
            "{at}: permission {name:?} must be <service>.<resource>.<action> in a-z, 0-9, _"
        )
        .into());
    }
    if parts[0] != service {
        return Err(format!(
            "{at}: permission {name:?} must start with this service's name, {service}."
        )
        .into());
    }
    Ok(())
}

fn parse_access(at: &str, v: &Value, input: &MessageDescriptor) -> Result<AccessRule, BoxError> {
    let Value::Message(msg) = v else {
        return Err(format!("{at}: the access option is not a message").into());
    };
    let public = matches!(ext_field(msg, "public").as_deref(), Some(Value::Bool(true)));
    let authenticated = matches!(
        ext_field(msg, "authenticated").as_deref(),
        Some(Value::Bool(true))
    );
    let permission = ext_str(msg, "permission");
    let owner = ext_str(msg, "owner_field");
    let services: Vec<String> = match ext_field(msg, "services").as_deref() {
        Some(Value::List(l)) => l
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let kinds = [
        public,
        authenticated,
        !owner.is_empty() || !permission.is_empty(),
        !services.is_empty(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if kinds != 1 {
        return Err(format!(
            "{at}: the access rule must set exactly one of public, authenticated, permission/owner_field, services"
        )
        .into());
    }
    if !permission.is_empty() {
        let service = permission.split('.').next().unwrap_or("");
        check_permission_name(at, &permission, service)?;
    }
    Ok(if public {
        AccessRule::Public
    } else if authenticated {
        AccessRule::Authenticated
    } else if !services.is_empty() {
        AccessRule::Services(services)
    } else if !owner.is_empty() {
        match input.get_field_by_name(&owner) {
            Some(f) if f.kind() == Kind::String && !f.is_list() && !f.is_map() => {}
            _ => {
                return Err(format!(
                    "{at}: owner_field {owner:?} must be a string field of {}",
                    input.full_name()
                )
                .into());
            }
        }
        AccessRule::Owner {
            field: owner,
            permission: (!permission.is_empty()).then_some(permission),
        }
    } else {
        AccessRule::Permission(permission)
    })
}

fn owner_expr(a: &AccessRule) -> String {
    match a {
        AccessRule::Owner { field, .. } => format!("Some(req.{}.as_str())", field_ident(field)),
        _ => "None".into(),
    }
}

fn parse_http(at: &str, v: &Value, input: &MessageDescriptor) -> Result<HttpRule, BoxError> {
    let Value::Message(msg) = v else {
        return Err(format!("{at}: google.api.http is not a message").into());
    };
    let mut found = None;
    for verb in ["get", "put", "post", "delete", "patch"] {
        let p = ext_str(msg, verb);
        if !p.is_empty() {
            if found.is_some() {
                return Err(format!("{at}: google.api.http sets more than one verb").into());
            }
            found = Some((verb, p));
        }
    }
    let Some((verb, path)) = found else {
        return Err(
            format!("{at}: google.api.http needs one of get, put, post, delete, patch").into(),
        );
    };
    if !path.starts_with('/') {
        return Err(format!("{at}: HTTP path {path:?} must start with /").into());
    }
    let body = ext_str(msg, "body");
    if !(body.is_empty() || body == "*") {
        return Err(format!("{at}: body must be \"*\" (the whole request) or absent").into());
    }
    if body == "*" && matches!(verb, "get" | "delete") {
        return Err(format!("{at}: {verb} requests have no body").into());
    }
    let mut params = Vec::new();
    for seg in path.split('/') {
        if let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            if inner.contains(['=', '.', '*']) {
                return Err(format!(
                    "{at}: path parameter {{{inner}}}: only plain field names are supported"
                )
                .into());
            }
            match input.get_field_by_name(inner) {
                Some(f) if !f.is_list() && !f.is_map() && is_scalar(&f) => {
                    params.push(inner.to_owned())
                }
                _ => {
                    return Err(format!(
                        "{at}: path parameter {{{inner}}} must be a scalar field of {}",
                        input.full_name()
                    )
                    .into());
                }
            }
        } else if seg.contains(['{', '}']) {
            return Err(
                format!("{at}: path segment {seg:?}: a parameter must be a whole segment").into(),
            );
        }
    }
    if body.is_empty() {
        for f in input.fields() {
            if !params.iter().any(|p| p == f.name()) && (!is_scalar(&f) || f.is_map()) {
                return Err(format!(
                    "{at}: field {} can travel neither in the path nor the query; use body: \"*\"",
                    f.name()
                )
                .into());
            }
        }
    }
    Ok(HttpRule {
        verb,
        path,
        params,
        body: body == "*",
    })
}

fn is_scalar(f: &FieldDescriptor) -> bool {
    !f.is_list() && !matches!(f.kind(), Kind::Message(_) | Kind::Bytes)
}

fn field_schema(f: &FieldDescriptor) -> Json {
    let one = match f.kind() {
        Kind::String => json!({"type": "string"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int32", "minimum": 0}),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": "integer", "format": "int64"})
        }
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        Kind::Float | Kind::Double => json!({"type": "number"}),
        Kind::Bytes => json!({"type": "array", "items": {"type": "integer"}}),
        Kind::Enum(e) => {
            json!({"type": "integer", "description": format!("{}: {}", e.full_name(), e.values().map(|v| format!("{}={}", v.name(), v.number())).collect::<Vec<_>>().join(", "))})
        }
        Kind::Message(m) if f.is_map() => {
            let value = m
                .get_field_by_name("value")
                .map(|v| field_schema(&v))
                .unwrap_or(json!({}));
            return json!({"type": "object", "additionalProperties": value});
        }
        Kind::Message(m) => json!({"$ref": format!("#/components/schemas/{}", m.full_name())}),
    };
    if f.is_list() {
        json!({"type": "array", "items": one})
    } else {
        one
    }
}

fn collect_schemas(m: &MessageDescriptor, out: &mut Map<String, Json>) {
    if out.contains_key(m.full_name()) {
        return;
    }
    let mut props = Map::new();
    for f in m.fields() {
        props.insert(f.name().to_owned(), field_schema(&f));
    }
    out.insert(
        m.full_name().to_owned(),
        json!({"type": "object", "properties": props, "additionalProperties": false}),
    );
    for f in m.fields() {
        if let Kind::Message(inner) = f.kind() {
            if f.is_map() {
                if let Some(Kind::Message(v)) = inner.get_field_by_name("value").map(|v| v.kind()) {
                    collect_schemas(&v, out);
                }
            } else {
                collect_schemas(&inner, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::snake;

    #[test]
    fn snake_case_like_prost() {
        assert_eq!(snake("CreateNote"), "create_note");
        assert_eq!(snake("NotesService"), "notes_service");
        assert_eq!(snake("GetHTTPThing"), "get_http_thing");
        assert_eq!(snake("owner_id"), "owner_id");
        assert_eq!(snake("V2Thing"), "v2_thing");
    }
}
