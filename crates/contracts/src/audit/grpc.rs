//! gRPC adapters for the audit contract: a tonic server over `Arc<dyn AuditServiceClient>`
//! and a client implementing the trait over a tonic channel.

use super::{
    AuditEntry, AuditPage, AuditQuery, AuditServiceClient, NewAuditEntry, Outcome, VerifyReport,
};
use crate::{Error, RequestContext, Result, pb::audit::v1 as pb, wire};
use async_trait::async_trait;
use std::sync::Arc;
use tonic::{Request, Response, Status, transport::Channel};

pub use pb::audit_service_server::AuditServiceServer;

type Metadata = serde_json::Map<String, serde_json::Value>;

fn outcome_to_pb(o: Outcome) -> i32 {
    match o {
        Outcome::Success => pb::Outcome::Success as i32,
        Outcome::Failure => pb::Outcome::Failure as i32,
        Outcome::Denied => pb::Outcome::Denied as i32,
    }
}

/// `OUTCOME_UNSPECIFIED` is `None` (no filter).
fn outcome_from_pb(field: &str, v: i32) -> Result<Option<Outcome>> {
    match pb::Outcome::try_from(v) {
        Ok(pb::Outcome::Unspecified) => Ok(None),
        Ok(pb::Outcome::Success) => Ok(Some(Outcome::Success)),
        Ok(pb::Outcome::Failure) => Ok(Some(Outcome::Failure)),
        Ok(pb::Outcome::Denied) => Ok(Some(Outcome::Denied)),
        Err(_) => Err(Error::invalid(
            field,
            "must be OUTCOME_SUCCESS, OUTCOME_FAILURE or OUTCOME_DENIED",
        )),
    }
}

fn required_outcome(field: &str, v: i32) -> Result<Outcome> {
    outcome_from_pb(field, v)?.ok_or_else(|| {
        Error::invalid(
            field,
            "must be OUTCOME_SUCCESS, OUTCOME_FAILURE or OUTCOME_DENIED",
        )
    })
}

/// Metadata as carried in `metadata_json`.
pub fn metadata_to_json(m: &Metadata) -> String {
    serde_json::to_string(m).unwrap_or_else(|_| "{}".to_owned())
}

/// `metadata_json` as metadata: empty means `{}`; anything but a JSON object is refused.
pub fn metadata_from_json(field: &str, raw: &str) -> Result<Metadata> {
    if raw.trim().is_empty() {
        return Ok(Metadata::new());
    }
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::invalid(field, "must be a JSON object")),
        Err(e) => Err(Error::invalid(
            field,
            format!("must be a JSON object (malformed JSON: {e})"),
        )),
    }
}

/// `id` as a record id: empty means none.
fn record_id(raw: &str) -> Result<Option<uuid::Uuid>> {
    if raw.is_empty() {
        return Ok(None);
    }
    uuid::Uuid::parse_str(raw)
        .map(Some)
        .map_err(|_| Error::invalid("id", "must be a UUID"))
}

pub fn new_entry_to_pb(e: &NewAuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        sequence: 0,
        actor: e.actor.clone(),
        action: e.action.clone(),
        resource: e.resource.clone(),
        outcome: outcome_to_pb(e.outcome),
        metadata_json: metadata_to_json(&e.metadata),
        source_ip: e.source_ip.clone(),
        user_agent: e.user_agent.clone(),
        trace_id: e.trace_id.clone(),
        time: None,
        hash: String::new(),
        id: e.id.map(|id| id.to_string()).unwrap_or_default(),
    }
}

/// The entry of a `Record` request: sequence, time and hash are the service's to set.
pub fn new_entry_from_pb(e: pb::AuditEntry) -> Result<NewAuditEntry> {
    for (field, set) in [
        ("sequence", e.sequence != 0),
        ("time", e.time.is_some()),
        ("hash", !e.hash.is_empty()),
    ] {
        if set {
            return Err(Error::invalid(field, "is set by the service"));
        }
    }
    Ok(NewAuditEntry {
        id: record_id(&e.id)?,
        actor: e.actor,
        action: e.action,
        resource: e.resource,
        outcome: required_outcome("outcome", e.outcome)?,
        metadata: metadata_from_json("metadata", &e.metadata_json)?,
        source_ip: e.source_ip,
        user_agent: e.user_agent,
        trace_id: e.trace_id,
    })
}

pub fn entry_to_pb(e: &AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        sequence: e.sequence,
        time: Some(wire::timestamp(e.time)),
        hash: e.hash.clone(),
        ..new_entry_to_pb(&e.entry)
    }
}

pub fn entry_from_pb(e: pb::AuditEntry) -> Result<AuditEntry> {
    Ok(AuditEntry {
        sequence: e.sequence,
        time: wire::time("time", e.time)?,
        hash: e.hash,
        entry: NewAuditEntry {
            id: record_id(&e.id)?,
            actor: e.actor,
            action: e.action,
            resource: e.resource,
            outcome: required_outcome("outcome", e.outcome)?,
            metadata: metadata_from_json("metadata", &e.metadata_json)?,
            source_ip: e.source_ip,
            user_agent: e.user_agent,
            trace_id: e.trace_id,
        },
    })
}

