//! Tokens: access and service JWTs signed with the current key of the ring, and
//! opaque refresh tokens stored only as their SHA-256.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bulkhead_context::{ServiceIdentity, TenantUser};
use bulkhead_guard::token::{Claims, SigningKey, unix_now};
use chrono::{DateTime, Utc};
use sha2::Digest as _;

use crate::config::{AuthConfig, SharedKeys};
use crate::error::AuthError;

/// Signs Auth's tokens with the key of the ring that signs now.
#[derive(Clone)]
pub struct Signer {
    keys: SharedKeys,
    config: AuthConfig,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("kid", &self.signing_key().kid())
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// Signs with `keys`, as `config` says (issuer, audience, lifetimes).
    #[must_use]
    pub fn new(keys: SharedKeys, config: AuthConfig) -> Self {
        Self { keys, config }
    }

    /// The key to sign with now.
    fn signing_key(&self) -> Arc<SigningKey> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .signing_key(unix_now())
            .clone()
    }

    /// Every published key as JWKs: during a rotation, the next and the previous.
    #[must_use]
    pub fn public_jwks(&self) -> Vec<serde_json::Value> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .public_jwks()
    }

    /// An access token for `identity`, and when it expires.
    ///
    /// # Errors
    /// [`AuthError::Signing`] when signing fails.
    pub fn access(&self, identity: &TenantUser) -> Result<(String, DateTime<Utc>), AuthError> {
        let claims = Claims::access(
            &self.config.issuer,
            &self.config.audience,
            identity,
            self.config.access_ttl,
        );
        let token = self.sign(&claims)?;
        let expires = DateTime::from_timestamp(i64::try_from(claims.exp).unwrap_or(i64::MAX), 0)
            .unwrap_or_default();
        Ok((token, expires))
    }

    /// A service token for `identity`, and its `exp` (Unix seconds).
    ///
    /// # Errors
    /// [`AuthError::Signing`] when signing fails.
    pub fn service(&self, identity: &ServiceIdentity) -> Result<(String, u64), AuthError> {
        let claims = Claims::service(
            &self.config.issuer,
            &self.config.audience,
            identity,
            self.config.service_ttl,
        );
        Ok((self.sign(&claims)?, claims.exp))
    }

    fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        self.signing_key()
            .sign(claims)
            .map_err(|e| AuthError::Signing(e.to_string()))
    }
}

/// A new opaque refresh token (32 random bytes, base64url) and the hash stored.
#[must_use]
pub fn new_refresh_token() -> (String, Vec<u8>) {
    let mut bytes = [0_u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let hash = refresh_hash(&token);
    (token, hash)
}

/// What is stored of a refresh token: its SHA-256 (the token has 256 bits of
/// entropy, so a fast hash is enough).
#[must_use]
pub fn refresh_hash(token: &str) -> Vec<u8> {
    sha2::Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_tokens_are_random_and_stored_hashed() {
        let (a, a_hash) = new_refresh_token();
        let (b, _) = new_refresh_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes, base64url without padding");
        assert_eq!(a_hash, refresh_hash(&a));
        assert_ne!(a_hash, a.as_bytes());
    }
}
