//! gRPC adapters for the identity contract: a tonic server over `Arc<dyn
//! IdentityServiceClient>` and a client implementing the trait over a tonic channel.

use super::{IdentityServiceClient, NewUser, PageRequest, User, UserPage, UserStatus, UserUpdate};
use crate::{Error, RequestContext, Result, pb::identity::v1 as pb, wire};
use async_trait::async_trait;
use plt_kernel::Secret;
use std::sync::Arc;
use tonic::{Request, Response, Status, transport::Channel};
use uuid::Uuid;

pub use pb::identity_service_server::IdentityServiceServer;

fn status_to_pb(s: UserStatus) -> i32 {
    match s {
        UserStatus::Active => pb::UserStatus::Active as i32,
        UserStatus::Disabled => pb::UserStatus::Disabled as i32,
    }
}

fn status_from_pb(field: &str, v: i32) -> Result<UserStatus> {
    match pb::UserStatus::try_from(v) {
        Ok(pb::UserStatus::Active) => Ok(UserStatus::Active),
        Ok(pb::UserStatus::Disabled) => Ok(UserStatus::Disabled),
        _ => Err(Error::invalid(
            field,
            "must be USER_STATUS_ACTIVE or USER_STATUS_DISABLED",
        )),
    }
}

pub fn user_to_pb(u: &User) -> pb::User {
    pb::User {
        id: u.id.to_string(),
        email: u.email.clone(),
        display_name: u.display_name.clone(),
        status: status_to_pb(u.status),
        email_verified: u.email_verified,
        created_at: Some(wire::timestamp(u.created_at)),
        updated_at: Some(wire::timestamp(u.updated_at)),
    }
}

pub fn user_from_pb(u: pb::User) -> Result<User> {
    Ok(User {
        id: wire::uuid("id", &u.id)?,
        email: u.email,
        display_name: u.display_name,
        status: status_from_pb("status", u.status)?,
        email_verified: u.email_verified,
        created_at: wire::time("created_at", u.created_at)?,
        updated_at: wire::time("updated_at", u.updated_at)?,
    })
}

/// Serves the identity contract over gRPC.
#[derive(Clone)]
pub struct IdentityGrpcServer {
    inner: Arc<dyn IdentityServiceClient>,
}

impl IdentityGrpcServer {
    pub fn new(inner: Arc<dyn IdentityServiceClient>) -> IdentityServiceServer<Self> {
        IdentityServiceServer::new(Self { inner })
    }
}

type GrpcResult<T> = std::result::Result<Response<T>, Status>;

fn ok<T>(v: T) -> GrpcResult<T> {
    Ok(Response::new(v))
}

#[tonic::async_trait]
impl pb::identity_service_server::IdentityService for IdentityGrpcServer {
    async fn get_user(&self, req: Request<pb::GetUserRequest>) -> GrpcResult<pb::User> {
        let ctx = RequestContext::from_grpc(&req);
        let id = wire::uuid("id", &req.get_ref().id)?;
        ok(user_to_pb(&self.inner.get_user(&ctx, id).await?))
    }

    async fn get_user_by_email(
        &self,
        req: Request<pb::GetUserByEmailRequest>,
    ) -> GrpcResult<pb::User> {
        let ctx = RequestContext::from_grpc(&req);
        ok(user_to_pb(
            &self
                .inner
                .get_user_by_email(&ctx, &req.get_ref().email)
                .await?,
        ))
    }

    async fn list_users(
        &self,
        req: Request<pb::ListUsersRequest>,
    ) -> GrpcResult<pb::ListUsersResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        let page = PageRequest {
            page_size: r.page_size,
            page_token: wire::non_empty(r.page_token),
        };
        let result = self.inner.list_users(&ctx, page).await?;
        ok(pb::ListUsersResponse {
            users: result.users.iter().map(user_to_pb).collect(),
            next_page_token: result.next_page_token.unwrap_or_default(),
        })
    }

    async fn create_user(&self, req: Request<pb::CreateUserRequest>) -> GrpcResult<pb::User> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        let user = NewUser {
            email: r.email,
            password: Secret::new(r.password),
            display_name: r.display_name,
        };
        ok(user_to_pb(&self.inner.create_user(&ctx, user).await?))
    }

    async fn update_user(&self, req: Request<pb::UpdateUserRequest>) -> GrpcResult<pb::User> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        let id = wire::uuid("id", &r.id)?;
        let update = UserUpdate {
            email: r.email,
            display_name: r.display_name,
            status: r.status.map(|s| status_from_pb("status", s)).transpose()?,
        };
        ok(user_to_pb(&self.inner.update_user(&ctx, id, update).await?))
    }

    async fn delete_user(
        &self,
        req: Request<pb::DeleteUserRequest>,
    ) -> GrpcResult<pb::DeleteUserResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let id = wire::uuid("id", &req.get_ref().id)?;
        self.inner.delete_user(&ctx, id).await?;
        ok(pb::DeleteUserResponse {})
    }

    async fn verify_email(
        &self,
        req: Request<pb::VerifyEmailRequest>,
    ) -> GrpcResult<pb::VerifyEmailResponse> {
        let ctx = RequestContext::from_grpc(&req);
        self.inner.verify_email(&ctx, &req.get_ref().token).await?;
        ok(pb::VerifyEmailResponse {})
    }

    async fn request_password_reset(
        &self,
        req: Request<pb::RequestPasswordResetRequest>,
    ) -> GrpcResult<pb::RequestPasswordResetResponse> {
        let ctx = RequestContext::from_grpc(&req);
        self.inner
            .request_password_reset(&ctx, &req.get_ref().email)
            .await?;
        ok(pb::RequestPasswordResetResponse {})
    }

    async fn reset_password(
        &self,
        req: Request<pb::ResetPasswordRequest>,
    ) -> GrpcResult<pb::ResetPasswordResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        self.inner
            .reset_password(&ctx, &r.token, Secret::new(r.new_password))
            .await?;
        ok(pb::ResetPasswordResponse {})
    }

    async fn verify_credentials(
        &self,
        req: Request<pb::VerifyCredentialsRequest>,
    ) -> GrpcResult<pb::User> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        let user = self
            .inner
            .verify_credentials(&ctx, &r.email, Secret::new(r.password))
            .await?;
        ok(user_to_pb(&user))
    }
}

