//! The OpenAPI 3.1 document of the public API served through the gateway (`GET
//! /openapi.json`), generated with utoipa from the services' own HTTP DTOs in
//! `plt_contracts` (feature `openapi`), so the schemas are those the services accept and
//! return.
//!
//! The operations are declared below with their service paths (`/v1/users`) and the errors
//! the services themselves answer. [`document`] then places them where the gateway serves
//! them (under `discovery.api_prefix`, except root prefixes such as `/.well-known/`), drops
//! what the configuration blocks, and adds what the gateway itself may answer, from the
//! route each operation matches: bearer security and 401 on private routes, 403 where a
//! permission is required, 413 for bodies, 400 for inputs, and 429, 500, 503, 504 always.

use crate::{
    config::GatewayConfig,
    routes::{Route, RouteTable},
};
use http::Method;
use plt_contracts::{
    audit::{AuditPage, VerifyReport, http::LogsQuery},
    auth::{
        Jwks,
        http::{LoginBody, LogoutBody, RefreshBody, TokenBody as TokenPair},
    },
    authz::{
        Role,
        http::{
            CheckAnswer, CheckBody, CreateRoleBody, PermissionsAnswer, RolesAnswer,
            SetPermissionsBody, UserRolesAnswer,
        },
    },
    error::{FieldViolation, Problem},
    identity::{
        User, UserPage,
        http::{
            CreateUserBody, EmailBody, ListUsersQuery, ResetPasswordBody,
            TokenBody as VerificationTokenBody, UpdateUserBody,
        },
    },
};
use std::time::Duration;
use utoipa::{
    OpenApi,
    openapi::{
        Content, HeaderBuilder, KnownFormat, ObjectBuilder, RefOr, Required, ResponseBuilder,
        Schema, SchemaFormat, Type,
        path::{Operation, PathItem},
        schema::{AnyOfBuilder, ArrayItems, Ref},
        security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme},
    },
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "plt API",
        description = "The public HTTP API of the plt platform, served through the API gateway. \
            Errors are RFC 9457 problem+json. Every response carries `x-request-id`; \
            rate-limited routes carry `RateLimit-Limit`, `RateLimit-Remaining` and \
            `RateLimit-Reset`.",
    ),
    paths(
        create_user, list_users, get_user, update_user, delete_user, verify_email,
        request_password_reset, reset_password,
        login, refresh, logout, jwks,
        authorize, check, user_permissions, user_roles, grant_role, revoke_role, list_roles,
        create_role, set_role_permissions, delete_role,
        audit_logs, audit_verify,
    ),
    components(schemas(Problem, FieldViolation)),
    tags(
        (name = "identity", description = "Users, e-mail verification, password reset"),
        (name = "auth", description = "Sign-in, token refresh, sign-out, signing keys"),
        (name = "authz", description = "Roles, grants and permission checks"),
        (name = "audit", description = "The append-only audit log"),
    )
)]
struct ApiDoc;

// ---- identity ----

/// Sign up: create a user (active, e-mail not yet verified; a verification mail is sent).
#[utoipa::path(post, path = "/v1/users", tag = "identity",
    request_body(content = CreateUserBody, content_type = "application/json"),
    responses((status = 201, description = "The new user", body = User)))]
#[allow(dead_code)]
fn create_user() {}

/// List users (oldest first), or find one by e-mail (case-insensitive; 0 or 1 entry).
#[utoipa::path(get, path = "/v1/users", tag = "identity", params(ListUsersQuery),
    responses((status = 200, description = "A page of users", body = UserPage)))]
#[allow(dead_code)]
fn list_users() {}

/// Read a user.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "identity",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    responses((status = 200, description = "The user", body = User)))]
#[allow(dead_code)]
fn get_user() {}

/// Change a user's e-mail (to be verified again), display name or status.
#[utoipa::path(patch, path = "/v1/users/{id}", tag = "identity",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    request_body(content = UpdateUserBody, content_type = "application/json"),
    responses((status = 200, description = "The changed user", body = User)))]
#[allow(dead_code)]
fn update_user() {}

/// Delete a user.
#[utoipa::path(delete, path = "/v1/users/{id}", tag = "identity",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    responses((status = 204, description = "Deleted")))]
#[allow(dead_code)]
fn delete_user() {}

/// Verify an e-mail address with the token from the verification mail.
#[utoipa::path(post, path = "/v1/users/verify-email", tag = "identity",
    request_body(content = VerificationTokenBody, content_type = "application/json"),
    responses((status = 204, description = "The address is verified")))]
