//! Hostile-token suite for `plt-authn`: every way we know to get a forged, confused, stale or
//! malformed token past the verifier. Each hostile token is built so that only the property
//! under test is wrong (it is otherwise well-formed and signed with the real key), must be
//! refused with a specific `VerifyError` where one is well-defined, must never panic, and must
//! map to `ErrorCode::Unauthenticated` at the contract boundary.

use async_trait::async_trait;
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD},
};
use ed25519_dalek::{Signer as _, SigningKey};
use plt_authn::{
    AccessClaims, JwksSource, Signer, StaticJwks, Verifier, VerifierConfig, VerifyError,
};
use plt_contracts::{
    ErrorCode,
    auth::{Jwk, Jwks},
};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

const ISS: &str = "plt";
const AUD: &str = "plt-api";
const SUB: &str = "0192f0c1-7a3e-7c41-9a55-3f1d2b8e6a10";

// ---------------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------------

/// A `JwksSource` that counts how often the verifier asks it for keys.
struct CountingSource {
    inner: StaticJwks,
    fetches: AtomicUsize,
}

#[async_trait]
impl JwksSource for CountingSource {
    async fn fetch(&self) -> Result<Jwks, String> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        self.inner.fetch().await
    }
}

struct Fx {
    signer: Signer,
    /// The same private key as `signer`, for hand-built tokens.
    sk: SigningKey,
    /// Shares its storage with the source: `jwks.set(..)` changes what the verifier fetches.
    jwks: StaticJwks,
    source: Arc<CountingSource>,
    verifier: Verifier,
}

impl Fx {
    fn new() -> Self {
        Self::with_config(|_| {})
    }

    fn with_config(tweak: impl FnOnce(&mut VerifierConfig)) -> Self {
        let signer = Signer::generate("k1").expect("generating k1");
        let sk = dalek_key(&signer);
        let jwks = StaticJwks::new(Jwks {
            keys: vec![signer.public_jwk()],
        });
        let source = Arc::new(CountingSource {
            inner: jwks.clone(),
            fetches: AtomicUsize::new(0),
        });
        let mut cfg = VerifierConfig::new(ISS, AUD);
        tweak(&mut cfg);
        let verifier = Verifier::new(cfg, source.clone());
        Self {
            signer,
            sk,
            jwks,
            source,
            verifier,
        }
    }

    fn fetches(&self) -> usize {
        self.source.fetches.load(Ordering::SeqCst)
    }

    /// A token with the given header and claims, signed with k1's real key.
    fn token(&self, header: &Value, claims: &Value) -> String {
        signed(&self.sk, &header.to_string(), &claims.to_string())
    }

    /// A token with the standard header and the given claims, signed with k1's real key.
    fn with_claims(&self, claims: &Value) -> String {
        self.token(&header(), claims)
    }

    /// A token with the given header and valid claims, signed with k1's real key.
    fn with_header(&self, header: &Value) -> String {
        self.token(header, &claims_json())
    }

    async fn reject(&self, token: &str, expected: VerifyError, case: &str) {
        reject_as(&self.verifier, token, expected, case).await;
    }

    async fn accept(&self, token: &str, case: &str) {
        if let Err(e) = self.verifier.verify(token).await {
            panic!("{case}: expected the token to verify, got {e:?}");
        }
    }
}

/// The `ed25519_dalek` key behind a `Signer`, from its exported seed.
fn dalek_key(signer: &Signer) -> SigningKey {
    let seed = signer.seed();
    let bytes: [u8; 32] = seed.expose().as_slice().try_into().expect("32-byte seed");
    SigningKey::from_bytes(&bytes)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

fn valid_claims() -> AccessClaims {
    let now = now();
    AccessClaims {
        iss: ISS.into(),
        sub: SUB.into(),
        aud: vec![AUD.into()],
        exp: now + 900,
        nbf: now,
        iat: now,
        jti: "jti-4b1d8e0f-2c9a".into(),
        scope: String::new(),
        client_id: String::new(),
        sid: String::new(),
    }
}

fn claims_json() -> Value {
    serde_json::to_value(valid_claims()).expect("claims to JSON")
}

/// `claims_json()` with `key` set to `value` (`Value::Null` removes the claim instead).
fn claims_with(key: &str, value: Value) -> Value {
    let mut c = claims_json();
    let map = c.as_object_mut().expect("claims are an object");
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.into(), value);
    }
    c
}

fn header() -> Value {
    json!({"alg": "EdDSA", "typ": "at+jwt", "kid": "k1"})
}

/// `header()` with `key` set to `value` (`Value::Null` removes the parameter instead).
fn header_with(key: &str, value: Value) -> Value {
    let mut h = header();
    let map = h.as_object_mut().expect("header is an object");
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.into(), value);
    }
    h
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// `b64(header).b64(payload).b64(sig)` from raw header/payload text and raw signature bytes.
fn raw_token(header: &str, payload: &str, sig: &[u8]) -> String {
    format!("{}.{}.{}", b64(header), b64(payload), b64(sig))
}

/// A compact JWS of raw header/payload text, Ed25519-signed with `sk` over the real signing
/// input, so that only whatever is odd about the header or payload is wrong.
fn signed(sk: &SigningKey, header: &str, payload: &str) -> String {
    let input = format!("{}.{}", b64(header), b64(payload));
    let sig = sk.sign(input.as_bytes());
    format!("{input}.{}", b64(sig.to_bytes()))
}

/// HMAC-SHA256 per RFC 2104 (64-byte block, ipad 0x36, opad 0x5c).
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > block.len() {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(msg);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner);
    let mut out = [0u8; 32];
    out.copy_from_slice(&outer.finalize());
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Asserts that `token` is refused, never panics, and maps to `Unauthenticated`.
async fn reject_any(verifier: &Verifier, token: &str, case: &str) -> VerifyError {
    let err = match verifier.verify(token).await {
        Ok(claims) => panic!("{case}: hostile token was ACCEPTED with claims {claims:?}"),
        Err(e) => e,
    };
    let public: plt_contracts::Error = err.clone().into();
    assert_eq!(
        public.code,
        ErrorCode::Unauthenticated,
        "{case}: {err:?} must map to Unauthenticated"
    );
    err
}

async fn reject_as(verifier: &Verifier, token: &str, expected: VerifyError, case: &str) {
    let err = reject_any(verifier, token, case).await;
    assert_eq!(err, expected, "{case}: wrong rejection reason");
}

fn is_malformed(e: &VerifyError) -> bool {
    matches!(e, VerifyError::Malformed(_))
}

