//! gRPC adapters for the auth contract.

use super::{AuthServiceClient, Jwk, Jwks, TokenClaims, TokenResponse};
use crate::{RequestContext, Result, pb::auth::v1 as pb, service_identity::ServiceToken, wire};
use async_trait::async_trait;
use plt_kernel::Secret;
use std::sync::Arc;
use tonic::{Request, Response, Status, transport::Channel};

pub use pb::auth_service_server::AuthServiceServer;

fn tokens_to_pb(t: TokenResponse) -> pb::TokenResponse {
    pb::TokenResponse {
        access_token: t.access_token.into_inner(),
        refresh_token: t.refresh_token.into_inner(),
        token_type: t.token_type,
        expires_in: t.expires_in,
    }
}

fn tokens_from_pb(t: pb::TokenResponse) -> TokenResponse {
    TokenResponse {
        access_token: Secret::new(t.access_token),
        refresh_token: Secret::new(t.refresh_token),
        token_type: t.token_type,
        expires_in: t.expires_in,
    }
}

fn claims_to_pb(c: TokenClaims) -> pb::TokenClaims {
    pb::TokenClaims {
        sub: c.sub,
        iss: c.iss,
        aud: c.aud,
        exp: c.exp,
        iat: c.iat,
        nbf: c.nbf,
        jti: c.jti,
        scope: c.scope,
        sid: c.sid,
    }
}

fn claims_from_pb(c: pb::TokenClaims) -> TokenClaims {
    TokenClaims {
        sub: c.sub,
        iss: c.iss,
        aud: c.aud,
        exp: c.exp,
        iat: c.iat,
        nbf: c.nbf,
        jti: c.jti,
        scope: c.scope,
        sid: c.sid,
    }
}

fn jwk_to_pb(k: Jwk) -> pb::Jwk {
    pb::Jwk {
        kty: k.kty,
        crv: k.crv,
        x: k.x,
        y: k.y,
        kid: k.kid,
        alg: k.alg,
        r#use: k.use_,
    }
}

fn jwk_from_pb(k: pb::Jwk) -> Jwk {
    Jwk {
        kty: k.kty,
        crv: k.crv,
        x: k.x,
        y: k.y,
        kid: k.kid,
        alg: k.alg,
        use_: k.r#use,
    }
}

/// Serves the auth contract over gRPC.
#[derive(Clone)]
pub struct AuthGrpcServer {
    inner: Arc<dyn AuthServiceClient>,
}

impl AuthGrpcServer {
    pub fn new(inner: Arc<dyn AuthServiceClient>) -> AuthServiceServer<Self> {
        AuthServiceServer::new(Self { inner })
    }
}

type GrpcResult<T> = std::result::Result<Response<T>, Status>;

#[tonic::async_trait]
impl pb::auth_service_server::AuthService for AuthGrpcServer {
    async fn login(&self, req: Request<pb::LoginRequest>) -> GrpcResult<pb::TokenResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        let t = self
            .inner
            .login(&ctx, &r.email, Secret::new(r.password))
            .await?;
        Ok(Response::new(tokens_to_pb(t)))
    }

    async fn refresh_token(
        &self,
        req: Request<pb::RefreshTokenRequest>,
    ) -> GrpcResult<pb::TokenResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        let t = self
            .inner
            .refresh_token(&ctx, Secret::new(r.refresh_token))
            .await?;
        Ok(Response::new(tokens_to_pb(t)))
    }

    async fn validate_token(
        &self,
        req: Request<pb::ValidateTokenRequest>,
    ) -> GrpcResult<pb::TokenClaims> {
        let ctx = RequestContext::from_grpc(&req);
        let c = self
            .inner
            .validate_token(&ctx, &req.get_ref().token)
            .await?;
        Ok(Response::new(claims_to_pb(c)))
    }

    async fn logout(&self, req: Request<pb::LogoutRequest>) -> GrpcResult<pb::LogoutResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        self.inner
            .logout(
                &ctx,
                wire::non_empty(r.refresh_token).map(Secret::new),
                wire::non_empty(r.access_token).map(Secret::new),
            )
            .await?;
        Ok(Response::new(pb::LogoutResponse {}))
    }

    async fn end_user_sessions(
        &self,
        req: Request<pb::EndUserSessionsRequest>,
    ) -> GrpcResult<pb::EndUserSessionsResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        let user = wire::uuid("user_id", &r.user_id)?;
        let ended = self.inner.end_user_sessions(&ctx, user, &r.reason).await?;
        Ok(Response::new(pb::EndUserSessionsResponse { ended }))
    }

    async fn get_jwks(&self, req: Request<pb::GetJwksRequest>) -> GrpcResult<pb::Jwks> {
        let ctx = RequestContext::from_grpc(&req);
        let jwks = self.inner.get_jwks(&ctx).await?;
        Ok(Response::new(pb::Jwks {
            keys: jwks.keys.into_iter().map(jwk_to_pb).collect(),
        }))
    }

    async fn issue_service_token(
        &self,
        req: Request<pb::IssueServiceTokenRequest>,
    ) -> GrpcResult<pb::ServiceTokenResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        let t = self
            .inner
            .issue_service_token(&ctx, &r.service, Secret::new(r.secret), &r.audience)
            .await?;
        Ok(Response::new(pb::ServiceTokenResponse {
            token: t.token.into_inner(),
            expires_in: t.expires_in,
        }))
    }
}

