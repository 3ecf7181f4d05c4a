//! The audit contract suite against every implementation: the core directly, the gRPC
//! client → server → core, and the HTTP client → server → core; on SQLite, and on PostgreSQL
//! when `PLT_TEST_POSTGRES_URL` is set.

mod common;

use common::{Backend, start};
use plt_client::{ClientConfig, ClientFactory, Protocol};
use plt_contracts::{
    RequestContext,
    audit::{AuditServiceClient, grpc::AuditGrpcClient, http::AuditHttpClient},
    testsuite::audit::{AuditFixture, run_all},
};
use std::sync::Arc;

#[derive(Clone, Copy)]
enum Via {
    Core,
    Grpc,
    Http,
    /// Through the client factory (discovery, balancing, service credentials) over a
    /// protocol: what another service uses.
    Factory(Protocol),
}

async fn suite(backend: Backend, via: Via) {
    let Some(svc) = start(backend).await else {
        common::skipped("audit contract suite on postgres");
        return;
    };
    let client: Arc<dyn AuditServiceClient> = match via {
        Via::Core => svc.app_core.clone(),
        Via::Grpc => Arc::new(AuditGrpcClient::connect_lazy(&svc.url()).unwrap()),
        Via::Http => Arc::new(AuditHttpClient::new(reqwest::Client::new(), &svc.url())),
        Via::Factory(protocol) => ClientFactory::new(svc.registry.clone())
            .with_credentials(common::SERVICES.credentials("authz"))
            .audit(&ClientConfig {
                protocol,
                ..Default::default()
            })
            .await
            .unwrap(),
    };
    let fixture = AuditFixture {
        service: match via {
            Via::Factory(_) => RequestContext::new(),
            _ => common::ctx(),
        },
        client,
        max_metadata_bytes: svc.cfg.service.max_metadata_bytes,
        max_page_size: svc.cfg.service.max_page_size,
    };
    run_all(&fixture).await;
    svc.stop().await;
}

#[tokio::test]
async fn core_on_sqlite() {
    suite(Backend::Sqlite, Via::Core).await;
}

#[tokio::test]
async fn grpc_on_sqlite() {
    suite(Backend::Sqlite, Via::Grpc).await;
}

#[tokio::test]
async fn http_on_sqlite() {
    suite(Backend::Sqlite, Via::Http).await;
}

#[tokio::test]
async fn core_on_postgres() {
    suite(Backend::Postgres, Via::Core).await;
}

#[tokio::test]
async fn grpc_on_postgres() {
    suite(Backend::Postgres, Via::Grpc).await;
}

#[tokio::test]
async fn http_on_postgres() {
    suite(Backend::Postgres, Via::Http).await;
}

#[tokio::test]
async fn factory_grpc_on_sqlite() {
    suite(Backend::Sqlite, Via::Factory(Protocol::Grpc)).await;
}

#[tokio::test]
async fn factory_http_on_sqlite() {
    suite(Backend::Sqlite, Via::Factory(Protocol::Http)).await;
}
