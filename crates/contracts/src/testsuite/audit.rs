//! The audit contract suite. Each case tags its entries with its own random actor or
//! resource, so cases may share one service instance; a case that counts all entries (bad
//! input writes nothing) expects no other writer while it runs.

use crate::{
    ErrorCode, RequestContext,
    audit::{AuditEntry, AuditQuery, AuditServiceClient, NewAuditEntry, Outcome},
};
use chrono::{Duration, Utc};
use serde_json::{Value, json};
use std::{collections::HashSet, sync::Arc};
use uuid::Uuid;

/// What a suite run needs: the implementation under test and two of its limits.
pub struct AuditFixture {
    pub client: Arc<dyn AuditServiceClient>,
    /// The context of a calling platform service: carries a service token for the service
    /// under test, or nothing when `client` attaches its own (the client factory's do).
    pub service: RequestContext,
    /// The service's `audit.max_metadata_bytes`.
    pub max_metadata_bytes: usize,
    /// The service's `audit.max_page_size`.
    pub max_page_size: u32,
}

impl AuditFixture {
    /// A fresh context: the fixture's `service` context with a new request id.
    pub fn ctx(&self) -> RequestContext {
        self.service
            .clone()
            .with_request_id(format!("suite-{}", Uuid::new_v4()))
    }
}

fn tag(prefix: &str) -> String {
    format!("{prefix}-{}", Uuid::new_v4().simple())
}

fn metadata(v: Value) -> serde_json::Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

/// A valid entry by `actor`.
pub fn entry(actor: &str) -> NewAuditEntry {
    NewAuditEntry {
        id: None,
        actor: actor.to_owned(),
        action: "suite.thing.do".into(),
        resource: "thing/1".into(),
        outcome: Outcome::Success,
        metadata: metadata(json!({"reason": "testing"})),
        source_ip: "192.0.2.10".into(),
        user_agent: "audit-suite/1".into(),
        trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
    }
}

fn by_actor(actor: &str) -> AuditQuery {
    AuditQuery {
        actor: Some(actor.to_owned()),
        ..Default::default()
    }
}

/// Every entry matching `q`, following page tokens.
async fn all_pages(fx: &AuditFixture, mut q: AuditQuery) -> Vec<AuditEntry> {
    let c = fx.client.as_ref();
    let mut out = Vec::new();
    loop {
        let page = c.query(&fx.ctx(), q.clone()).await.expect("query");
        out.extend(page.entries);
        match page.next_page_token {
            Some(t) => q.page_token = Some(t),
            None => return out,
        }
        assert!(out.len() < 100_000, "pagination does not end");
    }
}

fn is_hex_sha256(s: &str) -> bool {
    s.len() == 64 && s.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f'))
}

/// Runs every case; panics naming the first that fails.
pub async fn run_all(fx: &AuditFixture) {
    record_and_read_back(fx).await;
    sequences_increase_and_times_never_decrease(fx).await;
    metadata_round_trips(fx).await;
    filters_select_matching_entries(fx).await;
    pages_newest_first_without_repeats(fx).await;
    time_range_is_half_open(fx).await;
    bad_input_is_refused_and_nothing_is_written(fx).await;
    bad_queries_are_refused(fx).await;
    page_size_is_capped(fx).await;
    concurrent_records_get_distinct_sequences(fx).await;
    verify_reports_an_intact_chain(fx).await;
    repeated_record_ids_are_recorded_once(fx).await;
}

/// At-least-once senders give each record an id: a `record` with an id the log holds
/// answers that entry's sequence and writes nothing, over every transport.
pub async fn repeated_record_ids_are_recorded_once(fx: &AuditFixture) {
    let c = &fx.client;
    let actor = tag("dedup");
    let id = Uuid::now_v7();
    let input = NewAuditEntry {
        id: Some(id),
        ..entry(&actor)
    };
    let first = c.record(&fx.ctx(), input.clone()).await.expect("record");
    let again = c.record(&fx.ctx(), input.clone()).await.expect("repeat");
    assert_eq!(
        again, first,
        "a repeated id answers the held entry's sequence"
    );
    // Even if the rest differs: the id decides.
    let changed = NewAuditEntry {
        action: "suite.thing.other".into(),
        ..input.clone()
    };
    assert_eq!(c.record(&fx.ctx(), changed).await.expect("repeat"), first);
    let page = c.query(&fx.ctx(), by_actor(&actor)).await.expect("query");
    assert_eq!(page.entries.len(), 1, "{page:?}");
    assert_eq!(page.entries[0].entry, input, "the id is kept and read back");
    // Another id is another entry.
    let other = c
        .record(
            &fx.ctx(),
            NewAuditEntry {
                id: Some(Uuid::now_v7()),
                ..entry(&actor)
            },
        )
        .await
        .expect("record");
    assert!(other > first);
}

