//! The hash chain: the canonical form of an entry, its hash, and the walk that verifies
//! every entry.
//!
//! ```text
//! hash(n) = hex(SHA-256(hash(n-1) ‖ canonical(entry n)))      hash(0) = "000…0" (64 zeros)
//! ```
//!
//! `hash(n-1)` enters as its 64 lower-case hex characters. `canonical(entry)` is a JSON
//! object without whitespace whose keys are in byte order — `action`, `actor`, `id` (only
//! when the entry has a record id: entries without one keep the form they always had),
//! `metadata`, `outcome`, `resource`, `sequence`, `source_ip`, `time`, `trace_id`,
//! `user_agent` — with
//! strings escaped as `serde_json` escapes them, `sequence` as a decimal integer, `time` as
//! RFC 3339 in UTC with exactly six fraction digits and `Z` (`2026-11-24T19:27:00.123456Z`),
//! and `metadata` as its canonical JSON: object keys sorted by their UTF-8 bytes at every
//! level (explicitly, whatever serde_json's `preserve_order` feature says), no whitespace,
//! numbers as serde_json prints them. The metadata text is stored exactly as hashed.

use crate::store::{AuditStore, StoreError, StoredEntry};
use chrono::SecondsFormat;
use plt_contracts::audit::VerifyReport;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

/// The previous hash of the first entry.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Deepest accepted nesting of metadata (objects and arrays).
pub const MAX_METADATA_DEPTH: usize = 32;

/// Entries read per round trip while verifying.
const VERIFY_BATCH: u32 = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("nested deeper than {MAX_METADATA_DEPTH} levels")]
pub struct TooDeep;

/// The canonical JSON text of `v` (see the module documentation).
pub fn canonical_json(v: &Value) -> Result<String, TooDeep> {
    let mut out = String::new();
    write_canonical(&mut out, v, 0)?;
    Ok(out)
}

fn write_str(out: &mut String, s: &str) {
    // Serialising a &str cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_default());
}

fn write_canonical(out: &mut String, v: &Value, depth: usize) -> Result<(), TooDeep> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            if depth >= MAX_METADATA_DEPTH {
                return Err(TooDeep);
            }
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, item, depth + 1)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            if depth >= MAX_METADATA_DEPTH {
                return Err(TooDeep);
            }
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(out, k);
                out.push(':');
                write_canonical(out, &map[k.as_str()], depth + 1)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// The canonical form of a stored entry, as hashed. `metadata` is taken as stored (it is
/// already canonical JSON text).
pub fn canonical_entry(e: &StoredEntry) -> String {
    let mut out = String::with_capacity(256 + e.metadata.len());
    let field = |out: &mut String, key: &str, value: &str| {
        out.push('"');
        out.push_str(key);
        out.push_str("\":");
        write_str(out, value);
        out.push(',');
    };
    out.push('{');
    field(&mut out, "action", &e.action);
    field(&mut out, "actor", &e.actor);
    if let Some(id) = e.record_id {
        field(&mut out, "id", &id.to_string());
    }
    out.push_str("\"metadata\":");
    out.push_str(&e.metadata);
    out.push(',');
    field(&mut out, "outcome", &e.outcome);
    field(&mut out, "resource", &e.resource);
    let _ = write!(out, "\"sequence\":{},", e.sequence);
    field(&mut out, "source_ip", &e.source_ip);
    field(
        &mut out,
        "time",
        &e.time.to_rfc3339_opts(SecondsFormat::Micros, true),
    );
    field(&mut out, "trace_id", &e.trace_id);
    field(&mut out, "user_agent", &e.user_agent);
    out.pop(); // the last comma
    out.push('}');
    out
}

