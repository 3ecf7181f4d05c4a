//! HTTP/JSON adapters for the identity contract: axum routes over `Arc<dyn
//! IdentityServiceClient>` and a client implementing the trait over reqwest.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | /v1/users | `{email, password, display_name?}` | 201 User |
//! | GET | /v1/users | `?page_size&page_token` or `?email=` | 200 `{users, next_page_token?}` |
//! | GET | /v1/users/{id} | | 200 User |
//! | PATCH | /v1/users/{id} | `{email?, display_name?, status?}` | 200 User |
//! | DELETE | /v1/users/{id} | | 204 |
//! | POST | /v1/users/verify-email | `{token}` | 204 |
//! | POST | /v1/password-reset | `{email}` | 202 |
//! | POST | /v1/password-reset/confirm | `{token, new_password}` | 204 |
//! | POST | /v1/credentials/verify | `{email, password}` (internal) | 200 User |
//!
//! Errors are RFC 9457 problem+json (see [`crate::error`]).

use super::{IdentityServiceClient, NewUser, PageRequest, User, UserPage, UserStatus, UserUpdate};
use crate::{
    Error, ErrorCode, RequestContext, Result,
    http_api::{ApiError, ApiJson, JsonClient, json_response},
};
use async_trait::async_trait;
use axum::{
    Router,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::Response,
    routing::{get, post},
};
use plt_kernel::Secret;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateUserBody {
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub display_name: String,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateUserBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<UserStatus>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct ListUsersQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_size: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = VerificationTokenBody))]
pub struct TokenBody {
    pub token: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmailBody {
    pub email: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResetPasswordBody {
    pub token: String,
    pub new_password: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsBody {
    pub email: String,
    pub password: String,
}

type Svc = Arc<dyn IdentityServiceClient>;
type HttpResult = std::result::Result<Response, ApiError>;

/// The identity HTTP API, to be hosted by the service.
pub fn routes(svc: Svc) -> Router {
    Router::new()
        .route("/v1/users", post(create_user).get(list_users))
        .route("/v1/users/verify-email", post(verify_email))
        .route(
            "/v1/users/{id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route("/v1/password-reset", post(request_password_reset))
        .route("/v1/password-reset/confirm", post(reset_password))
        .route("/v1/credentials/verify", post(verify_credentials))
        .with_state(svc)
}

fn path_id(raw: &str) -> Result<Uuid> {
    Uuid::parse_str(raw).map_err(|_| Error::invalid("id", "must be a UUID"))
}

async fn create_user(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<CreateUserBody>,
) -> HttpResult {
    let user = svc
        .create_user(
            &ctx,
            NewUser {
                email: b.email,
                password: Secret::new(b.password),
                display_name: b.display_name,
            },
        )
        .await?;
    Ok(json_response(StatusCode::CREATED, &user))
}

async fn list_users(
    State(svc): State<Svc>,
    ctx: RequestContext,
    query: std::result::Result<Query<ListUsersQuery>, QueryRejection>,
) -> HttpResult {
    let Query(q) = query.map_err(|e| Error::invalid("query", e.body_text()))?;
    if let Some(email) = q.email {
        if q.page_size.is_some() || q.page_token.is_some() {
            return Err(
                Error::invalid("email", "cannot be combined with page_size or page_token").into(),
            );
        }
        let users = match svc.get_user_by_email(&ctx, &email).await {
            Ok(u) => vec![u],
            Err(e) if e.code == ErrorCode::NotFound => vec![],
            Err(e) => return Err(e.into()),
        };
        return Ok(json_response(
            StatusCode::OK,
            &UserPage {
                users,
                next_page_token: None,
            },
        ));
    }
    let page = PageRequest {
        page_size: q.page_size.unwrap_or(0),
        page_token: q.page_token.filter(|t| !t.is_empty()),
    };
    Ok(json_response(
        StatusCode::OK,
        &svc.list_users(&ctx, page).await?,
    ))
}

async fn get_user(
    State(svc): State<Svc>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> HttpResult {
    let user = svc.get_user(&ctx, path_id(&id)?).await?;
    Ok(json_response(StatusCode::OK, &user))
}

async fn update_user(
    State(svc): State<Svc>,
    ctx: RequestContext,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<UpdateUserBody>,
) -> HttpResult {
    let update = UserUpdate {
        email: b.email,
        display_name: b.display_name,
        status: b.status,
    };
    let user = svc.update_user(&ctx, path_id(&id)?, update).await?;
    Ok(json_response(StatusCode::OK, &user))
}

async fn delete_user(
    State(svc): State<Svc>,
    ctx: RequestContext,
    Path(id): Path<String>,
) -> HttpResult {
    svc.delete_user(&ctx, path_id(&id)?).await?;
    Ok(no_content())
}

async fn verify_email(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<TokenBody>,
) -> HttpResult {
    svc.verify_email(&ctx, &b.token).await?;
    Ok(no_content())
}

async fn request_password_reset(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<EmailBody>,
) -> HttpResult {
    svc.request_password_reset(&ctx, &b.email).await?;
    Ok(axum::response::IntoResponse::into_response(
        StatusCode::ACCEPTED,
    ))
}

async fn reset_password(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<ResetPasswordBody>,
) -> HttpResult {
    svc.reset_password(&ctx, &b.token, Secret::new(b.new_password))
        .await?;
    Ok(no_content())
}

async fn verify_credentials(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<CredentialsBody>,
) -> HttpResult {
    let user = svc
        .verify_credentials(&ctx, &b.email, Secret::new(b.password))
        .await?;
    Ok(json_response(StatusCode::OK, &user))
}

fn no_content() -> Response {
    axum::response::IntoResponse::into_response(StatusCode::NO_CONTENT)
}

/// The identity contract over HTTP/JSON. Cheap to clone; connections are pooled.
#[derive(Clone)]
pub struct IdentityHttpClient {
    api: JsonClient,
}

impl IdentityHttpClient {
    /// A client for `base_url` (`http://host:port`).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        Self {
            api: JsonClient::new(http, base_url, "identity"),
        }
    }

    fn request(
        &self,
        ctx: &RequestContext,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.api.request(ctx, method, path)
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        self.api.send(rb).await
    }

    async fn json<T: serde::de::DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> Result<T> {
        self.api.json(rb).await
    }
}

#[async_trait]
impl IdentityServiceClient for IdentityHttpClient {
    async fn get_user(&self, ctx: &RequestContext, id: Uuid) -> Result<User> {
        self.json(self.request(ctx, reqwest::Method::GET, &format!("/v1/users/{id}")))
            .await
    }

    async fn get_user_by_email(&self, ctx: &RequestContext, email: &str) -> Result<User> {
        let rb = self
            .request(ctx, reqwest::Method::GET, "/v1/users")
            .query(&[("email", email)]);
        let page: UserPage = self.json(rb).await?;
        page.users
            .into_iter()
            .next()
            .ok_or_else(|| Error::not_found("user"))
    }

    async fn list_users(&self, ctx: &RequestContext, page: PageRequest) -> Result<UserPage> {
        let q = ListUsersQuery {
            email: None,
            page_size: (page.page_size > 0).then_some(page.page_size),
            page_token: page.page_token,
        };
        self.json(
            self.request(ctx, reqwest::Method::GET, "/v1/users")
                .query(&q),
        )
        .await
    }

    async fn create_user(&self, ctx: &RequestContext, user: NewUser) -> Result<User> {
        let body = CreateUserBody {
            email: user.email,
            password: user.password.into_inner(),
            display_name: user.display_name,
        };
        self.json(
            self.request(ctx, reqwest::Method::POST, "/v1/users")
                .json(&body),
        )
        .await
    }

    async fn update_user(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        update: UserUpdate,
    ) -> Result<User> {
        let body = UpdateUserBody {
            email: update.email,
            display_name: update.display_name,
            status: update.status,
        };
        self.json(
            self.request(ctx, reqwest::Method::PATCH, &format!("/v1/users/{id}"))
                .json(&body),
        )
        .await
    }

    async fn delete_user(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        self.send(self.request(ctx, reqwest::Method::DELETE, &format!("/v1/users/{id}")))
            .await
            .map(drop)
    }

    async fn verify_email(&self, ctx: &RequestContext, token: &str) -> Result<()> {
        let body = TokenBody {
            token: token.to_owned(),
        };
        self.send(
            self.request(ctx, reqwest::Method::POST, "/v1/users/verify-email")
                .json(&body),
        )
        .await
        .map(drop)
    }

    async fn request_password_reset(&self, ctx: &RequestContext, email: &str) -> Result<()> {
        let body = EmailBody {
            email: email.to_owned(),
        };
        self.send(
            self.request(ctx, reqwest::Method::POST, "/v1/password-reset")
                .json(&body),
        )
        .await
        .map(drop)
    }

    async fn reset_password(
        &self,
        ctx: &RequestContext,
        token: &str,
        new_password: Secret<String>,
    ) -> Result<()> {
        let body = ResetPasswordBody {
            token: token.to_owned(),
            new_password: new_password.into_inner(),
        };
        self.send(
            self.request(ctx, reqwest::Method::POST, "/v1/password-reset/confirm")
                .json(&body),
        )
        .await
        .map(drop)
    }

    async fn verify_credentials(
        &self,
        ctx: &RequestContext,
        email: &str,
        password: Secret<String>,
    ) -> Result<User> {
        let body = CredentialsBody {
            email: email.to_owned(),
            password: password.into_inner(),
        };
        self.json(
            self.request(ctx, reqwest::Method::POST, "/v1/credentials/verify")
                .json(&body),
        )
        .await
    }
}
