//! The client certificate of a request's connection (mutual TLS).

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

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
    let Some(leaf) = chain.first() else {
        return false;
    };
    let Ok(name) = rustls_pki_types::ServerName::try_from(name) else {
        return false;
    };
    webpki::EndEntityCert::try_from(leaf)
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
}
