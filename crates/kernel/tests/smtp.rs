//! The SMTP notifier against a real SMTP server: aiosmtpd (Debian's `python3-aiosmtpd`), run
//! by `plt_kernel::testing::smtp` (included here: the kernel's own tests do not see its
//! `testing` feature), which records every message it accepts with what it saw of the
//! connection (TLS, AUTH). Certificates come from a CA each test makes.
//!
//! `PLT_TEST_SMTP_PYTHON` names a Python interpreter that has aiosmtpd (e.g.
//! `/usr/bin/python3`): when set, these tests run and must pass; unset, they are skipped with
//! a message.

#[path = "../src/testing/smtp.rs"]
mod smtp_server;

use plt_kernel::{
    Secret,
    config::{SmtpConfig, SmtpTls},
    notify::{Notifier, SmtpNotifier},
};
use smtp_server::{SmtpServer, python};
use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

const FROM: &str = "plt <noreply@plt.test>";
const PASSWORD: &str = "s3cret-smtp-password";

/// A CA, and a certificate for `localhost` it signed, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

fn make_pki(dir: &Path, name: &str) -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, format!("plt test CA {name}"));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let pki = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    pki
}

fn config(port: u16, tls: SmtpTls) -> SmtpConfig {
    SmtpConfig {
        host: "localhost".into(),
        port,
        tls,
        username: String::new(),
        password: Secret::default(),
        ca_certs: PathBuf::new(),
        hello_name: "plt-test-client".into(),
        timeout: Duration::from_secs(5),
    }
}

/// A decoded body as sent: line ends as `\n`, without the line end SMTP adds at the end.
fn text(body: &serde_json::Value) -> String {
    body.as_str()
        .expect("a text body")
        .replace("\r\n", "\n")
        .trim_end()
        .to_owned()
}

async fn send(cfg: &SmtpConfig, to: &str, subject: &str, body: &str) -> Result<(), String> {
    let notifier = SmtpNotifier::new(cfg, FROM).map_err(|e| e.to_string())?;
    notifier
        .send(to, subject, body)
        .await
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn plain_mail_arrives_with_envelope_headers_and_body() {
    let Some(python) = python() else { return };
    let server = SmtpServer::start(&python, &["--tls", "none"]).await;
    let cfg = config(server.port, SmtpTls::None);
    let body = "Verify your e-mail address: open http://localhost/verify?token=abc\n\nToken: abc\n";
    send(&cfg, "ada@example.com", "Verify your e-mail address", body)
        .await
        .unwrap();

    let got = server.received();
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!(m["mail_from"], "noreply@plt.test");
    assert_eq!(m["rcpt_tos"], serde_json::json!(["ada@example.com"]));
    assert_eq!(m["tls"], false);
    assert_eq!(m["authenticated"], false);
    assert_eq!(m["hello"], "plt-test-client");
    let content = m["content"].as_str().unwrap();
    for header in [
        "From: plt <noreply@plt.test>",
        "To: ada@example.com",
        "Subject: Verify your e-mail address",
        "Content-Type: text/plain; charset=utf-8",
        "Message-ID: <",
        "@plt.test>",
        "Date: ",
    ] {
        assert!(content.contains(header), "{header:?} missing in {content}");
    }
    assert_eq!(m["subject"], "Verify your e-mail address");
    assert_eq!(m["from"], "plt <noreply@plt.test>");
    assert_eq!(text(&m["body"]), body.trim_end());
}

#[tokio::test]
async fn starttls_with_the_configured_ca_and_auth() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "starttls");
    let server = SmtpServer::start(
        &python,
        &[
            "--tls",
            "starttls",
            "--cert",
            pki.cert.to_str().unwrap(),
            "--key",
            pki.key.to_str().unwrap(),
            "--auth",
            &format!("mailer:{PASSWORD}"),
        ],
    )
    .await;
    let mut cfg = config(server.port, SmtpTls::Starttls);
    cfg.ca_certs = pki.ca.clone();
    cfg.username = "mailer".into();
    cfg.password = Secret::new(PASSWORD.into());
    send(&cfg, "bob@example.com", "Reset your password", "reset body")
        .await
        .unwrap();

    let got = server.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["tls"], true, "upgraded with STARTTLS");
    assert_eq!(got[0]["authenticated"], true);
    assert_eq!(got[0]["login"], "mailer");
    assert_eq!(got[0]["rcpt_tos"], serde_json::json!(["bob@example.com"]));

    // Without credentials the server refuses the mail (it requires AUTH): an error.
    let mut anonymous = cfg.clone();
    anonymous.username.clear();
    anonymous.password = Secret::default();
    let err = send(&anonymous, "bob@example.com", "x", "y")
        .await
        .unwrap_err();
    assert!(err.contains("SMTP localhost:"), "{err}");

    // A wrong password: an error the caller sees, which never shows the password.
    let mut wrong = cfg.clone();
    wrong.password = Secret::new("not-the-password".into());
    let err = send(&wrong, "bob@example.com", "x", "y").await.unwrap_err();
    assert!(err.contains("535"), "authentication refused: {err}");
    assert!(!err.contains("not-the-password"), "{err}");
    assert!(
        !format!("{:?}", SmtpNotifier::new(&cfg, FROM).unwrap()).contains(PASSWORD),
        "Debug shows no password"
    );

    // The server's certificate chains to a CA that is not trusted: refused before any mail.
    let mut untrusted = cfg.clone();
    untrusted.ca_certs = make_pki(dir.path(), "other").ca;
    let err = send(&untrusted, "bob@example.com", "x", "y")
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    // ... nor do the public roots trust it.
    let mut public_roots = cfg.clone();
    public_roots.ca_certs = PathBuf::new();
    let err = send(&public_roots, "bob@example.com", "x", "y")
        .await
        .unwrap_err();
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    assert_eq!(server.received().len(), 1, "nothing else was accepted");
}

