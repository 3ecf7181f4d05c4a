//! The blog core: the contract's behaviour. The runtime checked each method's rule (signed
//! in, `blog.posts.write`, …) before any of this runs; what is decided here is per post,
//! against broken object-level authorization:
//!
//! - the author owns the post (kept with the post);
//! - anyone else needs the permission on that one post, asked of authz with
//!   `Check(user, permission, post:<id>)`: granted by a relation on it (`editor`, `viewer`),
//!   by the permission granted on it, by a role holding it (admins), or by
//!   `blog.posts.manage`;
//! - a post one may not read answers "not found" (404) whatever the method, so ids reveal
//!   nothing; one one may read but not change answers "permission denied" (403).
//!
//! Published posts are public and cached (`cx.cache("posts")`): by id and by slug, dropped
//! after every change of the post on this instance, and on every other instance through the
//! post's own events. Every change commits with its audit record and its event.

use crate::{
    config::BlogConfig,
    store::{AttachmentRecord, BlogStore, CommentRecord, PostFilter, PostRecord},
};
use async_trait::async_trait;
use blog_contract::{BlogServiceClient, events, pb};
use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use plt_contracts::{
    Error, ErrorCode, RequestContext, Result,
    audit::Outcome,
    authz::{AuthzServiceClient, ResourceGrant, ResourceGrantFilter},
};
use plt_outbox::{Message, audit::AuditEvent};
use std::sync::Arc;
use uuid::Uuid;

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_BODY_CHARS: usize = 100_000;
pub const MAX_COMMENT_CHARS: usize = 5_000;
pub const MAX_TAGS: usize = 10;
pub const MAX_SLUG_CHARS: usize = 100;
const DEFAULT_PAGE_SIZE: u32 = 20;

pub const READ: &str = "blog.posts.read";
pub const EDIT: &str = "blog.posts.edit";
pub const SHARE: &str = "blog.posts.share";
pub const DELETE: &str = "blog.posts.delete";
pub const MANAGE: &str = "blog.posts.manage";
/// The relation an editor holds on a post.
pub const EDITOR: &str = "editor";

pub const DRAFT: &str = "draft";
pub const PUBLISHED: &str = "published";
pub const UNPUBLISHED: &str = "unpublished";

pub struct BlogCore {
    store: Arc<dyn BlogStore>,
    cfg: BlogConfig,
    authz: Arc<dyn AuthzServiceClient>,
    cache: plt_cache::Cache,
    blob: Arc<dyn plt_blob::BlobStore>,
    events: plt_events::Publisher,
    outbox: plt_outbox::Outbox,
}

fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// The `updated_at` of a change of `before`: now, and later than its last one (the store's
/// no-lost-update check compares it).
fn changed_at(before: &PostRecord) -> DateTime<Utc> {
    now().max(before.updated_at + chrono::Duration::microseconds(1))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn caller(ctx: &RequestContext) -> Result<Uuid> {
    ctx.user_id()
        .and_then(|u| Uuid::parse_str(u).ok())
        .ok_or_else(|| Error::unauthenticated("sign in first"))
}

fn parse_id(field: &str, v: &str) -> Result<Uuid> {
    Uuid::parse_str(v).map_err(|_| Error::invalid(field, "must be a UUID"))
}

fn not_found() -> Error {
    Error::not_found("post")
}

fn check_title(title: &str) -> Result<String> {
    let t = title.trim();
    let n = t.chars().count();
    if n == 0 || n > MAX_TITLE_CHARS {
        return Err(Error::invalid(
            "title",
            format!("must be 1 to {MAX_TITLE_CHARS} characters"),
        ));
    }
    Ok(t.to_owned())
}

fn check_body(body: &str) -> Result<()> {
    if body.chars().count() > MAX_BODY_CHARS {
        return Err(Error::invalid(
            "body",
            format!("must be at most {MAX_BODY_CHARS} characters"),
        ));
    }
    Ok(())
}

fn slug_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'
}

