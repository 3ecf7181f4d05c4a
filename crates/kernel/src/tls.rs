//! TLS, with rustls and its `ring` provider only (it builds without cmake or a C toolchain
//! beyond the one Rust needs; aws-lc-rs and OpenSSL are never linked).
//!
//! - **Listeners** (`server.tls`): [`ServerTlsConfig::load`] reads the certificate chain and
//!   key (PEM) and, for mutual TLS, the CA whose certificates clients must present; ALPN
//!   offers `h2` and `http/1.1`, so gRPC and HTTP/1.1 share the TLS port as they share the
//!   plaintext one. [`TlsListener`] does the handshakes off the accept loop.
//! - **Outbound** (`client_tls`): [`ClientTls`] trusts the operating system's roots plus an
//!   optional extra CA, and presents an optional client certificate (mutual TLS between
//!   services). It is process-wide ([`client`], [`set_client`]): `https://` URLs through
//!   [`http_client_builder`] (JWKS, etcd, Consul, HTTP contract clients), gRPC channels to
//!   instances that serve TLS ([`ClientTls::connector`]) and the gateway's upstreams all use
//!   it.
//!
//! reqwest is built without a crypto provider of its own: [`install_provider`] makes ring the
//! process default, and every reqwest client of the workspace is made through
//! [`http_client_builder`] (clippy refuses `reqwest::Client::new` and `reqwest::Client::builder`).

use crate::config::ConfigError;
use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject},
    server::WebPkiClientVerifier,
};
use serde::{Deserialize, Serialize};
use std::{
    future::Future,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, OnceLock, RwLock},
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    net::{TcpListener, TcpStream},
    task::JoinSet,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// The longest a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a listener looks whether its certificate or key file changed.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// ring's provider. rustls 0.23.48 deprecates it for lacking post-quantum key exchange; the
/// provider that has it (aws-lc-rs) needs cmake and a C toolchain to build, which this
/// platform does not ask for. Classical X25519/P-256 key exchange remains sound.
#[allow(deprecated, reason = "ring is this platform's provider; see above")]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process's default rustls provider (what reqwest and sqlx use). Idempotent;
/// every function here that builds a client calls it.
pub fn install_provider() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Err only when another provider is already installed: that one stays.
        let _ = CryptoProvider::install_default(Arc::unwrap_or_clone(provider()));
    });
}

/// A reqwest client builder whose TLS is this process's [`ClientTls`] (system roots, plus
/// `client_tls.ca_path`, presenting `client_tls.cert_path` when set). The one way the
/// workspace makes reqwest clients.
pub fn http_client_builder() -> reqwest::ClientBuilder {
    client().http_client_builder()
}

/// [`http_client_builder`], built.
pub fn http_client() -> reqwest::Client {
    http_client_builder()
        .build()
        .expect("a reqwest client with a prepared TLS configuration builds")
}

/// `server.tls`: TLS on the service's port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsConfig {
    /// PEM certificate chain, leaf first. With `key_path`: the port serves TLS only.
    pub cert_path: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of the leaf certificate.
    pub key_path: PathBuf,
    /// PEM CA certificates: when set, a client must present a certificate they signed
    /// (mutual TLS); others are refused during the handshake.
    pub client_ca_path: PathBuf,
}

fn set(p: &Path) -> bool {
    !p.as_os_str().is_empty()
}

impl ServerTlsConfig {
    /// Whether the port serves TLS.
    pub fn enabled(&self) -> bool {
        set(&self.cert_path)
    }

    /// The settings fit together (files are read by [`ServerTlsConfig::load`]).
    pub fn check(&self, prefix: &str) -> Result<(), ConfigError> {
        match (set(&self.cert_path), set(&self.key_path)) {
            (true, false) => {
                return Err(ConfigError::new(
                    format!("{prefix}.key_path"),
                    "must be set when cert_path is",
                ));
            }
            (false, true) => {
                return Err(ConfigError::new(
                    format!("{prefix}.cert_path"),
                    "must be set when key_path is",
                ));
            }
            _ => {}
        }
        if set(&self.client_ca_path) && !self.enabled() {
            return Err(ConfigError::new(
                format!("{prefix}.client_ca_path"),
                "needs cert_path and key_path (mutual TLS is TLS first)",
            ));
        }
        Ok(())
    }

