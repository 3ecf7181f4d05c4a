//! blog-service: posts (draft, published, unpublished; slug; Markdown body; tags), comments
//! and attachments, served over gRPC and HTTP/JSON by the plt runtime.
//!
//! - **Object-level permissions.** The author owns a post; editors are granted per post
//!   (authz `GrantResource(editor, post:<id>)`); `blog.posts.manage` (admins) may do
//!   anything. Every method that names a post asks authz `Check(user, permission,
//!   post:<id>)` (cached by authz under its staleness bound): a post one may not read is
//!   404, one one may read but not change is 403. See [`core`].
//! - **Public reads, cached.** Published posts are public through the gateway and cached
//!   (`cache` section: memory or Redis), dropped after each change here and, on the other
//!   instances, by the post's own events.
//! - **Attachments** (images, files) in the blob store (`blob` section: files or S3), with
//!   size and type limits (`blog.attachments`): `PUT /v1/blog/posts/{id}/attachments/{name}`
//!   with the bytes as the body, `GET` the same path to read them.
//! - **Events** `plt.blog.post.published.v1`, `.updated.v1`, `.unpublished.v1`,
//!   `.deleted.v1`, and an **audit record** for every change, committed with the change
//!   (outbox).

pub mod attachments;
pub mod config;
pub mod core;
pub mod store;

use blog_contract::{BlogServiceServe, events};
use plt_runtime::{Context, Manifest, Parts, Service};
use std::sync::Arc;

/// The blog service, as the runtime runs it.
pub struct Blog;

static MIGRATIONS: plt_db::Migrations = plt_db::embed_migrations!();

#[async_trait::async_trait]
impl Service for Blog {
    type Config = config::BlogConfig;
    const MANIFEST: Manifest = Manifest::new("blog", "blog-service", env!("CARGO_PKG_VERSION"))
        .calls(&["authz", "audit"])
        .migrations(&MIGRATIONS)
        .defaults(include_str!("../config.yaml"));

    async fn build(cx: &Context<Self::Config>) -> anyhow::Result<Parts> {
        let blob = cx.blob()?;
        let core = Arc::new(core::BlogCore::new(
            store::for_db(cx.db()?),
            cx.config.service.clone(),
            cx.authz().await?,
            cx.cache("posts")?,
            blob.clone(),
            cx.publisher(),
            cx.outbox()?.clone(),
        ));
        // Every instance drops its cached copy of a post when the post changes anywhere: a
        // group of its own, from the newest event on.
        let listener = plt_events::Subscription::new(
            &format!("blog.cache.{}", uuid::Uuid::new_v4().simple()),
            events::ALL,
            Arc::new(CacheListener(core.clone())),
        )
        .start(plt_events::Start::Latest);
        let mut parts = Parts::new()
            .serve(BlogServiceServe(core.clone()))
            .relay(cx.audit_relay().await?)
            .subscribe(listener)
            .http(attachments::routes(core.clone(), cx.verifier()?), &[])
            // Attachments of published posts are public (the route checks the post).
            .public_http("GET", "/v1/blog/posts");
        if let Some(signed) = blob.routes() {
            parts = parts.http(signed, &[]);
        }
        Ok(parts.export(core))
    }
}

/// Drops a post from this instance's cache when any instance changed it.
struct CacheListener(Arc<core::BlogCore>);

#[async_trait::async_trait]
impl plt_events::Handler for CacheListener {
    async fn handle(
        &self,
        event: &plt_events::Event,
        _: &plt_events::Received,
    ) -> Result<(), plt_events::HandlerError> {
        let Ok(data) = serde_json::from_value::<events::PostEvent>(event.data.clone()) else {
            return Ok(());
        };
        if let Ok(id) = uuid::Uuid::parse_str(&data.post_id) {
            self.0.forget(id, &[&data.slug]).await;
        }
        Ok(())
    }
}