/// `hex(SHA-256(prev_hash ‖ canonical))`, lower case.
pub fn entry_hash(prev_hash: &str, canonical: &str) -> String {
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(canonical.as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Why entry `e`, expected at `expected` after an entry hashed `prev`, breaks the chain.
fn check(e: &StoredEntry, expected: u64, prev: &str) -> Option<String> {
    if e.sequence > expected {
        let missing = if e.sequence == expected + 1 {
            format!("sequence {expected} is missing")
        } else {
            format!("sequences {expected}..={} are missing", e.sequence - 1)
        };
        return Some(format!("{missing} (gap before {})", e.sequence));
    }
    if e.sequence < expected {
        return Some(format!(
            "sequence {} repeats or is out of order (expected {expected})",
            e.sequence
        ));
    }
    if e.prev_hash != prev {
        return Some(if expected == 1 {
            "the first entry does not start from the genesis hash".to_owned()
        } else {
            format!(
                "does not link to entry {}: its previous hash differs from that entry's hash",
                expected - 1
            )
        });
    }
    if entry_hash(prev, &canonical_entry(e)) != e.hash {
        return Some("hash does not match the entry's contents".to_owned());
    }
    None
}

fn broken(sequence: u64, checked: u64, reason: String) -> VerifyReport {
    VerifyReport {
        ok: false,
        checked,
        first_broken_sequence: Some(sequence),
        reason,
    }
}

/// Walks every entry in sequence order: continuity from 1, each link to the previous
/// hash, each hash against the entry's contents. `committed` is the newest sequence the
/// caller knows was committed (0 if unknown): entries missing up to it are reported too,
/// which catches a deleted tail while the service that wrote it runs.
pub async fn verify(store: &dyn AuditStore, committed: u64) -> Result<VerifyReport, StoreError> {
    let mut prev = GENESIS_HASH.to_owned();
    let mut expected = 1u64;
    let mut after = 0u64;
    loop {
        let rows = store.chain(after, VERIFY_BATCH).await?;
        let Some(last) = rows.last() else { break };
        after = last.sequence;
        for e in rows {
            if let Some(reason) = check(&e, expected, &prev) {
                return Ok(broken(e.sequence, expected - 1, reason));
            }
            prev = e.hash;
            expected += 1;
        }
    }
    let checked = expected - 1;
    if checked < committed {
        return Ok(broken(
            expected,
            checked,
            format!("entries {expected}..={committed} were committed but are missing"),
        ));
    }
    Ok(VerifyReport {
        ok: true,
        checked,
        first_broken_sequence: None,
        reason: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    fn sample() -> StoredEntry {
        StoredEntry {
            sequence: 1,
            time: Utc.with_ymd_and_hms(2026, 11, 24, 19, 27, 0).unwrap()
                + chrono::Duration::microseconds(123_456),
            actor: "user:ada".into(),
            action: "authz.role.grant".into(),
            resource: "role/admin".into(),
            outcome: "success".into(),
            metadata: canonical_json(&json!({"b": 1, "a": [true, null]})).unwrap(),
            source_ip: "192.0.2.1".into(),
            user_agent: "curl/8".into(),
            trace_id: "t1".into(),
            record_id: None,
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
        }
    }

    #[test]
    fn canonical_json_sorts_keys_at_every_level_and_has_no_whitespace() {
        // Built in reverse order, parsed from text in another order: same canonical form.
        let mut inner = serde_json::Map::new();
        inner.insert("z".into(), json!(1));
        inner.insert("a".into(), json!("x"));
        let mut outer = serde_json::Map::new();
        outer.insert("zz".into(), Value::Object(inner));
        outer.insert("B".into(), json!([1.5, -2, "é\n\"q\""]));
        outer.insert("a".into(), json!(null));
        let parsed: Value = serde_json::from_str(
            r#"{ "a": null, "zz": {"a": "x", "z": 1}, "B": [1.5, -2, "é\n\"q\""] }"#,
        )
        .unwrap();
        let want = r#"{"B":[1.5,-2,"é\n\"q\""],"a":null,"zz":{"a":"x","z":1}}"#;
        assert_eq!(canonical_json(&Value::Object(outer)).unwrap(), want);
        assert_eq!(canonical_json(&parsed).unwrap(), want);
        // Canonical text parses back to the same canonical text.
        let again: Value = serde_json::from_str(want).unwrap();
        assert_eq!(canonical_json(&again).unwrap(), want);
    }

    #[test]
    fn nesting_is_limited() {
        let mut v = json!(1);
        for _ in 0..MAX_METADATA_DEPTH {
            v = json!([v]);
        }
        assert!(canonical_json(&v).is_ok());
        assert_eq!(canonical_json(&json!({ "x": v })), Err(TooDeep));
    }

    #[test]
    fn canonical_entry_is_the_documented_format() {
        let e = sample();
        assert_eq!(
            canonical_entry(&e),
            r#"{"action":"authz.role.grant","actor":"user:ada","metadata":{"a":[true,null],"b":1},"outcome":"success","resource":"role/admin","sequence":1,"source_ip":"192.0.2.1","time":"2026-11-24T19:27:00.123456Z","trace_id":"t1","user_agent":"curl/8"}"#
        );
    }

    #[test]
    fn a_record_id_is_hashed_in_its_place_only_when_set() {
        let mut e = sample();
        let without = canonical_entry(&e);
        e.record_id = Some(uuid::Uuid::from_u128(
            0x0193_0000_0000_7000_8000_0000_0000_0001,
        ));
        assert_eq!(
            canonical_entry(&e),
            without.replace(
                r#""actor":"user:ada","#,
                r#""actor":"user:ada","id":"01930000-0000-7000-8000-000000000001","#
            )
        );
    }

    #[test]
    fn hash_is_sha256_of_previous_hash_and_canonical_form() {
        // Known vector: SHA-256("abc") with an empty previous hash.
        assert_eq!(
            entry_hash("", "abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let e = sample();
        let c = canonical_entry(&e);
        let h = entry_hash(GENESIS_HASH, &c);
        assert_eq!(h, entry_hash("", &format!("{GENESIS_HASH}{c}")));
        assert_eq!(h.len(), 64);
        // Any field changes the hash.
        let mut other = e.clone();
        other.actor.push('x');
        assert_ne!(entry_hash(GENESIS_HASH, &canonical_entry(&other)), h);
        let mut later = e;
        later.time += chrono::Duration::microseconds(1);
        assert_ne!(entry_hash(GENESIS_HASH, &canonical_entry(&later)), h);
    }

    #[test]
    fn check_names_gaps_links_and_hashes() {
        let mut e = sample();
        e.hash = entry_hash(GENESIS_HASH, &canonical_entry(&e));
        assert_eq!(check(&e, 1, GENESIS_HASH), None);
        assert!(check(&e, 1, &"1".repeat(64)).unwrap().contains("genesis"));
        let mut gap = e.clone();
        gap.sequence = 3;
        assert!(
            check(&gap, 2, GENESIS_HASH)
                .unwrap()
                .contains("sequence 2 is missing")
        );
        let mut edited = e.clone();
        edited.resource = "role/root".into();
        assert!(check(&edited, 1, GENESIS_HASH).unwrap().contains("hash"));
    }
}