pub async fn record_and_read_back(fx: &AuditFixture) {
    let c = &fx.client;
    let actor = tag("rec");
    let input = entry(&actor);
    let before = Utc::now() - Duration::seconds(1);
    let seq = c.record(&fx.ctx(), input.clone()).await.expect("record");
    let after = Utc::now() + Duration::seconds(1);
    assert!(seq >= 1, "sequences start at 1");
    // Durable when record returns: readable at once.
    let page = c.query(&fx.ctx(), by_actor(&actor)).await.expect("query");
    assert_eq!(page.entries.len(), 1, "{page:?}");
    assert!(page.next_page_token.is_none());
    let got = &page.entries[0];
    assert_eq!(got.sequence, seq);
    assert_eq!(
        got.entry, input,
        "stored entry differs from the recorded one"
    );
    assert!(is_hex_sha256(&got.hash), "hash {:?}", got.hash);
    assert!(
        got.time >= before && got.time <= after,
        "time {} not set by the service at record time",
        got.time
    );
    assert_eq!(
        got.time.timestamp_subsec_nanos() % 1000,
        0,
        "time kept beyond microseconds"
    );

    // Optional fields may be empty.
    let bare = NewAuditEntry {
        metadata: Default::default(),
        source_ip: String::new(),
        user_agent: String::new(),
        trace_id: String::new(),
        resource: String::new(),
        outcome: Outcome::Denied,
        ..entry(&actor)
    };
    let seq2 = c
        .record(&fx.ctx(), bare.clone())
        .await
        .expect("bare record");
    let page = c.query(&fx.ctx(), by_actor(&actor)).await.unwrap();
    assert_eq!(page.entries.len(), 2);
    assert_eq!(page.entries[0].sequence, seq2, "newest first");
    assert_eq!(page.entries[0].entry, bare);
    assert_ne!(page.entries[0].hash, page.entries[1].hash);
}

pub async fn sequences_increase_and_times_never_decrease(fx: &AuditFixture) {
    let c = &fx.client;
    let actor = tag("seq");
    let mut seqs = Vec::new();
    for _ in 0..5 {
        seqs.push(c.record(&fx.ctx(), entry(&actor)).await.unwrap());
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequences of one caller do not increase: {seqs:?}"
    );
    let got = all_pages(fx, by_actor(&actor)).await;
    let mut got_seqs: Vec<u64> = got.iter().map(|e| e.sequence).collect();
    got_seqs.reverse();
    assert_eq!(got_seqs, seqs);
    // Newest first: times never increase down the page.
    assert!(got.windows(2).all(|w| w[0].time >= w[1].time));
    let hashes: HashSet<&str> = got.iter().map(|e| e.hash.as_str()).collect();
    assert_eq!(hashes.len(), got.len(), "two entries share a hash");
}

pub async fn metadata_round_trips(fx: &AuditFixture) {
    let c = &fx.client;
    let actor = tag("meta");
    let input = NewAuditEntry {
        metadata: metadata(json!({
            "zeta": 1,
            "alpha": {"nested": [1, -2, 3.5, true, null, "x"], "empty": {}},
            "unicode": "grüße – 日本 \"quoted\" \\ \n",
            "big": 18446744073709551615u64,
            "negative": -9223372036854775807i64,
            "float": 0.1,
        })),
        ..entry(&actor)
    };
    c.record(&fx.ctx(), input.clone()).await.expect("record");
    let page = c.query(&fx.ctx(), by_actor(&actor)).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].entry.metadata, input.metadata);
}

