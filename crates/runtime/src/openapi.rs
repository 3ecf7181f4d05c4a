//! OpenAPI fragments: each contract carries its own (generated from the same `.proto` as its
//! routes, so the document cannot drift from what is served); a service serves their merge
//! at [`PATH`], and the gateway merges the services' documents under its API prefix.

pub use plt_contracts::docs::{merge_fragments, merge_into};
use serde_json::Value;

/// Where a service serves its OpenAPI document (internal: the gateway does not route it).
pub const PATH: &str = "/openapi.json";

/// The route serving `doc` at [`PATH`].
pub fn route(doc: Value) -> axum::Router {
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    axum::Router::new().route(
        PATH,
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([(http::header::CONTENT_TYPE, "application/json")], body) }
        }),
    )
}