/// xorshift64*: a tiny deterministic PRNG so failures reproduce.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const KID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn random_kid(rng: &mut XorShift) -> String {
    let len = 1 + rng.below(64);
    (0..len)
        .map(|_| KID_ALPHABET[rng.below(KID_ALPHABET.len())] as char)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Sanity: the suite can fail
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sanity_valid_token_verifies_and_returns_claims() {
    let fx = Fx::new();
    let claims = valid_claims();
    let token = fx.signer.sign(&claims);
    let got = fx
        .verifier
        .verify(&token)
        .await
        .expect("valid token verifies");
    assert_eq!(got.sub, claims.sub);
    assert_eq!(got.jti, claims.jti);
    assert_eq!(got.aud, claims.aud);
    assert_eq!(got.exp, claims.exp);
    assert_eq!(got.iss, claims.iss);
    assert_eq!(got.iat, claims.iat);
    assert_eq!(got.nbf, claims.nbf);

    // The hand-built tokens of this suite are exactly what the signer produces, so every
    // rejection below is due to the one property each case changes.
    assert_eq!(
        dalek_key(&fx.signer).verifying_key().as_bytes().as_slice(),
        URL_SAFE_NO_PAD
            .decode(&fx.signer.public_jwk().x)
            .unwrap()
            .as_slice()
    );
    let hand = fx.with_claims(&claims_json());
    let got2 = fx
        .verifier
        .verify(&hand)
        .await
        .expect("hand-built token verifies");
    assert_eq!(got2, got);
    assert_eq!(fx.fetches(), 1, "one fetch fills the cold cache");
}

#[test]
fn hmac_helper_matches_rfc4231() {
    // RFC 4231 test case 2, and test case 6 (key longer than the block).
    assert_eq!(
        hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        hex(&hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First"
        )),
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
    );
}

// ---------------------------------------------------------------------------------------------
// Algorithm
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn alg_none_with_empty_signature_is_rejected() {
    let fx = Fx::new();
    let h = header_with("alg", json!("none")).to_string();
    let p = claims_json().to_string();
    // The classic form: empty third segment.
    let token = format!("{}.{}.", b64(&h), b64(&p));
    let err = reject_any(&fx.verifier, &token, "alg none, empty signature").await;
    assert!(
        matches!(err, VerifyError::Algorithm | VerifyError::Malformed(_)),
        "alg none: {err:?}"
    );
    // And with a syntactically valid signature, so only `alg` is wrong.
    fx.reject(
        &fx.with_header(&header_with("alg", json!("none"))),
        VerifyError::Algorithm,
        "alg none, signed",
    )
    .await;
    // No typ/kid either, the bare RFC 7519 §6 unsecured JWT.
    let bare = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(&p));
    reject_any(&fx.verifier, &bare, "bare unsecured JWT").await;
    assert_eq!(fx.fetches(), 0, "alg none never reaches the key cache");
}

#[tokio::test]
async fn alg_case_tricks_are_rejected() {
    let fx = Fx::new();
    for alg in [
        "noNE", "NONE", "None", "eddsa", "EDDSA", "EdDSA ", " EdDSA", "Ed25519", "",
    ] {
        fx.reject(
            &fx.with_header(&header_with("alg", json!(alg))),
            VerifyError::Algorithm,
            &format!("alg {alg:?}"),
        )
        .await;
    }
}

#[tokio::test]
async fn alg_hs256_key_confusion_is_rejected() {
    let fx = Fx::new();
    let jwk = fx.signer.public_jwk();
    let published = serde_json::to_string(&Jwks {
        keys: vec![jwk.clone()],
    })
    .unwrap();
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("decoded x", URL_SAFE_NO_PAD.decode(&jwk.x).unwrap()),
        ("x text", jwk.x.clone().into_bytes()),
        ("JWK JSON", serde_json::to_vec(&jwk).unwrap()),
        ("JWKS JSON", published.into_bytes()),
    ];
    let h = header_with("alg", json!("HS256")).to_string();
    let p = claims_json().to_string();
    let input = format!("{}.{}", b64(&h), b64(&p));
    for (name, secret) in secrets {
        let mac = hmac_sha256(&secret, input.as_bytes());
        let token = format!("{input}.{}", b64(mac));
        fx.reject(
            &token,
            VerifyError::Algorithm,
            &format!("HS256 with {name}"),
        )
        .await;
    }
    assert_eq!(fx.fetches(), 0);
}

#[tokio::test]
async fn alg_es256_and_rs256_are_rejected() {
    let fx = Fx::new();
    for alg in ["ES256", "RS256", "PS256", "HS512", "ES256K", "Ed448"] {
        fx.reject(
            &fx.with_header(&header_with("alg", json!(alg))),
            VerifyError::Algorithm,
            &format!("alg {alg}"),
        )
        .await;
    }
}

#[tokio::test]
async fn alg_missing_or_not_a_string_is_rejected() {
    let fx = Fx::new();
    let missing = fx.with_header(&header_with("alg", Value::Null));
    let err = reject_any(&fx.verifier, &missing, "alg missing").await;
    assert!(is_malformed(&err), "alg missing: {err:?}");
    for alg in [
        json!(["EdDSA"]),
        json!({"EdDSA": true}),
        json!(1),
        json!(true),
    ] {
        let token = fx.with_header(&header_with("alg", alg.clone()));
        let err = reject_any(&fx.verifier, &token, &format!("alg {alg}")).await;
        assert!(is_malformed(&err), "alg {alg}: {err:?}");
    }
    let null = signed(
        &fx.sk,
        r#"{"alg":null,"typ":"at+jwt","kid":"k1"}"#,
        &claims_json().to_string(),
    );
    let err = reject_any(&fx.verifier, &null, "alg null").await;
    assert!(is_malformed(&err), "alg null: {err:?}");
}

// ---------------------------------------------------------------------------------------------
// typ
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn typ_missing_or_wrong_is_rejected() {
    let fx = Fx::new();
    fx.reject(
        &fx.with_header(&header_with("typ", Value::Null)),
        VerifyError::Type,
        "typ missing",
    )
    .await;
    for typ in [
        "JWT",
        "jwt",
        "at+jwt ",
        "application/jwt",
        "at+JWT+x",
        "id+jwt",
        "",
        "at jwt",
    ] {
        fx.reject(
            &fx.with_header(&header_with("typ", json!(typ))),
            VerifyError::Type,
            &format!("typ {typ:?}"),
        )
        .await;
    }
    let null = signed(
        &fx.sk,
        r#"{"alg":"EdDSA","typ":null,"kid":"k1"}"#,
        &claims_json().to_string(),
    );
    fx.reject(&null, VerifyError::Type, "typ null").await;
    let arr = fx.with_header(&header_with("typ", json!(["at+jwt"])));
    let err = reject_any(&fx.verifier, &arr, "typ array").await;
    assert!(is_malformed(&err), "typ array: {err:?}");
}

