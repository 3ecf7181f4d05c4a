//! HTTP/JSON adapters for the authz contract: axum routes over `Arc<dyn AuthzServiceClient>`
//! and a client implementing the trait over reqwest.
//!
//! | method | path | body | answer |
//! |---|---|---|---|
//! | POST | /v1/authz/authorize | `{user_id, permission}` | 204, or 403 problem when denied |
//! | POST | /v1/authz/check | `{user_id, permission, resource?}` | 200 `{allowed}` (with `resource`: on that one object) |
//! | POST | /v1/authz/resource-grants | `{user_id, resource, grant}` | 200 `{changed}` (internal) |
//! | DELETE | /v1/authz/resource-grants?user_id=&resource=&grant= | | 200 `{changed}` (internal) |
//! | GET | /v1/authz/resource-grants?user_id=&resource= | | 200 `{grants: [ResourceGrant]}` (internal) |
//! | GET | /v1/authz/users/{user_id}/permissions | | 200 `{permissions: [{name, description}]}` |
//! | GET | /v1/authz/users/{user_id}/roles | | 200 `{roles: [name]}` |
//! | PUT | /v1/authz/users/{user_id}/roles/{role} | | 204 (grant; admin) |
//! | DELETE | /v1/authz/users/{user_id}/roles/{role} | | 204 (revoke; admin) |
//! | GET | /v1/authz/roles | | 200 `{roles: [Role]}` |
//! | POST | /v1/authz/roles | `{name, description?, permissions}` | 201 Role (admin) |
//! | PUT | /v1/authz/roles/{name}/permissions | `{permissions}` | 200 Role (admin) |
//! | DELETE | /v1/authz/roles/{name} | | 204 (admin) |
//! | POST | /v1/authz/permissions | `{service, permissions: [{name, description?}]}` | 204 (internal) |
//!
//! Admin calls need `Authorization: Bearer <access token>` of a user holding
//! `authz.roles.manage` (401 without a valid token, 403 without the permission). Errors are
//! RFC 9457 problem+json (see [`crate::error`]).