#[allow(dead_code)]
fn verify_email() {}

/// Ask for a password-reset mail. The answer is the same whether or not the address is
/// registered.
#[utoipa::path(post, path = "/v1/password-reset", tag = "identity",
    request_body(content = EmailBody, content_type = "application/json"),
    responses((status = 202, description = "Accepted")))]
#[allow(dead_code)]
fn request_password_reset() {}

/// Set a new password with the token from the reset mail.
#[utoipa::path(post, path = "/v1/password-reset/confirm", tag = "identity",
    request_body(content = ResetPasswordBody, content_type = "application/json"),
    responses((status = 204, description = "The password is changed")))]
#[allow(dead_code)]
fn reset_password() {}

// ---- auth ----

/// Sign in with e-mail and password.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth",
    request_body(content = LoginBody, content_type = "application/json"),
    responses((status = 200, description = "An access and refresh token pair", body = TokenPair)))]
#[allow(dead_code)]
fn login() {}

/// Exchange a refresh token for a new pair (the presented one is spent).
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth",
    request_body(content = RefreshBody, content_type = "application/json"),
    responses((status = 200, description = "A new token pair", body = TokenPair)))]
#[allow(dead_code)]
fn refresh() {}

/// Sign out: revoke the refresh-token family and deny-list the access token. The body is
/// optional; without it, the bearer token of `Authorization` is revoked.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth",
    request_body(content = LogoutBody, content_type = "application/json"),
    responses((status = 204, description = "Signed out")))]
#[allow(dead_code)]
fn logout() {}

/// The public keys access tokens are signed with (RFC 7517).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth",
    responses((status = 200, description = "The published keys", body = Jwks)))]
#[allow(dead_code)]
fn jwks() {}

// ---- authz ----

/// Whether a user holds a permission: 204 when allowed, 403 when not (denials are audited).
#[utoipa::path(post, path = "/v1/authz/authorize", tag = "authz",
    request_body(content = CheckBody, content_type = "application/json"),
    responses((status = 204, description = "Allowed")))]
#[allow(dead_code)]
fn authorize() {}

/// Whether a user holds a permission, as a value.
#[utoipa::path(post, path = "/v1/authz/check", tag = "authz",
    request_body(content = CheckBody, content_type = "application/json"),
    responses((status = 200, description = "The answer", body = CheckAnswer)))]
#[allow(dead_code)]
fn check() {}

/// A user's effective permissions.
#[utoipa::path(get, path = "/v1/authz/users/{user_id}/permissions", tag = "authz",
    params(("user_id" = uuid::Uuid, Path, description = "User id")),
    responses((status = 200, description = "The permissions", body = PermissionsAnswer)))]
#[allow(dead_code)]
fn user_permissions() {}

/// A user's roles.
#[utoipa::path(get, path = "/v1/authz/users/{user_id}/roles", tag = "authz",
    params(("user_id" = uuid::Uuid, Path, description = "User id")),
    responses((status = 200, description = "The role names", body = UserRolesAnswer)))]
#[allow(dead_code)]
fn user_roles() {}

/// Grant a role (needs `authz.roles.manage`).
#[utoipa::path(put, path = "/v1/authz/users/{user_id}/roles/{role}", tag = "authz",
    params(("user_id" = uuid::Uuid, Path, description = "User id"),
           ("role" = String, Path, description = "Role name")),
    responses((status = 204, description = "Granted (or already held)")))]
#[allow(dead_code)]
fn grant_role() {}

/// Revoke a role (needs `authz.roles.manage`).
#[utoipa::path(delete, path = "/v1/authz/users/{user_id}/roles/{role}", tag = "authz",
    params(("user_id" = uuid::Uuid, Path, description = "User id"),
           ("role" = String, Path, description = "Role name")),
    responses((status = 204, description = "Revoked (or not held)")))]
#[allow(dead_code)]
fn revoke_role() {}

/// Every role.
#[utoipa::path(get, path = "/v1/authz/roles", tag = "authz",
    responses((status = 200, description = "The roles", body = RolesAnswer)))]
#[allow(dead_code)]
fn list_roles() {}

/// Create a role (needs `authz.roles.manage`).
#[utoipa::path(post, path = "/v1/authz/roles", tag = "authz",
    request_body(content = CreateRoleBody, content_type = "application/json"),
    responses((status = 201, description = "The new role", body = Role)))]
#[allow(dead_code)]
fn create_role() {}

