//! The core contracts as the service runtime serves them ([`Serve`]): the hand-written
//! gRPC and HTTP adapters of identity, auth, authz and audit, their announced HTTP prefixes
//! and the permissions each service owns (declared to authz by the service at start).
//!
//! Their methods' access is still checked inside each core (service guards, authz calls);
//! declared per-method rules, enforced by the runtime as for generated contracts, replace
//! that method by method.

use crate::{
    FILE_DESCRIPTOR_SET,
    access::{AccessGuard, ContractInfo, PermissionDecl, Serve},
};
use plt_kernel::ServiceHost;
use std::sync::Arc;

macro_rules! core_serve {
    (
        $(#[$doc:meta])*
        $serve:ident, $info:ident, $trait:path, $service:literal, $grpc:literal,
        prefixes: [$($prefix:literal),*],
        permissions: [$(($perm:literal, $desc:literal, $users:literal)),*],
        routes: $routes:path, server: $server:path
    ) => {
        $(#[$doc])*
        pub const $info: ContractInfo = ContractInfo {
            service: $service,
            grpc_service: $grpc,
            http_prefixes: &[$($prefix),*],
            openapi: "",
            methods: &[],
            permissions: &[$(PermissionDecl { name: $perm, description: $desc, granted_to_users: $users }),*],
            descriptor_set: FILE_DESCRIPTOR_SET,
        };

        #[doc = concat!("The ", $service, " contract served by the runtime over gRPC and HTTP.")]
        pub struct $serve(pub Arc<dyn $trait>);

        impl Serve for $serve {
            fn info(&self) -> &'static ContractInfo {
                &$info
            }

            fn mount(&self, host: ServiceHost, _guard: Arc<dyn AccessGuard>) -> ServiceHost {
                host.http($routes(self.0.clone())).grpc($server(self.0.clone()))
            }
        }
    };
}

core_serve!(
    /// identity: users, credentials, verification and reset.
    IdentityServe, IDENTITY, crate::identity::IdentityServiceClient, "identity",
    "plt.identity.v1.IdentityService",
    prefixes: ["/v1/users", "/v1/password-reset"],
    permissions: [
        ("identity.users.read", "Read any user", false),
        ("identity.users.manage", "Create, update, disable and delete users", false),
        ("identity.users.read_self", "Read one's own profile", true),
        ("identity.users.update_self", "Change one's own profile", true)
    ],
    routes: crate::identity::http::routes, server: crate::identity::grpc::IdentityGrpcServer::new
);

core_serve!(
    /// auth: sign-in, tokens, keys, service tokens.
    AuthServe, AUTH, crate::auth::AuthServiceClient, "auth", "plt.auth.v1.AuthService",
    prefixes: ["/v1/auth", "/.well-known/jwks.json"],
    permissions: [],
    routes: crate::auth::http::routes, server: crate::auth::grpc::AuthGrpcServer::new
);

core_serve!(
    /// authz: roles, grants, decisions. Its own permissions are declared by authz itself
    /// (it is where they are kept).
    AuthzServe, AUTHZ, crate::authz::AuthzServiceClient, "authz", "plt.authz.v1.AuthzService",
    prefixes: ["/v1/authz"],
    permissions: [],
    routes: crate::authz::http::routes, server: crate::authz::grpc::AuthzGrpcServer::new
);

core_serve!(
    /// audit: the append-only, hash-chained log.
    AuditServe, AUDIT, crate::audit::AuditServiceClient, "audit", "plt.audit.v1.AuditService",
    prefixes: ["/v1/audit/logs", "/v1/audit/verify"],
    permissions: [
        ("audit.logs.read", "Query the audit log", false),
        ("audit.logs.verify", "Verify the audit log's hash chain", false)
    ],
    routes: crate::audit::http::routes, server: crate::audit::grpc::AuditGrpcServer::new
);