pub async fn filters_select_matching_entries(fx: &AuditFixture) {
    let c = &fx.client;
    let actor = tag("flt");
    let other = tag("flt-other");
    let resource = tag("res");
    let cases = [
        (
            actor.as_str(),
            "user.login",
            resource.as_str(),
            Outcome::Success,
        ),
        (
            actor.as_str(),
            "user.login",
            resource.as_str(),
            Outcome::Failure,
        ),
        (actor.as_str(), "user.logout", "elsewhere", Outcome::Success),
        (
            other.as_str(),
            "user.login",
            resource.as_str(),
            Outcome::Denied,
        ),
    ];
    let mut seqs = Vec::new();
    for (a, act, res, out) in cases {
        let e = NewAuditEntry {
            action: act.into(),
            resource: res.into(),
            outcome: out,
            ..entry(a)
        };
        seqs.push(c.record(&fx.ctx(), e).await.unwrap());
    }
    let pick = |q: AuditQuery| async move {
        let mut s: Vec<u64> = all_pages(fx, q).await.iter().map(|e| e.sequence).collect();
        s.sort();
        s
    };
    assert_eq!(pick(by_actor(&actor)).await, seqs[..3].to_vec());
    assert_eq!(
        pick(AuditQuery {
            action: Some("user.login".into()),
            ..by_actor(&actor)
        })
        .await,
        seqs[..2].to_vec()
    );
    assert_eq!(
        pick(AuditQuery {
            outcome: Some(Outcome::Failure),
            ..by_actor(&actor)
        })
        .await,
        vec![seqs[1]]
    );
    assert_eq!(
        pick(AuditQuery {
            resource: Some(resource.clone()),
            ..Default::default()
        })
        .await,
        vec![seqs[0], seqs[1], seqs[3]]
    );
    assert_eq!(
        pick(AuditQuery {
            resource: Some(resource.clone()),
            outcome: Some(Outcome::Denied),
            ..Default::default()
        })
        .await,
        vec![seqs[3]]
    );
    assert_eq!(
        pick(AuditQuery {
            action: Some("user.logout".into()),
            ..by_actor(&other)
        })
        .await,
        Vec::<u64>::new()
    );
    // Empty strings are no filter at all.
    assert_eq!(
        pick(AuditQuery {
            action: Some(String::new()),
            resource: Some(String::new()),
            ..by_actor(&actor)
        })
        .await,
        seqs[..3].to_vec()
    );
}

pub async fn pages_newest_first_without_repeats(fx: &AuditFixture) {
    let c = &fx.client;
    let actor = tag("page");
    let mut seqs = Vec::new();
    for _ in 0..7 {
        seqs.push(c.record(&fx.ctx(), entry(&actor)).await.unwrap());
    }
    let mut q = AuditQuery {
        page_size: 3,
        ..by_actor(&actor)
    };
    let mut sizes = Vec::new();
    let mut seen = Vec::new();
    loop {
        let page = c.query(&fx.ctx(), q.clone()).await.expect("query page");
        sizes.push(page.entries.len());
        seen.extend(page.entries.iter().map(|e| e.sequence));
        match page.next_page_token {
            Some(t) => q.page_token = Some(t),
            None => break,
        }
        assert!(sizes.len() < 10, "pagination does not end");
    }
    assert_eq!(sizes, vec![3, 3, 1]);
    seqs.reverse();
    assert_eq!(
        seen, seqs,
        "not newest first, or an entry repeated or missing"
    );
}

