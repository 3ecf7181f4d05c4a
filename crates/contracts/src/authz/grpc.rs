//! gRPC adapters for the authz contract: a tonic server over `Arc<dyn AuthzServiceClient>`
//! and a client implementing the trait over a tonic channel.

use super::{AuthzServiceClient, Permission, ResourceGrant, ResourceGrantFilter, Role};
use crate::{RequestContext, Result, pb::authz::v1 as pb, wire};
use async_trait::async_trait;
use std::sync::Arc;
use tonic::{Request, Response, Status, transport::Channel};
use uuid::Uuid;

pub use pb::authz_service_server::AuthzServiceServer;

fn permission_to_pb(p: Permission) -> pb::Permission {
    pb::Permission {
        name: p.name,
        description: p.description,
        granted_to_users: p.granted_to_users,
        relations: p.relations,
    }
}

fn permission_from_pb(p: pb::Permission) -> Permission {
    Permission {
        name: p.name,
        description: p.description,
        granted_to_users: p.granted_to_users,
        relations: p.relations,
    }
}

fn grant_to_pb(g: ResourceGrant) -> pb::ResourceGrant {
    pb::ResourceGrant {
        user_id: g.user_id.to_string(),
        resource: g.resource,
        grant: g.grant,
        granted_by: g.granted_by,
    }
}

fn grant_from_pb(g: pb::ResourceGrant) -> Result<ResourceGrant> {
    Ok(ResourceGrant {
        user_id: user_id(&g.user_id)?,
        resource: g.resource,
        grant: g.grant,
        granted_by: g.granted_by,
    })
}

fn role_to_pb(r: Role) -> pb::Role {
    pb::Role {
        name: r.name,
        description: r.description,
        permissions: r.permissions,
        built_in: r.built_in,
    }
}

fn role_from_pb(r: pb::Role) -> Role {
    Role {
        name: r.name,
        description: r.description,
        permissions: r.permissions,
        built_in: r.built_in,
    }
}

fn user_id(raw: &str) -> Result<Uuid> {
    wire::uuid("user_id", raw)
}

/// Serves the authz contract over gRPC.
#[derive(Clone)]
pub struct AuthzGrpcServer {
    inner: Arc<dyn AuthzServiceClient>,
}

impl AuthzGrpcServer {
    pub fn new(inner: Arc<dyn AuthzServiceClient>) -> AuthzServiceServer<Self> {
        AuthzServiceServer::new(Self { inner })
    }
}

type GrpcResult<T> = std::result::Result<Response<T>, Status>;

fn ok<T>(v: T) -> GrpcResult<T> {
    Ok(Response::new(v))
}