    /// The server configuration (ALPN `h2`, `http/1.1`), or `None` when TLS is off. A file
    /// that cannot be read or holds nothing usable is an error naming its key under
    /// `prefix` (e.g. `server.tls`). The certificate and key are read again when their files
    /// change (looked at no more than once a second, on a handshake): a renewed certificate
    /// is served without a restart; a renewal that cannot be used is logged and the previous
    /// one kept. (The client CA is read once.)
    pub fn load(&self, prefix: &str) -> Result<Option<Arc<ServerConfig>>, ConfigError> {
        self.check(prefix)?;
        if !self.enabled() {
            return Ok(None);
        }
        let resolver = ReloadingCert::new(&self.cert_path, &self.key_path, prefix)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new(prefix, e.to_string()))?;
        let builder = if set(&self.client_ca_path) {
            let ca_name = format!("{prefix}.client_ca_path");
            let mut roots = RootCertStore::empty();
            for cert in read_certs(&self.client_ca_path, &ca_name)? {
                roots
                    .add(cert)
                    .map_err(|e| ConfigError::new(&ca_name, format!("not a usable CA: {e}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(roots.into(), provider())
                .build()
                .map_err(|e| ConfigError::new(&ca_name, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Arc::new(config)))
    }
}

/// The certificate a listener serves, read again from its files when they change.
#[derive(Debug)]
struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// The section's key path, for messages.
    prefix: String,
    state: std::sync::Mutex<Served>,
}

#[derive(Debug)]
struct Served {
    key: Arc<rustls::sign::CertifiedKey>,
    /// Modification time and length of the certificate and key files when they were read.
    stamp: Option<FileStamps>,
    checked: std::time::Instant,
}

type FileStamps = [(std::time::SystemTime, u64); 2];

impl ReloadingCert {
    fn new(cert_path: &Path, key_path: &Path, prefix: &str) -> Result<Self, ConfigError> {
        let stamp = stamps(cert_path, key_path);
        let key = certified_key(cert_path, key_path, prefix)?;
        Ok(Self {
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
            prefix: prefix.to_owned(),
            state: std::sync::Mutex::new(Served {
                key,
                stamp,
                checked: std::time::Instant::now(),
            }),
        })
    }
}

fn stamps(cert: &Path, key: &Path) -> Option<FileStamps> {
    let stamp = |p: &Path| {
        let m = std::fs::metadata(p).ok()?;
        Some((m.modified().ok()?, m.len()))
    };
    Some([stamp(cert)?, stamp(key)?])
}

fn certified_key(
    cert_path: &Path,
    key_path: &Path,
    prefix: &str,
) -> Result<Arc<rustls::sign::CertifiedKey>, ConfigError> {
    let certs = read_certs(cert_path, &format!("{prefix}.cert_path"))?;
    let key_name = format!("{prefix}.key_path");
    let key = read_key(key_path, &key_name)?;
    let key = rustls::sign::CertifiedKey::from_der(certs, key, &provider())
        .map(Arc::new)
        .map_err(|e| {
            ConfigError::new(
                &key_name,
                format!("does not fit the certificate in cert_path: {e}"),
            )
        })?;
    record_expiry("server", &key.cert);
    Ok(key)
}

/// Sets `tls_certificate_expiry_timestamp_seconds{kind}` to the `notAfter` of the leaf (the
/// first certificate of `chain`), in Unix seconds: called whenever a certificate is put to
/// use (loaded, reloaded), so that an alert can warn before it expires.
fn record_expiry(kind: &'static str, chain: &[CertificateDer<'_>]) {
    // The recorder may not be installed yet (TLS files are read before the host binds).
    let _ = crate::metrics::handle();
    ::metrics::describe_gauge!(
        "tls_certificate_expiry_timestamp_seconds",
        ::metrics::Unit::Seconds,
        "notAfter (Unix seconds) of the TLS certificate in use, by kind (server, client)."
    );
    match chain.first().and_then(|c| not_after(c)) {
        Some(t) => ::metrics::gauge!("tls_certificate_expiry_timestamp_seconds", "kind" => kind)
            .set(t as f64),
        None => tracing::warn!(
            kind,
            "cannot read the certificate's notAfter: tls_certificate_expiry_timestamp_seconds not set"
        ),
    }
}

/// One DER element at the start of `input`: its tag, its contents and what follows it.
/// Definite lengths only (DER has no other); single-byte tags only (all X.509 uses up to
/// the validity).
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > std::mem::size_of::<usize>() || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes.iter().try_fold(0usize, |acc, b| {
            acc.checked_mul(256)?.checked_add(usize::from(*b))
        })?;
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

/// The `notAfter` of an X.509 certificate (DER), in Unix seconds: Certificate ->
/// TBSCertificate -> [version] serialNumber signature issuer validity -> notAfter, a UTCTime
/// (`YYMMDDHHMMSSZ`, years 1950-2049) or a GeneralizedTime (`YYYYMMDDHHMMSSZ`), as RFC 5280
/// §4.1.2.5 prescribes. `None` for anything else.
fn not_after(der: &[u8]) -> Option<i64> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0;
    const INTEGER: u8 = 0x02;
    const UTC_TIME: u8 = 0x17;
    const GENERALIZED_TIME: u8 = 0x18;
    fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
        let (t, contents, rest) = der_element(input)?;
        (t == tag).then_some((contents, rest))
    }
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let tbs = match expect(tbs, VERSION) {
        Some((_, rest)) => rest,
        None => tbs,
    };
    let (_serial, rest) = expect(tbs, INTEGER)?;
    let (_signature, rest) = expect(rest, SEQUENCE)?;
    let (_issuer, rest) = expect(rest, SEQUENCE)?;
    let (validity, _) = expect(rest, SEQUENCE)?;
    let (_, _not_before, rest) = der_element(validity)?;
    let (tag, time, _) = der_element(rest)?;
    let time = std::str::from_utf8(time).ok()?;
    let digits = time.strip_suffix('Z')?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (year, rest) = match (tag, digits.len()) {
        (UTC_TIME, 12) => {
            let yy: i32 = digits[..2].parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (GENERALIZED_TIME, 14) => (digits[..4].parse().ok()?, &digits[4..]),
        _ => return None,
    };
    let part = |i: usize| rest[i..i + 2].parse::<u32>().ok();
    let at = chrono::NaiveDate::from_ymd_opt(year, part(0)?, part(2)?)?.and_hms_opt(
        part(4)?,
        part(6)?,
        part(8)?,
    )?;
    Some(at.and_utc().timestamp())
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(
        &self,
        _hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        let mut served = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if served.checked.elapsed() >= RELOAD_CHECK {
            served.checked = std::time::Instant::now();
            let now = stamps(&self.cert_path, &self.key_path);
            if now.is_some() && now != served.stamp {
                match certified_key(&self.cert_path, &self.key_path, &self.prefix) {
                    Ok(key) => {
                        served.key = key;
                        served.stamp = now;
                        tracing::info!(cert = %self.cert_path.display(), "TLS certificate reloaded");
                    }
                    // Perhaps half-written: tried again at the next check.
                    Err(e) => {
                        tracing::warn!(error = %e, "TLS certificate not reloaded; serving the previous one")
                    }
                }
            }
        }
        Some(served.key.clone())
    }
}

/// `client_tls`: how this process connects to `https://` URLs and TLS instances.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTlsConfig {
    /// PEM CA certificates trusted besides the operating system's roots.
    pub ca_path: PathBuf,
    /// PEM certificate chain presented when a server asks for one (mutual TLS).
    pub cert_path: PathBuf,
    /// Its PEM private key.
    pub key_path: PathBuf,
}