fn check_slug(slug: &str) -> Result<()> {
    if slug.is_empty()
        || slug.chars().count() > MAX_SLUG_CHARS
        || !slug.chars().all(slug_char)
        || slug.starts_with('-')
        || slug.ends_with('-')
    {
        return Err(Error::invalid(
            "slug",
            format!(
                "must be 1 to {MAX_SLUG_CHARS} characters of a-z, 0-9 and '-', not starting or ending with '-'"
            ),
        ));
    }
    Ok(())
}

/// A slug from a title: lower-case letters and digits, runs of anything else as one `-`,
/// and a short random suffix so two posts with one title get two slugs.
fn slug_from(title: &str) -> String {
    let mut s = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            s.push(c);
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    let mut s: String = s.trim_matches('-').chars().take(80).collect();
    if s.ends_with('-') {
        s.pop();
    }
    let suffix = &Uuid::new_v4().simple().to_string()[..6];
    if s.is_empty() {
        format!("post-{suffix}")
    } else {
        format!("{s}-{suffix}")
    }
}

/// Tags as stored (`,a,b,`), checked, sorted, without duplicates.
fn tags_of(tags: &[String]) -> Result<String> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid("tags", format!("at most {MAX_TAGS} tags")));
    }
    let mut out: Vec<&str> = Vec::new();
    for (i, t) in tags.iter().enumerate() {
        if t.is_empty() || t.len() > 32 || !t.chars().all(slug_char) {
            return Err(Error::invalid(
                format!("tags[{i}]"),
                "must be 1 to 32 characters of a-z, 0-9 and '-'",
            ));
        }
        out.push(t);
    }
    out.sort_unstable();
    out.dedup();
    Ok(format!(",{},", out.join(",")).replace(",,", ","))
}

