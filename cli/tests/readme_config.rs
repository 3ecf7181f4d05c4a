//! README.md's configuration, checked against the real schema: every configuration key it
//! names in backticks (`gateway.rate_limit.client`, or relative to its section, as
//! `rate_limit.client` in the gateway's) and every `PLT_…` variable it names exists in
//! `config/default.yaml` (or is a new entry of a map there that the loader accepts, such as
//! `registry.static.notes`), each such setting is accepted by every service's loader, and a
//! default the README states beside a key — "`database.probe_interval` (250 ms)" — is the one
//! default.yaml has.

use plt_kernel::config::{ConfigSource, KNOWN_SECTIONS, is_reserved_var};
use serde_json::Value;
use std::{path::PathBuf, time::Duration};

/// Dotted names in backticks that are not configuration keys: permissions, audit actions,
/// proto options. Each must *not* be a key (so this list cannot hide a wrong one).
const NOT_CONFIG: &[&str] = &[
    "service.resource.action",
    "authz.roles.manage",
    "authz.roles.read",
    "auth.token_family.revoked",
    "audit.logs.read",
    "audit.logs.verify",
    "identity.users.read",
    "auth.login",
    "auth.logout",
    "auth.keys.rotated",
    "auth.service_token.issue",
    "identity.user.created",
    "identity.email.verified",
    "identity.password_reset.requested",
    "identity.password_reset.completed",
    "authz.authorize",
    "authz.role.grant",
    "identity.users.read_self",
    "identity.users.manage",
    "authz.permissions.read_self",
    "google.api.http",
    "blog.posts.write",
    "blog.posts.read",
    "blog.posts.edit",
    "blog.posts.share",
    "blog.posts.delete",
    "blog.posts.manage",
    "blog.comments.write",
    "billing.plans.manage",
    "billing.subscriptions.write",
    "billing.usage.write",
    "billing.invoices.manage",
    "billing.invoices",
    "analytics.stats.read",
    "authz.resource.grant",
    "authz.resource.revoke",
];

/// Variables that are not key paths: the loader's own.
const LOADER_VARS: &[&str] = &["PLT_CONFIG_DIR", "PLT_ENV"];

/// The example feature service the README walks through (`plt new service notes`): its
/// section ships in its own crate, not in default.yaml.
const EXAMPLE_FEATURE_SECTIONS: &[&str] = &["notes"];

/// The repository's feature services: their sections ship in `services/<name>/config.yaml`,
/// where the README's keys of theirs are looked up.
const FEATURE_SECTIONS: &[&str] = &["blog", "billing", "analytics"];

/// A feature service's `config.yaml` (its section's defaults).
fn feature_defaults(name: &str) -> Value {
    serde_yaml::from_str(
        &std::fs::read_to_string(repo().join(format!("services/{name}/config.yaml")))
            .unwrap_or_default(),
    )
    .unwrap_or(Value::Null)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn readme() -> String {
    std::fs::read_to_string(repo().join("README.md")).unwrap()
}

fn defaults() -> Value {
    serde_yaml::from_str(&std::fs::read_to_string(repo().join("config/default.yaml")).unwrap())
        .unwrap()
}

/// The node at `path` below `node`; a `<placeholder>` segment stands for any key of a map
/// (the first one is taken).
fn lookup<'a>(node: &'a Value, path: &[String]) -> Option<(&'a Value, Vec<String>)> {
    let mut node = node;
    let mut concrete = Vec::new();
    for seg in path {
        let map = node.as_object()?;
        let (k, v) = if seg.starts_with('<') && seg.ends_with('>') {
            map.iter().next()?
        } else {
            map.get_key_value(seg.as_str())?
        };
        concrete.push(k.clone());
        node = v;
    }
    Some((node, concrete))
}

/// `path` from the top, or else relative to a section (the README names keys within the
/// section it describes): the full path of the first match.
fn resolve(root: &Value, path: &[String]) -> Option<Vec<String>> {
    if let Some((_, full)) = lookup(root, path) {
        return Some(full);
    }
    fn below(node: &Value, prefix: &mut Vec<String>, path: &[String]) -> Option<Vec<String>> {
        let map = node.as_object()?;
        for (k, v) in map {
            prefix.push(k.clone());
            if let Some((_, rest)) = lookup(v, path) {
                let mut full = prefix.clone();
                full.extend(rest);
                return Some(full);
            }
            if let Some(found) = below(v, prefix, path) {
                return Some(found);
            }
            prefix.pop();
        }
        None
    }
    below(root, &mut Vec::new(), path)
}

