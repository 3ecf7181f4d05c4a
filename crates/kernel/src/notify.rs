//! The Notifier: how services send mail. [`SmtpNotifier`] sends it to an SMTP server (plain,
//! STARTTLS or TLS, optionally with AUTH); the development implementation
//! ([`OutboxNotifier`]) writes each message as a JSON file into an outbox directory, where a
//! person (`<service> mail list`) or a test can read it; an in-memory one serves unit tests.
//! [`from_config`] builds the configured one (`notifier` section).

use crate::config::{ConfigError, KernelConfig, NotifierConfig, NotifierKind, SmtpConfig, SmtpTls};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    message::{Mailbox, header::ContentType},
    transport::smtp::{
        authentication::Credentials,
        client::{Certificate, CertificateStore, Tls, TlsParameters},
        extension::ClientId,
    },
};
use serde::{Deserialize, Serialize};
use std::{
    fmt,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};
use uuid::Uuid;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Mail {
    pub id: Uuid,
    pub from: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot send mail: {0}")]
pub struct NotifyError(pub String);

#[async_trait]
pub trait Notifier: Send + Sync {
    async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), NotifyError>;
}

/// Reads the mail a notifier has sent (development and tests).
pub trait MailReader: Send + Sync {
    /// Every message, oldest first.
    fn list(&self) -> Result<Vec<Mail>, NotifyError>;

    /// The newest message sent to `to` (case-insensitive), if any.
    fn latest_to(&self, to: &str) -> Result<Option<Mail>, NotifyError> {
        Ok(self
            .list()?
            .into_iter()
            .rev()
            .find(|m| m.to.eq_ignore_ascii_case(to)))
    }
}

fn new_mail(from: &str, to: &str, subject: &str, body: &str) -> Mail {
    Mail {
        id: Uuid::now_v7(),
        from: from.to_owned(),
        to: to.to_owned(),
        subject: subject.to_owned(),
        body: body.to_owned(),
        created_at: Utc::now(),
    }
}

/// The notifier `notifier` configures: the SMTP notifier, or the development outbox (refused
/// when `env` is `production`, naming `notifier.kind`). Builds without connecting; a CA file
/// that cannot be read or a bad sender is a configuration error naming its key.
pub fn from_config(kernel: &KernelConfig) -> Result<Arc<dyn Notifier>, ConfigError> {
    let cfg: &NotifierConfig = &kernel.notifier;
    cfg.validate_for_env(&kernel.env)?;
    Ok(match cfg.kind {
        NotifierKind::Outbox => Arc::new(OutboxNotifier::new(&cfg.outbox_dir, &cfg.from)),
        NotifierKind::Smtp => Arc::new(SmtpNotifier::new(&cfg.smtp, &cfg.from)?),
    })
}

/// Sends mail to an SMTP server, one connection per message (mail is rare: verification and
/// reset messages). A failure — refused or silent server, TLS not offered or not trusted,
/// AUTH refused, recipient refused, over `timeout` — is returned, never retried here. The
/// password is never logged (lettre's own logging is not compiled in: it would show the
/// SMTP dialogue).
pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `host:port`, for messages.
    server: String,
    tls: SmtpTls,
    timeout: Duration,
}

impl fmt::Debug for SmtpNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpNotifier")
            .field("server", &self.server)
            .field("tls", &self.tls)
            .field("from", &self.from.to_string())
            .finish_non_exhaustive()
    }
}

impl SmtpNotifier {
    /// A notifier for `cfg` sending as `from`. Does not connect.
    pub fn new(cfg: &SmtpConfig, from: &str) -> Result<Self, ConfigError> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| ConfigError::new("notifier.from", format!("not a mailbox: {e}")))?;
        let tls_parameters = || -> Result<TlsParameters, ConfigError> {
            let mut params = TlsParameters::builder(cfg.host.clone());
            if !cfg.ca_certs.as_os_str().is_empty() {
                let pem = std::fs::read(&cfg.ca_certs).map_err(|e| {
                    ConfigError::new(
                        "notifier.smtp.ca_certs",
                        format!("{}: {e}", cfg.ca_certs.display()),
                    )
                })?;
                if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
                    return Err(ConfigError::new(
                        "notifier.smtp.ca_certs",
                        format!("{}: holds no PEM certificate", cfg.ca_certs.display()),
                    ));
                }
                let ca = Certificate::from_pem(&pem).map_err(|e| {
                    ConfigError::new(
                        "notifier.smtp.ca_certs",
                        format!("{}: not PEM certificates: {e}", cfg.ca_certs.display()),
                    )
                })?;
                // A private CA replaces the public roots: only its certificates are trusted.
                params = params
                    .certificate_store(CertificateStore::None)
                    .add_root_certificate(ca);
            }
            params.build_rustls().map_err(|e| {
                ConfigError::new("notifier.smtp.ca_certs", format!("TLS settings: {e}"))
            })
        };
        let tls = match cfg.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::Starttls => Tls::Required(tls_parameters()?),
            SmtpTls::Tls => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            .port(cfg.port)
            .tls(tls)
            .timeout(Some(cfg.timeout));
        if !cfg.hello_name.is_empty() {
            builder = builder.hello_name(ClientId::Domain(cfg.hello_name.clone()));
        }
        if !cfg.username.is_empty() {
            builder = builder.credentials(Credentials::new(
                cfg.username.clone(),
                cfg.password.expose().clone(),
            ));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            server: format!("{}:{}", cfg.host, cfg.port),
            tls: cfg.tls,
            timeout: cfg.timeout,
        })
    }

    fn message(&self, to: &str, subject: &str, body: &str) -> Result<Message, NotifyError> {
        let to: Mailbox = to
            .parse()
            .map_err(|e| NotifyError(format!("recipient is not a mailbox: {e}")))?;
        let domain = self.from.email.domain();
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .message_id(Some(format!("<{}@{domain}>", Uuid::now_v7().simple())))
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|e| NotifyError(format!("building the message: {e}")))
    }
}

