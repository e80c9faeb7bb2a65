//! Auth's signing key kept in a file (the "files" option of ARCHITECTURE §2), and
//! the verifier every service builds from its public half.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

use bulkhead_guard::token::SigningKey;
use bulkhead_guard::{TokenVerifier, VerifierConfig};

/// Loads the PKCS#8 PEM key at `path`, creating it (mode 0600) when missing.
///
/// # Errors
/// When the file cannot be read, written or parsed.
pub fn load_or_create(path: &Path) -> anyhow::Result<SigningKey> {
    if path.exists() {
        let pem = fs::read_to_string(path)?;
        return Ok(SigningKey::from_pkcs8_pem(&pem)?);
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let key = SigningKey::generate();
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(key.to_pkcs8_pem().as_bytes())?;
    Ok(key)
}

/// Loads an existing key.
///
/// # Errors
/// When the file is missing or is not a PKCS#8 Ed25519 key.
pub fn load(path: &Path) -> anyhow::Result<SigningKey> {
    let pem = fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading signing key {}: {e}", path.display()))?;
    Ok(SigningKey::from_pkcs8_pem(&pem)?)
}

/// A verifier trusting `key`'s public half.
#[must_use]
pub fn verifier_for(key: &SigningKey, config: VerifierConfig) -> Arc<TokenVerifier> {
    Arc::new(TokenVerifier::new(config, &key.jwk_set()))
}

/// A verifier trusting the JWK set in the JSON file at `path`.
///
/// # Errors
/// When the file is missing or not a JWK set.
pub fn verifier_from_jwks_file(
    path: &Path,
    config: VerifierConfig,
) -> anyhow::Result<Arc<TokenVerifier>> {
    let text = fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("reading JWK set {}: {e}", path.display()))?;
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text)?;
    Ok(Arc::new(TokenVerifier::new(config, &jwks)))
}
