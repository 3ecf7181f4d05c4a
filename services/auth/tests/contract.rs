//! The auth contract suite against the core, gRPC client → server → core and HTTP client →
//! server → core; with and without a reuse grace window; on SQLite and PostgreSQL.

mod common;

use common::{Backend, start};
use plt_client::{ClientConfig, ClientFactory, Protocol};
use plt_contracts::{
    auth::{AuthServiceClient, grpc::AuthGrpcClient, http::AuthHttpClient},
    testsuite::auth::{AuthFixture, run_all},
};
use std::sync::Arc;

#[derive(Clone, Copy)]
enum Via {
    Core,
    Grpc,
    Http,
    /// Through the client factory (discovery, balancing, service credentials issued by the
    /// service under test for the gateway's secret) over a protocol.
    Factory(Protocol),
}

async fn suite(backend: Backend, via: Via, zero_grace: bool) {
    let grace = if zero_grace { "0s" } else { "10s" };
    let Some(svc) = start(backend, &[("PLT_AUTH__REFRESH__REUSE_GRACE", grace)]).await else {
        common::skipped("auth contract suite on postgres");
        return;
    };
    let client: Arc<dyn AuthServiceClient> = match via {
        Via::Core => svc.core.clone(),
        Via::Grpc => Arc::new(AuthGrpcClient::connect_lazy(&svc.url()).unwrap()),
        Via::Http => Arc::new(AuthHttpClient::new(
            plt_kernel::tls::http_client(),
            &svc.url(),
        )),
        Via::Factory(protocol) => {
            let cfg = ClientConfig {
                protocol,
                ..Default::default()
            };
            let base = ClientFactory::new(svc.registry.clone());
            let creds = base
                .issued_credentials(
                    "gateway",
                    plt_kernel::Secret::new(plt_client::development_secret("gateway")),
                    &cfg,
                )
                .await
                .unwrap();
            base.with_credentials(creds).auth(&cfg).await.unwrap()
        }
    };
    run_all(&AuthFixture {
        service: match via {
            Via::Factory(_) => plt_contracts::RequestContext::new(),
            _ => svc.service_ctx().await,
        },
        service_account: (
            "gateway".into(),
            plt_kernel::Secret::new(plt_client::development_secret("gateway")),
        ),
        client,
        identity: svc.identity.clone(),
        zero_grace,
    })
    .await;
    svc.stop().await;
}

#[tokio::test]
async fn core_on_sqlite() {
    suite(Backend::Sqlite, Via::Core, true).await;
    suite(Backend::Sqlite, Via::Core, false).await;
}

#[tokio::test]
async fn grpc_on_sqlite() {
    suite(Backend::Sqlite, Via::Grpc, true).await;
    suite(Backend::Sqlite, Via::Grpc, false).await;
}

#[tokio::test]
async fn http_on_sqlite() {
    suite(Backend::Sqlite, Via::Http, true).await;
    suite(Backend::Sqlite, Via::Http, false).await;
}

#[tokio::test]
async fn core_on_postgres() {
    suite(Backend::Postgres, Via::Core, true).await;
    suite(Backend::Postgres, Via::Core, false).await;
}

#[tokio::test]
async fn grpc_on_postgres() {
    suite(Backend::Postgres, Via::Grpc, false).await;
}

#[tokio::test]
async fn http_on_postgres() {
    suite(Backend::Postgres, Via::Http, true).await;
}

#[tokio::test]
async fn factory_grpc_on_sqlite() {
    suite(Backend::Sqlite, Via::Factory(Protocol::Grpc), true).await;
    suite(Backend::Sqlite, Via::Factory(Protocol::Grpc), false).await;
}

#[tokio::test]
async fn factory_http_on_sqlite() {
    suite(Backend::Sqlite, Via::Factory(Protocol::Http), true).await;
    suite(Backend::Sqlite, Via::Factory(Protocol::Http), false).await;
}
