//! The __name__ core: the contract's behaviour. Who may call each method was checked by the
//! runtime before any of this runs (see the .proto's access rules); what is left here is
//! ownership and validation.

use crate::{
    config::__Name__Config,
    store::{__Item__Record, __Item__Store},
};
use async_trait::async_trait;
use chrono::{SecondsFormat, SubsecRound, Utc};
use __name___contract::{__Name__ServiceClient, pb};
use plt_contracts::{Error, RequestContext, Result};
use std::sync::Arc;
use uuid::Uuid;

pub const MAX_TITLE_CHARS: usize = 200;
pub const MAX_BODY_CHARS: usize = 10_000;
const DEFAULT_PAGE_SIZE: u32 = 50;

pub struct __Name__Core {
    store: Arc<dyn __Item__Store>,
    cfg: __Name__Config,
}

impl __Name__Core {
    pub fn new(store: Arc<dyn __Item__Store>, cfg: __Name__Config) -> Self {
        Self { store, cfg }
    }

    async fn page(
        &self,
        owner: Uuid,
        page_size: u32,
        token: &str,
    ) -> Result<pb::List__Name__Response> {
        if page_size > self.cfg.max_page_size {
            return Err(Error::invalid(
                "page_size",
                format!("must be at most {}", self.cfg.max_page_size),
            ));
        }
        let size = if page_size == 0 {
            DEFAULT_PAGE_SIZE.min(self.cfg.max_page_size)
        } else {
            page_size
        };
        let after = if token.is_empty() {
            None
        } else {
            Some(Uuid::parse_str(token).map_err(|_| {
                Error::invalid("page_token", "is not a page token from this service")
            })?)
        };
        let mut rows = self.store.list(owner, after, size + 1).await?;
        let more = rows.len() > size as usize;
        rows.truncate(size as usize);
        Ok(pb::List__Name__Response {
            next_page_token: if more {
                rows.last().map(|n| n.id.to_string()).unwrap_or_default()
            } else {
                String::new()
            },
            __name__: rows.iter().map(to_pb).collect(),
        })
    }

    /// The caller's __item__ `id`; another user's __item__ is not found, as if it did not exist.
    async fn own(&self, ctx: &RequestContext, id: &str) -> Result<__Item__Record> {
        let owner = caller(ctx)?;
        let id = parse_id("id", id)?;
        match self.store.get(id).await? {
            Some(n) if n.owner_id == owner => Ok(n),
            _ => Err(Error::not_found("__item__")),
        }
    }
}

fn caller(ctx: &RequestContext) -> Result<Uuid> {
    ctx.user_id()
        .and_then(|u| Uuid::parse_str(u).ok())
        .ok_or_else(|| Error::unauthenticated("sign in first"))
}

fn parse_id(field: &str, v: &str) -> Result<Uuid> {
    Uuid::parse_str(v).map_err(|_| Error::invalid(field, "must be a UUID"))
}

fn check_title(title: &str) -> Result<()> {
    let n = title.trim().chars().count();
    if n == 0 || n > MAX_TITLE_CHARS {
        return Err(Error::invalid(
            "title",
            format!("must be 1 to {MAX_TITLE_CHARS} characters"),
        ));
    }
    Ok(())
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

fn to_pb(n: &__Item__Record) -> pb::__Item__ {
    pb::__Item__ {
        id: n.id.to_string(),
        owner_id: n.owner_id.to_string(),
        title: n.title.clone(),
        body: n.body.clone(),
        created_at: n.created_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        updated_at: n.updated_at.to_rfc3339_opts(SecondsFormat::Micros, true),
    }
}

#[async_trait]
impl __Name__ServiceClient for __Name__Core {
    async fn create___item__(
        &self,
        ctx: &RequestContext,
        req: pb::Create__Item__Request,
    ) -> Result<pb::__Item__> {
        let owner = caller(ctx)?;
        check_title(&req.title)?;
        check_body(&req.body)?;
        let now = Utc::now().trunc_subsecs(6);
        let __item__ = __Item__Record {
            id: Uuid::now_v7(),
            owner_id: owner,
            title: req.title.trim().to_owned(),
            body: req.body,
            created_at: now,
            updated_at: now,
        };
        self.store.insert(&__item__).await?;
        Ok(to_pb(&__item__))
    }

    async fn list___name__(
        &self,
        ctx: &RequestContext,
        req: pb::List__Name__Request,
    ) -> Result<pb::List__Name__Response> {
        self.page(caller(ctx)?, req.page_size, &req.page_token)
            .await
    }

    async fn list_user___name__(
        &self,
        _ctx: &RequestContext,
        req: pb::ListUser__Name__Request,
    ) -> Result<pb::List__Name__Response> {
        // The runtime admitted the owner or a holder of __name__.__name__.read_all.
        self.page(
            parse_id("owner_id", &req.owner_id)?,
            req.page_size,
            &req.page_token,
        )
        .await
    }

    async fn get___item__(&self, ctx: &RequestContext, req: pb::Get__Item__Request) -> Result<pb::__Item__> {
        Ok(to_pb(&self.own(ctx, &req.id).await?))
    }

    async fn update___item__(
        &self,
        ctx: &RequestContext,
        req: pb::Update__Item__Request,
    ) -> Result<pb::__Item__> {
        let mut __item__ = self.own(ctx, &req.id).await?;
        if !req.title.is_empty() {
            check_title(&req.title)?;
            __item__.title = req.title.trim().to_owned();
        }
        if !req.body.is_empty() {
            check_body(&req.body)?;
            __item__.body = req.body;
        }
        __item__.updated_at = Utc::now().trunc_subsecs(6);
        if !self.store.update(&__item__).await? {
            return Err(Error::not_found("__item__"));
        }
        Ok(to_pb(&__item__))
    }

    async fn delete___item__(
        &self,
        ctx: &RequestContext,
        req: pb::Delete__Item__Request,
    ) -> Result<pb::Delete__Item__Response> {
        let owner = caller(ctx)?;
        let id = parse_id("id", &req.id)?;
        if !self.store.delete(id, owner).await? {
            return Err(Error::not_found("__item__"));
        }
        Ok(pb::Delete__Item__Response {})
    }
}