/// Replace a role's permissions (needs `authz.roles.manage`; not for built-in `admin`).
#[utoipa::path(put, path = "/v1/authz/roles/{name}/permissions", tag = "authz",
    params(("name" = String, Path, description = "Role name")),
    request_body(content = SetPermissionsBody, content_type = "application/json"),
    responses((status = 200, description = "The changed role", body = Role)))]
#[allow(dead_code)]
fn set_role_permissions() {}

/// Delete a role (needs `authz.roles.manage`; built-in roles cannot be deleted).
#[utoipa::path(delete, path = "/v1/authz/roles/{name}", tag = "authz",
    params(("name" = String, Path, description = "Role name")),
    responses((status = 204, description = "Deleted")))]
#[allow(dead_code)]
fn delete_role() {}

// ---- audit ----

/// Query the audit log, newest first (needs `audit.logs.read`).
#[utoipa::path(get, path = "/v1/audit/logs", tag = "audit", params(LogsQuery),
    responses((status = 200, description = "A page of entries", body = AuditPage)))]
#[allow(dead_code)]
fn audit_logs() {}

/// Walk the hash chain (needs `audit.logs.verify`).
#[utoipa::path(post, path = "/v1/audit/verify", tag = "audit",
    responses((status = 200, description = "The verification report", body = VerifyReport)))]
#[allow(dead_code)]
fn audit_verify() {}

/// Error statuses each service answers by itself, by (method, service path).
const SERVICE_ERRORS: &[(&str, &str, &[u16])] = &[
    ("post", "/v1/users", &[409]),
    ("get", "/v1/users/{id}", &[404]),
    ("patch", "/v1/users/{id}", &[404, 409]),
    ("delete", "/v1/users/{id}", &[404]),
    ("post", "/v1/auth/login", &[401]),
    ("post", "/v1/auth/refresh", &[401]),
    ("post", "/v1/auth/logout", &[401]),
    ("post", "/v1/authz/authorize", &[403]),
    (
        "put",
        "/v1/authz/users/{user_id}/roles/{role}",
        &[401, 403, 404],
    ),
    (
        "delete",
        "/v1/authz/users/{user_id}/roles/{role}",
        &[401, 403, 404],
    ),
    ("get", "/v1/authz/roles", &[401, 403]),
    ("post", "/v1/authz/roles", &[401, 403, 409]),
    (
        "put",
        "/v1/authz/roles/{name}/permissions",
        &[401, 403, 404, 412],
    ),
    ("delete", "/v1/authz/roles/{name}", &[401, 403, 404, 412]),
    ("get", "/v1/audit/logs", &[401, 403]),
    ("post", "/v1/audit/verify", &[401, 403]),
];

/// Operations whose request body may be left out.
const OPTIONAL_BODY: &[(&str, &str)] = &[("post", "/v1/auth/logout")];

/// Reusable problem responses: (status, component name, description).
const PROBLEMS: &[(u16, &str, &str)] = &[
    (400, "BadRequest", "Invalid input (names the field)"),
    (401, "Unauthorized", "No valid access token"),
    (403, "Forbidden", "The caller lacks the permission"),
    (404, "NotFound", "No such resource"),
    (409, "Conflict", "Already exists"),
    (
        412,
        "PreconditionFailed",
        "Not allowed in the resource's state",
    ),
    (413, "PayloadTooLarge", "Request body too large"),
    (429, "TooManyRequests", "Rate limit exceeded"),
    (500, "InternalError", "Internal error"),
    (
        503,
        "Unavailable",
        "A service is unavailable; try again later",
    ),
    (504, "GatewayTimeout", "A service did not answer in time"),
];

fn method_of(name: &str) -> Method {
    Method::from_bytes(name.to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET)
}

/// The operations of a path item by method name.
fn operations(item: &mut PathItem) -> Vec<(&'static str, &mut Option<Operation>)> {
    vec![
        ("get", &mut item.get),
        ("put", &mut item.put),
        ("post", &mut item.post),
        ("delete", &mut item.delete),
        ("options", &mut item.options),
        ("head", &mut item.head),
        ("patch", &mut item.patch),
        ("trace", &mut item.trace),
    ]
}

