//! __name__-service: each user's __name__, served over gRPC and HTTP/JSON by the plt runtime.
//! What is here is the service's own: its configuration, its core and its store. Start-up,
//! access rules, registration and shutdown are the runtime's.

pub mod config;
pub mod core;
pub mod store;

use __name___contract::__Name__ServiceServe;
use plt_runtime::{Context, Manifest, Parts, Service};
use std::sync::Arc;

/// The __name__ service, as the runtime runs it.
pub struct __Name__;

static MIGRATIONS: plt_db::Migrations = plt_db::embed_migrations!();

#[async_trait::async_trait]
impl Service for __Name__ {
    type Config = config::__Name__Config;
    const MANIFEST: Manifest = Manifest::new("__name__", "__name__-service", env!("CARGO_PKG_VERSION"))
        .calls(&["authz"])
        .migrations(&MIGRATIONS)
        .defaults(include_str!("../config.yaml"));

    async fn build(cx: &Context<Self::Config>) -> anyhow::Result<Parts> {
        let core = core::__Name__Core::new(store::for_db(cx.db()?), cx.config.service.clone());
        Ok(Parts::new().serve(__Name__ServiceServe(Arc::new(core))))
    }
}