/// The identity contract over gRPC. Cheap to clone; calls share one HTTP/2 connection.
#[derive(Clone)]
pub struct IdentityGrpcClient {
    client: pb::identity_service_client::IdentityServiceClient<Channel>,
}

impl IdentityGrpcClient {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: pb::identity_service_client::IdentityServiceClient::new(channel),
        }
    }

    /// A client for `endpoint` (`http://host:port`, or `https://host:port` over TLS);
    /// connects on first use.
    pub fn connect_lazy(endpoint: &str) -> Result<Self> {
        Ok(Self::new(crate::rt::lazy_channel(endpoint)?))
    }
}

#[async_trait]
impl IdentityServiceClient for IdentityGrpcClient {
    async fn get_user(&self, ctx: &RequestContext, id: Uuid) -> Result<User> {
        let req = ctx.grpc_request(pb::GetUserRequest { id: id.to_string() });
        user_from_pb(self.client.clone().get_user(req).await?.into_inner())
    }

    async fn get_user_by_email(&self, ctx: &RequestContext, email: &str) -> Result<User> {
        let req = ctx.grpc_request(pb::GetUserByEmailRequest {
            email: email.to_owned(),
        });
        user_from_pb(
            self.client
                .clone()
                .get_user_by_email(req)
                .await?
                .into_inner(),
        )
    }

    async fn list_users(&self, ctx: &RequestContext, page: PageRequest) -> Result<UserPage> {
        let req = ctx.grpc_request(pb::ListUsersRequest {
            page_size: page.page_size,
            page_token: page.page_token.unwrap_or_default(),
        });
        let r = self.client.clone().list_users(req).await?.into_inner();
        Ok(UserPage {
            users: r
                .users
                .into_iter()
                .map(user_from_pb)
                .collect::<Result<_>>()?,
            next_page_token: wire::non_empty(r.next_page_token),
        })
    }

    async fn create_user(&self, ctx: &RequestContext, user: NewUser) -> Result<User> {
        let req = ctx.grpc_request(pb::CreateUserRequest {
            email: user.email,
            password: user.password.into_inner(),
            display_name: user.display_name,
        });
        user_from_pb(self.client.clone().create_user(req).await?.into_inner())
    }

    async fn update_user(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        update: UserUpdate,
    ) -> Result<User> {
        let req = ctx.grpc_request(pb::UpdateUserRequest {
            id: id.to_string(),
            email: update.email,
            display_name: update.display_name,
            status: update.status.map(status_to_pb),
        });
        user_from_pb(self.client.clone().update_user(req).await?.into_inner())
    }

    async fn delete_user(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        let req = ctx.grpc_request(pb::DeleteUserRequest { id: id.to_string() });
        self.client.clone().delete_user(req).await?;
        Ok(())
    }

    async fn verify_email(&self, ctx: &RequestContext, token: &str) -> Result<()> {
        let req = ctx.grpc_request(pb::VerifyEmailRequest {
            token: token.to_owned(),
        });
        self.client.clone().verify_email(req).await?;
        Ok(())
    }

    async fn request_password_reset(&self, ctx: &RequestContext, email: &str) -> Result<()> {
        let req = ctx.grpc_request(pb::RequestPasswordResetRequest {
            email: email.to_owned(),
        });
        self.client.clone().request_password_reset(req).await?;
        Ok(())
    }

    async fn reset_password(
        &self,
        ctx: &RequestContext,
        token: &str,
        new_password: Secret<String>,
    ) -> Result<()> {
        let req = ctx.grpc_request(pb::ResetPasswordRequest {
            token: token.to_owned(),
            new_password: new_password.into_inner(),
        });
        self.client.clone().reset_password(req).await?;
        Ok(())
    }

    async fn verify_credentials(
        &self,
        ctx: &RequestContext,
        email: &str,
        password: Secret<String>,
    ) -> Result<User> {
        let req = ctx.grpc_request(pb::VerifyCredentialsRequest {
            email: email.to_owned(),
            password: password.into_inner(),
        });
        user_from_pb(
            self.client
                .clone()
                .verify_credentials(req)
                .await?
                .into_inner(),
        )
    }
}