fn tags_list(stored: &str) -> Vec<String> {
    stored
        .split(',')
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

fn to_pb(p: &PostRecord) -> pb::Post {
    pb::Post {
        id: p.id.to_string(),
        author_id: p.author_id.to_string(),
        status: p.status.clone(),
        slug: p.slug.clone(),
        title: p.title.clone(),
        body: p.body.clone(),
        tags: tags_list(&p.tags),
        created_at: rfc3339(p.created_at),
        updated_at: rfc3339(p.updated_at),
        published_at: p.published_at.map(rfc3339).unwrap_or_default(),
    }
}

fn comment_pb(c: &CommentRecord) -> pb::Comment {
    pb::Comment {
        id: c.id.to_string(),
        post_id: c.post_id.to_string(),
        author_id: c.author_id.to_string(),
        body: c.body.clone(),
        created_at: rfc3339(c.created_at),
    }
}

fn page_size(requested: u32, max: u32) -> Result<u32> {
    if requested > max {
        return Err(Error::invalid(
            "page_size",
            format!("must be at most {max}"),
        ));
    }
    Ok(if requested == 0 {
        DEFAULT_PAGE_SIZE.min(max)
    } else {
        requested
    })
}

fn page_token(token: &str) -> Result<Option<Uuid>> {
    if token.is_empty() {
        return Ok(None);
    }
    Uuid::parse_str(token)
        .map(Some)
        .map_err(|_| Error::invalid("page_token", "is not a page token from this service"))
}

/// The address of the end user as the request states it (the gateway's `x-plt-client-ip`),
/// else the TCP peer.
fn source(ctx: &RequestContext) -> Option<std::net::IpAddr> {
    ctx.client_ip.or(ctx.peer.map(|p| p.ip()))
}

/// A key of the public cache.
fn by_id(id: Uuid) -> String {
    format!("id:{id}")
}

fn by_slug(slug: &str) -> String {
    format!("slug:{slug}")
}

/// The resource name of a post in authz.
pub fn resource(id: Uuid) -> String {
    format!("post:{id}")
}

impl BlogCore {
    pub fn new(
        store: Arc<dyn BlogStore>,
        cfg: BlogConfig,
        authz: Arc<dyn AuthzServiceClient>,
        cache: plt_cache::Cache,
        blob: Arc<dyn plt_blob::BlobStore>,
        events: plt_events::Publisher,
        outbox: plt_outbox::Outbox,
    ) -> Self {
        Self {
            store,
            cfg,
            authz,
            cache,
            blob,
            events,
            outbox,
        }
    }

    pub fn store(&self) -> &Arc<dyn BlogStore> {
        &self.store
    }

    pub fn blob(&self) -> &Arc<dyn plt_blob::BlobStore> {
        &self.blob
    }

    pub fn config(&self) -> &BlogConfig {
        &self.cfg
    }

    /// authz asked as this service: only the request id travels on.
    fn ask(ctx: &RequestContext) -> RequestContext {
        RequestContext {
            request_id: ctx.request_id.clone(),
            deadline: ctx.deadline,
            ..Default::default()
        }
    }

    /// Whether `user` may do `permission` on the post: its author may do anything;
    /// anyone else as authz decides for `post:<id>` (the permission, or
    /// `blog.posts.manage`).
    pub async fn may(
        &self,
        ctx: &RequestContext,
        user: Uuid,
        permission: &str,
        post: &PostRecord,
    ) -> Result<bool> {
        if post.author_id == user {
            return Ok(true);
        }
        let ask = Self::ask(ctx);
        let on = resource(post.id);
        for p in [permission, MANAGE] {
            match self.authz.check(&ask, user, p, &on).await {
                Ok(true) => return Ok(true),
                Ok(false) => {}
                Err(e)
                    if matches!(e.code, ErrorCode::Unavailable | ErrorCode::DeadlineExceeded) =>
                {
                    return Err(Error::dependency_unavailable(
                        "authorization",
                        "checking a post permission",
                        &e,
                    ));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }

    /// The post, if the caller may read it (published: anyone); else not found.
    pub async fn readable(&self, ctx: &RequestContext, id: Uuid) -> Result<PostRecord> {
        let post = self.store.get_post(id).await?.ok_or_else(not_found)?;
        if post.status == PUBLISHED {
            return Ok(post);
        }
        match ctx.user_id().and_then(|u| Uuid::parse_str(u).ok()) {
            Some(user) if self.may(ctx, user, READ, &post).await? => Ok(post),
            _ => Err(not_found()),
        }
    }

    /// The post and the caller, if the caller may do `permission` to it: not found when it
    /// may not even read it, permission denied when it may read but not do this.
    async fn allowed(
        &self,
        ctx: &RequestContext,
        id: &str,
        permission: &str,
    ) -> Result<(PostRecord, Uuid)> {
        let user = caller(ctx)?;
        let id = parse_id("id", id)?;
        let post = self.readable(ctx, id).await?;
        if self.may(ctx, user, permission, &post).await? {
            Ok((post, user))
        } else {
            Err(Error::new(
                ErrorCode::PermissionDenied,
                format!("you may not do this to this post (needs {permission})"),
            ))
        }
    }

    /// The audit record and event of a change to `post`, to commit with it.
    fn messages(
        &self,
        ctx: &RequestContext,
        actor: Uuid,
        action: &str,
        post: &PostRecord,
        event: Option<&str>,
        meta: serde_json::Value,
    ) -> Vec<Message> {
        let mut record = AuditEvent::new(
            actor.to_string(),
            action,
            resource(post.id),
            Outcome::Success,
        )
        .request(ctx, source(ctx));
        if let serde_json::Value::Object(m) = meta {
            for (k, v) in m {
                record = record.meta(&k, v);
            }
        }
        let mut out = vec![record.message()];
        if let Some(event_type) = event {
            out.extend(self.events.message(
                event_type,
                &resource(post.id),
                &post.id.to_string(),
                events::PostEvent {
                    post_id: post.id.to_string(),
                    author_id: post.author_id.to_string(),
                    slug: post.slug.clone(),
                    title: post.title.clone(),
                    status: if event_type == events::POST_DELETED {
                        "deleted".into()
                    } else {
                        post.status.clone()
                    },
                    by: actor.to_string(),
                    at: rfc3339(now()),
                },
            ));
        }
        out
    }

    /// Drops what the public cache holds of the post (after a change committed).
    pub async fn forget(&self, id: Uuid, slugs: &[&str]) {
        let mut keys = vec![by_id(id)];
        keys.extend(slugs.iter().map(|s| by_slug(s)));
        for k in keys {
            if let Err(e) = self.cache.delete(&k).await {
                tracing::warn!(key = %k, error = %e, "dropping a cached post failed; it expires with its TTL");
            }
        }
    }

    /// A published post from the cache, loading it on a miss (drafts are not cached).
    async fn published(
        &self,
        key: String,
        load: impl Future<Output = Result<Option<PostRecord>>>,
    ) -> Result<Option<PostRecord>> {
        self.cache
            .get_or_load(&key, || async move {
                Ok::<_, Error>(load.await?.filter(|p| p.status == PUBLISHED))
            })
            .await
    }

    /// Writes the changed post (no lost update), then forgets the cached one.
    async fn save(&self, before: &PostRecord, after: &PostRecord, msgs: &[Message]) -> Result<()> {
        match self
            .store
            .update_post(after, before.updated_at, msgs)
            .await?
        {
            Some(true) => {}
            Some(false) => return Err(Error::already_exists("a post with this slug exists")),
            None => {
                return Err(Error::new(
                    ErrorCode::FailedPrecondition,
                    "the post changed meanwhile; read it again and retry",
                ));
            }
        }
        self.forget(after.id, &[&before.slug, &after.slug]).await;
        Ok(())
    }

    async fn editors(
        &self,
        ctx: &RequestContext,
        post: &PostRecord,
    ) -> Result<pb::EditorsResponse> {
        let grants = self
            .authz
            .list_resource_grants(
                &Self::ask(ctx),
                ResourceGrantFilter {
                    resource: Some(resource(post.id)),
                    ..Default::default()
                },
            )
            .await?;
        let mut editors = vec![pb::Editor {
            user_id: post.author_id.to_string(),
            role: "owner".into(),
        }];
        editors.extend(
            grants
                .into_iter()
                .filter(|g| g.grant == EDITOR)
                .map(|g| pb::Editor {
                    user_id: g.user_id.to_string(),
                    role: EDITOR.into(),
                }),
        );
        Ok(pb::EditorsResponse { editors })
    }

    /// Stores an attachment of a post the caller may edit: the bytes in the blob store
    /// (`blog/posts/<id>/<name>`), the row and its audit record in one transaction.
    pub async fn put_attachment(
        &self,
        ctx: &RequestContext,
        id: &str,
        name: &str,
        content_type: &str,
        bytes: bytes::Bytes,
    ) -> Result<pb::Attachment> {
        let (post, user) = self.allowed(ctx, id, EDIT).await?;
        check_attachment_name(name)?;
        let content_type = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if !self.cfg.attachments.content_types.contains(&content_type) {
            return Err(Error::invalid(
                "content-type",
                format!(
                    "must be one of {}",
                    self.cfg.attachments.content_types.join(", ")
                ),
            ));
        }
        if bytes.len() as u64 > self.cfg.attachments.max_bytes {
            return Err(Error::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "an attachment is at most {} bytes",
                    self.cfg.attachments.max_bytes
                ),
            )
            .with_violation("body", "too large"));
        }
        let key = format!("blog/posts/{}/{name}", post.id);
        let size = bytes.len();
        let info = self
            .blob
            .put(&key, bytes, &content_type)
            .await
            .map_err(blob_error)?;
        let record = AttachmentRecord {
            post_id: post.id,
            name: name.to_owned(),
            content_type: info.content_type.clone(),
            size: i64::try_from(size).unwrap_or(i64::MAX),
            blob_key: key,
            created_at: now(),
        };
        let msgs = self.messages(
            ctx,
            user,
            "blog.attachment.put",
            &post,
            None,
            serde_json::json!({"name": name, "content_type": content_type, "size": size}),
        );
        self.store.put_attachment(&record, &msgs).await?;
        Ok(attachment_pb(&record))
    }

    /// An attachment's bytes, if the caller may read its post.
    pub async fn get_attachment(
        &self,
        ctx: &RequestContext,
        id: &str,
        name: &str,
    ) -> Result<plt_blob::Object> {
        let id = parse_id("id", id)?;
        let post = self.readable(ctx, id).await?;
        let a = self
            .store
            .attachment(post.id, name)
            .await?
            .ok_or_else(|| Error::not_found("attachment"))?;
        self.blob
            .get(&a.blob_key)
            .await
            .map_err(blob_error)?
            .ok_or_else(|| Error::not_found("attachment"))
    }
}

fn check_attachment_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "name",
            "must be 1 to 100 characters of A-Z, a-z, 0-9, '-', '_' and '.', not starting with '.'",
        ))
    }
}