pub async fn time_range_is_half_open(fx: &AuditFixture) {
    let c = &fx.client;
    let actor = tag("time");
    for _ in 0..3 {
        c.record(&fx.ctx(), entry(&actor)).await.unwrap();
        // Distinct times (the service keeps microseconds).
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    let all = all_pages(fx, by_actor(&actor)).await;
    assert_eq!(all.len(), 3);
    let (a, b, cc) = (&all[2], &all[1], &all[0]);
    assert!(a.time < b.time && b.time < cc.time, "times not distinct");
    let range = |from, to| AuditQuery {
        from,
        to,
        ..by_actor(&actor)
    };
    let seqs = |v: Vec<AuditEntry>| v.iter().map(|e| e.sequence).collect::<Vec<_>>();
    assert_eq!(
        seqs(all_pages(fx, range(Some(b.time), None)).await),
        vec![cc.sequence, b.sequence],
        "from is inclusive"
    );
    assert_eq!(
        seqs(all_pages(fx, range(None, Some(b.time))).await),
        vec![a.sequence],
        "to is exclusive"
    );
    assert_eq!(
        seqs(all_pages(fx, range(Some(b.time), Some(cc.time))).await),
        vec![b.sequence]
    );
    assert_eq!(
        seqs(all_pages(fx, range(Some(b.time), Some(b.time))).await),
        Vec::<u64>::new(),
        "an empty range is valid and empty"
    );
    let err = c
        .query(&fx.ctx(), range(Some(cc.time), Some(a.time)))
        .await
        .expect_err("inverted range accepted");
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
    assert_eq!(err.violations[0].field, "from", "{err}");
}

pub async fn bad_input_is_refused_and_nothing_is_written(fx: &AuditFixture) {
    let c = &fx.client;
    let before = c.verify(&fx.ctx()).await.expect("verify").checked;
    let resource = tag("bad");
    let good = || NewAuditEntry {
        resource: resource.clone(),
        ..entry(&tag("bad-actor"))
    };
    let oversize = json!({ "blob": "x".repeat(fx.max_metadata_bytes) });
    let mut deep = json!("bottom");
    for _ in 0..100 {
        deep = json!({ "d": deep });
    }
    let cases: Vec<(NewAuditEntry, &str)> = vec![
        (
            NewAuditEntry {
                actor: String::new(),
                ..good()
            },
            "actor",
        ),
        (
            NewAuditEntry {
                actor: "   ".into(),
                ..good()
            },
            "actor",
        ),
        (
            NewAuditEntry {
                action: String::new(),
                ..good()
            },
            "action",
        ),
        (
            NewAuditEntry {
                action: "a".repeat(10_000),
                ..good()
            },
            "action",
        ),
        (
            NewAuditEntry {
                actor: "evil\nactor".into(),
                ..good()
            },
            "actor",
        ),
        (
            NewAuditEntry {
                metadata: metadata(oversize),
                ..good()
            },
            "metadata",
        ),
        (
            NewAuditEntry {
                metadata: metadata(deep),
                ..good()
            },
            "metadata",
        ),
        (
            NewAuditEntry {
                source_ip: "not-an-ip".into(),
                ..good()
            },
            "source_ip",
        ),
        (
            NewAuditEntry {
                user_agent: "u".repeat(100_000),
                ..good()
            },
            "user_agent",
        ),
    ];
    for (input, field) in cases {
        let err = c
            .record(&fx.ctx(), input)
            .await
            .expect_err("bad input accepted");
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{field}: {err}");
        assert_eq!(
            err.violations.first().map(|v| v.field.as_str()),
            Some(field),
            "{err}"
        );
    }
    let written = c
        .query(
            &fx.ctx(),
            AuditQuery {
                resource: Some(resource.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(written.entries.is_empty(), "refused entries were written");
    let after = c.verify(&fx.ctx()).await.unwrap();
    assert!(after.ok, "{after:?}");
    assert_eq!(after.checked, before, "refused entries were written");
    // Just under the limit is fine.
    let fits = json!({ "blob": "x".repeat(fx.max_metadata_bytes - 12) });
    c.record(
        &fx.ctx(),
        NewAuditEntry {
            metadata: metadata(fits),
            ..good()
        },
    )
    .await
    .expect("metadata within the limit");
}

pub async fn bad_queries_are_refused(fx: &AuditFixture) {
    let c = &fx.client;
    let now = Utc::now();
    let err = c
        .query(
            &fx.ctx(),
            AuditQuery {
                from: Some(now),
                to: Some(now - Duration::seconds(1)),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument);
    assert_eq!(err.violations[0].field, "from");
    for token in ["%%%", "AAAA", "not a token at all", &"A".repeat(5000)] {
        let err = c
            .query(
                &fx.ctx(),
                AuditQuery {
                    page_token: Some(token.to_owned()),
                    ..Default::default()
                },
            )
            .await
            .expect_err("malformed page token accepted");
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{token:?}: {err}");
        assert_eq!(err.violations[0].field, "page_token", "{err}");
    }
}

pub async fn page_size_is_capped(fx: &AuditFixture) {
    let c = &fx.client;
    let have = c.verify(&fx.ctx()).await.unwrap().checked;
    let max = u64::from(fx.max_page_size);
    let actor = tag("cap");
    for _ in have..=max {
        c.record(&fx.ctx(), entry(&actor)).await.unwrap();
    }
    let page = c
        .query(
            &fx.ctx(),
            AuditQuery {
                page_size: 1_000_000,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.entries.len() as u64, max, "page size not capped");
    assert!(page.next_page_token.is_some());
    let default = c.query(&fx.ctx(), AuditQuery::default()).await.unwrap();
    assert!(!default.entries.is_empty() && default.entries.len() as u64 <= max);
}

pub async fn concurrent_records_get_distinct_sequences(fx: &AuditFixture) {
    let actor = tag("conc");
    let mut tasks = Vec::new();
    for i in 0..40 {
        let c = fx.client.clone();
        let e = NewAuditEntry {
            resource: format!("r{i}"),
            ..entry(&actor)
        };
        let cx = fx.ctx();
        tasks.push(tokio::spawn(async move { c.record(&cx, e).await }));
    }
    let mut seqs = HashSet::new();
    for t in tasks {
        assert!(seqs.insert(t.await.unwrap().expect("concurrent record")));
    }
    let got = all_pages(fx, by_actor(&actor)).await;
    let got: HashSet<u64> = got.iter().map(|e| e.sequence).collect();
    assert_eq!(got, seqs);
}

pub async fn verify_reports_an_intact_chain(fx: &AuditFixture) {
    let c = &fx.client;
    let newest = c.query(&fx.ctx(), AuditQuery::default()).await.unwrap();
    let last = newest.entries.first().map(|e| e.sequence).unwrap_or(0);
    let report = c.verify(&fx.ctx()).await.expect("verify");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.first_broken_sequence, None);
    assert_eq!(report.reason, "");
    assert!(report.checked >= last, "{report:?} but newest is {last}");
}