impl ClientTlsConfig {
    /// The settings fit together (files are read by [`ClientTls::load`]).
    pub fn check(&self, prefix: &str) -> Result<(), ConfigError> {
        match (set(&self.cert_path), set(&self.key_path)) {
            (true, false) => Err(ConfigError::new(
                format!("{prefix}.key_path"),
                "must be set when cert_path is",
            )),
            (false, true) => Err(ConfigError::new(
                format!("{prefix}.cert_path"),
                "must be set when key_path is",
            )),
            _ => Ok(()),
        }
    }
}

/// The ALPN protocols a client connection offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// gRPC: `h2` only.
    H2,
    /// HTTP/1.1 clients (reqwest as built here, the gateway's upstream clients).
    Http1,
}

/// Outbound TLS: the roots trusted and the certificate presented, as client configurations
/// per ALPN. Cheap to clone.
#[derive(Clone)]
pub struct ClientTls {
    h2: Arc<ClientConfig>,
    http1: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

/// The operating system's roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` are honoured), read once.
fn system_roots() -> RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                tracing::warn!(error = %e, "reading the system's CA certificates");
            }
            let mut roots = RootCertStore::empty();
            let (_, ignored) = roots.add_parsable_certificates(found.certs);
            if ignored > 0 {
                tracing::debug!(ignored, "system CA certificates rustls cannot use");
            }
            roots
        })
        .clone()
}