fn report_to_pb(r: VerifyReport) -> pb::VerifyResponse {
    pb::VerifyResponse {
        ok: r.ok,
        checked: r.checked,
        first_broken_sequence: r.first_broken_sequence,
        reason: r.reason,
    }
}

fn report_from_pb(r: pb::VerifyResponse) -> VerifyReport {
    VerifyReport {
        ok: r.ok,
        checked: r.checked,
        first_broken_sequence: r.first_broken_sequence,
        reason: r.reason,
    }
}

/// Serves the audit contract over gRPC.
#[derive(Clone)]
pub struct AuditGrpcServer {
    inner: Arc<dyn AuditServiceClient>,
}

impl AuditGrpcServer {
    pub fn new(inner: Arc<dyn AuditServiceClient>) -> AuditServiceServer<Self> {
        AuditServiceServer::new(Self { inner })
    }
}

type GrpcResult<T> = std::result::Result<Response<T>, Status>;

fn ok<T>(v: T) -> GrpcResult<T> {
    Ok(Response::new(v))
}

#[tonic::async_trait]
impl pb::audit_service_server::AuditService for AuditGrpcServer {
    async fn record(&self, req: Request<pb::RecordRequest>) -> GrpcResult<pb::RecordResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let entry = req
            .into_inner()
            .entry
            .ok_or_else(|| Error::invalid("entry", "is required"))?;
        let sequence = self.inner.record(&ctx, new_entry_from_pb(entry)?).await?;
        ok(pb::RecordResponse { sequence })
    }

    async fn query(&self, req: Request<pb::QueryRequest>) -> GrpcResult<pb::QueryResponse> {
        let ctx = RequestContext::from_grpc(&req);
        let r = req.into_inner();
        let filters = AuditQuery {
            actor: wire::non_empty(r.actor),
            action: wire::non_empty(r.action),
            resource: wire::non_empty(r.resource),
            outcome: outcome_from_pb("outcome", r.outcome)?,
            from: r.from.map(|t| wire::time("from", Some(t))).transpose()?,
            to: r.to.map(|t| wire::time("to", Some(t))).transpose()?,
            page_size: r.page_size,
            page_token: wire::non_empty(r.page_token),
        };
        let page = self.inner.query(&ctx, filters).await?;
        ok(pb::QueryResponse {
            entries: page.entries.iter().map(entry_to_pb).collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        })
    }

    async fn verify(&self, req: Request<pb::VerifyRequest>) -> GrpcResult<pb::VerifyResponse> {
        let ctx = RequestContext::from_grpc(&req);
        ok(report_to_pb(self.inner.verify(&ctx).await?))
    }
}

/// The audit contract over gRPC. Cheap to clone; calls share one HTTP/2 connection.
#[derive(Clone)]
pub struct AuditGrpcClient {
    client: pb::audit_service_client::AuditServiceClient<Channel>,
}

impl AuditGrpcClient {
    pub fn new(channel: Channel) -> Self {
        Self {
            client: pb::audit_service_client::AuditServiceClient::new(channel),
        }
    }

    /// A client for `endpoint` (`http://host:port`, or `https://host:port` over TLS);
    /// connects on first use.
    pub fn connect_lazy(endpoint: &str) -> Result<Self> {
        Ok(Self::new(crate::rt::lazy_channel(endpoint)?))
    }
}

#[async_trait]
impl AuditServiceClient for AuditGrpcClient {
    async fn record(&self, ctx: &RequestContext, entry: NewAuditEntry) -> Result<u64> {
        let req = ctx.grpc_request(pb::RecordRequest {
            entry: Some(new_entry_to_pb(&entry)),
        });
        Ok(self.client.clone().record(req).await?.into_inner().sequence)
    }

    async fn query(&self, ctx: &RequestContext, filters: AuditQuery) -> Result<AuditPage> {
        let req = ctx.grpc_request(pb::QueryRequest {
            actor: filters.actor.unwrap_or_default(),
            action: filters.action.unwrap_or_default(),
            resource: filters.resource.unwrap_or_default(),
            outcome: filters
                .outcome
                .map(outcome_to_pb)
                .unwrap_or(pb::Outcome::Unspecified as i32),
            from: filters.from.map(wire::timestamp),
            to: filters.to.map(wire::timestamp),
            page_size: filters.page_size,
            page_token: filters.page_token.unwrap_or_default(),
        });
        let r = self.client.clone().query(req).await?.into_inner();
        Ok(AuditPage {
            entries: r
                .entries
                .into_iter()
                .map(entry_from_pb)
                .collect::<Result<_>>()?,
            next_page_token: wire::non_empty(r.next_page_token),
        })
    }

    async fn verify(&self, ctx: &RequestContext) -> Result<VerifyReport> {
        let req = ctx.grpc_request(pb::VerifyRequest {});
        Ok(report_from_pb(
            self.client.clone().verify(req).await?.into_inner(),
        ))
    }
}