fn attachment_pb(a: &AttachmentRecord) -> pb::Attachment {
    pb::Attachment {
        name: a.name.clone(),
        content_type: a.content_type.clone(),
        size: u64::try_from(a.size).unwrap_or_default(),
        url: format!("/v1/blog/posts/{}/attachments/{}", a.post_id, a.name),
    }
}

fn blob_error(e: plt_blob::BlobError) -> Error {
    if e.is_unavailable() {
        Error::dependency_unavailable("the blob store", "attachments", &e)
    } else {
        match e {
            plt_blob::BlobError::InvalidKey { reason, .. } => Error::invalid("name", reason),
            plt_blob::BlobError::TooLarge { max, .. } => {
                Error::invalid("body", format!("at most {max} bytes"))
            }
            other => Error::internal("blob store", &other),
        }
    }
}

#[async_trait]
impl BlogServiceClient for BlogCore {
    async fn create_post(
        &self,
        ctx: &RequestContext,
        req: pb::CreatePostRequest,
    ) -> Result<pb::Post> {
        let author = caller(ctx)?;
        let title = check_title(&req.title)?;
        check_body(&req.body)?;
        let tags = tags_of(&req.tags)?;
        let slug = if req.slug.is_empty() {
            slug_from(&title)
        } else {
            check_slug(&req.slug)?;
            req.slug
        };
        let t = now();
        let post = PostRecord {
            id: Uuid::now_v7(),
            author_id: author,
            status: DRAFT.into(),
            slug,
            title,
            body: req.body,
            tags,
            created_at: t,
            updated_at: t,
            published_at: None,
        };
        let msgs = self.messages(
            ctx,
            author,
            "blog.post.create",
            &post,
            None,
            serde_json::json!({"slug": post.slug}),
        );
        if !self.store.insert_post(&post, &msgs).await? {
            return Err(Error::already_exists("a post with this slug exists"));
        }
        Ok(to_pb(&post))
    }