impl ClientTls {
    /// The system's roots only, no client certificate.
    pub fn system() -> Self {
        Self::build(system_roots(), None).expect("a client configuration without a certificate")
    }

    /// From `client_tls` (`prefix` names the section in errors).
    pub fn load(cfg: &ClientTlsConfig, prefix: &str) -> Result<Self, ConfigError> {
        cfg.check(prefix)?;
        let mut roots = system_roots();
        if set(&cfg.ca_path) {
            let name = format!("{prefix}.ca_path");
            for cert in read_certs(&cfg.ca_path, &name)? {
                roots
                    .add(cert)
                    .map_err(|e| ConfigError::new(&name, format!("not a usable CA: {e}")))?;
            }
        }
        let identity = if set(&cfg.cert_path) {
            Some((
                read_certs(&cfg.cert_path, &format!("{prefix}.cert_path"))?,
                read_key(&cfg.key_path, &format!("{prefix}.key_path"))?,
            ))
        } else {
            None
        };
        let chain = identity.as_ref().map(|(certs, _)| certs.clone());
        let tls = Self::build(roots, identity).map_err(|e| {
            ConfigError::new(
                format!("{prefix}.key_path"),
                format!("does not fit the certificate in cert_path: {e}"),
            )
        })?;
        if let Some(chain) = chain {
            record_expiry("client", &chain);
        }
        Ok(tls)
    }

    fn build(
        roots: RootCertStore,
        identity: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Self, rustls::Error> {
        let roots = Arc::new(roots);
        let make = |alpn: &[&[u8]]| -> Result<Arc<ClientConfig>, rustls::Error> {
            let builder = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots.clone());
            let mut config = match &identity {
                Some((certs, key)) => {
                    builder.with_client_auth_cert(certs.clone(), key.clone_key())?
                }
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
            Ok(Arc::new(config))
        };
        Ok(Self {
            h2: make(&[b"h2"])?,
            http1: make(&[b"http/1.1"])?,
        })
    }

    /// The rustls configuration offering `alpn`.
    pub fn config(&self, alpn: Alpn) -> Arc<ClientConfig> {
        match alpn {
            Alpn::H2 => self.h2.clone(),
            Alpn::Http1 => self.http1.clone(),
        }
    }

    /// A reqwest client builder using this TLS (HTTP/1.1 over TLS).
    pub fn http_client_builder(&self) -> reqwest::ClientBuilder {
        install_provider();
        #[allow(
            clippy::disallowed_methods,
            reason = "the one place that makes reqwest builders"
        )]
        let builder = reqwest::Client::builder();
        builder.tls_backend_preconfigured((*self.http1).clone())
    }

    /// Opens a TCP connection to `host:port` and a TLS session over it, checking the
    /// server's certificate against `host` (a DNS name or an IP address).
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        alpn: Alpn,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let name = server_name(host)?;
        let tcp =
            TcpStream::connect((host.trim_start_matches('[').trim_end_matches(']'), port)).await?;
        tcp.set_nodelay(true)?;
        TlsConnector::from(self.config(alpn))
            .connect(name, tcp)
            .await
    }

    /// A connector for hyper and tonic (`Endpoint::connect_with_connector_lazy`): plaintext
    /// TCP for `http://` URIs, TLS offering `alpn` for `https://` ones (port 443 when the
    /// URI has none).
    pub fn connector(&self, alpn: Alpn) -> Connector {
        Connector {
            tls: self.clone(),
            alpn,
            connect_timeout: None,
        }
    }
}

/// `host` as the name a server certificate must carry.
fn server_name(host: &str) -> io::Result<ServerName<'static>> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{host} is not a valid TLS server name: {e}"),
        )
    })
}

