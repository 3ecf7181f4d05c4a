//! OpenAPI documents as JSON: contracts carry fragments generated from their `.proto`; a
//! service serves their merge, and the gateway merges the services' documents under its
//! API prefix.

use serde_json::{Map, Value, json};

/// Merges OpenAPI fragments (JSON text) into one document titled `title`. Two fragments
/// describing the same path and method is an error naming it.
pub fn merge_fragments(title: &str, version: &str, fragments: &[&str]) -> Result<Value, String> {
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": {},
        "components": {"schemas": {}, "securitySchemes": {}},
    });
    for f in fragments {
        let frag: Value = serde_json::from_str(f).map_err(|e| format!("OpenAPI fragment: {e}"))?;
        merge_into(&mut doc, &frag, "")?;
    }
    Ok(doc)
}

/// Adds `frag`'s paths (each prefixed with `prefix`) and components to `doc`.
pub fn merge_into(doc: &mut Value, frag: &Value, prefix: &str) -> Result<(), String> {
    let paths = object(doc, "paths");
    if let Some(Value::Object(fp)) = frag.get("paths") {
        for (path, item) in fp {
            let key = format!("{prefix}{path}");
            let entry = paths
                .entry(key.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let (Value::Object(entry), Value::Object(item)) = (entry, item) {
                for (method, op) in item {
                    if entry.contains_key(method) {
                        return Err(format!("OpenAPI: {method} {key} is described twice"));
                    }
                    entry.insert(method.clone(), op.clone());
                }
            }
        }
    }
    if let Some(Value::Object(fc)) = frag.get("components") {
        let components = object(doc, "components");
        for (kind, items) in fc {
            let target = components
                .entry(kind.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            if let (Value::Object(target), Value::Object(items)) = (target, items) {
                for (name, schema) in items {
                    target.entry(name.clone()).or_insert_with(|| schema.clone());
                }
            }
        }
    }
    Ok(())
}

fn object<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    let Value::Object(root) = v else {
        unreachable!("documents are objects")
    };
    let entry = root
        .entry(key.to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    match entry {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_paths_and_refuses_duplicates() {
        let a = r#"{"paths":{"/v1/a":{"get":{"operationId":"A"}}},"components":{"schemas":{"x.A":{}}}}"#;
        let b = r#"{"paths":{"/v1/a":{"post":{"operationId":"B"}}},"components":{"schemas":{"x.B":{}}}}"#;
        let doc = merge_fragments("t", "1", &[a, b]).unwrap();
        assert_eq!(doc["paths"]["/v1/a"]["get"]["operationId"], "A");
        assert_eq!(doc["paths"]["/v1/a"]["post"]["operationId"], "B");
        assert!(doc["components"]["schemas"]["x.B"].is_object());
        let err = merge_fragments("t", "1", &[a, a]).unwrap_err();
        assert!(err.contains("get /v1/a"), "{err}");
        let mut prefixed = json!({});
        merge_into(
            &mut prefixed,
            &serde_json::from_str::<Value>(a).unwrap(),
            "/api",
        )
        .unwrap();
        assert!(prefixed["paths"]["/api/v1/a"]["get"].is_object());
    }
}