#[tonic::async_trait]
impl pb::authz_service_server::AuthzService for AuthzGrpcServer {
    async fn authorize(
        &self,
        req: Request<pb::AuthorizeRequest>,
    ) -> GrpcResult<pb::AuthorizeResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        self.inner
            .authorize(&ctx, user_id(&r.user_id)?, &r.permission)
            .await?;
        ok(pb::AuthorizeResponse {})
    }

    async fn has_permission(
        &self,
        req: Request<pb::HasPermissionRequest>,
    ) -> GrpcResult<pb::HasPermissionResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        let allowed = self
            .inner
            .has_permission(&ctx, user_id(&r.user_id)?, &r.permission)
            .await?;
        ok(pb::HasPermissionResponse { allowed })
    }

    async fn get_user_permissions(
        &self,
        req: Request<pb::GetUserPermissionsRequest>,
    ) -> GrpcResult<pb::GetUserPermissionsResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let id = user_id(&req.get_ref().user_id)?;
        let permissions = self.inner.get_user_permissions(&ctx, id).await?;
        ok(pb::GetUserPermissionsResponse {
            permissions: permissions.into_iter().map(permission_to_pb).collect(),
        })
    }

    async fn get_user_roles(
        &self,
        req: Request<pb::GetUserRolesRequest>,
    ) -> GrpcResult<pb::GetUserRolesResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let id = user_id(&req.get_ref().user_id)?;
        let roles = self.inner.get_user_roles(&ctx, id).await?;
        ok(pb::GetUserRolesResponse { roles })
    }

    async fn list_roles(
        &self,
        req: Request<pb::ListRolesRequest>,
    ) -> GrpcResult<pb::ListRolesResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let roles = self.inner.list_roles(&ctx).await?;
        ok(pb::ListRolesResponse {
            roles: roles.into_iter().map(role_to_pb).collect(),
        })
    }

    async fn register_permissions(
        &self,
        req: Request<pb::RegisterPermissionsRequest>,
    ) -> GrpcResult<pb::RegisterPermissionsResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        self.inner
            .register_permissions(
                &ctx,
                &r.service,
                r.permissions.into_iter().map(permission_from_pb).collect(),
            )
            .await?;
        ok(pb::RegisterPermissionsResponse {})
    }

    async fn create_role(&self, req: Request<pb::CreateRoleRequest>) -> GrpcResult<pb::Role> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        let role = Role {
            name: r.name,
            description: r.description,
            permissions: r.permissions,
            built_in: false,
        };
        ok(role_to_pb(self.inner.create_role(&ctx, role).await?))
    }

    async fn delete_role(
        &self,
        req: Request<pb::DeleteRoleRequest>,
    ) -> GrpcResult<pb::DeleteRoleResponse> {
        let ctx = RequestContext::from_grpc(&req);
        self.inner.delete_role(&ctx, &req.get_ref().name).await?;
        ok(pb::DeleteRoleResponse {})
    }

    async fn set_role_permissions(
        &self,
        req: Request<pb::SetRolePermissionsRequest>,
    ) -> GrpcResult<pb::Role> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        let role = self
            .inner
            .set_role_permissions(&ctx, &r.name, r.permissions)
            .await?;
        ok(role_to_pb(role))
    }

    async fn grant_role(
        &self,
        req: Request<pb::GrantRoleRequest>,
    ) -> GrpcResult<pb::GrantRoleResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        self.inner
            .grant_role(&ctx, user_id(&r.user_id)?, &r.role)
            .await?;
        ok(pb::GrantRoleResponse {})
    }

    async fn revoke_role(
        &self,
        req: Request<pb::RevokeRoleRequest>,
    ) -> GrpcResult<pb::RevokeRoleResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        self.inner
            .revoke_role(&ctx, user_id(&r.user_id)?, &r.role)
            .await?;
        ok(pb::RevokeRoleResponse {})
    }

    async fn check(&self, req: Request<pb::CheckRequest>) -> GrpcResult<pb::CheckResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        let allowed = self
            .inner
            .check(&ctx, user_id(&r.user_id)?, &r.permission, &r.resource)
            .await?;
        ok(pb::CheckResponse { allowed })
    }

    async fn grant_resource(
        &self,
        req: Request<pb::ResourceGrant>,
    ) -> GrpcResult<pb::ChangeResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let g = grant_from_pb(req.into_inner())?;
        let changed = self.inner.grant_resource(&ctx, g).await?;
        ok(pb::ChangeResponse { changed })
    }

    async fn revoke_resource(
        &self,
        req: Request<pb::ResourceGrant>,
    ) -> GrpcResult<pb::ChangeResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let g = grant_from_pb(req.into_inner())?;
        let changed = self.inner.revoke_resource(&ctx, g).await?;
        ok(pb::ChangeResponse { changed })
    }

    async fn list_resource_grants(
        &self,
        req: Request<pb::ListResourceGrantsRequest>,
    ) -> GrpcResult<pb::ListResourceGrantsResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        let filter = ResourceGrantFilter {
            user_id: if r.user_id.is_empty() {
                None
            } else {
                Some(user_id(&r.user_id)?)
            },
            resource: (!r.resource.is_empty()).then_some(r.resource),
        };
        let grants = self.inner.list_resource_grants(&ctx, filter).await?;
        ok(pb::ListResourceGrantsResponse {
            grants: grants.into_iter().map(grant_to_pb).collect(),
        })
    }
}

/// The authz contract over gRPC. Cheap to clone; calls share one HTTP/2 connection.
#[derive(Clone)]
pub struct AuthzGrpcClient {
    client: pb::authz_service_client::AuthzServiceClient<Channel>,
}

impl AuthzGrpcClient {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: pb::authz_service_client::AuthzServiceClient::new(channel),
        }
    }

    /// A client for `endpoint` (`http://host:port`, or `https://host:port` over TLS);
    /// connects on first use.
    pub fn connect_lazy(endpoint: &str) -> Result<Self> {
        Ok(Self::new(crate::rt::lazy_channel(endpoint)?))
    }
}

#[async_trait]
impl AuthzServiceClient for AuthzGrpcClient {
    async fn authorize(&self, ctx: &RequestContext, user_id: Uuid, permission: &str) -> Result<()> {
        let req = ctx.grpc_request(pb::AuthorizeRequest {
            user_id: user_id.to_string(),
            permission: permission.to_owned(),
        });
        self.client.clone().authorize(req).await?;
        Ok(())
    }

    async fn has_permission(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
    ) -> Result<bool> {
        let req = ctx.grpc_request(pb::HasPermissionRequest {
            user_id: user_id.to_string(),
            permission: permission.to_owned(),
        });
        Ok(self
            .client
            .clone()
            .has_permission(req)
            .await?
            .into_inner()
            .allowed)
    }