/// The auth contract over gRPC.
#[derive(Clone)]
pub struct AuthGrpcClient {
    client: pb::auth_service_client::AuthServiceClient<Channel>,
}

impl AuthGrpcClient {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: pb::auth_service_client::AuthServiceClient::new(channel),
        }
    }

    pub fn connect_lazy(endpoint: &str) -> Result<Self> {
        Ok(Self::new(crate::rt::lazy_channel(endpoint)?))
    }
}

#[async_trait]
impl AuthServiceClient for AuthGrpcClient {
    async fn login(
        &self,
        ctx: &RequestContext,
        email: &str,
        password: Secret<String>,
    ) -> Result<TokenResponse> {
        let req = ctx.grpc_request(pb::LoginRequest {
            email: email.to_owned(),
            password: password.into_inner(),
        });
        Ok(tokens_from_pb(
            self.client.clone().login(req).await?.into_inner(),
        ))
    }

    async fn refresh_token(
        &self,
        ctx: &RequestContext,
        refresh_token: Secret<String>,
    ) -> Result<TokenResponse> {
        let req = ctx.grpc_request(pb::RefreshTokenRequest {
            refresh_token: refresh_token.into_inner(),
        });
        Ok(tokens_from_pb(
            self.client.clone().refresh_token(req).await?.into_inner(),
        ))
    }

    async fn validate_token(&self, ctx: &RequestContext, token: &str) -> Result<TokenClaims> {
        let req = ctx.grpc_request(pb::ValidateTokenRequest {
            token: token.to_owned(),
        });
        Ok(claims_from_pb(
            self.client.clone().validate_token(req).await?.into_inner(),
        ))
    }

    async fn logout(
        &self,
        ctx: &RequestContext,
        refresh_token: Option<Secret<String>>,
        access_token: Option<Secret<String>>,
    ) -> Result<()> {
        let req = ctx.grpc_request(pb::LogoutRequest {
            refresh_token: refresh_token.map(Secret::into_inner).unwrap_or_default(),
            access_token: access_token.map(Secret::into_inner).unwrap_or_default(),
        });
        self.client.clone().logout(req).await?;
        Ok(())
    }

    async fn end_user_sessions(
        &self,
        ctx: &RequestContext,
        user_id: uuid::Uuid,
        reason: &str,
    ) -> Result<u32> {
        let req = ctx.grpc_request(pb::EndUserSessionsRequest {
            user_id: user_id.to_string(),
            reason: reason.to_owned(),
        });
        Ok(self
            .client
            .clone()
            .end_user_sessions(req)
            .await?
            .into_inner()
            .ended)
    }

    async fn get_jwks(&self, ctx: &RequestContext) -> Result<Jwks> {
        let req = ctx.grpc_request(pb::GetJwksRequest {});
        let r = self.client.clone().get_jwks(req).await?.into_inner();
        Ok(Jwks {
            keys: r.keys.into_iter().map(jwk_from_pb).collect(),
        })
    }

    async fn issue_service_token(
        &self,
        ctx: &RequestContext,
        service: &str,
        secret: Secret<String>,
        audience: &str,
    ) -> Result<ServiceToken> {
        let req = ctx.grpc_request(pb::IssueServiceTokenRequest {
            service: service.to_owned(),
            secret: secret.into_inner(),
            audience: audience.to_owned(),
        });
        let r = self
            .client
            .clone()
            .issue_service_token(req)
            .await?
            .into_inner();
        Ok(ServiceToken {
            token: Secret::new(r.token),
            expires_in: r.expires_in,
        })
    }
}