    async fn list_posts(
        &self,
        _ctx: &RequestContext,
        req: pb::ListPostsRequest,
    ) -> Result<pb::ListPostsResponse> {
        let size = page_size(req.page_size, self.cfg.max_page_size)?;
        let before = page_token(&req.page_token)?;
        let filter = PostFilter {
            tag: if req.tag.is_empty() {
                None
            } else {
                tags_of(std::slice::from_ref(&req.tag)).map_err(|_| {
                    Error::invalid("tag", "must be 1 to 32 characters of a-z, 0-9 and '-'")
                })?;
                Some(req.tag)
            },
            author: if req.author_id.is_empty() {
                None
            } else {
                Some(parse_id("author_id", &req.author_id)?)
            },
        };
        let mut rows = self.store.list_published(&filter, before, size + 1).await?;
        Ok(page(&mut rows, size))
    }

    async fn list_my_posts(
        &self,
        ctx: &RequestContext,
        req: pb::ListMyPostsRequest,
    ) -> Result<pb::ListPostsResponse> {
        let size = page_size(req.page_size, self.cfg.max_page_size)?;
        let before = page_token(&req.page_token)?;
        let mut rows = self
            .store
            .list_by_author(caller(ctx)?, before, size + 1)
            .await?;
        Ok(page(&mut rows, size))
    }