#[tokio::test]
async fn tls_from_the_first_byte() {
    let Some(python) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "tls");
    let server = SmtpServer::start(
        &python,
        &[
            "--tls",
            "tls",
            "--cert",
            pki.cert.to_str().unwrap(),
            "--key",
            pki.key.to_str().unwrap(),
        ],
    )
    .await;
    let mut cfg = config(server.port, SmtpTls::Tls);
    cfg.ca_certs = pki.ca.clone();
    send(&cfg, "carol@example.com", "Über-Betreff ✓", "Grüße\n")
        .await
        .unwrap();
    let got = server.received();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["tls"], true);
    assert!(
        got[0]["tls_version"]
            .as_str()
            .is_some_and(|v| v.starts_with("TLSv1.")),
        "{got:?}"
    );
    // A non-ASCII subject travels encoded (RFC 2047), not raw, and decodes back.
    let content = got[0]["content"].as_str().unwrap();
    assert!(content.contains("Subject: =?utf-8?"), "{content}");
    assert_eq!(got[0]["subject"], "Über-Betreff ✓");
    assert_eq!(text(&got[0]["body"]), "Grüße");

    // Plain SMTP against a TLS port fails (and says so), it does not hang.
    let started = Instant::now();
    assert!(
        send(
            &config(server.port, SmtpTls::None),
            "c@example.com",
            "x",
            "y"
        )
        .await
        .is_err()
    );
    assert!(started.elapsed() < Duration::from_secs(6));
}

#[tokio::test]
async fn starttls_is_required_not_opportunistic() {
    let Some(python) = python() else { return };
    // A server that does not offer STARTTLS (as an attacker in the path would make it look).
    let server = SmtpServer::start(&python, &["--tls", "none"]).await;
    let err = send(
        &config(server.port, SmtpTls::Starttls),
        "dave@example.com",
        "x",
        "y",
    )
    .await
    .unwrap_err();
    assert!(err.contains("SMTP localhost:"), "{err}");
    assert!(server.received().is_empty(), "no mail in plain text");
}

#[tokio::test]
async fn an_absent_or_silent_server_is_an_error_within_the_timeout() {
    // These need no SMTP server, but run with the others.
    if python().is_none() {
        return;
    }
    // Nothing listens: refused at once.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = config(closed, SmtpTls::None);
    cfg.host = "127.0.0.1".into();
    assert!(send(&cfg, "e@example.com", "x", "y").await.is_err());

    // Accepts the connection and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = config(silent.local_addr().unwrap().port(), SmtpTls::None);
    cfg.host = "127.0.0.1".into();
    cfg.timeout = Duration::from_millis(500);
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let started = Instant::now();
    let err = send(&cfg, "e@example.com", "x", "y").await.unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(2),
        "{took:?}: {err}"
    );
    hold.abort();
}
