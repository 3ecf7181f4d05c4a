//! The identity contract suite against every implementation: the core directly, the gRPC
//! client → server → core, and the HTTP client → server → core; on SQLite, and on PostgreSQL
//! when `PLT_TEST_POSTGRES_URL` is set.

mod common;

use common::{Backend, start};
use plt_client::{ClientConfig, ClientFactory, Protocol};
use plt_contracts::{
    RequestContext,
    identity::{IdentityServiceClient, grpc::IdentityGrpcClient, http::IdentityHttpClient},
    testsuite::identity::{IdentityFixture, run_all},
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
        common::skipped("identity contract suite on postgres");
        return;
    };
    let client: Arc<dyn IdentityServiceClient> = match via {
        Via::Core => svc.app_core.clone(),
        Via::Grpc => Arc::new(IdentityGrpcClient::connect_lazy(&svc.url()).unwrap()),
        Via::Http => Arc::new(IdentityHttpClient::new(reqwest::Client::new(), &svc.url())),
        Via::Factory(protocol) => ClientFactory::new(svc.registry.clone())
            .with_credentials(svc.authority.credentials("auth"))
            .identity(&ClientConfig {
                protocol,
                ..Default::default()
            })
            .await
            .unwrap(),
    };
    let fixture = IdentityFixture {
        service: match via {
            Via::Factory(_) => RequestContext::new(),
            _ => svc.service_ctx(),
        },
        client,
        mail: Arc::new(svc.mail.clone()),
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
