//! The operations files under `ops/` (Prometheus configuration and alerts, Grafana
//! dashboards) checked against the code:
//! - every dashboard is valid JSON with a title, a uid and panels that query something;
//! - every metric name an alert or a dashboard uses is one the Rust sources emit (a renamed
//!   metric breaks this test, not a dashboard in production);
//! - with `PLT_TEST_PROMTOOL` (the path of promtool), `promtool check rules`, `check config`
//!   and `test rules` pass, and every dashboard expression parses.

use serde_json::Value;
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

/// Metrics that are not the code's own: Prometheus adds `up` to every target.
const NOT_FROM_THE_CODE: &[&str] = &["up"];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ is in the repository")
        .to_path_buf()
}

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = repo().join("ops/grafana");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not valid JSON: {e}", p.display()));
            (p, v)
        })
        .collect()
}

/// Every panel, rows' collapsed panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// The PromQL of a dashboard: its panels' targets and its query variables.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut out: Vec<String> = panels(dashboard)
        .into_iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "query" {
            let q = v["definition"]
                .as_str()
                .expect("a query variable's definition");
            // label_values(metric, label): the label is no metric.
            let q = match q.strip_prefix("label_values(") {
                Some(args) => args.rsplit_once(',').map_or(args, |(m, _)| m),
                None => q,
            };
            out.push(q.to_owned());
        }
    }
    out
}

fn alerts_yaml() -> serde_yaml::Value {
    let path = repo().join("ops/prometheus/alerts.yml");
    serde_yaml::from_str(&std::fs::read_to_string(&path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (alert name, expression) of every rule.
fn alert_rules() -> Vec<(String, String)> {
    let doc = alerts_yaml();
    let mut out = Vec::new();
    for g in doc["groups"].as_sequence().expect("groups") {
        for r in g["rules"].as_sequence().expect("rules") {
            let name = r["alert"]
                .as_str()
                .or(r["record"].as_str())
                .expect("a rule has a name");
            let expr = r["expr"].as_str().expect("a rule has an expr");
            out.push((name.to_owned(), expr.to_owned()));
        }
    }
    out
}

#[test]
fn every_dashboard_has_a_title_a_uid_and_panels_that_query() {
    let boards = dashboards();
    let names: BTreeSet<String> = boards
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in ["events.json", "gateway.json", "services.json"] {
        assert!(names.contains(expected), "ops/grafana/{expected} missing");
    }
    let mut uids = BTreeSet::new();
    for (path, d) in &boards {
        let at = path.display();
        let title = d["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "{at}: no title");
        let uid = d["uid"].as_str().unwrap_or_default();
        assert!(!uid.is_empty(), "{at}: no uid");
        assert!(
            uid.len() <= 40,
            "{at}: Grafana refuses uids over 40 characters"
        );
        assert!(uids.insert(uid.to_owned()), "{at}: uid {uid} used twice");
        assert!(
            d["schemaVersion"].as_u64().is_some(),
            "{at}: no schemaVersion"
        );
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        assert!(
            vars.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{at}: no ${{datasource}} variable of type prometheus"
        );
        let queried: Vec<&Value> = panels(d)
            .into_iter()
            .filter(|p| p["type"] != "row")
            .collect();
        assert!(!queried.is_empty(), "{at}: no panels");
        for p in queried {
            let ptitle = p["title"].as_str().unwrap_or_default();
            assert!(!ptitle.is_empty(), "{at}: a panel without a title");
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{at}: panel {ptitle:?} does not use the datasource variable"
            );
            let targets = p["targets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            assert!(!targets.is_empty(), "{at}: panel {ptitle:?} has no targets");
            for t in targets {
                let expr = t["expr"].as_str().unwrap_or_default();
                assert!(
                    !expr.trim().is_empty(),
                    "{at}: panel {ptitle:?}: empty expr"
                );
            }
        }
    }
}

/// Removes what is not a metric name from PromQL (strings, label matchers, grouping label
/// lists, ranges, Grafana variables) and returns the identifiers left that are neither
/// keywords, functions nor aggregations.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "offset",
        "bool",
        "inf",
        "nan",
        "atan2",
        // aggregations, also written `sum by (x) (...)`
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    // Strings and Grafana variables.
    let mut s = String::new();
    let mut quote = None;
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            Some(_) if c == '\\' => {
                chars.next();
            }
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None if c == '$' => {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_')
                {
                    chars.next();
                }
                s.push(' ');
            }
            None => s.push(c),
        }
    }
    // Label matchers and ranges: `{...}`, `[...]`.
    let mut flat = String::new();
    let mut depth = 0;
    for c in s.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth == 0 => flat.push(c),
            _ => {}
        }
    }
    // Tokens, dropping the label list after by/without/on/ignoring/group_left/group_right.
    let mut tokens = Vec::new();
    let mut cur = String::new();
    for c in flat.chars() {
        if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            cur.push(c);
        } else {
            if !cur.is_empty() {
                tokens.push(std::mem::take(&mut cur));
            }
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
        }
    }
    if !cur.is_empty() {
        tokens.push(cur);
    }
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        let grouping = matches!(
            t,
            "by" | "without" | "on" | "ignoring" | "group_left" | "group_right"
        );
        if grouping && tokens.get(i + 1).is_some_and(|n| n == "(") {
            // Skip to the closing parenthesis.
            while i < tokens.len() && tokens[i] != ")" {
                i += 1;
            }
        } else if t.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && !KEYWORDS.contains(&t)
            && tokens.get(i + 1).is_none_or(|n| n != "(")
        {
            names.insert(t.to_owned());
        }
        i += 1;
    }
    names
}

