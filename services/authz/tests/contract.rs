//! The authz contract suite against the core, gRPC client → server → core and HTTP client →
//! server → core, on SQLite and PostgreSQL. Admin calls carry a bootstrap admin's access
//! token signed by a key the service trusts.

mod common;

use common::{Backend, start};
use plt_client::{ClientConfig, ClientFactory};
use plt_contracts::{
    RequestContext,
    authz::{AuthzServiceClient, grpc::AuthzGrpcClient, http::AuthzHttpClient},
    testsuite::authz::{AuthzFixture, run_all},
};
use std::sync::Arc;

plt_client::contract_matrix!(suite);

async fn suite(backend: Backend, via: Via) {
    let Some(svc) = start(backend, &[]).await else {
        common::skipped("authz contract suite on postgres");
        return;
    };
    let client: Arc<dyn AuthzServiceClient> = match via {
        Via::Core => svc.core.clone(),
        Via::Grpc => Arc::new(AuthzGrpcClient::connect_lazy(&svc.url()).unwrap()),
        Via::Http => Arc::new(AuthzHttpClient::new(
            plt_kernel::tls::http_client(),
            &svc.url(),
        )),
        Via::Factory(protocol) => ClientFactory::new(svc.registry.clone())
            .with_credentials(common::SERVICES.credentials("gateway"))
            .authz(&ClientConfig {
                protocol,
                ..Default::default()
            })
            .await
            .unwrap(),
    };
    run_all(&AuthzFixture {
        // A platform service calling on behalf of the admin (reading roles needs
        // authz.roles.read; the check methods need the service token).
        service: match via {
            Via::Factory(_) => RequestContext {
                authorization: svc.admin.authorization.clone(),
                ..RequestContext::new()
            },
            _ => RequestContext {
                authorization: svc.admin.authorization.clone(),
                ..common::ctx()
            },
        },
        client,
        admin: svc.admin.clone(),
        unprivileged: svc.unprivileged.clone(),
    })
    .await;
    svc.stop().await;
}
