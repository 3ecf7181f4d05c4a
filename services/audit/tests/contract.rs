//! The audit contract suite against every implementation: the core directly, the gRPC
//! client → server → core, and the HTTP client → server → core; on SQLite, and on PostgreSQL
//! when `PLT_TEST_POSTGRES_URL` is set.

mod common;

use common::{Backend, start};
use plt_client::{ClientConfig, ClientFactory};
use plt_contracts::{
    audit::{AuditServiceClient, grpc::AuditGrpcClient, http::AuditHttpClient},
    testsuite::audit::{AuditFixture, run_all},
};
use std::sync::Arc;

plt_client::contract_matrix!(suite);

async fn suite(backend: Backend, via: Via) {
    let Some(svc) = start(backend).await else {
        common::skipped("audit contract suite on postgres");
        return;
    };
    let client: Arc<dyn AuditServiceClient> = match via {
        Via::Core => svc.app_core.clone(),
        Via::Grpc => Arc::new(AuditGrpcClient::connect_lazy(&svc.url()).unwrap()),
        Via::Http => Arc::new(AuditHttpClient::new(
            plt_kernel::tls::http_client(),
            &svc.url(),
        )),
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
            Via::Factory(_) => common::auditor_ctx(),
            _ => common::ctx(),
        },
        client,
        max_metadata_bytes: svc.cfg.service.max_metadata_bytes,
        max_page_size: svc.cfg.service.max_page_size,
    };
    run_all(&fixture).await;
    svc.stop().await;
}