/// The Rust sources: `src/` of crates, services, cli and tools, tests left out (a name only a
/// test mentions does not count).
fn rust_sources() -> String {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy();
            if p.is_dir() {
                if !matches!(name.as_ref(), "target" | "tests" | "benches" | ".git") {
                    walk(&p, out);
                }
            } else if name.ends_with(".rs") && p.components().any(|c| c.as_os_str() == "src") {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    for top in ["crates", "services", "cli", "tools"] {
        walk(&repo().join(top), &mut files);
    }
    assert!(
        files.len() > 50,
        "found the sources ({} files)",
        files.len()
    );
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_metric_the_ops_files_use_is_emitted_by_the_code() {
    let mut used: Vec<(String, String)> = Vec::new(); // (metric, where)
    for (alert, expr) in alert_rules() {
        for m in metric_names(&expr) {
            used.push((m, format!("alerts.yml {alert}")));
        }
    }
    for (path, d) in dashboards() {
        for expr in dashboard_exprs(&d) {
            for m in metric_names(&expr) {
                used.push((m, path.file_name().unwrap().to_string_lossy().into_owned()));
            }
        }
    }
    let distinct: BTreeSet<&str> = used.iter().map(|(m, _)| m.as_str()).collect();
    // The extraction itself works: names every file certainly uses are found.
    for sure in [
        "http_server_requests_total",
        "gateway_request_duration_seconds_bucket",
        "outbox_pending",
        "scheduler_runs_total",
        "tls_certificate_expiry_timestamp_seconds",
        "auth_signing_key_expiry_timestamp_seconds",
    ] {
        assert!(
            distinct.contains(sure),
            "{sure} not found among {distinct:?}"
        );
    }
    for not in [
        "rate",
        "sum",
        "le",
        "service",
        "status",
        "histogram_quantile",
        "time",
    ] {
        assert!(!distinct.contains(not), "{not} taken for a metric");
    }
    let sources = rust_sources();
    let mut missing = Vec::new();
    for (metric, at) in &used {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| metric.strip_suffix(s))
            .unwrap_or(metric);
        if NOT_FROM_THE_CODE.contains(&base) || sources.contains(&format!("\"{base}\"")) {
            continue;
        }
        missing.push(format!("{metric} ({at})"));
    }
    assert!(
        missing.is_empty(),
        "metrics the ops files use that no Rust source emits:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_alert_has_for_severity_summary_and_description_and_a_test() {
    let doc = alerts_yaml();
    let tests = std::fs::read_to_string(repo().join("ops/prometheus/alerts.test.yml")).unwrap();
    let tests: serde_yaml::Value = serde_yaml::from_str(&tests).unwrap();
    // Per alert: (asserted firing, asserted quiet).
    let mut asserted = std::collections::BTreeMap::<String, (bool, bool)>::new();
    for t in tests["tests"].as_sequence().expect("tests") {
        for a in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = a["alertname"].as_str().unwrap().to_owned();
            let fires = a["exp_alerts"].as_sequence().is_some_and(|e| !e.is_empty());
            let e = asserted.entry(name).or_default();
            if fires {
                e.0 = true;
            } else {
                e.1 = true;
            }
        }
    }
    let mut alerts = 0;
    for g in doc["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let Some(name) = r["alert"].as_str() else {
                continue;
            };
            alerts += 1;
            assert!(r["for"].as_str().is_some(), "{name}: no `for:`");
            let severity = r["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                matches!(severity, "warning" | "critical"),
                "{name}: severity {severity:?}"
            );
            for a in ["summary", "description"] {
                assert!(
                    r["annotations"][a].as_str().is_some_and(|s| !s.is_empty()),
                    "{name}: no {a}"
                );
            }
            assert_eq!(
                asserted.get(name),
                Some(&(true, true)),
                "{name}: alerts.test.yml must assert it firing and not firing"
            );
        }
    }
    assert!(alerts >= 10, "{alerts} alerts");
}