use super::{
    AuthzServiceClient, Permission, ResourceGrant, ResourceGrantFilter, Role, validate_role_name,
};
use crate::{
    Error, RequestContext, Result,
    http_api::{ApiError, ApiJson, JsonClient, json_response},
    wire,
};
use async_trait::async_trait;
use axum::{
    Router,
    extract::{
        Path, Query, State,
        rejection::{PathRejection, QueryRejection},
    },
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckBody {
    pub user_id: String,
    pub permission: String,
    /// `type:id`: the check is about this one object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ResourceGrantBody {
    pub user_id: String,
    pub resource: String,
    /// On revoke: empty (or absent) revokes everything the user holds on the resource.
    #[serde(default)]
    pub grant: String,
}

impl ResourceGrantBody {
    fn into_grant(self) -> Result<ResourceGrant> {
        Ok(ResourceGrant {
            user_id: user_id(&self.user_id)?,
            resource: self.resource,
            grant: self.grant,
            granted_by: String::new(),
        })
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChangedAnswer {
    pub changed: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct GrantsAnswer {
    pub grants: Vec<ResourceGrant>,
}

#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CheckAnswer {
    pub allowed: bool,
}

#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PermissionsAnswer {
    pub permissions: Vec<Permission>,
}

#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserRolesAnswer {
    pub roles: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RolesAnswer {
    pub roles: Vec<Role>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionBody {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Granted to the built-in role `user` when authz first learns of the permission.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub granted_to_users: bool,
    /// The relations on one resource that imply the permission there.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub relations: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    pub service: String,
    pub permissions: Vec<PermissionBody>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateRoleBody {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub permissions: Vec<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SetPermissionsBody {
    pub permissions: Vec<String>,
}

type Svc = Arc<dyn AuthzServiceClient>;
type HttpResult = std::result::Result<Response, ApiError>;

/// The authz HTTP API, to be hosted by the service.
pub fn routes(svc: Svc) -> Router {
    Router::new()
        .route("/v1/authz/authorize", post(authorize))
        .route("/v1/authz/check", post(check))
        .route(
            "/v1/authz/users/{user_id}/permissions",
            get(user_permissions),
        )
        .route("/v1/authz/users/{user_id}/roles", get(user_roles))
        .route(
            "/v1/authz/users/{user_id}/roles/{role}",
            put(grant_role).delete(revoke_role),
        )
        .route("/v1/authz/roles", get(list_roles).post(create_role))
        .route("/v1/authz/roles/{name}", axum::routing::delete(delete_role))
        .route("/v1/authz/roles/{name}/permissions", put(set_permissions))
        .route("/v1/authz/permissions", post(register_permissions))
        .route(
            "/v1/authz/resource-grants",
            post(grant_resource)
                .delete(revoke_resource)
                .get(list_resource_grants),
        )
        .with_state(svc)
}

fn user_id(raw: &str) -> Result<Uuid> {
    wire::uuid("user_id", raw)
}

fn path_error(e: PathRejection) -> ApiError {
    Error::invalid("path", e.body_text()).into()
}

fn no_content() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

async fn authorize(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<CheckBody>,
) -> HttpResult {
    svc.authorize(&ctx, user_id(&b.user_id)?, &b.permission)
        .await?;
    Ok(no_content())
}

async fn check(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<CheckBody>,
) -> HttpResult {
    let user = user_id(&b.user_id)?;
    let allowed = match &b.resource {
        Some(resource) => svc.check(&ctx, user, &b.permission, resource).await?,
        None => svc.has_permission(&ctx, user, &b.permission).await?,
    };
    Ok(json_response(StatusCode::OK, &CheckAnswer { allowed }))
}

async fn grant_resource(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<ResourceGrantBody>,
) -> HttpResult {
    let changed = svc.grant_resource(&ctx, b.into_grant()?).await?;
    Ok(json_response(StatusCode::OK, &ChangedAnswer { changed }))
}

fn grants_query(
    query: std::result::Result<Query<GrantsQuery>, QueryRejection>,
) -> Result<GrantsQuery> {
    let Query(q) = query.map_err(|e| Error::invalid("query", e.body_text()))?;
    Ok(q)
}

async fn revoke_resource(
    State(svc): State<Svc>,
    ctx: RequestContext,
    query: std::result::Result<Query<ResourceGrantBody>, QueryRejection>,
) -> HttpResult {
    let Query(b) = query.map_err(|e| Error::invalid("query", e.body_text()))?;
    let changed = svc.revoke_resource(&ctx, b.into_grant()?).await?;
    Ok(json_response(StatusCode::OK, &ChangedAnswer { changed }))
}

async fn list_resource_grants(
    State(svc): State<Svc>,
    ctx: RequestContext,
    query: std::result::Result<Query<GrantsQuery>, QueryRejection>,
) -> HttpResult {
    let q = grants_query(query)?;
    let filter = ResourceGrantFilter {
        user_id: q.user_id.as_deref().map(user_id).transpose()?,
        resource: q.resource,
    };
    let grants = svc.list_resource_grants(&ctx, filter).await?;
    Ok(json_response(StatusCode::OK, &GrantsAnswer { grants }))
}

async fn user_permissions(
    State(svc): State<Svc>,
    ctx: RequestContext,
    path: std::result::Result<Path<String>, PathRejection>,
) -> HttpResult {
    let Path(id) = path.map_err(path_error)?;
    let permissions = svc.get_user_permissions(&ctx, user_id(&id)?).await?;
    Ok(json_response(
        StatusCode::OK,
        &PermissionsAnswer { permissions },
    ))
}

async fn user_roles(
    State(svc): State<Svc>,
    ctx: RequestContext,
    path: std::result::Result<Path<String>, PathRejection>,
) -> HttpResult {
    let Path(id) = path.map_err(path_error)?;
    let roles = svc.get_user_roles(&ctx, user_id(&id)?).await?;
    Ok(json_response(StatusCode::OK, &UserRolesAnswer { roles }))
}

async fn grant_role(
    State(svc): State<Svc>,
    ctx: RequestContext,
    path: std::result::Result<Path<(String, String)>, PathRejection>,
) -> HttpResult {
    let Path((id, role)) = path.map_err(path_error)?;
    svc.grant_role(&ctx, user_id(&id)?, &role).await?;
    Ok(no_content())
}

async fn revoke_role(
    State(svc): State<Svc>,
    ctx: RequestContext,
    path: std::result::Result<Path<(String, String)>, PathRejection>,
) -> HttpResult {
    let Path((id, role)) = path.map_err(path_error)?;
    svc.revoke_role(&ctx, user_id(&id)?, &role).await?;
    Ok(no_content())
}

async fn list_roles(State(svc): State<Svc>, ctx: RequestContext) -> HttpResult {
    let roles = svc.list_roles(&ctx).await?;
    Ok(json_response(StatusCode::OK, &RolesAnswer { roles }))
}

async fn create_role(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<CreateRoleBody>,
) -> HttpResult {
    let role = svc
        .create_role(
            &ctx,
            Role {
                name: b.name,
                description: b.description,
                permissions: b.permissions,
                built_in: false,
            },
        )
        .await?;
    Ok(json_response(StatusCode::CREATED, &role))
}

async fn delete_role(
    State(svc): State<Svc>,
    ctx: RequestContext,
    path: std::result::Result<Path<String>, PathRejection>,
) -> HttpResult {
    let Path(name) = path.map_err(path_error)?;
    svc.delete_role(&ctx, &name).await?;
    Ok(no_content())
}

async fn set_permissions(
    State(svc): State<Svc>,
    ctx: RequestContext,
    path: std::result::Result<Path<String>, PathRejection>,
    ApiJson(b): ApiJson<SetPermissionsBody>,
) -> HttpResult {
    let Path(name) = path.map_err(path_error)?;
    let role = svc.set_role_permissions(&ctx, &name, b.permissions).await?;
    Ok(json_response(StatusCode::OK, &role))
}

async fn register_permissions(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<RegisterBody>,
) -> HttpResult {
    let permissions = b
        .permissions
        .into_iter()
        .map(|p| Permission {
            name: p.name,
            description: p.description,
            granted_to_users: p.granted_to_users,
            relations: p.relations,
        })
        .collect();
    svc.register_permissions(&ctx, &b.service, permissions)
        .await?;
    Ok(no_content())
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved characters). Role
/// names are validated first (the server's own check, so the error is the same), because a
/// URL parser would resolve a `..` segment even when percent-encoded.
fn segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The authz contract over HTTP/JSON. Cheap to clone; connections are pooled.
#[derive(Clone)]
pub struct AuthzHttpClient {
    api: JsonClient,
}

impl AuthzHttpClient {
    /// A client for `base_url` (`http://host:port`).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        Self {
            api: JsonClient::new(http, base_url, "authz"),
        }
    }
}

#[async_trait]
impl AuthzServiceClient for AuthzHttpClient {
    async fn authorize(&self, ctx: &RequestContext, user_id: Uuid, permission: &str) -> Result<()> {
        let body = CheckBody {
            user_id: user_id.to_string(),
            permission: permission.to_owned(),
            resource: None,
        };
        let rb = self
            .api
            .request(ctx, reqwest::Method::POST, "/v1/authz/authorize")
            .json(&body);
        self.api.send(rb).await.map(drop)
    }

    async fn has_permission(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
    ) -> Result<bool> {
        let body = CheckBody {
            user_id: user_id.to_string(),
            permission: permission.to_owned(),
            resource: None,
        };
        let rb = self
            .api
            .request(ctx, reqwest::Method::POST, "/v1/authz/check")
            .json(&body);
        let a: CheckAnswer = self.api.json(rb).await?;
        Ok(a.allowed)
    }

    async fn get_user_permissions(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
    ) -> Result<Vec<Permission>> {
        let rb = self.api.request(
            ctx,
            reqwest::Method::GET,
            &format!("/v1/authz/users/{user_id}/permissions"),
        );
        let a: PermissionsAnswer = self.api.json(rb).await?;
        Ok(a.permissions)
    }

    async fn get_user_roles(&self, ctx: &RequestContext, user_id: Uuid) -> Result<Vec<String>> {
        let rb = self.api.request(
            ctx,
            reqwest::Method::GET,
            &format!("/v1/authz/users/{user_id}/roles"),
        );
        let a: UserRolesAnswer = self.api.json(rb).await?;
        Ok(a.roles)
    }

    async fn list_roles(&self, ctx: &RequestContext) -> Result<Vec<Role>> {
        let rb = self
            .api
            .request(ctx, reqwest::Method::GET, "/v1/authz/roles");
        let a: RolesAnswer = self.api.json(rb).await?;
        Ok(a.roles)
    }

    async fn register_permissions(
        &self,
        ctx: &RequestContext,
        service: &str,
        permissions: Vec<Permission>,
    ) -> Result<()> {
        let body = RegisterBody {
            service: service.to_owned(),
            permissions: permissions
                .into_iter()
                .map(|p| PermissionBody {
                    name: p.name,
                    description: p.description,
                    granted_to_users: p.granted_to_users,
                    relations: p.relations,
                })
                .collect(),
        };
        let rb = self
            .api
            .request(ctx, reqwest::Method::POST, "/v1/authz/permissions")
            .json(&body);
        self.api.send(rb).await.map(drop)
    }

    async fn create_role(&self, ctx: &RequestContext, role: Role) -> Result<Role> {
        let body = CreateRoleBody {
            name: role.name,
            description: role.description,
            permissions: role.permissions,
        };
        let rb = self
            .api
            .request(ctx, reqwest::Method::POST, "/v1/authz/roles")
            .json(&body);
        self.api.json(rb).await
    }

    async fn delete_role(&self, ctx: &RequestContext, name: &str) -> Result<()> {
        validate_role_name("name", name)?;
        let rb = self.api.request(
            ctx,
            reqwest::Method::DELETE,
            &format!("/v1/authz/roles/{}", segment(name)),
        );
        self.api.send(rb).await.map(drop)
    }

    async fn set_role_permissions(
        &self,
        ctx: &RequestContext,
        name: &str,
        permissions: Vec<String>,
    ) -> Result<Role> {
        validate_role_name("name", name)?;
        let rb = self
            .api
            .request(
                ctx,
                reqwest::Method::PUT,
                &format!("/v1/authz/roles/{}/permissions", segment(name)),
            )
            .json(&SetPermissionsBody { permissions });
        self.api.json(rb).await
    }

    async fn grant_role(&self, ctx: &RequestContext, user_id: Uuid, role: &str) -> Result<()> {
        validate_role_name("role", role)?;
        let rb = self.api.request(
            ctx,
            reqwest::Method::PUT,
            &format!("/v1/authz/users/{user_id}/roles/{}", segment(role)),
        );
        self.api.send(rb).await.map(drop)
    }

    async fn revoke_role(&self, ctx: &RequestContext, user_id: Uuid, role: &str) -> Result<()> {
        validate_role_name("role", role)?;
        let rb = self.api.request(
            ctx,
            reqwest::Method::DELETE,
            &format!("/v1/authz/users/{user_id}/roles/{}", segment(role)),
        );
        self.api.send(rb).await.map(drop)
    }

    async fn check(
        &self,
        ctx: &RequestContext,
        user_id: Uuid,
        permission: &str,
        resource: &str,
    ) -> Result<bool> {
        let body = CheckBody {
            user_id: user_id.to_string(),
            permission: permission.to_owned(),
            resource: Some(resource.to_owned()),
        };
        let rb = self
            .api
            .request(ctx, reqwest::Method::POST, "/v1/authz/check")
            .json(&body);
        let a: CheckAnswer = self.api.json(rb).await?;
        Ok(a.allowed)
    }

    async fn grant_resource(&self, ctx: &RequestContext, grant: ResourceGrant) -> Result<bool> {
        let body = ResourceGrantBody {
            user_id: grant.user_id.to_string(),
            resource: grant.resource,
            grant: grant.grant,
        };
        let rb = self
            .api
            .request(ctx, reqwest::Method::POST, "/v1/authz/resource-grants")
            .json(&body);
        let a: ChangedAnswer = self.api.json(rb).await?;
        Ok(a.changed)
    }

    async fn revoke_resource(&self, ctx: &RequestContext, grant: ResourceGrant) -> Result<bool> {
        let body = ResourceGrantBody {
            user_id: grant.user_id.to_string(),
            resource: grant.resource,
            grant: grant.grant,
        };
        let rb = self
            .api
            .request(ctx, reqwest::Method::DELETE, "/v1/authz/resource-grants")
            .query(&body);
        let a: ChangedAnswer = self.api.json(rb).await?;
        Ok(a.changed)
    }

    async fn list_resource_grants(
        &self,
        ctx: &RequestContext,
        filter: ResourceGrantFilter,
    ) -> Result<Vec<ResourceGrant>> {
        let q = GrantsQuery {
            user_id: filter.user_id.map(|u| u.to_string()),
            resource: filter.resource,
        };
        let rb = self
            .api
            .request(ctx, reqwest::Method::GET, "/v1/authz/resource-grants")
            .query(&q);
        let a: GrantsAnswer = self.api.json(rb).await?;
        Ok(a.grants)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(super::segment("blog-editor_2"), "blog-editor_2");
        assert_eq!(super::segment("../a b/c"), "..%2Fa%20b%2Fc");
    }
}
