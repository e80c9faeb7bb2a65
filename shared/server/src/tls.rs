//! TLS between services: a server certificate read from PEM files and read
//! again when they change (no restart to rotate it), and the CA bundle a
//! service checks its peers' certificates against.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::server::TlsStream;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// Something read from files and read again when they change (a
/// certificate and its key, a CA bundle): each use takes what was read last.
#[derive(Debug)]
struct Reloading<T> {
    files: Vec<PathBuf>,
    /// What the log lines call it.
    what: &'static str,
    read: fn(&[PathBuf]) -> Result<Arc<T>, TlsError>,
    /// What was read last, and when each file had last changed then.
    current: RwLock<(Arc<T>, Vec<Option<SystemTime>>)>,
}

/// When each file last changed (`None`: unreadable).
fn modified(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

impl<T> Reloading<T> {
    fn load(
        files: Vec<PathBuf>,
        what: &'static str,
        read: fn(&[PathBuf]) -> Result<Arc<T>, TlsError>,
    ) -> Result<Self, TlsError> {
        let stamps = modified(&files);
        let value = read(&files)?;
        Ok(Self {
            files,
            what,
            read,
            current: RwLock::new((value, stamps)),
        })
    }

    /// What was read last.
    fn current(&self) -> Arc<T> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .0
            .clone()
    }

    /// Reads the files again if they changed since last read; what does not
    /// load (half written, a certificate renewed without its key) is logged
    /// and what was in use stays. Whether something new is in use.
    fn reload_if_changed(&self) -> bool {
        let now = modified(&self.files);
        let changed = *self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            != now;
        if !changed {
            return false;
        }
        match (self.read)(&self.files) {
            Ok(value) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = (value, now);
                tracing::info!(file = %self.files[0].display(), "{} reloaded", self.what);
                true
            }
            Err(err) => {
                tracing::error!(%err, "the changed {} does not load: the previous one stays in use", self.what);
                false
            }
        }
    }
}

/// A certificate chain and its key (PEM files `[cert, key]`), read again
/// when they change.
fn pem_pair(
    cert: &Path,
    key: &Path,
    what: &'static str,
) -> Result<Reloading<CertifiedKey>, TlsError> {
    Reloading::load(vec![cert.to_owned(), key.to_owned()], what, |files| {
        read_pair(&files[0], &files[1])
    })
}

/// A server's certificate chain and key, from PEM files; the handshake of
/// each new connection uses the pair read last. With a client CA, clients
/// may present certificates (mutual TLS), checked against it; the guard then
/// binds service tokens to them.
#[derive(Debug)]
pub struct ServerTls {
    pair: Reloading<CertifiedKey>,
    client_ca: Option<Arc<Reloading<ClientsOnly>>>,
}

impl ServerTls {
    /// Reads the chain in `cert` and the key in `key` (PEM).
    ///
    /// # Errors
    /// [`TlsError`] when either is missing, unreadable or not usable.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        Self::read(cert, key, None)
    }

    /// As [`ServerTls::load`], taking client certificates signed by the CAs
    /// in `client_ca` (PEM): a client may connect without one (users), but
    /// one it presents must check out, and service tokens must come with
    /// one naming their service ([`ServerTls::binds_service_certificates`]).
    ///
    /// # Errors
    /// As [`ServerTls::load`], and when `client_ca` holds no usable CA.
    pub fn load_with_client_ca(
        cert: &Path,
        key: &Path,
        client_ca: &Path,
    ) -> Result<Arc<Self>, TlsError> {
        let ca = Reloading::load(vec![client_ca.to_owned()], "TLS client CA", |files| {
            ClientsOnly::read(&files[0]).map(Arc::new)
        })?;
        Self::read(cert, key, Some(Arc::new(ca)))
    }

    fn read(
        cert: &Path,
        key: &Path,
        client_ca: Option<Arc<Reloading<ClientsOnly>>>,
    ) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            pair: pem_pair(cert, key, "TLS certificate")?,
            client_ca,
        }))
    }

    /// Whether service tokens must come with their service's client
    /// certificate (a client CA was given).
    #[must_use]
    pub const fn binds_service_certificates(&self) -> bool {
        self.client_ca.is_some()
    }

    /// Reads the files again if they changed since last read: the pair, and
    /// the client CA if there is one. A file that does not load (half
    /// written) is logged and what was in use stays. Returns whether
    /// anything new is in use.
    pub fn reload_if_changed(&self) -> bool {
        let ca = self
            .client_ca
            .as_ref()
            .is_some_and(|ca| ca.reload_if_changed());
        self.pair.reload_if_changed() || ca
    }

    /// Every `every` until `shutdown`: [`ServerTls::reload_if_changed`].
    pub async fn follow_files(
        self: Arc<Self>,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            self.reload_if_changed();
        }
    }

    /// A rustls server configuration resolving to the current pair, HTTP/2 only.
    ///
    /// # Errors
    /// [`TlsError::Config`] when rustls refuses it.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let clients = match &self.client_ca {
            Some(ca) => versions.with_client_cert_verifier(ca.clone()),
            None => versions.with_no_client_auth(),
        };
        let mut config = clients.with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for ServerTls {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pair.current())
    }
}