/// A concrete path for route matching: parameters replaced by a value no route names.
fn sample_path(template: &str) -> String {
    template
        .split('/')
        .map(|s| {
            if s.starts_with('{') {
                "00000000-0000-0000-0000-000000000000"
            } else {
                s
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// The route serving `method path` if the gateway ran with only its configured routes and
/// the documented services announced their prefixes.
fn route_for(table: &RouteTable, method: &Method, path: &str) -> Option<Route> {
    table.find(method, path).map(|r| (*r).clone())
}

/// Where the gateway serves a service path.
fn gateway_path(cfg: &GatewayConfig, service_path: &str) -> String {
    if cfg
        .discovery
        .root_prefixes
        .iter()
        .any(|r| service_path.starts_with(r.as_str()))
    {
        service_path.to_owned()
    } else {
        format!("{}{service_path}", cfg.discovery.api_prefix)
    }
}

fn problem_response(description: &str, status: u16) -> RefOr<utoipa::openapi::Response> {
    let mut b = ResponseBuilder::new().description(description).content(
        plt_contracts::error::PROBLEM_CONTENT_TYPE,
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    let int = || {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
    };
    match status {
        401 => {
            b = b.header(
                "WWW-Authenticate",
                HeaderBuilder::new()
                    .schema(ObjectBuilder::new().schema_type(Type::String))
                    .description(Some("Bearer challenge (RFC 6750)"))
                    .build(),
            );
        }
        429 => {
            b = b.header(
                "Retry-After",
                HeaderBuilder::new()
                    .schema(int())
                    .description(Some("Seconds until a request may succeed"))
                    .build(),
            );
            for (h, d) in [
                ("RateLimit-Limit", "Requests allowed at once"),
                ("RateLimit-Remaining", "Requests left now"),
                ("RateLimit-Reset", "Seconds until the budget is full again"),
            ] {
                b = b.header(
                    h,
                    HeaderBuilder::new()
                        .schema(int())
                        .description(Some(d))
                        .build(),
                );
            }
        }
        _ => {}
    }
    RefOr::T(b.build())
}

// What the services check beyond the JSON types (their validators are the source; these
// mirror them so that generated requests look like the ones they accept).
const ROLE_NAME: &str = "^[a-z][a-z0-9_-]{0,63}$";
const PERMISSION: &str = "^[a-z][a-z0-9_-]{0,63}\\.[a-z][a-z0-9_-]{0,63}\\.[a-z][a-z0-9_-]{0,63}$";
const EMAIL: &str = "^(?=[^@]{1,64}@)[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$";
/// Verification and reset tokens: 256 bits, unpadded base64url (43 characters, the last
/// carrying 2 bits and 4 zero bits).
const MAIL_TOKEN: &str = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$";
const NO_CONTROL: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$";
const NAME: &str = "^[^\\s\\u0000-\\u001F\\u007F-\\u009F]([^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F])?$";

/// A string constraint.
#[derive(Clone, Copy, Default)]
struct Text {
    pattern: Option<&'static str>,
    min: Option<usize>,
    max: Option<usize>,
}

const fn text(pattern: Option<&'static str>, min: Option<usize>, max: Option<usize>) -> Text {
    Text { pattern, min, max }
}

/// (schema, property, constraint on the string or on each item of a string list, max items)
const PROPERTIES: &[(&str, &str, Text, Option<usize>)] = &[
    (
        "CreateUserBody",
        "email",
        text(Some(EMAIL), None, Some(254)),
        None,
    ),
    (
        "CreateUserBody",
        "password",
        text(None, Some(8), Some(256)),
        None,
    ),
    (
        "CreateUserBody",
        "display_name",
        text(Some(NO_CONTROL), None, Some(100)),
        None,
    ),
    (
        "UpdateUserBody",
        "email",
        text(Some(EMAIL), None, Some(254)),
        None,
    ),
    (
        "UpdateUserBody",
        "display_name",
        text(Some(NAME), None, Some(100)),
        None,
    ),
    (
        "EmailBody",
        "email",
        text(Some(EMAIL), None, Some(254)),
        None,
    ),
    (
        "VerificationTokenBody",
        "token",
        text(Some(MAIL_TOKEN), None, None),
        None,
    ),
    (
        "ResetPasswordBody",
        "token",
        text(Some(MAIL_TOKEN), None, None),
        None,
    ),
    (
        "ResetPasswordBody",
        "new_password",
        text(None, Some(8), Some(256)),
        None,
    ),
    (
        "CheckBody",
        "permission",
        text(Some(PERMISSION), None, None),
        None,
    ),
    (
        "CreateRoleBody",
        "name",
        text(Some(ROLE_NAME), None, None),
        None,
    ),
    (
        "CreateRoleBody",
        "description",
        text(None, None, Some(500)),
        None,
    ),
    (
        "CreateRoleBody",
        "permissions",
        text(Some(PERMISSION), None, None),
        Some(1000),
    ),
    (
        "SetPermissionsBody",
        "permissions",
        text(Some(PERMISSION), None, None),
        Some(1000),
    ),
];

/// (parameter name, constraint) for path and query parameters.
const PARAMETERS: &[(&str, Text)] = &[
    ("role", text(Some(ROLE_NAME), None, None)),
    ("name", text(Some(ROLE_NAME), None, None)),
    ("actor", text(Some(NO_CONTROL), None, Some(256))),
    ("action", text(Some(NO_CONTROL), None, Some(128))),
    ("resource", text(Some(NO_CONTROL), None, Some(1024))),
];

fn constrain(schema: &mut RefOr<Schema>, t: &Text) {
    if let RefOr::T(Schema::Object(o)) = schema {
        if let Some(p) = t.pattern {
            o.pattern = Some(p.to_owned());
        }
        if t.min.is_some() {
            o.min_length = t.min;
        }
        if t.max.is_some() {
            o.max_length = t.max;
        }
    }
}

/// Adds the services' constraints to the generated schemas and parameters.
fn refine(doc: &mut utoipa::openapi::OpenApi) {
    if let Some(c) = doc.components.as_mut() {
        for (schema, prop, t, max_items) in PROPERTIES {
            let Some(RefOr::T(Schema::Object(o))) = c.schemas.get_mut(*schema) else {
                continue;
            };
            let Some(p) = o.properties.get_mut(*prop) else {
                continue;
            };
            match p {
                RefOr::T(Schema::Array(a)) => {
                    a.max_items = *max_items;
                    if let ArrayItems::RefOrSchema(item) = &mut a.items {
                        constrain(item, t);
                    }
                }
                other => constrain(other, t),
            }
        }
        if let Some(RefOr::T(Schema::Object(o))) = c.schemas.get_mut("CheckBody")
            && let Some(RefOr::T(Schema::Object(u))) = o.properties.get_mut("user_id")
        {
            u.format = Some(SchemaFormat::KnownFormat(KnownFormat::Uuid));
        }
    }
    for item in doc.paths.paths.values_mut() {
        for (_, op) in operations(item) {
            let Some(op) = op.as_mut() else { continue };
            for param in op.parameters.iter_mut().flatten() {
                if let Some((_, t)) = PARAMETERS.iter().find(|(n, _)| *n == param.name)
                    && let Some(schema) = param.schema.as_mut()
                {
                    constrain(schema, t);
                }
                // Page sizes are u32 (utoipa says int32, whose range is smaller).
                if param.name == "page_size"
                    && let Some(RefOr::T(Schema::Object(o))) = param.schema.as_mut()
                {
                    o.format = None;
                    o.maximum = Some(utoipa::Number::UInt(u32::MAX as usize));
                }
                // Audit's filters treat an empty value as no filter.
                if matches!(param.name.as_str(), "from" | "to" | "page_size" | "outcome")
                    && let Some(schema) = param.schema.take()
                {
                    param.schema = Some(RefOr::T(Schema::AnyOf(
                        AnyOfBuilder::new()
                            .item(schema)
                            .item(
                                ObjectBuilder::new()
                                    .schema_type(Type::String)
                                    .max_length(Some(0)),
                            )
                            .build(),
                    )));
                }
            }
        }
    }
}

/// The document for this configuration.
pub fn document(cfg: &GatewayConfig) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    refine(&mut doc);
    // What would serve each documented operation: the configured routes, and the documented
    // services' prefixes as announced routes (private, no permission).
    let mut routes: Vec<Route> = cfg
        .routes
        .iter()
        .map(|c| Route::from_config(c, Duration::from_secs(1)))
        .collect();
    for (service, prefixes) in [
        ("identity", &["/v1/users", "/v1/password-reset"][..]),
        ("auth", &["/v1/auth", "/.well-known/jwks.json"][..]),
        ("authz", &["/v1/authz"][..]),
        ("audit", &["/v1/audit/logs", "/v1/audit/verify"][..]),
    ] {
        for p in prefixes {
            let path = gateway_path(cfg, p);
            let target = if path == *p {
                crate::routes::Target::AsIs
            } else {
                crate::routes::Target::Strip(cfg.discovery.api_prefix.clone())
            };
            routes.push(Route {
                prefix: path,
                service: service.into(),
                methods: vec![],
                target,
                public: false,
                permission: None,
                self_permission: None,
                timeout: Duration::from_secs(1),
                client_limit: None,
                user_limit: None,
                blocked: false,
                origin: crate::routes::Origin::Announced,
                metrics: Default::default(),
            });
        }
    }
    let table = RouteTable::new(routes);

    let old = std::mem::take(&mut doc.paths.paths);
    for (service_path, mut item) in old {
        let path = gateway_path(cfg, &service_path);
        let sample = sample_path(&path);
        for (method, slot) in operations(&mut item) {
            let Some(op) = slot.as_mut() else { continue };
            let route = route_for(&table, &method_of(method), &sample);
            let Some(route) = route.filter(|r| !r.blocked) else {
                *slot = None;
                continue;
            };
            let mut statuses: Vec<u16> = vec![429, 500, 503, 504];
            let has_params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            if let Some(body) = op.request_body.as_mut() {
                statuses.extend([400, 413]);
                if OPTIONAL_BODY.contains(&(method, service_path.as_str())) {
                    body.required = Some(Required::False);
                }
            }
            if has_params {
                statuses.push(400);
            }
            if !route.public {
                statuses.push(401);
                op.security = Some(vec![SecurityRequirement::new(
                    "bearer",
                    Vec::<String>::new(),
                )]);
            }
            if route.permission.is_some() {
                statuses.push(403);
            }
            if let Some((_, _, extra)) = SERVICE_ERRORS
                .iter()
                .find(|(m, p, _)| *m == method && *p == service_path)
            {
                statuses.extend(extra.iter().copied());
            }
            statuses.sort_unstable();
            statuses.dedup();
            for s in statuses {
                let name = PROBLEMS
                    .iter()
                    .find(|(code, _, _)| *code == s)
                    .map(|(_, n, _)| *n)
                    .unwrap_or("InternalError");
                op.responses
                    .responses
                    .insert(s.to_string(), RefOr::Ref(Ref::from_response_name(name)));
            }
        }
        if operations(&mut item).iter().any(|(_, o)| o.is_some()) {
            doc.paths.paths.insert(path, item);
        }
    }

    let components = doc.components.get_or_insert_with(Default::default);
    for (status, name, description) in PROBLEMS {
        components
            .responses
            .insert((*name).to_owned(), problem_response(description, *status));
    }
    components.security_schemes.insert(
        "bearer".to_owned(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(format!(
                    "An access token from POST {}/v1/auth/login",
                    cfg.discovery.api_prefix
                )))
                .build(),
        ),
    );
    doc
}

/// The documented paths and their methods, so that a method a documented path does not have
/// is answered 405 with `Allow` as the document says — before authentication, since the
/// method is wrong whoever asks.
#[derive(Debug, Default)]
pub struct Documented {
    /// By number of segments.
    by_len: std::collections::HashMap<usize, Vec<Template>>,
}

/// A documented path's segments (`None` for a parameter), and its methods.
type Template = (Vec<Option<String>>, Vec<Method>);

impl Documented {
    pub fn new(doc: &utoipa::openapi::OpenApi) -> Self {
        let mut by_len: std::collections::HashMap<usize, Vec<_>> = Default::default();
        for (template, item) in &doc.paths.paths {
            let mut item = item.clone();
            let mut methods: Vec<Method> = operations(&mut item)
                .into_iter()
                .filter(|(_, op)| op.is_some())
                .map(|(name, _)| method_of(name))
                .collect();
            if methods.contains(&Method::GET) && !methods.contains(&Method::HEAD) {
                methods.push(Method::HEAD);
            }
            let segments: Vec<Option<String>> = template
                .split('/')
                .map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_owned()))
                .collect();
            by_len
                .entry(segments.len())
                .or_default()
                .push((segments, methods));
        }
        Self { by_len }
    }

    /// The methods documented for `path`: of the matching template with the most literal
    /// segments (`/users/me` before `/users/{id}`); `None` when no template matches.
    pub fn methods(&self, path: &str) -> Option<&[Method]> {
        let candidates = self.by_len.get(&path.split('/').count())?;
        let mut best: Option<(usize, &[Method])> = None;
        for (segments, methods) in candidates {
            let mut literal = 0;
            let matches = segments.iter().zip(path.split('/')).all(|(t, s)| match t {
                Some(t) => {
                    literal += 1;
                    t == s
                }
                None => !s.is_empty(),
            });
            if matches && best.is_none_or(|(l, _)| literal > l) {
                best = Some((literal, methods));
            }
        }
        best.map(|(_, m)| m)
    }
}