    async fn get_user_permissions(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
    ) -> Result<Vec<Permission>> {
        let req = ctx.grpc_request(pb::GetUserPermissionsRequest {
            user_id: user_id.to_string(),
        });
        let r = self
            .client
            .clone()
            .get_user_permissions(req)
            .await?
            .into_inner();
        Ok(r.permissions.into_iter().map(permission_from_pb).collect())
    }

    async fn get_user_roles(&self, ctx: &RequestContext, user_id: Uuid) -> Result<Vec<String>> {
        let req = ctx.grpc_request(pb::GetUserRolesRequest {
            user_id: user_id.to_string(),
        });
        Ok(self
            .client
            .clone()
            .get_user_roles(req)
            .await?
            .into_inner()
            .roles)
    }

    async fn list_roles(&self, ctx: &RequestContext) -> Result<Vec<Role>> {
        let req = ctx.grpc_request(pb::ListRolesRequest {});
        let r = self.client.clone().list_roles(req).await?.into_inner();
        Ok(r.roles.into_iter().map(role_from_pb).collect())
    }

    async fn register_permissions(
        &self,
        ctx: &RequestContext,
        service: &str,
        permissions: Vec<Permission>,
    ) -> Result<()> {
        let req = ctx.grpc_request(pb::RegisterPermissionsRequest {
            service: service.to_owned(),
            permissions: permissions.into_iter().map(permission_to_pb).collect(),
        });
        self.client.clone().register_permissions(req).await?;
        Ok(())
    }

    async fn create_role(&self, ctx: &RequestContext, role: Role) -> Result<Role> {
        let req = ctx.grpc_request(pb::CreateRoleRequest {
            name: role.name,
            description: role.description,
            permissions: role.permissions,
        });
        Ok(role_from_pb(
            self.client.clone().create_role(req).await?.into_inner(),
        ))
    }

    async fn delete_role(&self, ctx: &RequestContext, name: &str) -> Result<()> {
        let req = ctx.grpc_request(pb::DeleteRoleRequest {
            name: name.to_owned(),
        });
        self.client.clone().delete_role(req).await?;
        Ok(())
    }

    async fn set_role_permissions(
        &self,
        ctx: &RequestContext,
        name: &str,
        permissions: Vec<String>,
    ) -> Result<Role> {
        let req = ctx.grpc_request(pb::SetRolePermissionsRequest {
            name: name.to_owned(),
            permissions,
        });
        Ok(role_from_pb(
            self.client
                .clone()
                .set_role_permissions(req)
                .await?
                .into_inner(),
        ))
    }

    async fn grant_role(&self, ctx: &RequestContext, user_id: Uuid, role: &str) -> Result<()> {
        let req = ctx.grpc_request(pb::GrantRoleRequest {
            user_id: user_id.to_string(),
            role: role.to_owned(),
        });
        self.client.clone().grant_role(req).await?;
        Ok(())
    }

    async fn revoke_role(&self, ctx: &RequestContext, user_id: Uuid, role: &str) -> Result<()> {
        let req = ctx.grpc_request(pb::RevokeRoleRequest {
            user_id: user_id.to_string(),
            role: role.to_owned(),
        });
        self.client.clone().revoke_role(req).await?;
        Ok(())
    }

    async fn check(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
        resource: &str,
    ) -> Result<bool> {
        let req = ctx.grpc_request(pb::CheckRequest {
            user_id: user_id.to_string(),
            permission: permission.to_owned(),
            resource: resource.to_owned(),
        });
        Ok(self.client.clone().check(req).await?.into_inner().allowed)
    }

    async fn grant_resource(&self, ctx: &RequestContext, grant: ResourceGrant) -> Result<bool> {
        let req = ctx.grpc_request(grant_to_pb(grant));
        Ok(self
            .client
            .clone()
            .grant_resource(req)
            .await?
            .into_inner()
            .changed)
    }

    async fn revoke_resource(&self, ctx: &RequestContext, grant: ResourceGrant) -> Result<bool> {
        let req = ctx.grpc_request(grant_to_pb(grant));
        Ok(self
            .client
            .clone()
            .revoke_resource(req)
            .await?
            .into_inner()
            .changed)
    }

    async fn list_resource_grants(
        &self,
        ctx: &RequestContext,
        filter: ResourceGrantFilter,
    ) -> Result<Vec<ResourceGrant>> {
        let req = ctx.grpc_request(pb::ListResourceGrantsRequest {
            user_id: filter.user_id.map(|u| u.to_string()).unwrap_or_default(),
            resource: filter.resource.unwrap_or_default(),
        });
        let r = self
            .client
            .clone()
            .list_resource_grants(req)
            .await?
            .into_inner();
        r.grants.into_iter().map(grant_from_pb).collect()
    }
}