    async fn get_post(&self, ctx: &RequestContext, req: pb::GetPostRequest) -> Result<pb::Post> {
        let id = parse_id("id", &req.id)?;
        let store = self.store.clone();
        if let Some(p) = self
            .published(by_id(id), async move { store.get_post(id).await })
            .await?
        {
            return Ok(to_pb(&p));
        }
        Ok(to_pb(&self.readable(ctx, id).await?))
    }

    async fn get_post_by_slug(
        &self,
        ctx: &RequestContext,
        req: pb::GetPostBySlugRequest,
    ) -> Result<pb::Post> {
        check_slug(&req.slug)?;
        let store = self.store.clone();
        let slug = req.slug.clone();
        if let Some(p) = self
            .published(by_slug(&req.slug), async move {
                store.post_by_slug(&slug).await
            })
            .await?
        {
            return Ok(to_pb(&p));
        }
        let post = self
            .store
            .post_by_slug(&req.slug)
            .await?
            .ok_or_else(not_found)?;
        Ok(to_pb(&self.readable(ctx, post.id).await?))
    }

    async fn update_post(
        &self,
        ctx: &RequestContext,
        req: pb::UpdatePostRequest,
    ) -> Result<pb::Post> {
        let (before, user) = self.allowed(ctx, &req.id, EDIT).await?;
        let mut after = before.clone();
        if !req.title.is_empty() {
            after.title = check_title(&req.title)?;
        }
        if !req.body.is_empty() {
            check_body(&req.body)?;
            after.body = req.body;
        }
        if req.set_tags || !req.tags.is_empty() {
            after.tags = tags_of(&req.tags)?;
        }
        if !req.slug.is_empty() {
            check_slug(&req.slug)?;
            after.slug = req.slug;
        }
        after.updated_at = changed_at(&before);
        let event = (after.status == PUBLISHED).then_some(events::POST_UPDATED);
        let msgs = self.messages(
            ctx,
            user,
            "blog.post.update",
            &after,
            event,
            serde_json::json!({"slug": after.slug}),
        );
        self.save(&before, &after, &msgs).await?;
        Ok(to_pb(&after))
    }

    async fn publish_post(
        &self,
        ctx: &RequestContext,
        req: pb::PublishPostRequest,
    ) -> Result<pb::Post> {
        self.set_published(ctx, &req.id, true).await
    }

    async fn unpublish_post(
        &self,
        ctx: &RequestContext,
        req: pb::UnpublishPostRequest,
    ) -> Result<pb::Post> {
        self.set_published(ctx, &req.id, false).await
    }

    async fn delete_post(
        &self,
        ctx: &RequestContext,
        req: pb::DeletePostRequest,
    ) -> Result<pb::DeletePostResponse> {
        let (post, user) = self.allowed(ctx, &req.id, DELETE).await?;
        let attachments = self.store.attachments(post.id).await?;
        let msgs = self.messages(
            ctx,
            user,
            "blog.post.delete",
            &post,
            Some(events::POST_DELETED),
            serde_json::json!({"slug": post.slug}),
        );
        if !self.store.delete_post(post.id, &msgs).await? {
            return Err(not_found());
        }
        self.forget(post.id, &[&post.slug]).await;
        // The post is gone; its files and grants are tidied after (a failure leaves
        // unreachable bytes or grants on a post that no longer exists, never access).
        for a in attachments {
            if let Err(e) = self.blob.delete(&a.blob_key).await {
                tracing::warn!(key = %a.blob_key, error = %e, "deleting an attachment's bytes failed");
            }
        }
        if let Ok(grants) = self
            .authz
            .list_resource_grants(
                &Self::ask(ctx),
                ResourceGrantFilter {
                    resource: Some(resource(post.id)),
                    ..Default::default()
                },
            )
            .await
        {
            for g in grants {
                let _ = self.authz.revoke_resource(&Self::ask(ctx), g).await;
            }
        }
        Ok(pb::DeletePostResponse {})
    }

