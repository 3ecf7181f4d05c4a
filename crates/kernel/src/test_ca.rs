//! A certificate authority made for one test (rcgen, ring): server and client certificates
//! it signs, written as PEM files into a directory, as an operator would hand them over.

use std::path::{Path, PathBuf};

/// A CA and the directory its files are written to.
pub struct TestCa {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    dir: PathBuf,
    name: String,
}

/// A certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA called `name`, its certificate written to `<dir>/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA certificate");
        let ca = Self {
            issuer,
            dir: dir.to_path_buf(),
            name: name.to_owned(),
        };
        std::fs::write(ca.ca_file(), ca.issuer.pem()).expect("write the CA certificate");
        ca
    }

    /// The CA's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(format!("{}-ca.pem", self.name))
    }

    /// A server certificate for `names` (DNS names or IP addresses), as `<dir>/<file>.pem`
    /// and `<dir>/<file>-key.pem`.
    pub fn server(&self, file: &str, names: &[&str]) -> CertFiles {
        self.issue(
            file,
            names,
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            names.first().copied().unwrap_or("server"),
        )
    }

    /// A client certificate with common name `cn`.
    pub fn client(&self, file: &str, cn: &str) -> CertFiles {
        self.issue(file, &[], rcgen::ExtendedKeyUsagePurpose::ClientAuth, cn)
    }

    fn issue(
        &self,
        file: &str,
        names: &[&str],
        usage: rcgen::ExtendedKeyUsagePurpose,
        cn: &str,
    ) -> CertFiles {
        let mut params = rcgen::CertificateParams::new(
            names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>(),
        )
        .expect("certificate params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        params.extended_key_usages = vec![usage];
        params.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("certificate");
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}-key.pem")),
        };
        std::fs::write(&files.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&files.key, key.serialize_pem()).expect("write the key");
        files
    }
}
