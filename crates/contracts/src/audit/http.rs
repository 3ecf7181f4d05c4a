//! HTTP/JSON adapters for the audit contract: axum routes over `Arc<dyn
//! AuditServiceClient>` and a client implementing the trait over reqwest.
//!
//! | method | path | body / query | answer |
//! |---|---|---|---|
//! | POST | /v1/audit/records | `{id?, actor, action, resource, outcome, metadata?, source_ip?, user_agent?, trace_id?}` (internal) | 201 `{sequence}` |
//! | GET | /v1/audit/logs | `?actor&action&resource&outcome&from&to&page_size&page_token` | 200 `{entries, next_page_token?}` (newest first) |
//! | POST | /v1/audit/verify | | 200 `{ok, checked, first_broken_sequence, reason}` |
//!
//! `from` and `to` are RFC 3339 times (`from` inclusive, `to` exclusive). Errors are RFC 9457
//! problem+json (see [`crate::error`]).

use super::{AuditPage, AuditQuery, AuditServiceClient, NewAuditEntry, Outcome, VerifyReport};
use crate::{
    Error, RequestContext, Result,
    http_api::{ApiError, ApiJson, JsonClient, json_response},
};
use async_trait::async_trait;
use axum::{
    Router,
    extract::{Query, State, rejection::QueryRejection},
    http::StatusCode,
    response::Response,
    routing::{get, post},
};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The body of `POST /v1/audit/records`: a [`NewAuditEntry`], refusing unknown fields (so a
/// caller cannot believe it set `sequence`, `time` or `hash`).
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RecordBody {
    /// The record id (idempotency: a repeated id writes nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<uuid::Uuid>,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub outcome: Outcome,
    /// Checked to be an object here, so that the error says so plainly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    pub source_ip: String,
    #[serde(default)]
    pub user_agent: String,
    #[serde(default)]
    pub trace_id: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct RecordedBody {
    pub sequence: u64,
}

/// The query string of `GET /v1/audit/logs`; every value is parsed here so that an error
/// names its parameter.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
pub struct LogsQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<Outcome>))]
    pub outcome: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<String>, format = DateTime))]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<String>, format = DateTime))]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(value_type = Option<u32>))]
    pub page_size: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_token: Option<String>,
}

type Svc = Arc<dyn AuditServiceClient>;
type HttpResult = std::result::Result<Response, ApiError>;

/// The audit HTTP API, to be hosted by the service.
// Access control is applied by the service around the `Arc<dyn AuditServiceClient>` it hands
// in (audit-service's `guard`): reading needs `audit.logs.read`, verifying `audit.logs.verify`.
// `POST /v1/audit/records` is for services (service identities will guard it).
pub fn routes(svc: Svc) -> Router {
    Router::new()
        .route("/v1/audit/records", post(record))
        .route("/v1/audit/logs", get(query))
        .route("/v1/audit/verify", post(verify))
        .with_state(svc)
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

fn parse_time(field: &str, raw: Option<String>) -> Result<Option<DateTime<Utc>>> {
    match non_empty(raw) {
        None => Ok(None),
        Some(s) => DateTime::parse_from_rfc3339(&s)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                Error::invalid(
                    field,
                    "must be an RFC 3339 time such as 2026-01-02T03:04:05Z",
                )
            }),
    }
}

fn parse_outcome(raw: Option<String>) -> Result<Option<Outcome>> {
    match non_empty(raw) {
        None => Ok(None),
        Some(s) => Outcome::parse(&s)
            .map(Some)
            .ok_or_else(|| Error::invalid("outcome", "must be success, failure or denied")),
    }
}

impl LogsQuery {
    /// The filters this query string asks for.
    pub fn into_filters(self) -> Result<AuditQuery> {
        let page_size = match non_empty(self.page_size) {
            None => 0,
            Some(s) => s
                .parse::<u32>()
                .map_err(|_| Error::invalid("page_size", "must be a non-negative integer"))?,
        };
        Ok(AuditQuery {
            actor: non_empty(self.actor),
            action: non_empty(self.action),
            resource: non_empty(self.resource),
            outcome: parse_outcome(self.outcome)?,
            from: parse_time("from", self.from)?,
            to: parse_time("to", self.to)?,
            page_size,
            page_token: non_empty(self.page_token),
        })
    }

