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

/// `METHOD /path-prefix` of every operation of `doc` whose access rule is public
/// (`x-plt-access: public`), the prefix being the path up to its first parameter.
pub fn public_routes(doc: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        return out;
    };
    for (path, ops) in paths {
        let Some(ops) = ops.as_object() else { continue };
        let prefix = match path.find("/{") {
            Some(i) => &path[..i],
            None => path.as_str(),
        };
        if prefix.is_empty() {
            continue;
        }
        for (method, op) in ops {
            if op.get("x-plt-access").and_then(Value::as_str) == Some("public") {
                out.push(format!("{} {prefix}", method.to_ascii_uppercase()));
            }
        }
    }
    out
}

#[cfg(test)]
mod public_tests {
    #[test]
    fn public_operations_up_to_their_first_parameter() {
        let doc = serde_json::json!({"paths": {
            "/v1/blog/posts": {"get": {"x-plt-access": "public"}, "post": {"x-plt-access": "permission blog.posts.write"}},
            "/v1/blog/posts/{id}": {"get": {"x-plt-access": "public"}, "patch": {"x-plt-access": "any signed-in user"}},
            "/v1/blog/slugs/{slug}": {"get": {"x-plt-access": "public"}}
        }});
        let mut got = super::public_routes(&doc);
        got.sort();
        assert_eq!(
            got,
            vec![
                "GET /v1/blog/posts",
                "GET /v1/blog/posts",
                "GET /v1/blog/slugs"
            ]
        );
    }
}
