//! The client certificate of a request's connection (mutual TLS).

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// On a request's extensions when its server binds service identities to
/// client certificates (`GuardLayer::binding_service_certificates`).
#[derive(Debug, Clone, Copy)]
pub struct ServiceCertificatesBound;

/// Whether the connection of the request with these `extensions` presented a
/// client certificate valid for the DNS name `name` (its chain was checked
/// against the server's client CA during the handshake; a plaintext
/// connection has none).
pub fn presented_certificate_for(extensions: &http::Extensions, name: &str) -> bool {
    let Some(info) = extensions.get::<TlsConnectInfo<TcpConnectInfo>>() else {
        return false;
    };
    let Some(chain) = info.peer_certs() else {
        return false;
    };
    chain
        .first()
        .is_some_and(|leaf| certificate_valid_for(leaf, name))
}

/// Whether the certificate `der` is valid for the DNS name `name` (its
/// subject alternative names; never its common name, never an IP address).
#[must_use]
pub fn certificate_valid_for(der: &rustls_pki_types::CertificateDer<'_>, name: &str) -> bool {
    let Ok(name) = rustls_pki_types::DnsName::try_from(name) else {
        return false;
    };
    let name = rustls_pki_types::ServerName::DnsName(name);
    webpki::EndEntityCert::try_from(der)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
}
