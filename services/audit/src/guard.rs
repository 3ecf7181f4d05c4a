//! Access control on the audit API: reading the log needs `audit.logs.read`, verifying the
//! chain `audit.logs.verify`, for the caller's access token (verified locally against auth's
//! keys) as decided by authz. Denials are audited by authz. If authz cannot answer, access is
//! refused (fail closed). `Record` is for services and passes through (service identities
//! will guard it).

use async_trait::async_trait;
use plt_authn::Verifier;
use plt_contracts::{
    Error, ErrorCode, RequestContext, Result,
    audit::{AuditPage, AuditQuery, AuditServiceClient, NewAuditEntry, VerifyReport},
    authz::AuthzServiceClient,
};
use std::sync::Arc;
use uuid::Uuid;

pub const READ_PERMISSION: &str = "audit.logs.read";
pub const VERIFY_PERMISSION: &str = "audit.logs.verify";

pub struct Guarded {
    inner: Arc<dyn AuditServiceClient>,
    verifier: Verifier,
    authz: Arc<dyn AuthzServiceClient>,
}

impl Guarded {
    pub fn new(
        inner: Arc<dyn AuditServiceClient>,
        verifier: Verifier,
        authz: Arc<dyn AuthzServiceClient>,
    ) -> Self {
        Self {
            inner,
            verifier,
            authz,
        }
    }

    async fn require(&self, ctx: &RequestContext, permission: &str) -> Result<()> {
        let token = ctx
            .bearer_token()
            .ok_or_else(|| Error::unauthenticated("an access token is required"))?;
        let claims = self.verifier.verify(token).await?;
        let user = Uuid::parse_str(&claims.sub)
            .map_err(|_| Error::new(ErrorCode::PermissionDenied, "permission denied"))?;
        // The decision is made for the originating user; the request id travels on.
        let upstream = RequestContext {
            request_id: ctx.request_id.clone(),
            deadline: ctx.deadline,
            authorization: ctx.authorization.clone(),
            ..Default::default()
        };
        match self.authz.authorize(&upstream, user, permission).await {
            Ok(()) => Ok(()),
            Err(e) if e.code == ErrorCode::PermissionDenied => Err(Error::new(
                ErrorCode::PermissionDenied,
                format!("requires {permission}"),
            )),
            Err(e) => {
                tracing::warn!(error = %e, "authz unavailable; refusing audit access");
                Err(Error::unavailable(
                    "authorization is temporarily unavailable",
                ))
            }
        }
    }
}

#[async_trait]
impl AuditServiceClient for Guarded {
    async fn record(&self, ctx: &RequestContext, entry: NewAuditEntry) -> Result<u64> {
        self.inner.record(ctx, entry).await
    }

    async fn query(&self, ctx: &RequestContext, filters: AuditQuery) -> Result<AuditPage> {
        self.require(ctx, READ_PERMISSION).await?;
        self.inner.query(ctx, filters).await
    }

    async fn verify(&self, ctx: &RequestContext) -> Result<VerifyReport> {
        self.require(ctx, VERIFY_PERMISSION).await?;
        self.inner.verify(ctx).await
    }
}
