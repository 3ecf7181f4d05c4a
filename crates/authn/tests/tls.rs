//! The verifier fetches auth's JWKS from an `https://` URL: trusting the platform CA
//! (`client_tls.ca_path`), a token signed with the published key verifies; trusting only
//! the system's roots, the fetch fails and the token is refused. One test: the outbound TLS
//! is per process.

use plt_authn::{Signer, TokenConfig, sign_service_token};
use plt_contracts::auth::Jwks;
use plt_kernel::{
    ServiceHost,
    config::ServerConfig,
    testing::TestCa,
    tls::{ClientTls, ClientTlsConfig, ServerTlsConfig, set_client},
};
use std::time::Duration;

#[tokio::test]
async fn jwks_is_fetched_over_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "platform");
    let files = ca.server("auth", &["localhost", "127.0.0.1"]);
    let signer = Signer::generate("k1").unwrap();
    let jwks = Jwks {
        keys: vec![signer.public_jwk()],
    };
    let host = ServiceHost::new(
        "auth-jwks",
        &ServerConfig {
            shutdown_timeout: Duration::from_millis(200),
            body_limit_bytes: 1 << 20,
            readiness_timeout: Duration::from_secs(1),
            tls: ServerTlsConfig {
                cert_path: files.cert,
                key_path: files.key,
                ..Default::default()
            },
        },
    )
    .http(axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    ))
    .bind("127.0.0.1:0".parse().unwrap())
    .await
    .unwrap();
    let port = host.local_addr().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(host.run(async move {
        let _ = stopped.await;
    }));
    let cfg = TokenConfig {
        jwks_url: format!("https://localhost:{port}/.well-known/jwks.json"),
        issuer: "plt".into(),
        audience: "plt-api".into(),
    };
    let token = sign_service_token(
        &signer,
        "plt",
        "gateway",
        "identity",
        Duration::from_secs(60),
    );

    set_client(
        ClientTls::load(
            &ClientTlsConfig {
                ca_path: ca.ca_file(),
                ..Default::default()
            },
            "client_tls",
        )
        .unwrap(),
    );
    let claims = cfg
        .verifier(None)
        .unwrap()
        .verify_service(&token, "identity")
        .await
        .expect("verified with the key fetched over https");
    assert_eq!(claims.sub, "gateway");

    // The same URL, not trusting the platform CA: no keys, so no token verifies.
    set_client(ClientTls::system());
    assert!(
        cfg.verifier(None)
            .unwrap()
            .verify_service(&token, "identity")
            .await
            .is_err()
    );

    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
