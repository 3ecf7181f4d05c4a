//! 1,000 concurrent Records — most over the core, some over gRPC and HTTP — make exactly one
//! gap-free chain: 1,000 entries, sequences 1..=1000, Verify ok.

mod common;

use audit_service::store::for_db;
use common::{Backend, ctx, entry, start};
use plt_contracts::audit::{
    AuditQuery, AuditServiceClient, grpc::AuditGrpcClient, http::AuditHttpClient,
};
use std::{collections::HashSet, sync::Arc};

const RECORDS: usize = 1000;

async fn thousand_concurrent_records(backend: Backend) {
    let Some(svc) = start(backend).await else {
        common::skipped("thousand_concurrent_records on postgres");
        return;
    };
    let grpc: Arc<dyn AuditServiceClient> =
        Arc::new(AuditGrpcClient::connect_lazy(&svc.url()).unwrap());
    let http: Arc<dyn AuditServiceClient> = Arc::new(AuditHttpClient::new(
        plt_kernel::tls::http_client(),
        &svc.url(),
    ));
    let mut tasks = Vec::with_capacity(RECORDS);
    for i in 0..RECORDS {
        let client = match i % 10 {
            0..=6 => svc.app_core.clone(),
            7 | 8 => grpc.clone(),
            _ => http.clone(),
        };
        tasks.push(tokio::spawn(async move {
            client.record(&ctx(), entry("concurrent", i)).await
        }));
    }
    let mut seqs = Vec::with_capacity(RECORDS);
    for t in tasks {
        seqs.push(t.await.unwrap().expect("concurrent record"));
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (1..=RECORDS as u64).collect::<Vec<_>>(),
        "sequences are not exactly 1..=1000"
    );

    // Exactly 1,000 rows, in sequence order with no gap, each resource once.
    let store = for_db(svc.db());
    let rows = store.chain(0, 10_000).await.unwrap();
    assert_eq!(rows.len(), RECORDS);
    assert!(rows.iter().zip(1..).all(|(e, s)| e.sequence == s));
    let resources: HashSet<&str> = rows.iter().map(|e| e.resource.as_str()).collect();
    assert_eq!(resources.len(), RECORDS, "an entry was written twice");

    let report = svc.app_core.verify(&ctx()).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, RECORDS as u64);

    // Query sees all of them, newest first.
    let mut q = AuditQuery {
        actor: Some("concurrent".into()),
        page_size: 100,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = grpc.query(&ctx(), q.clone()).await.unwrap();
        seen.extend(page.entries.iter().map(|e| e.sequence));
        match page.next_page_token {
            Some(t) => q.page_token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, (1..=RECORDS as u64).rev().collect::<Vec<_>>());
    svc.stop().await;
}

#[tokio::test]
async fn thousand_concurrent_records_on_sqlite() {
    thousand_concurrent_records(Backend::Sqlite).await;
}

#[tokio::test]
async fn thousand_concurrent_records_on_postgres() {
    thousand_concurrent_records(Backend::Postgres).await;
}
