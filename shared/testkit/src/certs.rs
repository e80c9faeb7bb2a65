//! Test certificates: a CA of the test's own and server certificates it
//! signs, written as PEM files the way an operator's would be.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};

/// A certificate authority for one test.
#[derive(Debug)]
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

/// A server certificate and its key, as PEM files.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    /// The certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl TestCa {
    /// A new CA named `name`, its files in a temporary folder.
    ///
    /// # Panics
    /// When a key or certificate cannot be made.
    #[must_use]
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let dir = tempfile::Builder::new()
            .prefix("bulkhead-tls")
            .tempdir()
            .expect("temp dir");
        std::fs::write(dir.path().join("ca.pem"), issuer.pem()).expect("ca.pem");
        Self { issuer, dir }
    }

    /// The CA's certificate (PEM file): what clients trust.
    #[must_use]
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The CA's certificate, PEM text.
    #[must_use]
    pub fn ca_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `localhost` and 127.0.0.1 signed by this CA,
    /// written to `name.pem` and `name.key` in this CA's folder (over any
    /// earlier ones: a rotation).
    ///
    /// # Panics
    /// When it cannot be made or written.
    #[must_use]
    pub fn server(&self, name: &str) -> ServerFiles {
        self.server_in(self.dir.path(), name)
    }

    /// As [`TestCa::server`], written in `dir`.
    ///
    /// # Panics
    /// When it cannot be made or written.
    #[must_use]
    pub fn server_in(&self, dir: &Path, name: &str) -> ServerFiles {
        let key = KeyPair::generate().expect("server key");
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("server parameters");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("server certificate");
        let files = ServerFiles {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        // The key first: a reader that sees the new certificate sees its key.
        std::fs::write(&files.key, key.serialize_pem()).expect("key");
        std::fs::write(&files.cert, cert.pem()).expect("certificate");
        files
    }

    /// A client certificate (mutual TLS) valid for the DNS names `names`
    /// (a service's name: `task`), signed by this CA, written to `name.pem`
    /// and `name.key` in this CA's folder.
    ///
    /// # Panics
    /// When it cannot be made or written.
    #[must_use]
    pub fn client(&self, name: &str, names: &[&str]) -> ServerFiles {
        self.signed(name, names, vec![ExtendedKeyUsagePurpose::ClientAuth])
    }

    /// As [`TestCa::client`], but naming no extended key usage at all (as a
    /// server certificate from a general-purpose CA may).
    ///
    /// # Panics
    /// When it cannot be made or written.
    #[must_use]
    pub fn unmarked(&self, name: &str, names: &[&str]) -> ServerFiles {
        self.signed(name, names, Vec::new())
    }

    fn signed(
        &self,
        name: &str,
        names: &[&str],
        usages: Vec<ExtendedKeyUsagePurpose>,
    ) -> ServerFiles {
        let key = KeyPair::generate().expect("client key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("client parameters");
        params.extended_key_usages = usages;
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("client certificate");
        let files = ServerFiles {
            cert: self.dir.path().join(format!("{name}.pem")),
            key: self.dir.path().join(format!("{name}.key")),
        };
        std::fs::write(&files.key, key.serialize_pem()).expect("key");
        std::fs::write(&files.cert, cert.pem()).expect("certificate");
        files
    }
}
