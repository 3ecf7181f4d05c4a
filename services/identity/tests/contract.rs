//! The identity contract suite against every implementation: the core directly, the gRPC
//! client → server → core, and the HTTP client → server → core; on SQLite, and on PostgreSQL
//! when `PLT_TEST_POSTGRES_URL` is set.

mod common;

use common::{Backend, start};
use plt_client::{ClientConfig, ClientFactory};
use plt_contracts::{
    identity::{IdentityServiceClient, grpc::IdentityGrpcClient, http::IdentityHttpClient},
    testsuite::identity::{IdentityFixture, run_all},
};
use std::sync::Arc;

plt_client::contract_matrix!(suite);

async fn suite(backend: Backend, via: Via) {
    let Some(svc) = start(backend).await else {
        common::skipped("identity contract suite on postgres");
        return;
    };
    let client: Arc<dyn IdentityServiceClient> = match via {
        Via::Core => svc.app_core.clone(),
        Via::Grpc => Arc::new(IdentityGrpcClient::connect_lazy(&svc.url()).unwrap()),
        Via::Http => Arc::new(IdentityHttpClient::new(
            plt_kernel::tls::http_client(),
            &svc.url(),
        )),
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
            Via::Factory(_) => svc.operator.clone(),
            _ => svc.service_ctx(),
        },
        client,
        mail: Arc::new(svc.mail.clone()),
    };
    run_all(&fixture).await;
    svc.stop().await;
}
