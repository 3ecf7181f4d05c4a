//! The gateway's front: every request except the host's own endpoints (`/healthz`,
//! `/readyz`, `/metrics`) and gRPC (the host's health service) is served here, ahead of the
//! service host's generic stack, which would otherwise add a second router, a second set of
//! request metrics and boxed middleware to every forwarded request. What that stack does is
//! done here once: the request id (kept when the client sent one, else a new UUID, on the
//! request sent upstream and on the answer), the request span and its "finished processing
//! request" event at INFO, CORS, and the gateway's own metrics per route.

use crate::{Gateway, cors::Cors, proxy};
use axum::{extract::Request, response::Response};
use http::HeaderValue;
use plt_kernel::{FrontFuture, FrontHandler, REQUEST_ID_HEADER};
use std::{net::SocketAddr, sync::Arc, time::Instant};
use tracing::Instrument as _;

pub struct GatewayFront {
    gateway: Arc<Gateway>,
    cors: Option<Arc<Cors>>,
}

impl GatewayFront {
    pub fn new(gateway: Arc<Gateway>, cors: Option<Arc<Cors>>) -> Self {
        Self { gateway, cors }
    }
}

/// The host's own endpoints and gRPC stay with the host.
fn for_the_host(req: &Request) -> bool {
    matches!(
        req.uri().path(),
        "/healthz" | "/readyz" | "/metrics" | plt_kernel::host::PANIC_ROUTE
    ) || plt_kernel::host::is_grpc(req)
}

impl FrontHandler for GatewayFront {
    fn serve(&self, req: Request, peer: Option<SocketAddr>) -> Result<FrontFuture, Request> {
        if for_the_host(&req) {
            return Err(req);
        }
        let gateway = self.gateway.clone();
        let cors = self.cors.clone();
        Ok(Box::pin(respond(gateway, cors, req, peer)))
    }
}

/// A new request id: a UUID v4, as the host's stack makes them.
fn new_request_id() -> HeaderValue {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let id = uuid::Uuid::new_v4().hyphenated();
    HeaderValue::from_str(id.encode_lower(&mut buf)).unwrap_or(HeaderValue::from_static("-"))
}

async fn respond(
    gw: Arc<Gateway>,
    cors: Option<Arc<Cors>>,
    mut req: Request,
    peer: Option<SocketAddr>,
) -> Response {
    let started = Instant::now();
    let rid = match req.headers().get(REQUEST_ID_HEADER) {
        Some(v) => v.clone(),
        None => {
            let v = new_request_id();
            req.headers_mut().insert(REQUEST_ID_HEADER, v.clone());
            v
        }
    };
    let rid_text = rid.to_str().ok().map(str::to_owned);
    let span = tracing::info_span!(
        "request",
        service = crate::SERVICE_NAME,
        method = %req.method(),
        path = %req.uri().path(),
        request_id = rid_text.as_deref().unwrap_or("-"),
        trace_id = tracing::field::Empty,
        otel.name = %req.method(),
        otel.kind = "server",
    );
    // The client's trace continues here, or one starts.
    plt_kernel::trace::continue_from(&span, req.headers());
    plt_kernel::trace::server_attributes(&span, &req);
    async move {
        let inner = |req: Request| async {
            if req.uri().path() == "/openapi.json" {
                proxy::openapi(&gw, req.method(), &rid_text)
            } else {
                proxy::handle(&gw, req, &rid_text, peer, started).await
            }
        };
        let mut resp = match &cors {
            Some(cors) => crate::cors::apply(cors, req, inner).await,
            None => inner(req).await,
        };
        if !resp.headers().contains_key(REQUEST_ID_HEADER) {
            resp.headers_mut().insert(REQUEST_ID_HEADER, rid);
        }
        plt_kernel::trace::server_status(&tracing::Span::current(), resp.status());
        tracing::info!(
            status = resp.status().as_u16(),
            latency = ?started.elapsed(),
            "finished processing request"
        );
        resp
    }
    .instrument(span)
    .await
}
