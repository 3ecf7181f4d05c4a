//! Hostile tokens through the running service's `ValidateToken` (gRPC and HTTP): each is
//! refused as Unauthenticated, and the service keeps answering. The full catalogue runs
//! against the verifier library in crates/authn/tests.

mod common;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use common::{Backend, start};
use ed25519_dalek::{Signer as _, SigningKey};
use plt_contracts::{
    ErrorCode,
    auth::{AuthServiceClient, grpc::AuthGrpcClient, http::AuthHttpClient},
};
use plt_kernel::Secret;
use serde_json::json;
use std::sync::Arc;

fn token(header: serde_json::Value, claims: serde_json::Value, key: &SigningKey) -> String {
    let input = format!(
        "{}.{}",
        B64.encode(header.to_string()),
        B64.encode(claims.to_string())
    );
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig.to_bytes()))
}

#[tokio::test]
async fn hostile_tokens_are_unauthenticated_over_both_protocols() {
    let svc = start(Backend::Sqlite, &[]).await.unwrap();
    svc.identity
        .add_user("h@example.com", "correct horse battery staple");
    let ctx = svc.service_ctx().await;
    let good = svc
        .core
        .login(
            &ctx,
            "h@example.com",
            Secret::new("correct horse battery staple".into()),
        )
        .await
        .unwrap();
    let good = good.access_token.expose().to_owned();
    let real_kid = plt_contracts::testsuite::auth::kid_of(&good);
    let now = chrono::Utc::now().timestamp();
    let claims = json!({"iss": "plt", "sub": "u1", "aud": ["plt-api"], "exp": now + 600, "iat": now, "nbf": now, "jti": "j1"});
    let attacker = SigningKey::from_bytes(&[9u8; 32]);
    let parts: Vec<&str> = good.split('.').collect();
    let unsigned_none = format!(
        "{}.{}.",
        B64.encode(json!({"alg": "none", "typ": "at+jwt", "kid": real_kid}).to_string()),
        parts[1]
    );
    let hostile = vec![
        ("alg none", unsigned_none),
        (
            "foreign key, real kid",
            token(
                json!({"alg": "EdDSA", "typ": "at+jwt", "kid": real_kid}),
                claims.clone(),
                &attacker,
            ),
        ),
        (
            "embedded jwk",
            token(
                json!({"alg": "EdDSA", "typ": "at+jwt", "kid": real_kid, "jwk": {"kty": "OKP", "crv": "Ed25519", "x": B64.encode(attacker.verifying_key().as_bytes())}}),
                claims.clone(),
                &attacker,
            ),
        ),
        (
            "tampered payload",
            format!(
                "{}.{}.{}",
                parts[0],
                B64.encode(claims.to_string()),
                parts[2]
            ),
        ),
        (
            "900 KB (under the HTTP body limit, over the token limit)",
            "a".repeat(900_000),
        ),
        ("garbage", "not.a.token".into()),
    ];
    let clients: Vec<Arc<dyn AuthServiceClient>> = vec![
        Arc::new(AuthGrpcClient::connect_lazy(&svc.url()).unwrap()),
        Arc::new(AuthHttpClient::new(
            plt_kernel::tls::http_client(),
            &svc.url(),
        )),
    ];
    for client in &clients {
        for (name, t) in &hostile {
            let e = client.validate_token(&ctx, t).await.expect_err(name);
            assert_eq!(e.code, ErrorCode::Unauthenticated, "{name}: {e}");
        }
        client
            .validate_token(&ctx, &good)
            .await
            .expect("the real token still validates");
    }
    svc.stop().await;
}