/// A client connection: plaintext TCP or TLS over TCP.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Stream {
    /// The TCP connection underneath (readiness, socket options).
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(t) => t,
            Stream::Tls(t) => t.get_ref().0,
        }
    }

    /// Whether this is a TLS connection.
    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Connects to `host:port`, in TLS with `tls`, within `timeout` when given.
    pub async fn connect(
        host: &str,
        port: u16,
        tls: Option<(&ClientTls, Alpn)>,
        timeout: Option<Duration>,
    ) -> io::Result<Self> {
        let connect = async {
            match tls {
                Some((tls, alpn)) => {
                    Ok(Stream::Tls(Box::new(tls.connect(host, port, alpn).await?)))
                }
                None => {
                    let tcp = TcpStream::connect((
                        host.trim_start_matches('[').trim_end_matches(']'),
                        port,
                    ))
                    .await?;
                    tcp.set_nodelay(true)?;
                    Ok(Stream::Plain(tcp))
                }
            }
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, connect).await.unwrap_or_else(|_| {
                Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
            }),
            None => connect.await,
        }
    }
}

impl tokio::io::AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(t) => Pin::new(t).poll_read(cx, buf),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(t) => Pin::new(t).poll_write(cx, buf),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(t) => Pin::new(t).poll_write_vectored(cx, bufs),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(t) => t.is_write_vectored(),
            Stream::Tls(t) => t.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(t) => Pin::new(t).poll_flush(cx),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(t) => Pin::new(t).poll_shutdown(cx),
            Stream::Tls(t) => Pin::new(t.as_mut()).poll_shutdown(cx),
        }
    }
}

impl hyper_util::client::legacy::connect::Connection for Stream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        let connected = self.tcp().connected();
        match self {
            Stream::Tls(t) if t.get_ref().1.alpn_protocol() == Some(b"h2") => {
                connected.negotiated_h2()
            }
            _ => connected,
        }
    }
}

/// See [`ClientTls::connector`].
#[derive(Clone, Debug)]
pub struct Connector {
    tls: ClientTls,
    alpn: Alpn,
    connect_timeout: Option<Duration>,
}

impl Connector {
    /// Gives up connecting (TCP and TLS handshake) after `timeout`.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }
}

type ConnectFuture =
    Pin<Box<dyn Future<Output = io::Result<hyper_util::rt::TokioIo<Stream>>> + Send>>;

impl tower::Service<http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<Stream>;
    type Error = io::Error;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (tls, alpn, timeout) = (self.tls.clone(), self.alpn, self.connect_timeout);
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, format!("{uri} has no host"))
            })?;
            let https = match uri.scheme_str() {
                Some("https") => true,
                Some("http") => false,
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{uri}: the scheme must be http or https"),
                    ));
                }
            };
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let stream =
                Stream::connect(host, port, https.then_some((&tls, alpn)), timeout).await?;
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}

/// Whether an error chain holds a TLS failure (a certificate refused by either side, a
/// handshake or protocol error): the instance cannot be used as configured. tokio-rustls
/// reports rustls errors as `io::Error`s of kind `InvalidData` carrying the message
/// ("received fatal alert: CertificateRequired"); a byte stream of ours fails that way only
/// in TLS.
pub fn is_tls_failure(mut e: Option<&(dyn std::error::Error + 'static)>) -> bool {
    while let Some(err) = e {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<io::Error>()
            && (io.kind() == io::ErrorKind::InvalidData
                || io
                    .get_ref()
                    .is_some_and(|inner| inner.is::<rustls::Error>()))
        {
            return true;
        }
        e = err.source();
    }
    false
}

fn outbound() -> &'static RwLock<Option<ClientTls>> {
    static OUTBOUND: RwLock<Option<ClientTls>> = RwLock::new(None);
    &OUTBOUND
}

/// This process's outbound TLS: what [`set_client`] set, else the system's roots only.
pub fn client() -> ClientTls {
    install_provider();
    if let Some(tls) = outbound()
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
    {
        return tls.clone();
    }
    let mut slot = outbound().write().unwrap_or_else(|p| p.into_inner());
    slot.get_or_insert_with(ClientTls::system).clone()
}

/// Sets this process's outbound TLS (the runtime does, from `client_tls`, before anything
/// connects). Clients made afterwards use it; clients made before keep what they had.
pub fn set_client(tls: ClientTls) {
    install_provider();
    *outbound().write().unwrap_or_else(|p| p.into_inner()) = Some(tls);
}

fn read_file(path: &Path, key: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))
}

