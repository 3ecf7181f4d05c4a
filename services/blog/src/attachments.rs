//! A post's attachments over HTTP: the bytes are the request body, not JSON.
//!
//! | method | path | answer |
//! |---|---|---|
//! | PUT | /v1/blog/posts/{id}/attachments/{name} | 201 `{name, content_type, size, url}`; needs `blog.posts.edit` on the post |
//! | GET | /v1/blog/posts/{id}/attachments/{name} | 200 the bytes; public when the post is published |
//!
//! These routes are outside the contract, so they check the caller here: the access token
//! verified like the runtime does (auth's keys and revocations), then the post's rules in
//! the core. Errors are problem+json.

use crate::core::BlogCore;
use axum::{
    Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::put,
};
use plt_contracts::{
    Error, RequestContext,
    access::Principal,
    http_api::{ApiError, json_response},
};
use std::sync::Arc;

#[derive(Clone)]
struct St {
    core: Arc<BlogCore>,
    verifier: plt_authn::Verifier,
}

pub fn routes(core: Arc<BlogCore>, verifier: plt_authn::Verifier) -> Router {
    // The body may be up to the configured maximum (plus room to refuse larger ones with a
    // clear error instead of a cut connection).
    let limit = usize::try_from(core.config().attachments.max_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1);
    Router::new()
        .route(
            "/v1/blog/posts/{id}/attachments/{name}",
            put(upload).get(download),
        )
        .layer(DefaultBodyLimit::max(limit))
        .with_state(St { core, verifier })
}

/// The caller's user id from a valid access token; none without a token.
async fn identify(
    st: &St,
    mut ctx: RequestContext,
    required: bool,
) -> Result<RequestContext, ApiError> {
    match ctx.bearer_token() {
        Some(token) => {
            let claims = st
                .verifier
                .verify(token)
                .await
                .map_err(|_| Error::unauthenticated("invalid or expired access token"))?;
            ctx.principal = Some(Principal::User(claims.sub));
            Ok(ctx)
        }
        None if required => Err(Error::unauthenticated(
            "sign in first: an access token (Authorization: Bearer) is required",
        )
        .into()),
        None => Ok(ctx),
    }
}

async fn upload(
    State(st): State<St>,
    ctx: RequestContext,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ctx = identify(&st, ctx, true).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let a = st
        .core
        .put_attachment(&ctx, &id, &name, content_type, body)
        .await?;
    Ok(json_response(StatusCode::CREATED, &a))
}

async fn download(
    State(st): State<St>,
    ctx: RequestContext,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let ctx = identify(&st, ctx, false).await?;
    let o = st.core.get_attachment(&ctx, &id, &name).await?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, o.info.content_type.clone()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (header::CONTENT_SECURITY_POLICY, "sandbox".to_owned()),
        ],
        o.bytes,
    )
        .into_response())
}