/// The client CA of mutual TLS, read again when its file changes (a CA
/// rotation needs no restart): each handshake checks the client's
/// certificate with the CA read last.
impl rustls::server::danger::ClientCertVerifier for Reloading<ClientsOnly> {
    fn offer_client_auth(&self) -> bool {
        self.current().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        // No hints (they would borrow from a CA that may be replaced): a
        // client then sends the certificate it has, which is what ours do.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

/// The extended key usage `id-kp-clientAuth` (1.3.6.1.5.5.7.3.2), DER.
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// Client certificates as webpki checks them (chained to the client CA,
/// valid now), and issued for clients: their extended key usage must name
/// clientAuth. rustls alone takes one that names no usage at all, so a
/// server certificate from the same CA (an ingress's, named `auth`) would
/// pass as Auth's client identity.
#[derive(Debug)]
struct ClientsOnly {
    inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
    anchors: Vec<rustls::pki_types::TrustAnchor<'static>>,
    algorithms: &'static [&'static dyn rustls::pki_types::SignatureVerificationAlgorithm],
}

impl ClientsOnly {
    /// The verifier of client certificates signed by the CAs in `path` (PEM).
    fn read(path: &Path) -> Result<Self, TlsError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(path).map_err(|e| file_error(path, e))? {
            roots
                .add(ca.map_err(|e| file_error(path, e))?)
                .map_err(|e| file_error(path, e))?;
        }
        if roots.is_empty() {
            return Err(file_error(path, "no certificate in it"));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let anchors = roots.roots.clone();
        Ok(Self {
            // Optional: users and probes connect without one.
            inner: rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider.clone(),
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?,
            anchors,
            algorithms: provider.signature_verification_algorithms.all,
        })
    }
}

impl rustls::server::danger::ClientCertVerifier for ClientsOnly {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let purpose =
            || rustls::Error::InvalidCertificate(rustls::CertificateError::InvalidPurpose);
        webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| purpose())?
            .verify_for_usage(
                self.algorithms,
                &self.anchors,
                intermediates,
                now,
                webpki::KeyUsage::required(EKU_CLIENT_AUTH),
                None,
                None,
            )
            .map_err(|_| purpose())?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn read_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, e))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no certificate in it"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e))?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&key_der).map_err(|e| file_error(key, e))?;
    let pair = CertifiedKey::new(chain, signing);
    // A certificate renewed before its key (or the other way round) is
    // refused, and the pair in use stays.
    pair.keys_match()
        .map_err(|e| file_error(cert, format!("does not match {}: {e}", key.display())))?;
    Ok(Arc::new(pair))
}

/// How long a client may take to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes in progress at most: past it, accepting waits (the backlog
/// holds the rest), so silent clients cannot pile up sockets and tasks.
const HANDSHAKES_AT_ONCE: usize = 256;