fn read_certs(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let pem = read_file(path, key)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(key, format!("{}: not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

fn read_key(path: &Path, key: &str) -> Result<PrivateKeyDer<'static>, ConfigError> {
    let pem = read_file(path, key)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        ConfigError::new(
            key,
            format!("{}: no usable PEM private key: {e}", path.display()),
        )
    })
}

/// A listener that hands out connections after their TLS handshake. Handshakes run as tasks
/// of their own (at most [`HANDSHAKE_TIMEOUT`] each), so a slow or hostile client never
/// holds up the accept loop; failed handshakes (a client without an acceptable certificate
/// under mutual TLS, plaintext on the TLS port) are logged at debug and dropped.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        Self {
            tcp,
            acceptor: TlsAcceptor::from(config),
            handshakes: JoinSet::new(),
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        // Small gRPC/HTTP answers must not wait for the peer's delayed ACK.
                        let _ = tcp.set_nodelay(true);
                        let acceptor = self.acceptor.clone();
                        self.handshakes.spawn(async move {
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                Ok(Ok(tls)) => Some((tls, peer)),
                                Ok(Err(e)) => {
                                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                    None
                                }
                                Err(_) => {
                                    tracing::debug!(%peer, "TLS handshake timed out");
                                    None
                                }
                            }
                        });
                    }
                    Err(e) => accept_error(e).await,
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// As axum's own listener: a connection that failed before it was accepted is no error of
/// ours; anything else (out of file descriptors) is logged and waited out.
async fn accept_error(e: io::Error) {
    if matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept error");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

// The test CA: `testing`'s when that feature is on (a dependent's tests turned it on), else
// the same file here (one module per file, or clippy's duplicate_mod objects).
#[cfg(all(test, not(feature = "testing")))]
#[path = "test_ca.rs"]
mod test_ca;
#[cfg(all(test, feature = "testing"))]
use crate::testing as test_ca;

#[cfg(test)]
mod tests {
    use super::*;
    use test_ca::TestCa;

    fn unix(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        chrono::NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, s)
            .unwrap()
            .and_utc()
            .timestamp()
    }

    fn self_signed(adjust: impl FnOnce(&mut rcgen::CertificateParams)) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_owned()]).unwrap();
        adjust(&mut params);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    /// The value of `name{kind="..."}` in the rendered metrics.
    fn gauge(name: &str, kind: &str) -> Option<f64> {
        let text = crate::metrics::render(&[]);
        let prefix = format!("{name}{{kind=\"{kind}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(|v| v.trim().parse().expect("a number"))
    }

    #[test]
    fn not_after_reads_utc_and_generalized_time() {
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050, as RFC 5280 says.
        let utc = self_signed(|p| {
            p.not_after = rcgen::date_time_ymd(2031, 7, 9) + Duration::from_secs(3600 + 61);
        });
        assert_eq!(not_after(&utc), Some(unix(2031, 7, 9, 1, 1, 1)));
        let generalized = self_signed(|p| p.not_after = rcgen::date_time_ymd(2150, 2, 28));
        assert_eq!(not_after(&generalized), Some(unix(2150, 2, 28, 0, 0, 0)));
        assert_eq!(not_after(b""), None);
        assert_eq!(not_after(&utc[..utc.len() / 3]), None, "truncated");
        assert_eq!(not_after(&[0x30, 0x03, 0x02, 0x01, 0x00]), None);
    }

    #[test]
    fn loading_certificates_sets_their_expiry_gauges() {
        assert!(crate::metrics::handle().is_some(), "the recorder installed");
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new(dir.path(), "expiry");
        let server = ca.server("server", &["localhost"]);
        let client = ca.client("client", "svc");
        // rcgen's default notAfter: 4096-01-01 (a GeneralizedTime).
        let expected = unix(4096, 1, 1, 0, 0, 0) as f64;

        ServerTlsConfig {
            cert_path: server.cert,
            key_path: server.key,
            client_ca_path: PathBuf::new(),
        }
        .load("server.tls")
        .unwrap()
        .expect("TLS enabled");
        assert_eq!(
            gauge("tls_certificate_expiry_timestamp_seconds", "server"),
            Some(expected)
        );

        ClientTls::load(
            &ClientTlsConfig {
                ca_path: ca.ca_file(),
                cert_path: client.cert,
                key_path: client.key,
            },
            "client_tls",
        )
        .unwrap();
        assert_eq!(
            gauge("tls_certificate_expiry_timestamp_seconds", "client"),
            Some(expected)
        );
    }
}