#[tokio::test]
async fn typ_variants_are_accepted() {
    let fx = Fx::new();
    for typ in [
        "at+jwt",
        "AT+JWT",
        "At+Jwt",
        "application/at+jwt",
        "APPLICATION/AT+JWT",
    ] {
        fx.accept(
            &fx.with_header(&header_with("typ", json!(typ))),
            &format!("typ {typ:?}"),
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// kid
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn kid_missing_or_malformed_is_rejected() {
    let fx = Fx::new();
    fx.reject(
        &fx.with_header(&header_with("kid", Value::Null)),
        VerifyError::Kid,
        "kid missing",
    )
    .await;
    let long = "a".repeat(65);
    for kid in [
        "../../etc/passwd",
        "",
        long.as_str(),
        "k 1",
        " k1",
        "k1 ",
        "k1\n",
        "k1\u{0}",
        "k1/",
        "k1.k2",
        "kï1",
        "k1%00",
        "*",
    ] {
        fx.reject(
            &fx.with_header(&header_with("kid", json!(kid))),
            VerifyError::Kid,
            &format!("kid {kid:?}"),
        )
        .await;
    }
    let null = signed(
        &fx.sk,
        r#"{"alg":"EdDSA","typ":"at+jwt","kid":null}"#,
        &claims_json().to_string(),
    );
    fx.reject(&null, VerifyError::Kid, "kid null").await;
    for kid in [json!(1), json!(["k1"]), json!({"kid": "k1"})] {
        let token = fx.with_header(&header_with("kid", kid.clone()));
        let err = reject_any(&fx.verifier, &token, &format!("kid {kid}")).await;
        assert!(is_malformed(&err), "kid {kid}: {err:?}");
    }
    assert_eq!(fx.fetches(), 0, "malformed kids never reach the key cache");
}

#[tokio::test]
async fn kid_unknown_but_well_formed_is_unknown_key() {
    let fx = Fx::new();
    let max = "Z".repeat(64);
    for kid in ["k2", "K1", "k1-", max.as_str(), "_", "-"] {
        fx.reject(
            &fx.with_header(&header_with("kid", json!(kid))),
            VerifyError::UnknownKey,
            &format!("kid {kid:?}"),
        )
        .await;
    }
}

// ---------------------------------------------------------------------------------------------
// Dangerous header parameters
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn dangerous_headers_are_refused_without_fetching() {
    let fx = Fx::new();
    let attacker = SigningKey::from_bytes(&[7u8; 32]);
    let attacker_jwk = json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64(attacker.verifying_key().as_bytes()),
        "kid": "k1",
        "alg": "EdDSA",
        "use": "sig",
    });
    let p = claims_json().to_string();

    // jwk: the token is genuinely signed by the key it embeds, under k1's kid and an
    // attacker kid. A verifier trusting the embedded key would accept it.
    for kid in ["k1", "attacker"] {
        let h = header_with("jwk", attacker_jwk.clone());
        let h = {
            let mut h = h;
            h["kid"] = json!(kid);
            h.to_string()
        };
        let token = signed(&attacker, &h, &p);
        fx.reject(
            &token,
            VerifyError::Header("jwk".into()),
            &format!("jwk, kid {kid}"),
        )
        .await;
    }

    let cases = [
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("x5c", json!([STANDARD.encode(b"not really a certificate")])),
        ("crit", json!(["exp"])),
        ("crit", json!([])),
        ("x5t", json!("AAAA")),
        ("x5t#S256", json!("AAAA")),
        ("cty", json!("JWT")),
        ("b64", json!(false)),
        ("zip", json!("DEF")),
        ("enc", json!("A256GCM")),
        ("epk", json!({})),
        ("nonce", json!("n")),
        ("url", json!("https://attacker.example/")),
    ];
    for (name, value) in cases {
        // Signed with the real k1 key: only the extra parameter is wrong.
        let token = fx.with_header(&header_with(name, value.clone()));
        fx.reject(
            &token,
            VerifyError::Header(name.into()),
            &format!("{name}: {value}"),
        )
        .await;
        // Also with a well-formed but unknown kid, which would otherwise trigger a refetch.
        let mut h = header_with(name, value);
        h["kid"] = json!("kid-the-attacker-wants-fetched");
        fx.reject(
            &fx.with_header(&h),
            VerifyError::Header(name.into()),
            &format!("{name}, unknown kid"),
        )
        .await;
    }

    // A parameter name smuggled with a JSON escape is still that parameter.
    let escaped = signed(
        &fx.sk,
        r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k1","\u006aku":"https://attacker.example/"}"#,
        &p,
    );
    fx.reject(&escaped, VerifyError::Header("jku".into()), "escaped jku")
        .await;

    assert_eq!(fx.fetches(), 0, "refused headers never cause a JWKS fetch");
}

#[tokio::test]
async fn duplicate_header_parameters_are_rejected() {
    let fx = Fx::new();
    let p = claims_json().to_string();
    for h in [
        r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k1","alg":"none"}"#,
        r#"{"alg":"none","typ":"at+jwt","kid":"k1","alg":"EdDSA"}"#,
        r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k1","kid":"k2"}"#,
        r#"{"alg":"EdDSA","typ":"JWT","kid":"k1","typ":"at+jwt"}"#,
        r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k1","\u0061lg":"none"}"#,
    ] {
        let err = reject_any(&fx.verifier, &signed(&fx.sk, h, &p), h).await;
        assert!(is_malformed(&err), "{h}: {err:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Claims
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn audience_is_enforced() {
    let fx = Fx::new();
    for aud in [
        json!("other-api"),
        json!("PLT-API"),
        json!("plt-api "),
        json!(""),
        json!(["other-api", "plt-admin"]),
        json!([]),
        json!(["plt-api-x"]),
    ] {
        fx.reject(
            &fx.with_claims(&claims_with("aud", aud.clone())),
            VerifyError::Audience,
            &format!("aud {aud}"),
        )
        .await;
    }
    fx.reject(
        &fx.with_claims(&claims_with("aud", Value::Null)),
        VerifyError::Claim("aud"),
        "aud missing",
    )
    .await;
    for aud in [json!(["plt-api", 1]), json!({"plt-api": true}), json!(1)] {
        let token = fx.with_claims(&claims_with("aud", aud.clone()));
        let err = reject_any(&fx.verifier, &token, &format!("aud {aud}")).await;
        assert!(is_malformed(&err), "aud {aud}: {err:?}");
    }
    // Accepted shapes: a single string, or an array containing ours.
    fx.accept(
        &fx.with_claims(&claims_with("aud", json!(AUD))),
        "aud string",
    )
    .await;
    fx.accept(
        &fx.with_claims(&claims_with("aud", json!(["other", AUD]))),
        "aud array containing ours",
    )
    .await;
}

#[tokio::test]
async fn issuer_is_enforced() {
    let fx = Fx::new();
    for iss in ["evil", "PLT", "plt ", "", "https://plt"] {
        fx.reject(
            &fx.with_claims(&claims_with("iss", json!(iss))),
            VerifyError::Issuer,
            &format!("iss {iss:?}"),
        )
        .await;
    }
    fx.reject(
        &fx.with_claims(&claims_with("iss", Value::Null)),
        VerifyError::Claim("iss"),
        "iss missing",
    )
    .await;
    let err = reject_any(
        &fx.verifier,
        &fx.with_claims(&claims_with("iss", json!(["plt"]))),
        "iss array",
    )
    .await;
    assert!(is_malformed(&err), "iss array: {err:?}");
}

#[tokio::test]
async fn expiry_is_enforced() {
    let fx = Fx::new();
    let now = now();
    fx.reject(
        &fx.with_claims(&claims_with("exp", Value::Null)),
        VerifyError::Claim("exp"),
        "exp missing",
    )
    .await;
    for exp in [now - 60, now - 3600, 0, -1, i64::MIN] {
        fx.reject(
            &fx.with_claims(&claims_with("exp", json!(exp))),
            VerifyError::Expired,
            &format!("exp {exp}"),
        )
        .await;
    }
    // Within the 5 s leeway.
    fx.accept(
        &fx.with_claims(&claims_with("exp", json!(now - 2))),
        "exp within leeway",
    )
    .await;
    for exp in [
        json!((now + 900).to_string()),
        json!(1.5e9),
        json!(f64::MAX),
    ] {
        let token = fx.with_claims(&claims_with("exp", exp.clone()));
        let err = reject_any(&fx.verifier, &token, &format!("exp {exp}")).await;
        assert!(is_malformed(&err), "exp {exp}: {err:?}");
    }
}

#[tokio::test]
async fn not_before_is_enforced() {
    let fx = Fx::new();
    let now = now();
    fx.reject(
        &fx.with_claims(&claims_with("nbf", json!(now + 60))),
        VerifyError::NotYetValid,
        "nbf now + 60",
    )
    .await;
    fx.reject(
        &fx.with_claims(&claims_with("nbf", json!(i64::MAX))),
        VerifyError::NotYetValid,
        "nbf i64::MAX",
    )
    .await;
    fx.accept(
        &fx.with_claims(&claims_with("nbf", json!(now + 2))),
        "nbf within leeway",
    )
    .await;
    let got = fx
        .verifier
        .verify(&fx.with_claims(&claims_with("nbf", Value::Null)))
        .await
        .expect("nbf is optional");
    assert_eq!(got.nbf, got.iat, "a missing nbf defaults to iat");
}

#[tokio::test]
async fn issued_at_is_enforced() {
    let fx = Fx::new();
    let now = now();
    for iat in [now + 3600, now + 60, i64::MAX] {
        fx.reject(
            &fx.with_claims(&claims_with("iat", json!(iat))),
            VerifyError::NotYetValid,
            &format!("iat {iat}"),
        )
        .await;
    }
    fx.reject(
        &fx.with_claims(&claims_with("iat", Value::Null)),
        VerifyError::Claim("iat"),
        "iat missing",
    )
    .await;
}

#[tokio::test]
async fn subject_and_token_id_are_required() {
    let fx = Fx::new();
    for (claim, expected) in [
        ("sub", VerifyError::Claim("sub")),
        ("jti", VerifyError::Claim("jti")),
    ] {
        fx.reject(
            &fx.with_claims(&claims_with(claim, Value::Null)),
            expected.clone(),
            &format!("{claim} missing"),
        )
        .await;
        fx.reject(
            &fx.with_claims(&claims_with(claim, json!(""))),
            expected,
            &format!("{claim} empty"),
        )
        .await;
        let token = fx.with_claims(&claims_with(claim, json!(42)));
        let err = reject_any(&fx.verifier, &token, &format!("{claim} number")).await;
        assert!(is_malformed(&err), "{claim} number: {err:?}");
    }
}

#[tokio::test]
async fn duplicate_claims_are_rejected() {
    let fx = Fx::new();
    let c = valid_claims();
    // A parser that keeps the first `aud` would see "evil", one that keeps the last sees ours:
    // such a token must not be accepted by anyone.
    let payload = format!(
        r#"{{"iss":"plt","sub":"{}","aud":"evil","aud":"plt-api","exp":{},"iat":{},"jti":"j"}}"#,
        c.sub, c.exp, c.iat
    );
    let err = reject_any(
        &fx.verifier,
        &signed(&fx.sk, &header().to_string(), &payload),
        "dup aud",
    )
    .await;
    assert!(is_malformed(&err), "dup aud: {err:?}");
}

#[tokio::test]
async fn extreme_time_values_do_not_panic() {
    // Signed by the trusted key, so these are only reachable through an issuer bug, but the
    // verifier must not overflow (a panic in debug, a wrap-around in release).
    let fx = Fx::new();
    let got = fx
        .verifier
        .verify(&fx.with_claims(&claims_with("exp", json!(i64::MAX))))
        .await
        .expect("exp i64::MAX is far in the future");
    assert_eq!(got.exp, i64::MAX);
    fx.reject(
        &fx.with_claims(&claims_with("iat", json!(i64::MAX))),
        VerifyError::NotYetValid,
        "iat i64::MAX",
    )
    .await;
    fx.accept(
        &fx.with_claims(&claims_with("iat", json!(i64::MIN))),
        "iat i64::MIN",
    )
    .await;
    fx.accept(
        &fx.with_claims(&claims_with("nbf", json!(i64::MIN))),
        "nbf i64::MIN",
    )
    .await;
    for (k, v) in [
        ("exp", json!(u64::MAX)),
        ("iat", json!(u64::MAX)),
        ("exp", json!(-1e300)),
    ] {
        let token = fx.with_claims(&claims_with(k, v.clone()));
        let err = reject_any(&fx.verifier, &token, &format!("{k} {v}")).await;
        assert!(is_malformed(&err), "{k} {v}: {err:?}");
    }

    // A huge leeway in the configuration must not overflow either.
    let fx = Fx::with_config(|c| c.leeway = Duration::from_secs(u64::MAX));
    fx.accept(
        &fx.with_claims(&claims_json()),
        "leeway u64::MAX, valid token",
    )
    .await;
    fx.accept(
        &fx.with_claims(&claims_with("exp", json!(i64::MAX))),
        "leeway u64::MAX, exp i64::MAX",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Structure
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn structure_wrong_number_of_parts_is_malformed() {
    let fx = Fx::new();
    let token = fx.signer.sign(&valid_claims());
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let cases = [
        ("empty", String::new()),
        ("one part", parts[0].to_owned()),
        ("two parts", format!("{}.{}", parts[0], parts[1])),
        ("four parts", format!("{token}.{}", parts[2])),
        ("trailing dot", format!("{token}.")),
        ("leading dot", format!(".{token}")),
        (
            "double dot",
            format!("{}..{}.{}", parts[0], parts[1], parts[2]),
        ),
        ("only dots", "..".to_owned()),
        ("many dots", "....".to_owned()),
        (
            "JWE-like five parts",
            format!(
                "{}.{}.{}.{}.{}",
                parts[0], parts[1], parts[2], parts[1], parts[2]
            ),
        ),
        ("empty signature", format!("{}.{}.", parts[0], parts[1])),
        ("empty payload", format!("{}..{}", parts[0], parts[2])),
        ("empty header", format!(".{}.{}", parts[1], parts[2])),
    ];
    for (case, t) in cases {
        let err = reject_any(&fx.verifier, &t, case).await;
        assert!(is_malformed(&err), "{case}: {err:?}");
    }
    assert_eq!(fx.fetches(), 0);
}

#[tokio::test]
async fn structure_non_base64url_characters_are_malformed() {
    let fx = Fx::new();
    let token = fx.signer.sign(&valid_claims());
    let parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    for seg in 0..3 {
        let original = &parts[seg];
        let bytes = URL_SAFE_NO_PAD.decode(original).unwrap();
        let mut variants = vec![
            (
                "'+' replacing the first char",
                format!("+{}", &original[1..]),
            ),
            (
                "'/' replacing the first char",
                format!("/{}", &original[1..]),
            ),
            ("'+' appended", format!("{original}+")),
            (
                "space inside",
                format!("{} {}", &original[..4], &original[4..]),
            ),
            ("leading space", format!(" {original}")),
            ("trailing space", format!("{original} ")),
            ("trailing newline", format!("{original}\n")),
            (
                "tab inside",
                format!("{}\t{}", &original[..4], &original[4..]),
            ),
            ("'=' appended", format!("{original}=")),
            ("'==' appended", format!("{original}==")),
            (
                "'=' inside",
                format!("{}={}", &original[..4], &original[4..]),
            ),
            (
                "'%' inside",
                format!("{}%{}", &original[..4], &original[4..]),
            ),
            (
                "non-ASCII inside",
                format!("{}é{}", &original[..4], &original[4..]),
            ),
            (
                "NUL inside",
                format!("{}\0{}", &original[..4], &original[4..]),
            ),
            ("standard alphabet", STANDARD.encode(&bytes)),
        ];
        // The padded URL-safe encoding, when it differs from the unpadded one.
        let padded = URL_SAFE.encode(&bytes);
        if padded != *original {
            variants.push(("correct '=' padding", padded));
        }
        // A non-canonical final character (trailing bits set) decodes to the same bytes
        // under a lax decoder.
        if !original.len().is_multiple_of(4) {
            let last = original.as_bytes()[original.len() - 1];
            let alphabet = KID_ALPHABET; // URL-safe alphabet order: A-Z a-z 0-9 - _
            let idx = alphabet.iter().position(|&c| c == last).unwrap();
            let tweaked = alphabet[idx ^ 1] as char;
            variants.push((
                "non-canonical trailing bits",
                format!("{}{}", &original[..original.len() - 1], tweaked),
            ));
        }
        for (what, replacement) in variants {
            if replacement == *original {
                continue; // e.g. the standard alphabet happens to coincide
            }
            let mut p = parts.clone();
            p[seg] = replacement;
            let t = p.join(".");
            let case = format!("segment {seg}: {what}");
            let err = reject_any(&fx.verifier, &t, &case).await;
            // The header and signature are decoded before any key is looked up; a mangled
            // payload can only be caught as malformed or as a bad signature.
            assert!(
                is_malformed(&err) || (seg == 1 && err == VerifyError::Signature),
                "{case}: {err:?}"
            );
        }
    }
}

#[tokio::test]
async fn structure_header_not_a_json_object_is_malformed() {
    let fx = Fx::new();
    let p = claims_json().to_string();
    for h in [
        "not json",
        "",
        "{",
        "null",
        "\"EdDSA\"",
        "42",
        "true",
        // An array holding the right values in field order: serde's derived structs accept
        // sequences, so this is the interesting one.
        r#"["EdDSA","at+jwt","k1"]"#,
        r#" ["EdDSA","at+jwt","k1"]"#,
        r#"[]"#,
        r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k1"} trailing"#,
        r#"{"alg":"EdDSA","typ":"at+jwt","kid":"k1"}{}"#,
        "\u{feff}{\"alg\":\"EdDSA\",\"typ\":\"at+jwt\",\"kid\":\"k1\"}",
    ] {
        let t = signed(&fx.sk, h, &p);
        let err = reject_any(&fx.verifier, &t, &format!("header {h:?}")).await;
        assert!(is_malformed(&err), "header {h:?}: {err:?}");
    }
    // Invalid UTF-8 in the header.
    let bad_utf8 = format!(
        "{}.{}.{}",
        b64(b"{\"alg\":\"EdDSA\xff\",\"typ\":\"at+jwt\",\"kid\":\"k1\"}"),
        b64(&p),
        b64([0u8; 64])
    );
    let err = reject_any(&fx.verifier, &bad_utf8, "header invalid UTF-8").await;
    assert!(is_malformed(&err), "header invalid UTF-8: {err:?}");
    assert_eq!(fx.fetches(), 0);
}

#[tokio::test]
async fn structure_payload_not_a_json_object_is_malformed() {
    let fx = Fx::new();
    let h = header().to_string();
    let c = valid_claims();
    let as_array = format!(
        r#"["{}","{}",["{}"],{},{},{},"{}",""]"#,
        c.iss, c.sub, AUD, c.exp, c.nbf, c.iat, c.jti
    );
    for p in [
        "not json",
        "",
        "null",
        "[]",
        "\"plt\"",
        "42",
        // All the right claims, by position, in an array.
        as_array.as_str(),
    ] {
        let t = signed(&fx.sk, &h, p);
        let err = reject_any(&fx.verifier, &t, &format!("payload {p:?}")).await;
        assert!(is_malformed(&err), "payload {p:?}: {err:?}");
    }
    let trailing = format!("{} garbage", claims_json());
    let err = reject_any(
        &fx.verifier,
        &signed(&fx.sk, &h, &trailing),
        "payload trailing",
    )
    .await;
    assert!(is_malformed(&err), "payload trailing: {err:?}");
}

#[tokio::test]
async fn structure_signature_tampering_is_rejected() {
    let fx = Fx::new();
    let token = fx.signer.sign(&valid_claims());
    let (input, sig_b64) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig_b64).unwrap();
    assert_eq!(sig.len(), 64);

    // Truncated: one byte short (decodes to 63 bytes), one char short (invalid length).
    let t = format!("{input}.{}", b64(&sig[..63]));
    fx.reject(&t, VerifyError::Malformed("signature"), "63-byte signature")
        .await;
    let t = format!("{input}.{}", &sig_b64[..sig_b64.len() - 1]);
    let err = reject_any(&fx.verifier, &t, "one char short").await;
    assert!(is_malformed(&err), "one char short: {err:?}");
    for n in [0usize, 1, 32, 65, 128] {
        let t = format!("{input}.{}", b64(vec![0xab; n]));
        let err = reject_any(&fx.verifier, &t, &format!("{n}-byte signature")).await;
        assert!(is_malformed(&err), "{n}-byte signature: {err:?}");
    }

    // The signature of another message.
    let mut other = valid_claims();
    other.sub = "someone-else".into();
    let other_token = fx.signer.sign(&other);
    let other_sig = other_token.rsplit_once('.').unwrap().1;
    fx.reject(
        &format!("{input}.{other_sig}"),
        VerifyError::Signature,
        "graft",
    )
    .await;

    // A bit flipped in the payload after signing (JSON still valid: 'sub' changes).
    let (h, p) = input.split_once('.').unwrap();
    let mut payload = URL_SAFE_NO_PAD.decode(p).unwrap();
    let pos = payload
        .windows(SUB.len())
        .position(|w| w == SUB.as_bytes())
        .unwrap();
    payload[pos] ^= 0x01;
    let flipped = format!("{h}.{}.{sig_b64}", b64(&payload));
    fx.reject(&flipped, VerifyError::Signature, "payload bit flip")
        .await;
    // And one flipped into the header (alg still EdDSA: flip a bit of the typ's case).
    let mut hdr = URL_SAFE_NO_PAD.decode(h).unwrap();
    let pos = hdr.windows(6).position(|w| w == b"at+jwt").unwrap();
    hdr[pos] ^= 0x20; // 'a' -> 'A', still an accepted typ
    let flipped = format!("{}.{p}.{sig_b64}", b64(&hdr));
    fx.reject(&flipped, VerifyError::Signature, "header bit flip")
        .await;

    // Each signature bit flipped in turn.
    for bit in (0..512).step_by(7) {
        let mut s = sig.clone();
        s[bit / 8] ^= 1 << (bit % 8);
        let t = format!("{input}.{}", b64(&s));
        fx.reject(&t, VerifyError::Signature, &format!("signature bit {bit}"))
            .await;
    }

    // Malleability: S + L (non-canonical S) must not verify (verify_strict).
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut s = sig.clone();
    let mut carry = 0u16;
    for i in 0..32 {
        let v = s[32 + i] as u16 + L[i] as u16 + carry;
        s[32 + i] = v as u8;
        carry = v >> 8;
    }
    assert_eq!(carry, 0, "S + L fits in 256 bits");
    let t = format!("{input}.{}", b64(&s));
    let err = reject_any(&fx.verifier, &t, "S + L").await;
    assert!(
        matches!(err, VerifyError::Signature | VerifyError::Malformed(_)),
        "S + L: {err:?}"
    );

    // All-zero and all-ones signatures, and the identity forgery (R = identity, S = 0).
    let mut identity_sig = [0u8; 64];
    identity_sig[0] = 1;
    for (what, s) in [
        ("zeros", [0u8; 64]),
        ("ones", [0xff; 64]),
        ("identity", identity_sig),
    ] {
        let t = format!("{input}.{}", b64(s));
        let err = reject_any(&fx.verifier, &t, what).await;
        assert!(
            matches!(err, VerifyError::Signature | VerifyError::Malformed(_)),
            "{what}: {err:?}"
        );
    }
    // The original still verifies after all that.
    fx.accept(&token, "untouched").await;
}

#[tokio::test]
async fn structure_deeply_nested_json_does_not_overflow() {
    let fx = Fx::new();
    let limit = fx.verifier.config().max_token_bytes;
    // Nesting far beyond serde_json's recursion limit, within the size limit. In a known
    // claim (`aud` is an untagged enum, buffered recursively) it is refused as malformed.
    let depth = 2000;
    let deep = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let mut c = claims_json();
    c.as_object_mut().unwrap().remove("aud");
    let mut c = c.to_string();
    c.pop(); // the closing brace
    let p = format!("{c},\"aud\":{deep}}}");
    let t = signed(&fx.sk, &header().to_string(), &p);
    assert!(t.len() <= limit);
    let err = reject_any(&fx.verifier, &t, "deep aud").await;
    assert!(is_malformed(&err), "deep aud: {err:?}");
    // In an unknown claim it is skipped without recursion: no stack overflow, and since the
    // token is signed by the trusted key and unknown claims are ignored (RFC 7519 §4), it
    // verifies.
    let mut c = claims_json().to_string();
    c.pop();
    let p = format!("{c},\"x\":{deep}}}");
    let t = signed(&fx.sk, &header().to_string(), &p);
    assert!(t.len() <= limit);
    fx.accept(&t, "deep unknown claim").await;
    // In the header, as a refused parameter and as the kid.
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(600), "}".repeat(600));
    let claims = claims_json().to_string();
    let h = format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":"k1","x":{deep_obj}}}"#);
    let t = signed(&fx.sk, &h, &claims);
    assert!(t.len() <= limit);
    fx.reject(&t, VerifyError::Header("x".into()), "deep header parameter")
        .await;
    let h = format!(r#"{{"alg":"EdDSA","typ":"at+jwt","kid":{deep_obj}}}"#);
    let t = signed(&fx.sk, &h, &claims);
    assert!(t.len() <= limit);
    let err = reject_any(&fx.verifier, &t, "deep kid").await;
    assert!(is_malformed(&err), "deep kid: {err:?}");
}

// ---------------------------------------------------------------------------------------------
// Size
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn oversized_token_is_too_large() {
    let fx = Fx::new();
    let limit = fx.verifier.config().max_token_bytes;
    assert_eq!(limit, 8 * 1024);
    let mb = 1 << 20;
    reject_as(
        &fx.verifier,
        &"a".repeat(mb),
        VerifyError::TooLarge(limit),
        "1 MB of 'a'",
    )
    .await;
    reject_as(
        &fx.verifier,
        &".".repeat(mb),
        VerifyError::TooLarge(limit),
        "1 MB of dots",
    )
    .await;
    // A correctly signed token whose scope claim is ~1 MB.
    let big = fx.with_claims(&claims_with("scope", json!("s".repeat(mb))));
    assert!(big.len() > mb);
    reject_as(
        &fx.verifier,
        &big,
        VerifyError::TooLarge(limit),
        "1 MB signed",
    )
    .await;
    // A 1 MB header carrying a jku: the size check comes before anything is parsed.
    let h = header_with("jku", json!("x".repeat(mb)));
    reject_as(
        &fx.verifier,
        &fx.with_header(&h),
        VerifyError::TooLarge(limit),
        "1 MB header",
    )
    .await;
    assert_eq!(fx.fetches(), 0);
}

#[tokio::test]
async fn token_size_limit_boundary() {
    let fx = Fx::new();
    let limit = fx.verifier.config().max_token_bytes;
    let scoped = |fx: &Fx, n: usize| fx.with_claims(&claims_with("scope", json!("s".repeat(n))));
    // `,"scope":"<n bytes>"` adds 11 + n bytes of JSON, 4/3 as many of base64.
    let base = fx.with_claims(&claims_json()).len();
    let crossing = (limit - base) * 3 / 4 - 11;
    // Grow the signed scope claim one byte at a time across the limit: every token up to
    // the limit verifies, every one above it is TooLarge.
    let mut largest_accepted = 0;
    let mut smallest_refused = usize::MAX;
    for n in crossing - 12..crossing + 12 {
        let t = scoped(&fx, n);
        if t.len() <= limit {
            fx.accept(&t, &format!("{} bytes", t.len())).await;
            largest_accepted = largest_accepted.max(t.len());
        } else {
            let case = format!("{} bytes", t.len());
            reject_as(&fx.verifier, &t, VerifyError::TooLarge(limit), &case).await;
            smallest_refused = smallest_refused.min(t.len());
        }
    }
    // Unpadded base64 skips one length in four, so the sweep gets within a byte of the limit.
    assert!(
        largest_accepted >= limit - 1,
        "largest accepted {largest_accepted}"
    );
    assert!(
        smallest_refused <= limit + 2,
        "smallest refused {smallest_refused}"
    );

    // A limit set to a token's exact length accepts it; one byte less refuses it.
    let len = scoped(&fx, 100).len();
    let exact = Fx::with_config(|c| c.max_token_bytes = len);
    let t = scoped(&exact, 100);
    assert_eq!(t.len(), len);
    exact.accept(&t, "exactly at a custom limit").await;
    let under = Fx::with_config(|c| c.max_token_bytes = len - 1);
    let t = scoped(&under, 100);
    reject_as(
        &under.verifier,
        &t,
        VerifyError::TooLarge(len - 1),
        "one past a custom limit",
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Keys and the JWKS cache
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn key_not_in_jwks_is_unknown_until_published() {
    let fx = Fx::with_config(|c| c.min_refetch_interval = Duration::ZERO);
    let k2 = Signer::generate("k2").unwrap();
    let t2 = k2.sign(&valid_claims());
    fx.reject(&t2, VerifyError::UnknownKey, "k2 not yet published")
        .await;
    let before = fx.fetches();
    assert!(before >= 1);

    // A token claiming k1 but signed with k2's key.
    let mut h = header();
    h["kid"] = json!("k1");
    let wrong_key = signed(&dalek_key(&k2), &h.to_string(), &claims_json().to_string());
    fx.reject(&wrong_key, VerifyError::Signature, "kid k1, signed by k2")
        .await;

    fx.jwks.set(Jwks {
        keys: vec![fx.signer.public_jwk(), k2.public_jwk()],
    });
    let got = fx
        .verifier
        .verify(&t2)
        .await
        .expect("k2 accepted after the JWKS update");
    assert_eq!(got.sub, SUB);
    assert!(fx.fetches() > before, "the unknown kid triggered a refetch");
    // k1 keeps working.
    fx.accept(&fx.signer.sign(&valid_claims()), "k1 after rotation")
        .await;
}

#[tokio::test]
async fn unknown_kid_flood_triggers_at_most_one_fetch() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);

    // Warm cache: one fetch for the legitimate token, none for the flood.
    let fx = Fx::with_config(|c| c.min_refetch_interval = Duration::from_secs(3600));
    fx.accept(&fx.signer.sign(&valid_claims()), "warm-up").await;
    let warm = fx.fetches();
    assert_eq!(warm, 1);
    for i in 0..100 {
        let kid = random_kid(&mut rng);
        if kid == "k1" {
            continue;
        }
        let t = fx.with_header(&header_with("kid", json!(kid)));
        fx.reject(
            &t,
            VerifyError::UnknownKey,
            &format!("flood #{i} kid {kid}"),
        )
        .await;
    }
    assert!(
        fx.fetches() - warm <= 1,
        "flood caused {} fetches",
        fx.fetches() - warm
    );
    fx.accept(
        &fx.signer.sign(&valid_claims()),
        "k1 still fine after the flood",
    )
    .await;

    // Cold cache: the flood itself causes exactly one fetch.
    let fx = Fx::with_config(|c| c.min_refetch_interval = Duration::from_secs(3600));
    for i in 0..100 {
        let kid = random_kid(&mut rng);
        if kid == "k1" {
            continue;
        }
        let t = fx.with_header(&header_with("kid", json!(kid)));
        fx.reject(&t, VerifyError::UnknownKey, &format!("cold flood #{i}"))
            .await;
    }
    assert_eq!(fx.fetches(), 1, "cold flood");
    fx.accept(&fx.signer.sign(&valid_claims()), "k1 from the one fetch")
        .await;
    assert_eq!(fx.fetches(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_unknown_kid_flood_triggers_one_fetch() {
    let fx = Fx::with_config(|c| c.min_refetch_interval = Duration::from_secs(3600));
    let mut rng = XorShift(0xdead_beef_cafe_f00d);
    let mut handles = Vec::new();
    for _ in 0..100 {
        let mut kid = random_kid(&mut rng);
        if kid == "k1" {
            kid.push('x');
        }
        let t = fx.with_header(&header_with("kid", json!(kid)));
        let v = fx.verifier.clone();
        handles.push(tokio::spawn(async move { v.verify(&t).await }));
    }
    for h in handles {
        assert_eq!(
            h.await.expect("no panic").unwrap_err(),
            VerifyError::UnknownKey
        );
    }
    assert_eq!(fx.fetches(), 1, "concurrent flood");
}

#[tokio::test]
async fn removed_key_stops_validating_after_refresh() {
    let fx = Fx::with_config(|c| {
        c.min_refetch_interval = Duration::ZERO;
        c.max_key_age = Duration::from_millis(1);
    });
    let t1 = fx.signer.sign(&valid_claims());
    fx.accept(&t1, "k1 while published").await;

    let k2 = Signer::generate("k2").unwrap();
    fx.jwks.set(Jwks {
        keys: vec![k2.public_jwk()],
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    fx.reject(&t1, VerifyError::UnknownKey, "k1 after removal")
        .await;
    fx.accept(&k2.sign(&valid_claims()), "k2 after rotation")
        .await;

    // An empty JWKS removes everything.
    fx.jwks.set(Jwks { keys: vec![] });
    tokio::time::sleep(Duration::from_millis(10)).await;
    fx.reject(
        &k2.sign(&valid_claims()),
        VerifyError::UnknownKey,
        "k2 after empty JWKS",
    )
    .await;
}

#[tokio::test]
async fn jwks_hygiene_unusable_entries_are_ignored() {
    let fx = Fx::with_config(|c| c.min_refetch_interval = Duration::ZERO);
    let good = fx.signer.public_jwk();
    // Every entry carries k1's real public key, so a token claiming its kid would verify if
    // the entry were used.
    fn variant(good: &Jwk, kid: &str, f: impl FnOnce(&mut Jwk)) -> Jwk {
        let mut j = good.clone();
        j.kid = kid.into();
        f(&mut j);
        j
    }
    let entry = |kid: &str, f: fn(&mut Jwk)| variant(&good, kid, f);
    let mut keys = vec![
        good.clone(),
        entry("rsa", |j| j.kty = "RSA".into()),
        entry("ec", |j| j.kty = "EC".into()),
        entry("oct", |j| j.kty = "oct".into()),
        entry("okp-lower", |j| j.kty = "okp".into()),
        entry("p256", |j| j.crv = "P-256".into()),
        entry("x25519", |j| j.crv = "X25519".into()),
        entry("ed448", |j| j.crv = "Ed448".into()),
        entry("nocrv", |j| j.crv = String::new()),
        entry("hs256", |j| j.alg = "HS256".into()),
        entry("none", |j| j.alg = "none".into()),
        entry("eddsa-lower", |j| j.alg = "eddsa".into()),
        entry("enc", |j| j.use_ = "enc".into()),
        entry("sig-upper", |j| j.use_ = "SIG".into()),
        entry("badx", |j| j.x = "not base64url!".into()),
        entry("padx", |j| {
            j.x = URL_SAFE.encode(URL_SAFE_NO_PAD.decode(&j.x).unwrap())
        }),
        entry("stdx", |j| {
            j.x = STANDARD.encode(URL_SAFE_NO_PAD.decode(&j.x).unwrap())
        }),
        entry("shortx", |j| j.x = b64([1u8; 31])),
        entry("longx", |j| j.x = b64([1u8; 33])),
        entry("emptyx", |j| j.x = String::new()),
    ];
    // `padx`/`stdx` only differ from the good key when the encodings differ.
    keys.retain(|k| k.kid == "k1" || k.x != good.x);
    let hostile: Vec<String> = keys.iter().skip(1).map(|k| k.kid.clone()).collect();
    // A `kid` the verifier could never be asked for anyway.
    keys.push(entry("bad kid", |_| {}));
    fx.jwks.set(Jwks { keys });

    fx.accept(
        &fx.signer.sign(&valid_claims()),
        "the good entry still works",
    )
    .await;
    for kid in hostile {
        let t = fx.with_header(&header_with("kid", json!(kid)));
        fx.reject(&t, VerifyError::UnknownKey, &format!("JWKS entry {kid}"))
            .await;
    }
}

#[tokio::test]
async fn small_order_key_cannot_be_forged() {
    // With A = identity, R = identity and S = 0 satisfy the (cofactorless or cofactored)
    // verification equation for every message. Only strict verification rejects it.
    let fx = Fx::with_config(|c| c.min_refetch_interval = Duration::ZERO);
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut weak = fx.signer.public_jwk();
    weak.kid = "weak".into();
    weak.x = b64(identity);
    fx.jwks.set(Jwks {
        keys: vec![fx.signer.public_jwk(), weak],
    });
    let mut forged_sig = [0u8; 64];
    forged_sig[0] = 1;
    let h = header_with("kid", json!("weak")).to_string();
    let t = raw_token(&h, &claims_json().to_string(), &forged_sig);
    let err = reject_any(&fx.verifier, &t, "identity key forgery").await;
    assert!(
        matches!(err, VerifyError::UnknownKey | VerifyError::Signature),
        "identity key forgery: {err:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Property-style fuzz
// ---------------------------------------------------------------------------------------------

const FUZZ_BYTES: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=. \t\n{}\"\\:,[]\0\x7f";

fn mutate(rng: &mut XorShift, token: &str) -> String {
    let mut t = token.as_bytes().to_vec();
    let rounds = 1 + rng.below(3);
    for _ in 0..rounds {
        if t.is_empty() {
            break;
        }
        match rng.below(9) {
            // Flip one random bit (possibly making the text non-UTF-8).
            0 => {
                let i = rng.below(t.len());
                t[i] ^= 1 << rng.below(8);
            }
            // Replace a character with one from a hostile alphabet.
            1 => {
                let i = rng.below(t.len());
                t[i] = FUZZ_BYTES[rng.below(FUZZ_BYTES.len())];
            }
            // Truncate.
            2 => {
                let n = rng.below(t.len());
                t.truncate(n);
            }
            // Insert a dot.
            3 => {
                let i = rng.below(t.len() + 1);
                t.insert(i, b'.');
            }
            // Delete a character.
            4 => {
                let i = rng.below(t.len());
                t.remove(i);
            }
            // Insert a random character.
            5 => {
                let i = rng.below(t.len() + 1);
                t.insert(i, FUZZ_BYTES[rng.below(FUZZ_BYTES.len())]);
            }
            // Flip a bit inside a decoded segment and re-encode, so the base64 stays valid
            // and the signature check itself is exercised.
            6 | 7 => {
                let text = String::from_utf8_lossy(&t).into_owned();
                let mut parts: Vec<String> = text.split('.').map(str::to_owned).collect();
                let seg = rng.below(parts.len());
                if let Ok(mut bytes) = URL_SAFE_NO_PAD.decode(&parts[seg])
                    && !bytes.is_empty()
                {
                    let i = rng.below(bytes.len());
                    bytes[i] ^= 1 << rng.below(8);
                    parts[seg] = b64(&bytes);
                    t = parts.join(".").into_bytes();
                }
            }
            // Swap or duplicate segments.
            _ => {
                let text = String::from_utf8_lossy(&t).into_owned();
                let mut parts: Vec<String> = text.split('.').map(str::to_owned).collect();
                let a = rng.below(parts.len());
                let b = rng.below(parts.len());
                if rng.below(2) == 0 {
                    parts.swap(a, b);
                } else {
                    parts[a] = parts[b].clone();
                }
                t = parts.join(".").into_bytes();
            }
        }
    }
    String::from_utf8_lossy(&t).into_owned()
}

#[tokio::test]
async fn fuzz_random_mutations_never_verify() {
    let fx = Fx::new();
    let token = fx.signer.sign(&valid_claims());
    fx.accept(&token, "unmodified").await;
    let mut rng = XorShift(0x0123_4567_89ab_cdef);
    let mut tried = 0;
    let mut unchanged = 0;
    let mut reached_signature = 0;
    for i in 0..2000 {
        let m = mutate(&mut rng, &token);
        if m == token {
            unchanged += 1;
            continue;
        }
        tried += 1;
        let err = reject_any(&fx.verifier, &m, &format!("mutation #{i}: {m:?}")).await;
        if err == VerifyError::Signature {
            reached_signature += 1;
        }
    }
    // The re-encoding mutations get past the parser, so the signature check itself is fuzzed.
    assert!(
        reached_signature >= 200,
        "only {reached_signature} mutations reached the signature check"
    );
    assert!(
        tried >= 1900,
        "only {tried} effective mutations ({unchanged} unchanged)"
    );
    fx.accept(&token, "unmodified, after the fuzz").await;
    assert_eq!(fx.fetches(), 1, "mutated kids are malformed, or k1");
}
