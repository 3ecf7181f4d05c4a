//! The core contracts as the service runtime serves them ([`Serve`]): the hand-written
//! gRPC and HTTP adapters of identity, auth, authz and audit, their announced HTTP prefixes
//! and the permissions each service owns (declared to authz by the service at start).
//!
//! Each method's access rule ([`crate::guarded`]) is enforced by the runtime's guard before
//! the core runs, over gRPC and HTTP alike, as for generated contracts.

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
        methods: $methods:path, guarded: $guarded:path,
        routes: $routes:path, server: $server:path
    ) => {
        $(#[$doc])*
        pub const $info: ContractInfo = ContractInfo {
            service: $service,
            grpc_service: $grpc,
            http_prefixes: &[$($prefix),*],
            openapi: "",
            methods: $methods,
            permissions: &[$(PermissionDecl { name: $perm, description: $desc, granted_to_users: $users, relations: &[] }),*],
            descriptor_set: FILE_DESCRIPTOR_SET,
        };

        #[doc = concat!("The ", $service, " contract served by the runtime over gRPC and HTTP.")]
        pub struct $serve(pub Arc<dyn $trait>);

        impl Serve for $serve {
            fn info(&self) -> &'static ContractInfo {
                &$info
            }

            fn mount(&self, host: ServiceHost, guard: Arc<dyn AccessGuard>) -> ServiceHost {
                let guarded: Arc<dyn $trait> = Arc::new($guarded(self.0.clone(), guard));
                host.http($routes(guarded.clone())).grpc($server(guarded))
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
    methods: crate::guarded::IDENTITY_METHODS, guarded: crate::guarded::GuardedIdentity::new,
    routes: crate::identity::http::routes, server: crate::identity::grpc::IdentityGrpcServer::new
);

core_serve!(
    /// auth: sign-in, tokens, keys, service tokens.
    AuthServe, AUTH, crate::auth::AuthServiceClient, "auth", "plt.auth.v1.AuthService",
    prefixes: ["/v1/auth", "/.well-known/jwks.json"],
    permissions: [],
    methods: crate::guarded::AUTH_METHODS, guarded: crate::guarded::GuardedAuth::new,
    routes: crate::auth::http::routes, server: crate::auth::grpc::AuthGrpcServer::new
);

core_serve!(
    /// authz: roles, grants, decisions. Its own permissions are declared by authz itself
    /// (it is where they are kept).
    AuthzServe, AUTHZ, crate::authz::AuthzServiceClient, "authz", "plt.authz.v1.AuthzService",
    prefixes: ["/v1/authz"],
    permissions: [],
    methods: crate::guarded::AUTHZ_METHODS, guarded: crate::guarded::GuardedAuthz::new,
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
    methods: crate::guarded::AUDIT_METHODS, guarded: crate::guarded::GuardedAudit::new,
    routes: crate::audit::http::routes, server: crate::audit::grpc::AuditGrpcServer::new
);