    /// The query string for these filters.
    pub fn from_filters(f: AuditQuery) -> Self {
        let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        Self {
            actor: non_empty(f.actor),
            action: non_empty(f.action),
            resource: non_empty(f.resource),
            outcome: f.outcome.map(|o| o.as_str().to_owned()),
            from: f.from.map(time),
            to: f.to.map(time),
            page_size: (f.page_size > 0).then(|| f.page_size.to_string()),
            page_token: non_empty(f.page_token),
        }
    }
}

async fn record(
    State(svc): State<Svc>,
    ctx: RequestContext,
    ApiJson(b): ApiJson<RecordBody>,
) -> HttpResult {
    let metadata = match b.metadata {
        None | Some(serde_json::Value::Null) => serde_json::Map::new(),
        Some(serde_json::Value::Object(m)) => m,
        Some(_) => return Err(Error::invalid("metadata", "must be a JSON object").into()),
    };
    let entry = NewAuditEntry {
        id: b.id,
        actor: b.actor,
        action: b.action,
        resource: b.resource,
        outcome: b.outcome,
        metadata,
        source_ip: b.source_ip,
        user_agent: b.user_agent,
        trace_id: b.trace_id,
    };
    let sequence = svc.record(&ctx, entry).await?;
    Ok(json_response(
        StatusCode::CREATED,
        &RecordedBody { sequence },
    ))
}

async fn query(
    State(svc): State<Svc>,
    ctx: RequestContext,
    query: std::result::Result<Query<LogsQuery>, QueryRejection>,
) -> HttpResult {
    let Query(q) = query.map_err(|e| Error::invalid("query", e.body_text()))?;
    let page = svc.query(&ctx, q.into_filters()?).await?;
    Ok(json_response(StatusCode::OK, &page))
}

async fn verify(State(svc): State<Svc>, ctx: RequestContext) -> HttpResult {
    Ok(json_response(StatusCode::OK, &svc.verify(&ctx).await?))
}

/// The audit contract over HTTP/JSON. Cheap to clone; connections are pooled.
#[derive(Clone)]
pub struct AuditHttpClient {
    api: JsonClient,
}

impl AuditHttpClient {
    /// A client for `base_url` (`http://host:port`).
    pub fn new(http: reqwest::Client, base_url: &str) -> Self {
        Self {
            api: JsonClient::new(http, base_url, "audit"),
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

    async fn json<T: serde::de::DeserializeOwned>(&self, rb: reqwest::RequestBuilder) -> Result<T> {
        self.api.json(rb).await
    }
}

#[async_trait]
impl AuditServiceClient for AuditHttpClient {
    async fn record(&self, ctx: &RequestContext, entry: NewAuditEntry) -> Result<u64> {
        let body = RecordBody {
            id: entry.id,
            actor: entry.actor,
            action: entry.action,
            resource: entry.resource,
            outcome: entry.outcome,
            metadata: Some(serde_json::Value::Object(entry.metadata)),
            source_ip: entry.source_ip,
            user_agent: entry.user_agent,
            trace_id: entry.trace_id,
        };
        let recorded: RecordedBody = self
            .json(
                self.request(ctx, reqwest::Method::POST, "/v1/audit/records")
                    .json(&body),
            )
            .await?;
        Ok(recorded.sequence)
    }

    async fn query(&self, ctx: &RequestContext, filters: AuditQuery) -> Result<AuditPage> {
        let q = LogsQuery::from_filters(filters);
        self.json(
            self.request(ctx, reqwest::Method::GET, "/v1/audit/logs")
                .query(&q),
        )
        .await
    }

    async fn verify(&self, ctx: &RequestContext) -> Result<VerifyReport> {
        self.json(self.request(ctx, reqwest::Method::POST, "/v1/audit/verify"))
            .await
    }
}