/// The TLS connections accepted on `listener`: each handshake runs in a task
/// of its own (a slow or silent client holds up no other) and fails alone.
/// Accepting stops when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
) -> tokio_stream::wrappers::ReceiverStream<Result<TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_AT_ONCE));
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = async {
                    let permit = handshakes.clone().acquire_owned().await;
                    (listener.accept().await, permit)
                } => accepted,
                () = tx.closed() => return,
            };
            let (tcp, peer, permit) = match accepted {
                (Ok((tcp, peer)), Ok(permit)) => (tcp, peer, permit),
                (Err(err), _) => {
                    // Out of descriptors, say: wait rather than spin.
                    tracing::warn!(%err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                (Ok(_), Err(_)) => return,
            };
            // See `serve`: no Nagle delay on responses.
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(err)) => tracing::debug!(%err, %peer, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// What a service trusts its peers' certificates by: a CA bundle (PEM); and,
/// for mutual TLS, the client certificate it presents to them.
#[derive(Debug, Clone)]
pub struct PeerTls {
    /// The CA bundle as PEM, for tonic's own TLS ([`PeerTls::client_config`]).
    ca: tonic::transport::Certificate,
    roots: Arc<rustls::RootCertStore>,
    identity: Option<Arc<ClientIdentity>>,
}

impl PeerTls {
    /// The CA bundle in `path`.
    ///
    /// # Errors
    /// [`TlsError::File`] when it cannot be read or holds no certificate.
    pub fn load(path: &Path) -> Result<Self, TlsError> {
        let pem = std::fs::read(path).map_err(|e| file_error(path, e))?;
        Self::from_pem(pem).map_err(|e| file_error(path, e))
    }

    /// A CA bundle given as PEM text.
    ///
    /// # Errors
    /// When it holds no usable certificate.
    pub fn from_pem(pem: impl AsRef<[u8]>) -> Result<Self, TlsError> {
        let pem = pem.as_ref();
        let mut roots = rustls::RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(pem) {
            roots
                .add(ca.map_err(|e| TlsError::Config(e.to_string()))?)
                .map_err(|e| TlsError::Config(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(TlsError::Config("no certificate in the CA bundle".into()));
        }
        Ok(Self {
            ca: tonic::transport::Certificate::from_pem(pem),
            roots: Arc::new(roots),
            identity: None,
        })
    }

    /// Presents the certificate in `cert` with the key in `key` (PEM) to
    /// peers: mutual TLS, where a peer binds this service's token to it. The
    /// files are read again, when they changed, at each new connection: a
    /// renewed certificate needs no restart.
    ///
    /// # Errors
    /// [`TlsError::File`] when either cannot be read or they do not match.
    pub fn with_identity(mut self, cert: &Path, key: &Path) -> Result<Self, TlsError> {
        self.identity = Some(Arc::new(ClientIdentity::load(cert, key)?));
        Ok(self)
    }

    /// tonic's client TLS configuration for `host` (the identity as it is
    /// now: read once), for one-off clients such as tests and tools.
    #[must_use]
    pub fn client_config(&self, host: &str) -> tonic::transport::ClientTlsConfig {
        let config = tonic::transport::ClientTlsConfig::new()
            .ca_certificate(self.ca.clone())
            .domain_name(host);
        match &self.identity {
            Some(identity) => config.identity(identity.tonic_identity()),
            None => config,
        }
    }

    /// A connector for tonic's `Endpoint::connect_with_connector_lazy`: TCP,
    /// then TLS (HTTP/2) checked against the CA bundle and named by the
    /// host of the URI it is given, presenting the identity read last.
    ///
    /// # Errors
    /// [`TlsError::Config`] when rustls refuses the configuration.
    pub fn connector(&self) -> Result<PeerConnector, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            Some(identity) => builder.with_client_cert_resolver(identity.clone()),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(PeerConnector {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
        })
    }
}

/// A service's own client certificate (mutual TLS), from PEM files read
/// again, when they changed, at each new connection.
#[derive(Debug)]
struct ClientIdentity(Reloading<CertifiedKey>);

impl ClientIdentity {
    fn load(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        pem_pair(cert, key, "TLS client certificate").map(Self)
    }

    /// The identity as tonic takes it (PEM of the files as they are now).
    fn tonic_identity(&self) -> tonic::transport::Identity {
        let read = |p: &Path| std::fs::read(p).unwrap_or_default();
        tonic::transport::Identity::from_pem(read(&self.0.files[0]), read(&self.0.files[1]))
    }
}

impl rustls::client::ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.reload_if_changed();
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Connects to a peer over TLS: see [`PeerTls::connector`].
#[derive(Clone)]
pub struct PeerConnector {
    tls: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for PeerConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerConnector")
    }
}

impl tower_service::Service<http::Uri> for PeerConnector {
    type Response = hyper_util::rt::TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;
    type Error = std::io::Error;
    type Future = futures_util::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move {
            let invalid =
                |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, what.to_owned());
            let host = uri
                .host()
                .ok_or_else(|| invalid("no host in the peer's URL"))?;
            // An IPv6 literal comes bracketed in a URI.
            let host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(host)
                .map_err(|_| invalid("the peer's host is no valid TLS name"))?;
            let stream = tls.connect(name, tcp).await?;
            // gRPC or nothing: a server that did not choose HTTP/2 is not
            // ours (another service behind the same certificate, say), and
            // hears no request, service token included.
            if stream.get_ref().1.alpn_protocol() != Some(b"h2".as_slice()) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the peer did not negotiate HTTP/2 (ALPN h2)",
                ));
            }
            Ok(hyper_util::rt::TokioIo::new(stream))
        })
    }
}