/// The backticked dotted names of the README, each with the text that follows it.
fn dotted_names(text: &str) -> Vec<(String, String)> {
    let parts: Vec<&str> = text.split('`').collect();
    let mut out = Vec::new();
    for (i, part) in parts.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        let name = *part;
        let is_name = name.contains('.')
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._<>".contains(c))
            && name.split('.').all(|s| !s.is_empty());
        let file = [".yaml", ".rs", ".proto", ".json", ".toml", ".md"]
            .iter()
            .any(|ext| name.ends_with(ext));
        if is_name && !file {
            let after = parts.get(i + 1).copied().unwrap_or_default();
            out.push((name.to_owned(), after.to_owned()));
        }
    }
    out
}

/// `PLT_…` names in the README (a `<NAME>` placeholder kept).
fn variables(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("PLT_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || "_<>".contains(c)))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out.sort();
    out.dedup();
    out
}

/// A default stated right after a key: "(250 ms)", "(24 h)".
fn stated_duration(after: &str) -> Option<Duration> {
    let inner = after.strip_prefix(" (")?.split(')').next()?;
    let compact: String = inner.chars().filter(|c| !c.is_whitespace()).collect();
    let digits = compact.find(|c: char| !c.is_ascii_digit())?;
    if digits == 0 || !["ms", "s", "m", "h", "d"].contains(&&compact[digits..]) {
        return None;
    }
    humantime_serde::re::humantime::parse_duration(&compact).ok()
}

/// Loads every core service's configuration (kernel, its section, `registry`, `clients`)
/// from the repository's config with `vars` on top.
fn load_everywhere(vars: &[(String, String)]) -> Result<(), String> {
    let s = ConfigSource {
        dir: repo().join("config"),
        vars: vars.to_vec(),
        sections: Vec::new(),
    };
    use plt_runtime::load_config;
    let show = |e: anyhow::Error| format!("{e:#}");
    load_config::<identity_service::Identity>(s.clone()).map_err(show)?;
    load_config::<auth_service::Auth>(s.clone()).map_err(show)?;
    load_config::<authz_service::Authz>(s.clone()).map_err(show)?;
    load_config::<audit_service::Audit>(s.clone()).map_err(show)?;
    load_config::<api_gateway::ApiGateway>(s).map_err(show)?;
    Ok(())
}

/// Whether `path`, absent from default.yaml, is a new entry of the map above it that every
/// loader accepts (with the value of an entry that is there).
fn accepted_as_map_entry(root: &Value, path: &[String]) -> bool {
    let Some((parent, last)) = path.split_last().map(|(l, p)| (p, l)) else {
        return false;
    };
    let Some((Value::Object(map), full_parent)) = lookup(root, parent) else {
        return false;
    };
    let Some((sibling, _)) = map.iter().next() else {
        return false;
    };
    let mut sibling_path = full_parent.clone();
    sibling_path.push(sibling.clone());
    let Some((_, value)) = variable_for(root, &sibling_path) else {
        return false;
    };
    let mut entry = full_parent;
    entry.push(last.clone());
    let name = format!(
        "PLT_{}",
        entry
            .iter()
            .map(|s| s.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join("__")
    );
    load_everywhere(&[(name, value)]).is_ok()
}

/// The variable setting `path` to its default, when it is a value a variable can carry.
fn variable_for(root: &Value, path: &[String]) -> Option<(String, String)> {
    let (value, _) = lookup(root, path)?;
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        // A list as a YAML flow sequence (JSON is one).
        Value::Array(_) => value.to_string(),
        _ => return None,
    };
    let name = format!(
        "PLT_{}",
        path.iter()
            .map(|s| s.to_ascii_uppercase())
            .collect::<Vec<_>>()
            .join("__")
    );
    Some((name, text))
}

#[test]
fn every_configuration_key_and_variable_in_the_readme_is_real() {
    let text = readme();
    let root = defaults();
    let mut problems = Vec::new();
    let mut keys: Vec<Vec<String>> = Vec::new();

    let names = dotted_names(&text);
    assert!(names.len() > 20, "found too few names: {names:?}");
    for (name, after) in &names {
        let path: Vec<String> = name.split('.').map(str::to_owned).collect();
        let found = resolve(&root, &path);
        // Event types and proto options (`plt.identity.user.created.v1`): no section `plt`.
        if name.starts_with("plt.") && !name.ends_with('.') {
            if found.is_some() {
                problems.push(format!("`{name}` names an event type, but it is a key"));
            }
            continue;
        }
        if FEATURE_SECTIONS.contains(&path[0].as_str()) && !NOT_CONFIG.contains(&name.as_str()) {
            if lookup(&feature_defaults(&path[0]), &path).is_none() {
                problems.push(format!(
                    "`{name}`: no such key in services/{}/config.yaml",
                    path[0]
                ));
            }
            continue;
        }
        if NOT_CONFIG.contains(&name.as_str()) {
            if found.is_some() {
                problems.push(format!(
                    "`{name}` is listed as not configuration, but it is a key"
                ));
            }
            continue;
        }
        let Some(full) = found else {
            if !accepted_as_map_entry(&root, &path) {
                problems.push(format!("`{name}`: no such key in config/default.yaml"));
            }
            continue;
        };
        if let Some(stated) = stated_duration(after) {
            let (value, _) = lookup(&root, &full).unwrap();
            let default = value
                .as_str()
                .and_then(|v| humantime_serde::re::humantime::parse_duration(v).ok());
            if default != Some(stated) {
                problems.push(format!(
                    "`{name}`: the README says ({stated:?}), default.yaml has {value}"
                ));
            }
        }
        keys.push(full);
    }

    let vars = variables(&text);
    assert!(vars.len() > 10, "found too few variables: {vars:?}");
    for var in &vars {
        if LOADER_VARS.contains(&var.as_str()) {
            continue;
        }
        if is_reserved_var(var) {
            // The tools' own (plt dev, tests, benchmarks): the loader must ignore them.
            if let Err(e) = load_everywhere(&[(var.clone(), "x".into())]) {
                problems.push(format!("{var}: the loader does not ignore it: {e}"));
            }
            continue;
        }
        let Some(key) = var.strip_prefix("PLT_") else {
            unreachable!()
        };
        // `PLT_AUTH__SERVICE_ACCOUNTS__<NAME>_FILE`: a secret file for the key.
        let key = key.strip_suffix("_FILE").unwrap_or(key);
        let mut path: Vec<String> = key.split("__").map(|s| s.to_ascii_lowercase()).collect();
        // A prefix written as `PLT_AUTH__SERVICE_ACCOUNTS__` (then `<NAME>`) names the map.
        if path.last().is_some_and(String::is_empty) {
            path.pop();
        }
        if FEATURE_SECTIONS.contains(&path[0].as_str()) {
            if lookup(&feature_defaults(&path[0]), &path).is_none() {
                problems.push(format!(
                    "{var}: no key {} in services/{}/config.yaml",
                    path.join("."),
                    path[0]
                ));
            }
            continue;
        }
        if EXAMPLE_FEATURE_SECTIONS.contains(&path[0].as_str()) {
            assert!(!KNOWN_SECTIONS.contains(&path[0].as_str()));
            continue;
        }
        match lookup(&root, &path) {
            Some((_, full)) => keys.push(full),
            None if accepted_as_map_entry(&root, &path) => {}
            None => problems.push(format!(
                "{var}: no key {} in config/default.yaml",
                path.join(".")
            )),
        }
    }

    // Each key a variable can set, set to its default: accepted by every service's loader.
    keys.sort();
    keys.dedup();
    for path in &keys {
        if let Some(var) = variable_for(&root, path)
            && let Err(e) = load_everywhere(std::slice::from_ref(&var))
        {
            problems.push(format!("{}={}: refused: {e}", var.0, var.1));
        }
    }
    assert!(
        problems.is_empty(),
        "README.md:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn the_checks_catch_a_wrong_key_a_wrong_default_and_a_wrong_variable() {
    let root = defaults();
    let wrong =
        "`gateway.rate_limit.bursts` and `database.probe_timeout` (1 s) and PLT_LOG__LEVELS";
    let names = dotted_names(wrong);
    assert_eq!(names.len(), 2);
    let path = |s: &str| s.split('.').map(str::to_owned).collect::<Vec<_>>();
    assert!(resolve(&root, &path("gateway.rate_limit.bursts")).is_none());
    let full = resolve(&root, &path("database.probe_timeout")).unwrap();
    let (value, _) = lookup(&root, &full).unwrap();
    assert_ne!(
        humantime_serde::re::humantime::parse_duration(value.as_str().unwrap()).ok(),
        stated_duration(&names[1].1)
    );
    assert_eq!(variables(wrong), vec!["PLT_LOG__LEVELS".to_owned()]);
    assert!(lookup(&root, &path("log.levels")).is_none());
    // Relative names resolve within their section; placeholders stand for any entry.
    assert_eq!(
        resolve(&root, &path("rate_limit.client")).unwrap(),
        path("gateway.rate_limit.client")
    );
    assert!(lookup(&root, &path("clients.<service>.timeout")).is_some());
    // A setting the schema refuses is refused by the loader check; a new entry of an open
    // map is accepted, a new field of a fixed section is not.
    assert!(load_everywhere(&[("PLT_GATEWAY__RATE_LIMIT__BURSTS".into(), "1".into())]).is_err());
    assert!(accepted_as_map_entry(&root, &path("registry.static.notes")));
    assert!(accepted_as_map_entry(
        &root,
        &path("auth.service_accounts.notes")
    ));
    assert!(!accepted_as_map_entry(
        &root,
        &path("gateway.rate_limit.bursts")
    ));
    assert!(!accepted_as_map_entry(
        &root,
        &path("database.probe_timeouts")
    ));
}
