//! Who may call a method, declared per method in a contract's `.proto`
//! (`option (plt.api.v1.access) = {...}`) and enforced by the service runtime itself, over
//! gRPC and HTTP alike, before the method runs: a service is safe on any network, not only
//! behind the gateway.
//!
//! The generated adapters ([`plt-build`]) call an [`AccessGuard`] with the method's rule;
//! the runtime provides the guard (tokens verified against auth's keys, permissions decided
//! by authz).

use crate::{RequestContext, Result};
use async_trait::async_trait;

/// One method's access rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone, signed in or not.
    Public,
    /// Any signed-in user.
    Authenticated,
    /// A signed-in user holding this permission.
    Permission(&'static str),
    /// A signed-in user whose id is the request's `field`; with `permission`, holders of it
    /// may act on anyone's resource too.
    Owner {
        field: &'static str,
        permission: Option<&'static str>,
    },
    /// Platform services only, from these (`["*"]`: any).
    Services(&'static [&'static str]),
}

impl Access {
    /// The permission this rule names, if any (registered with authz by the owner).
    pub fn permission(&self) -> Option<&'static str> {
        match self {
            Access::Permission(p) => Some(p),
            Access::Owner { permission, .. } => *permission,
            _ => None,
        }
    }

    /// For documentation (`x-plt-access` in OpenAPI, logs).
    pub fn describe(&self) -> String {
        match self {
            Access::Public => "public".into(),
            Access::Authenticated => "any signed-in user".into(),
            Access::Permission(p) => format!("permission {p}"),
            Access::Owner {
                field,
                permission: None,
            } => format!("the user whose id is {field}"),
            Access::Owner {
                field,
                permission: Some(p),
            } => format!("the user whose id is {field}, or permission {p}"),
            Access::Services(s) => format!("platform services: {}", s.join(", ")),
        }
    }
}

/// A method of a contract with its rule, as the generator emits them.
#[derive(Debug, Clone, Copy)]
pub struct MethodAccess {
    /// The gRPC method name (`CreateNote`).
    pub method: &'static str,
    pub access: Access,
}

/// Who the runtime admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A signed-in user, by id (the access token's subject).
    User(String),
    /// A platform service, by name (its service token's subject).
    Service(String),
}

/// Decides whether a call may proceed. `owner` is the value of the rule's owner field in
/// the request, when the rule has one. `Ok` carries the admitted caller (`None` for an
/// anonymous call to a public method); the adapters put it into the context the method
/// sees (`RequestContext::principal`).
#[async_trait]
pub trait AccessGuard: Send + Sync + 'static {
    async fn admit(
        &self,
        ctx: &RequestContext,
        method: &MethodAccess,
        owner: Option<&str>,
    ) -> Result<Option<Principal>>;
}

/// Admits every call, as the caller it claims to be: for in-process tests of a core and for
/// clients (which never enforce).
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

#[async_trait]
impl AccessGuard for AllowAll {
    async fn admit(
        &self,
        _ctx: &RequestContext,
        _method: &MethodAccess,
        _owner: Option<&str>,
    ) -> Result<Option<Principal>> {
        Ok(None)
    }
}

/// A permission a service owns, as it declares it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PermissionDecl {
    /// `service.resource.action`.
    pub name: &'static str,
    pub description: &'static str,
    /// Granted to the built-in role `user` when authz first learns of it.
    pub granted_to_users: bool,
    /// The relations on one resource that imply the permission there (`owner`, `editor`).
    pub relations: &'static [&'static str],
}

/// What the runtime needs of a generated contract to serve it: its name in the registry,
/// the gRPC service, the HTTP prefixes it announces, its OpenAPI fragment, its methods'
/// access rules and the permissions it declares.
#[derive(Debug, Clone, Copy)]
pub struct ContractInfo {
    /// The registry name of the service that implements it (`notes`).
    pub service: &'static str,
    /// The fully qualified gRPC service (`plt.notes.v1.NotesService`).
    pub grpc_service: &'static str,
    /// Path prefixes of its HTTP routes (`/v1/notes`), announced to the gateway.
    pub http_prefixes: &'static [&'static str],
    /// OpenAPI 3.1 document of its HTTP routes (paths and schemas), as JSON.
    pub openapi: &'static str,
    pub methods: &'static [MethodAccess],
    /// The permissions the service declares (registered with authz at every start).
    pub permissions: &'static [PermissionDecl],
    /// Encoded `FileDescriptorSet` (with imports), for gRPC reflection.
    pub descriptor_set: &'static [u8],
}

/// A contract implementation as the service runtime serves it: its description, and its
/// HTTP routes and gRPC service mounted on the host behind the runtime's guard. Generated
/// for each contract (`<Service>Serve`).
pub trait Serve: Send + Sync + 'static {
    fn info(&self) -> &'static ContractInfo;
    fn mount(
        &self,
        host: plt_kernel::ServiceHost,
        guard: std::sync::Arc<dyn AccessGuard>,
    ) -> plt_kernel::ServiceHost;
}