#[async_trait]
impl Notifier for SmtpNotifier {
    async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), NotifyError> {
        let message = self.message(to, subject, body)?;
        // lettre's timeout bounds each step; this bounds the whole delivery.
        match tokio::time::timeout(self.timeout, self.transport.send(message)).await {
            Ok(Ok(_)) => {
                tracing::info!(
                    to_domain = to.rsplit('@').next().unwrap_or(""),
                    subject,
                    server = %self.server,
                    "mail sent"
                );
                Ok(())
            }
            Ok(Err(e)) => Err(NotifyError(format!("SMTP {}: {e}", self.server))),
            Err(_) => Err(NotifyError(format!(
                "SMTP {}: no delivery within {:?}",
                self.server, self.timeout
            ))),
        }
    }
}

/// Writes each message to `<dir>/<uuid v7>.json` (time-ordered names), atomically.
#[derive(Debug, Clone)]
pub struct OutboxNotifier {
    dir: PathBuf,
    from: String,
}

impl OutboxNotifier {
    pub fn new(dir: impl Into<PathBuf>, from: impl Into<String>) -> Self {
        Self {
            dir: dir.into(),
            from: from.into(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

#[async_trait]
impl Notifier for OutboxNotifier {
    async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), NotifyError> {
        let mail = new_mail(&self.from, to, subject, body);
        let json = serde_json::to_vec_pretty(&mail).map_err(|e| NotifyError(e.to_string()))?;
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let tmp = dir.join(format!(".{}.tmp", mail.id));
            std::fs::write(&tmp, json)?;
            std::fs::rename(&tmp, dir.join(format!("{}.json", mail.id)))
        })
        .await
        .map_err(|e| NotifyError(e.to_string()))?
        .map_err(|e| NotifyError(format!("outbox {}: {e}", self.dir.display())))?;
        tracing::info!(
            to_domain = to.rsplit('@').next().unwrap_or(""),
            subject,
            "mail written to the development outbox"
        );
        Ok(())
    }
}

impl OutboxNotifier {
    /// The outbox as the `mail list` commands print it: every message, oldest first, or a
    /// line saying there is none.
    pub fn listing(&self) -> Result<String, NotifyError> {
        let mails = self.list()?;
        if mails.is_empty() {
            return Ok(format!("(no mail in {})\n", self.dir.display()));
        }
        Ok(mails
            .iter()
            .map(|m| {
                format!(
                    "--- {} {}\nFrom: {}\nTo: {}\nSubject: {}\n\n{}\n",
                    m.created_at.to_rfc3339(),
                    m.id,
                    m.from,
                    m.to,
                    m.subject,
                    m.body
                )
            })
            .collect())
    }
}

impl MailReader for OutboxNotifier {
    fn list(&self) -> Result<Vec<Mail>, NotifyError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(NotifyError(format!("outbox {}: {e}", self.dir.display()))),
        };
        let mut mails = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| NotifyError(e.to_string()))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let bytes = std::fs::read(&path).map_err(|e| NotifyError(e.to_string()))?;
                let mail: Mail = serde_json::from_slice(&bytes)
                    .map_err(|e| NotifyError(format!("{}: {e}", path.display())))?;
                mails.push(mail);
            }
        }
        mails.sort_by_key(|m| m.id);
        Ok(mails)
    }
}

/// Keeps messages in memory.
#[derive(Debug, Clone, Default)]
pub struct MemoryNotifier {
    mails: Arc<Mutex<Vec<Mail>>>,
}

#[async_trait]
impl Notifier for MemoryNotifier {
    async fn send(&self, to: &str, subject: &str, body: &str) -> Result<(), NotifyError> {
        let mail = new_mail("plt@localhost", to, subject, body);
        self.mails
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(mail);
        Ok(())
    }
}

impl MailReader for MemoryNotifier {
    fn list(&self) -> Result<Vec<Mail>, NotifyError> {
        Ok(self.mails.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn outbox_round_trip_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let n = OutboxNotifier::new(dir.path().join("mail"), "plt <noreply@localhost>");
        assert!(n.list().unwrap().is_empty());
        n.send("a@example.com", "first", "one").await.unwrap();
        n.send("B@example.com", "second", "two").await.unwrap();
        let all = n.list().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].subject, "first");
        assert_eq!(n.latest_to("b@example.com").unwrap().unwrap().body, "two");
        assert!(n.latest_to("c@example.com").unwrap().is_none());
    }
}
