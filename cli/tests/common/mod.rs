//! What several of `plt`'s process tests share.

#![allow(dead_code)]

/// The variables a developer's shell gives `plt dev` for building the workspace's feature
/// services with cargo (the tests clear the rest of the environment).
pub fn cargo_env() -> impl Iterator<Item = (&'static str, String)> {
    [
        "CARGO",
        "CARGO_HOME",
        "CARGO_TARGET_DIR",
        "RUSTUP_HOME",
        "RUSTUP_TOOLCHAIN",
        "HOME",
    ]
    .into_iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k, v)))
}

/// Signs in through the gateway at `gw`; the access token.
pub async fn login(c: &reqwest::Client, gw: &str, email: &str, password: &str) -> String {
    let r = c
        .post(format!("{gw}/api/v1/auth/login"))
        .json(&serde_json::json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "login {email}");
    let b: serde_json::Value = r.json().await.unwrap();
    b["access_token"].as_str().unwrap().to_owned()
}
