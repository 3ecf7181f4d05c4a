//! notes-service: each user's notes, served over gRPC and HTTP/JSON by the plt runtime.
//! What is here is the service's own: its configuration, its core and its store. Start-up,
//! access rules, registration and shutdown are the runtime's.

pub mod config;
pub mod core;
pub mod store;

use notes_contract::NotesServiceServe;
use plt_runtime::{Context, Manifest, Parts, Service};
use std::sync::Arc;

/// The notes service, as the runtime runs it.
pub struct Notes;

static MIGRATIONS: plt_db::Migrations = plt_db::embed_migrations!();

#[async_trait::async_trait]
impl Service for Notes {
    type Config = config::NotesConfig;
    const MANIFEST: Manifest = Manifest {
        name: "notes",
        binary: "notes-service",
        version: env!("CARGO_PKG_VERSION"),
        calls: &["authz"],
        migrations: Some(&MIGRATIONS),
        defaults: Some(include_str!("../config.yaml")),
    };

    async fn build(cx: &Context<Self::Config>) -> anyhow::Result<Parts> {
        let core = core::NotesCore::new(store::for_db(cx.db()?), cx.config.service.clone());
        Ok(Parts::new().serve(NotesServiceServe(Arc::new(core))))
    }
}