    async fn add_editor(
        &self,
        ctx: &RequestContext,
        req: pb::EditorRequest,
    ) -> Result<pb::EditorsResponse> {
        self.change_editor(ctx, req, true).await
    }

    async fn remove_editor(
        &self,
        ctx: &RequestContext,
        req: pb::EditorRequest,
    ) -> Result<pb::EditorsResponse> {
        self.change_editor(ctx, req, false).await
    }

    async fn list_editors(
        &self,
        ctx: &RequestContext,
        req: pb::ListEditorsRequest,
    ) -> Result<pb::EditorsResponse> {
        let user = caller(ctx)?;
        let post = self.readable(ctx, parse_id("id", &req.id)?).await?;
        if !self.may(ctx, user, READ, &post).await? {
            return Err(Error::new(
                ErrorCode::PermissionDenied,
                format!("you may not see who edits this post (needs {READ})"),
            ));
        }
        self.editors(ctx, &post).await
    }

    async fn create_comment(
        &self,
        ctx: &RequestContext,
        req: pb::CreateCommentRequest,
    ) -> Result<pb::Comment> {
        let user = caller(ctx)?;
        let id = parse_id("post_id", &req.post_id)?;
        let post = self.readable(ctx, id).await?;
        if post.status != PUBLISHED {
            return Err(Error::new(
                ErrorCode::FailedPrecondition,
                "comments are for published posts",
            ));
        }
        let body = req.body.trim();
        let n = body.chars().count();
        if n == 0 || n > MAX_COMMENT_CHARS {
            return Err(Error::invalid(
                "body",
                format!("must be 1 to {MAX_COMMENT_CHARS} characters"),
            ));
        }
        let c = CommentRecord {
            id: Uuid::now_v7(),
            post_id: post.id,
            author_id: user,
            body: body.to_owned(),
            created_at: now(),
        };
        let msgs = self.messages(
            ctx,
            user,
            "blog.comment.create",
            &post,
            None,
            serde_json::json!({"comment_id": c.id}),
        );
        self.store.insert_comment(&c, &msgs).await?;
        Ok(comment_pb(&c))
    }

    async fn list_comments(
        &self,
        ctx: &RequestContext,
        req: pb::ListCommentsRequest,
    ) -> Result<pb::ListCommentsResponse> {
        let id = parse_id("post_id", &req.post_id)?;
        let post = self.readable(ctx, id).await?;
        let size = page_size(req.page_size, self.cfg.max_page_size)?;
        let after = page_token(&req.page_token)?;
        let mut rows = self.store.list_comments(post.id, after, size + 1).await?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        Ok(pb::ListCommentsResponse {
            next_page_token: if more {
                rows.last().map(|c| c.id.to_string()).unwrap_or_default()
            } else {
                String::new()
            },
            comments: rows.iter().map(comment_pb).collect(),
        })
    }

    async fn list_attachments(
        &self,
        ctx: &RequestContext,
        req: pb::ListAttachmentsRequest,
    ) -> Result<pb::ListAttachmentsResponse> {
        let post = self.readable(ctx, parse_id("id", &req.id)?).await?;
        let rows = self.store.attachments(post.id).await?;
        Ok(pb::ListAttachmentsResponse {
            attachments: rows.iter().map(attachment_pb).collect(),
        })
    }
}

