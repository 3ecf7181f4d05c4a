//! Access control at the audit API: reading needs `audit.logs.read` and verifying
//! `audit.logs.verify`, for a verified access token, over HTTP and gRPC; no token, a bad
//! token or a missing permission are refused, and an unreachable authz refuses (fail closed).

mod common;

use audit_service::{Audit, SECTION};
use plt_authn::{AccessClaims, Signer, StaticJwks};
use plt_contracts::{
    ErrorCode, RequestContext,
    audit::{
        AuditQuery, AuditServiceClient, NewAuditEntry, Outcome, grpc::AuditGrpcClient,
        http::AuditHttpClient,
    },
    auth::Jwks,
};
use plt_kernel::Secret;
use plt_runtime::testing::{Backend, TestOptions, TestService};
use std::sync::{Arc, atomic::Ordering};
use uuid::Uuid;

fn token(signer: &Signer, sub: &str, exp_in: i64) -> String {
    let now = chrono::Utc::now().timestamp();
    signer.sign(&AccessClaims {
        iss: "plt".into(),
        sub: sub.into(),
        aud: vec!["plt-api".into()],
        exp: now + exp_in,
        nbf: now - 5,
        iat: now - 5,
        jti: Uuid::new_v4().to_string(),
        scope: String::new(),
        client_id: String::new(),
        sid: String::new(),
    })
}

fn bearer(t: &str) -> RequestContext {
    RequestContext {
        authorization: Some(Secret::new(format!("Bearer {t}"))),
        ..Default::default()
    }
}

#[tokio::test]
async fn reading_and_verifying_need_their_permissions() {
    plt_kernel::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_string_lossy().to_string();
    let cfg = common::config(&[("PLT_DATABASE__DATA_DIR", &data)]);
    assert_eq!(cfg.section_name, SECTION);
    let signer = Signer::generate("k1").unwrap();
    let jwks = StaticJwks::new(Jwks {
        keys: vec![signer.public_jwk(), common::SERVICES.signer().public_jwk()],
    });
    drop(dir);
    let svc = TestService::start_with::<Audit>(
        Backend::Sqlite,
        TestOptions {
            jwks: Some(Arc::new(jwks)),
            ..TestOptions::default()
        },
    )
    .await
    .unwrap();
    let authz = svc.authz.clone();
    let url = svc.url("");

    let reader = Uuid::now_v7();
    let verifier_user = Uuid::now_v7();
    let nobody = Uuid::now_v7();
    authz.grant(reader, "audit.logs.read");
    authz.grant(verifier_user, "audit.logs.verify");
    let foreign = Signer::generate("k1").unwrap();

    let clients: Vec<Arc<dyn AuditServiceClient>> = vec![
        Arc::new(AuditHttpClient::new(plt_kernel::tls::http_client(), &url)),
        Arc::new(AuditGrpcClient::connect_lazy(&url).unwrap()),
    ];
    let grant = || NewAuditEntry {
        id: None,
        actor: "authz-service".into(),
        action: "authz.role.grant".into(),
        resource: "role/admin".into(),
        outcome: Outcome::Success,
        metadata: Default::default(),
        source_ip: String::new(),
        user_agent: String::new(),
        trace_id: String::new(),
    };
    for c in &clients {
        // Recording is for platform services: a user's token is not enough, nor a service
        // token addressed to another service; nothing is written.
        let user = bearer(&token(&signer, &reader.to_string(), 300));
        let elsewhere = common::SERVICES.service_ctx("authz", "identity");
        for refused in [RequestContext::new(), user, elsewhere] {
            let e = c.record(&refused, grant()).await.unwrap_err();
            assert_eq!(e.code, ErrorCode::Unauthenticated, "{e}");
        }
        // Services record with their service token, without a user token.
        c.record(&common::ctx(), grant()).await.unwrap();
        let q = || AuditQuery::default();
        let page = c
            .query(&bearer(&token(&signer, &reader.to_string(), 300)), q())
            .await
            .unwrap();
        assert!(!page.entries.is_empty());
        let cases = [
            (RequestContext::new(), ErrorCode::Unauthenticated),
            (bearer("garbage"), ErrorCode::Unauthenticated),
            (
                bearer(&token(&signer, &reader.to_string(), -60)),
                ErrorCode::Unauthenticated,
            ),
            (
                bearer(&token(&foreign, &reader.to_string(), 300)),
                ErrorCode::Unauthenticated,
            ),
            (
                bearer(&token(&signer, &nobody.to_string(), 300)),
                ErrorCode::PermissionDenied,
            ),
            (
                bearer(&token(&signer, &verifier_user.to_string(), 300)),
                ErrorCode::PermissionDenied,
            ),
            (
                bearer(&token(&signer, "not-a-uuid", 300)),
                ErrorCode::PermissionDenied,
            ),
        ];
        for (ctx, code) in cases {
            assert_eq!(c.query(&ctx, q()).await.unwrap_err().code, code);
        }
        c.verify(&bearer(&token(&signer, &verifier_user.to_string(), 300)))
            .await
            .expect("verify with audit.logs.verify");
        assert_eq!(
            c.verify(&bearer(&token(&signer, &reader.to_string(), 300)))
                .await
                .unwrap_err()
                .code,
            ErrorCode::PermissionDenied
        );
        // Authz down: refused, never allowed.
        authz.down.store(true, Ordering::SeqCst);
        assert_eq!(
            c.query(&bearer(&token(&signer, &reader.to_string(), 300)), q())
                .await
                .unwrap_err()
                .code,
            ErrorCode::Unavailable
        );
        authz.down.store(false, Ordering::SeqCst);
    }
    svc.stop().await;
}
