//! HTTP/JSON adapters for the auth contract.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | /v1/auth/login | `{email, password}` | 200 token pair |
//! | POST | /v1/auth/refresh | `{refresh_token}` | 200 token pair (the presented one is spent) |
//! | POST | /v1/auth/logout | `{refresh_token?, access_token?}` (or `Authorization: Bearer`) | 204 |
//! | POST | /v1/auth/validate | `{token}` (internal) | 200 claims |
//! | GET | /.well-known/jwks.json | | 200 JWKS |
//! | POST | /v1/auth/service-token | `{service, secret, audience}` (services only) | 200 `{token, expires_in}` |
//! | POST | /v1/auth/users/{id}/end-sessions | `{reason}` (internal: identity) | 200 `{ended}` |
//!
//! Token answers carry `Cache-Control: no-store` (RFC 6749 §5.1).

use super::{AuthServiceClient, Jwks, TokenClaims, TokenResponse};
use crate::{
    RequestContext, Result,
    http_api::{ApiError, ApiJson, JsonClient, json_response, parse_json},
    service_identity::ServiceToken,
};
use async_trait::async_trait;
use axum::{
    Router,
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use plt_kernel::Secret;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LoginBody {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefreshBody {
    pub refresh_token: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogoutBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateBody {
    pub token: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceTokenRequestBody {
    pub service: String,
    pub secret: String,
    pub audience: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ServiceTokenBody {
    pub token: String,
    pub expires_in: u32,
}

/// The wire form of a token pair (RFC 6749 §5.1 names).
#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = TokenPair))]
pub struct TokenBody {
    pub access_token: String,
    pub refresh_token: String,
    pub token_type: String,
    pub expires_in: u32,
}

type Svc = Arc<dyn AuthServiceClient>;
type HttpResult = std::result::Result<Response, ApiError>;

/// The auth HTTP API, to be hosted by the service.
pub fn routes(svc: Svc) -> Router {
    Router::new()
        .route("/v1/auth/login", post(login))
        .route("/v1/auth/refresh", post(refresh))
        .route("/v1/auth/logout", post(logout))
        .route("/v1/auth/validate", post(validate))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/v1/auth/service-token", post(service_token))
        .route("/v1/auth/users/{id}/end-sessions", post(end_sessions))
        .with_state(svc)
}

fn token_response(t: TokenResponse) -> Response {
    let body = TokenBody {
        access_token: t.access_token.into_inner(),
        refresh_token: t.refresh_token.into_inner(),
        token_type: t.token_type,
        expires_in: t.expires_in,
    };
    let mut resp = json_response(StatusCode::OK, &body);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

async fn login(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<LoginBody>,
) -> HttpResult {
    let t = svc.login(&ctx, &b.email, Secret::new(b.password)).await?;
    Ok(token_response(t))
}

async fn refresh(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<RefreshBody>,
) -> HttpResult {
    let t = svc
        .refresh_token(&ctx, Secret::new(b.refresh_token))
        .await?;
    Ok(token_response(t))
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndSessionsBody {
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct EndedBody {
    pub ended: u32,
}

async fn end_sessions(
    State(svc): State<Svc>,
    ctx: RequestContext,
    axum::extract::Path(id): axum::extract::Path<String>,
    ApiJson(b): ApiJson<EndSessionsBody>,
) -> HttpResult {
    let user = crate::wire::uuid("id", &id)?;
    let ended = svc.end_user_sessions(&ctx, user, &b.reason).await?;
    Ok(json_response(StatusCode::OK, &EndedBody { ended }))
}

async fn logout(
    State(svc): State<Svc>,
    ctx: RequestContext,
    body: axum::body::Bytes,
) -> HttpResult {
    // The body is optional: a bare `Authorization: Bearer` logout is allowed.
    let b: LogoutBody = if body.iter().all(u8::is_ascii_whitespace) {
        LogoutBody::default()
    } else {
        parse_json(&body)?
    };
    let access = b
        .access_token
        .or_else(|| ctx.bearer_token().map(str::to_owned))
        .map(Secret::new);
    svc.logout(&ctx, b.refresh_token.map(Secret::new), access)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn validate(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<ValidateBody>,
) -> HttpResult {
    let claims = svc.validate_token(&ctx, &b.token).await?;
    Ok(json_response(StatusCode::OK, &claims))
}

async fn jwks(State(svc): State<Svc>, ctx: RequestContext) -> HttpResult {
    let jwks = svc.get_jwks(&ctx).await?;
    let mut resp = json_response(StatusCode::OK, &jwks);
    // Short, so rotations and removals reach verifiers quickly; unknown kids refetch anyway.
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    Ok(resp)
}

async fn service_token(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<ServiceTokenRequestBody>,
) -> HttpResult {
    let t = svc
        .issue_service_token(&ctx, &b.service, Secret::new(b.secret), &b.audience)
        .await?;
    let body = ServiceTokenBody {
        token: t.token.into_inner(),
        expires_in: t.expires_in,
    };
    let mut resp = json_response(StatusCode::OK, &body);
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// The auth contract over HTTP/JSON.
#[derive(Clone)]
pub struct AuthHttpClient {
    api: JsonClient,
}

impl AuthHttpClient {
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        Self {
            api: JsonClient::new(http, base_url, "auth"),
        }
    }
}

fn from_body(b: TokenBody) -> TokenResponse {
    TokenResponse {
        access_token: Secret::new(b.access_token),
        refresh_token: Secret::new(b.refresh_token),
        token_type: b.token_type,
        expires_in: b.expires_in,
    }
}

#[async_trait]
impl AuthServiceClient for AuthHttpClient {
    async fn login(
        &self,
        ctx: &RequestContext,
        email: &str,
        password: Secret<String>,
    ) -> Result<TokenResponse> {
        let body = LoginBody {
            email: email.to_owned(),
            password: password.into_inner(),
        };
        let rb = self
            .api
            .request(ctx, reqwest::Method::POST, "/v1/auth/login")
            .json(&body);
        self.api.json(rb).await.map(from_body)
    }

    async fn refresh_token(
        &self,
        ctx: &RequestContext,
        refresh_token: Secret<String>,
    ) -> Result<TokenResponse> {
        let body = RefreshBody {
            refresh_token: refresh_token.into_inner(),
        };
        let rb = self
            .api
            .request(ctx, reqwest::Method::POST, "/v1/auth/refresh")
            .json(&body);
        self.api.json(rb).await.map(from_body)
    }

    async fn validate_token(&self, ctx: &RequestContext, token: &str) -> Result<TokenClaims> {
        let body = ValidateBody {
            token: token.to_owned(),
        };
        let rb = self
            .api
            .request(ctx, reqwest::Method::POST, "/v1/auth/validate")
            .json(&body);
        self.api.json(rb).await
    }

    async fn logout(
        &self,
        ctx: &RequestContext,
        refresh_token: Option<Secret<String>>,
        access_token: Option<Secret<String>>,
    ) -> Result<()> {
        let body = LogoutBody {
            refresh_token: refresh_token.map(Secret::into_inner),
            access_token: access_token.map(Secret::into_inner),
        };
        let rb = self
            .api
            .request(ctx, reqwest::Method::POST, "/v1/auth/logout")
            .json(&body);
        self.api.send(rb).await.map(drop)
    }

    async fn end_user_sessions(
        &self,
        ctx: &RequestContext,
        user_id: uuid::Uuid,
        reason: &str,
    ) -> Result<u32> {
        let rb = self
            .api
            .request(
                ctx,
                reqwest::Method::POST,
                &format!("/v1/auth/users/{user_id}/end-sessions"),
            )
            .json(&EndSessionsBody {
                reason: reason.to_owned(),
            });
        let b: EndedBody = self.api.json(rb).await?;
        Ok(b.ended)
    }

    async fn get_jwks(&self, ctx: &RequestContext) -> Result<Jwks> {
        let rb = self
            .api
            .request(ctx, reqwest::Method::GET, "/.well-known/jwks.json");
        self.api.json(rb).await
    }

    async fn issue_service_token(
        &self,
        ctx: &RequestContext,
        service: &str,
        secret: Secret<String>,
        audience: &str,
    ) -> Result<ServiceToken> {
        let body = ServiceTokenRequestBody {
            service: service.to_owned(),
            secret: secret.into_inner(),
            audience: audience.to_owned(),
        };
        let rb = self
            .api
            .request(ctx, reqwest::Method::POST, "/v1/auth/service-token")
            .json(&body);
        let b: ServiceTokenBody = self.api.json(rb).await?;
        Ok(ServiceToken {
            token: Secret::new(b.token),
            expires_in: b.expires_in,
        })
    }
}