impl BlogCore {
    /// Publishes the post (`publish`) or takes it back to private, for a caller who may edit
    /// it; a post already so is answered as it is.
    async fn set_published(
        &self,
        ctx: &RequestContext,
        id: &str,
        publish: bool,
    ) -> Result<pb::Post> {
        let (before, user) = self.allowed(ctx, id, EDIT).await?;
        if (before.status == PUBLISHED) == publish {
            return Ok(to_pb(&before));
        }
        let mut after = before.clone();
        after.updated_at = changed_at(&before);
        let (action, event) = if publish {
            after.status = PUBLISHED.into();
            after.published_at.get_or_insert(after.updated_at);
            ("blog.post.publish", events::POST_PUBLISHED)
        } else {
            after.status = UNPUBLISHED.into();
            ("blog.post.unpublish", events::POST_UNPUBLISHED)
        };
        let msgs = self.messages(
            ctx,
            user,
            action,
            &after,
            Some(event),
            serde_json::json!({}),
        );
        self.save(&before, &after, &msgs).await?;
        Ok(to_pb(&after))
    }

    /// Makes `req.user_id` an editor of the post (`add`) or no longer one, for a caller who
    /// may share it (its owner); the change is authz's resource grant, audited here.
    async fn change_editor(
        &self,
        ctx: &RequestContext,
        req: pb::EditorRequest,
        add: bool,
    ) -> Result<pb::EditorsResponse> {
        let editor = parse_id("user_id", &req.user_id)?;
        let (post, user) = self.allowed(ctx, &req.id, SHARE).await?;
        if add && editor == post.author_id {
            return Err(Error::invalid("user_id", "is the post's author already"));
        }
        let grant = ResourceGrant {
            user_id: editor,
            resource: resource(post.id),
            grant: EDITOR.into(),
            granted_by: String::new(),
        };
        let ask = Self::ask(ctx);
        let changed = if add {
            self.authz.grant_resource(&ask, grant).await?
        } else {
            self.authz.revoke_resource(&ask, grant).await?
        };
        if changed {
            let action = if add {
                "blog.post.editor.add"
            } else {
                "blog.post.editor.remove"
            };
            let msgs = self.messages(
                ctx,
                user,
                action,
                &post,
                None,
                serde_json::json!({"editor": editor}),
            );
            if let Err(e) = self.store_audit(&msgs).await {
                tracing::error!(error = %e, action, "audit record not written");
            }
        }
        self.editors(ctx, &post).await
    }

    /// Audit records of a change made elsewhere (an editor granted in authz), in a
    /// transaction of their own.
    async fn store_audit(&self, msgs: &[Message]) -> anyhow::Result<()> {
        self.outbox.enqueue_alone(msgs).await?;
        Ok(())
    }
}

fn page(rows: &mut Vec<PostRecord>, size: u32) -> pb::ListPostsResponse {
    let more = rows.len() > size as usize;
    rows.truncate(size as usize);
    pb::ListPostsResponse {
        next_page_token: if more {
            rows.last().map(|p| p.id.to_string()).unwrap_or_default()
        } else {
            String::new()
        },
        posts: rows.iter().map(to_pb).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_tags() {
        let s = slug_from("Hello, World! 2026");
        assert!(s.starts_with("hello-world-2026-"), "{s}");
        assert!(check_slug(&s).is_ok());
        assert!(slug_from("¡¡¡").starts_with("post-"));
        assert!(check_slug("-a").is_err());
        assert!(check_slug("A").is_err());
        assert_eq!(
            tags_of(&["rust".into(), "a-b".into(), "rust".into()]).unwrap(),
            ",a-b,rust,"
        );
        assert_eq!(tags_of(&[]).unwrap(), ",");
        assert_eq!(tags_list(",a-b,rust,"), vec!["a-b", "rust"]);
        assert!(tags_of(&["A".into()]).is_err());
        assert!(check_attachment_name("photo.png").is_ok());
        for bad in ["", ".x", "a/b", "a b", "..", "x%2F"] {
            assert!(check_attachment_name(bad).is_err(), "{bad}");
        }
    }
}