fn promtool(promtool: &str, args: &[&str]) {
    let out = Command::new(promtool)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| panic!("{promtool}: {e}"));
    assert!(
        out.status.success(),
        "promtool {}: {}\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn promtool_accepts_the_rules_the_config_and_the_dashboards() {
    let tool = match std::env::var("PLT_TEST_PROMTOOL") {
        Ok(p) if !p.is_empty() => p,
        _ => {
            eprintln!("SKIPPED promtool checks: PLT_TEST_PROMTOOL is not set");
            return;
        }
    };
    promtool(&tool, &["check", "rules", "ops/prometheus/alerts.yml"]);
    promtool(&tool, &["check", "config", "ops/prometheus/prometheus.yml"]);
    promtool(&tool, &["test", "rules", "ops/prometheus/alerts.test.yml"]);

    // Every dashboard expression as a recording rule, Grafana's variables given values.
    let mut rules = Vec::new();
    for (path, d) in dashboards() {
        let board = path.file_stem().unwrap().to_string_lossy().into_owned();
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"]
                    .as_str()
                    .unwrap()
                    .replace("$__rate_interval", "5m")
                    .replace("$__interval", "1m")
                    .replace("$__range", "1h");
                let expr = expand_variables(&expr);
                rules.push(serde_json::json!({
                    "record": format!("dashboard:{board}:{}", rules.len()),
                    "expr": expr,
                }));
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboards.rules.yml");
    let doc = serde_json::json!({"groups": [{"name": "dashboards", "rules": rules}]});
    std::fs::write(&file, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
    promtool(&tool, &["check", "rules", file.to_str().unwrap()]);
}

/// `$name` (a dashboard variable, used in `=~"$name"`) as `.*`.
fn expand_variables(expr: &str) -> String {
    let mut out = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' {
            while chars
                .peek()
                .is_some_and(|c| c.is_alphanumeric() || *c == '_')
            {
                chars.next();
            }
            out.push_str(".*");
        } else {
            out.push(c);
        }
    }
    out
}
