//! Input rules for audit entries. Values are kept exactly as given (an audit log records,
//! it does not normalise); what is refused is named by its field.

use crate::{chain, writer::Draft};
use plt_contracts::{Error, FieldViolation, Result, audit::NewAuditEntry};
use std::net::IpAddr;

pub const MAX_ACTOR_CHARS: usize = 256;
pub const MAX_ACTION_CHARS: usize = 128;
pub const MAX_RESOURCE_CHARS: usize = 1024;
pub const MAX_USER_AGENT_CHARS: usize = 512;
pub const MAX_TRACE_ID_CHARS: usize = 128;
pub const MAX_SOURCE_IP_CHARS: usize = 64;

/// Why a text field is refused, if it is.
fn text(value: &str, required: bool, max_chars: usize) -> Option<String> {
    if required && value.trim().is_empty() {
        return Some("is required".into());
    }
    if value.chars().count() > max_chars {
        return Some(format!("must be at most {max_chars} characters"));
    }
    if value.chars().any(char::is_control) {
        return Some("must not contain control characters".into());
    }
    None
}

/// The one error for `violations`, or `Ok` when there are none.
fn refuse(violations: Vec<FieldViolation>) -> Result<()> {
    match violations.len() {
        0 => Ok(()),
        1 => {
            let v = violations
                .into_iter()
                .next()
                .unwrap_or_else(|| unreachable!());
            Err(Error::invalid(v.field, v.reason))
        }
        _ => Err(Error::invalid_fields(violations)),
    }
}

/// Checks an entry and turns it into what the writer appends (metadata as canonical JSON).
pub fn entry(e: NewAuditEntry, max_metadata_bytes: usize) -> Result<Draft> {
    let mut violations = Vec::new();
    let mut check = |field: &str, reason: Option<String>| {
        if let Some(reason) = reason {
            violations.push(FieldViolation {
                field: field.to_owned(),
                reason,
            });
        }
    };
    check("actor", text(&e.actor, true, MAX_ACTOR_CHARS));
    check("action", text(&e.action, true, MAX_ACTION_CHARS));
    check("resource", text(&e.resource, false, MAX_RESOURCE_CHARS));
    let metadata = match chain::canonical_json(&serde_json::Value::Object(e.metadata)) {
        Ok(m) if m.len() > max_metadata_bytes => {
            check(
                "metadata",
                Some(format!(
                    "must be at most {max_metadata_bytes} bytes as compact JSON (is {})",
                    m.len()
                )),
            );
            String::new()
        }
        Ok(m) => m,
        Err(e) => {
            check("metadata", Some(format!("must not be {e}")));
            String::new()
        }
    };
    check(
        "source_ip",
        text(&e.source_ip, false, MAX_SOURCE_IP_CHARS).or_else(|| {
            (!e.source_ip.is_empty() && e.source_ip.parse::<IpAddr>().is_err())
                .then(|| "must be an IPv4 or IPv6 address".to_owned())
        }),
    );
    check(
        "user_agent",
        text(&e.user_agent, false, MAX_USER_AGENT_CHARS),
    );
    check("trace_id", text(&e.trace_id, false, MAX_TRACE_ID_CHARS));
    refuse(violations)?;
    Ok(Draft {
        id: e.id,
        actor: e.actor,
        action: e.action,
        resource: e.resource,
        outcome: e.outcome,
        metadata,
        source_ip: e.source_ip,
        user_agent: e.user_agent,
        trace_id: e.trace_id,
    })
}

/// Checks a filter value (the same length and character rules as the field).
pub fn filter(field: &str, value: Option<String>, max_chars: usize) -> Result<Option<String>> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        Some(v) => match text(&v, false, max_chars) {
            Some(reason) => Err(Error::invalid(field, reason)),
            None => Ok(Some(v)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use plt_contracts::{ErrorCode, audit::Outcome};
    use serde_json::json;

    fn good() -> NewAuditEntry {
        NewAuditEntry {
            id: None,
            actor: "user:1".into(),
            action: "a.b".into(),
            resource: "r".into(),
            outcome: Outcome::Success,
            metadata: json!({"k": "v"}).as_object().unwrap().clone(),
            source_ip: "2001:db8::1".into(),
            user_agent: "ua".into(),
            trace_id: "t".into(),
        }
    }

    #[test]
    fn valid_entry_keeps_values_and_canonicalises_metadata() {
        let d = entry(good(), 8192).unwrap();
        assert_eq!(d.actor, "user:1");
        assert_eq!(d.metadata, r#"{"k":"v"}"#);
    }

    #[test]
    fn every_bad_field_is_named() {
        let e = NewAuditEntry {
            actor: " ".into(),
            action: String::new(),
            source_ip: "10.0.0.1:80".into(),
            ..good()
        };
        let err = entry(e, 8192).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        let fields: Vec<&str> = err.violations.iter().map(|v| v.field.as_str()).collect();
        assert_eq!(fields, ["actor", "action", "source_ip"]);
    }

    #[test]
    fn metadata_limit_counts_canonical_bytes() {
        // {"k":"v"} is 9 bytes.
        assert!(entry(good(), 9).is_ok());
        let err = entry(good(), 8).unwrap_err();
        assert_eq!(err.violations[0].field, "metadata");
        assert!(err.violations[0].reason.contains("at most 8 bytes"));
    }
}
