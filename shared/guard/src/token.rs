//! The token format (ARCHITECTURE.md §2), in one place for both ends: Auth signs
//! with [`SigningKey`], every service verifies with [`crate::TokenVerifier`].
//!
//! Tokens are JWTs signed with Ed25519 (`alg: EdDSA`) and carry a `kid`. Access
//! tokens (`token_use: access`) name a user in one tenant; service tokens
//! (`token_use: service`) name a service. Neither carries a membership list.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bulkhead_context::{PlatformRole, ServiceIdentity, TenantRole, TenantUser};
use ed25519_dalek::pkcs8::{EncodePrivateKey, spki::der::pem::LineEnding};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenUse {
    /// A user's access token (`authorization`).
    Access,
    /// A service's token (`x-service-authorization`).
    Service,
}

/// The claims of every Bulkhead token. Kind-specific claims are optional here and
/// required by [`Claims::into_verified`] according to `token_use`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// Subject: the user id, or `service:<name>`.
    pub sub: String,
    /// Issued at (seconds since the epoch).
    pub iat: u64,
    /// Not before.
    pub nbf: u64,
    /// Expires at.
    pub exp: u64,
    /// Token id.
    pub jti: String,
    /// What the token is for.
    pub token_use: TokenUse,
    /// Session id (access tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Active tenant id (access tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tid: Option<String>,
    /// Active tenant slug (access tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tslug: Option<String>,
    /// Tenant role (access tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trole: Option<TenantRole>,
    /// Platform role (access tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prole: Option<PlatformRole>,
    /// Service name (service tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub svc: Option<String>,
    /// Space-separated scopes (service tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// A verified token's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// From an access token.
    User(TenantUser),
    /// From a service token.
    Service(ServiceIdentity),
}

impl Claims {
    /// Claims for a user's access token, valid from now for `ttl`.
    #[must_use]
    pub fn access(issuer: &str, audience: &str, user: &TenantUser, ttl: Duration) -> Self {
        let now = unix_now();
        Self {
            iss: issuer.to_owned(),
            aud: audience.to_owned(),
            sub: user.user_id.to_string(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
            jti: uuid::Uuid::now_v7().to_string(),
            token_use: TokenUse::Access,
            sid: Some(user.session_id.to_string()),
            tid: Some(user.tenant_id.to_string()),
            tslug: Some(user.tenant_slug.clone()),
            trole: Some(user.tenant_role),
            prole: Some(user.platform_role),
            svc: None,
            scope: None,
        }
    }

    /// Claims for a service's token, valid from now for `ttl`.
    #[must_use]
    pub fn service(issuer: &str, audience: &str, service: &ServiceIdentity, ttl: Duration) -> Self {
        let now = unix_now();
        Self {
            iss: issuer.to_owned(),
            aud: audience.to_owned(),
            sub: format!("service:{}", service.name),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs(),
            jti: uuid::Uuid::now_v7().to_string(),
            token_use: TokenUse::Service,
            sid: None,
            tid: None,
            tslug: None,
            trole: None,
            prole: None,
            svc: Some(service.name.clone()),
            scope: Some(service.scopes.join(" ")),
        }
    }

    /// The identity these (signature-checked) claims state, if they are complete
    /// and well-formed for their `token_use`.
    #[must_use]
    pub fn into_verified(self) -> Option<Identity> {
        match self.token_use {
            TokenUse::Access => Some(Identity::User(TenantUser {
                user_id: self.sub.parse().ok()?,
                session_id: self.sid?.parse().ok()?,
                tenant_id: self.tid?.parse().ok()?,
                tenant_slug: self.tslug?,
                tenant_role: self.trole?,
                platform_role: self.prole?,
            })),
            TokenUse::Service => {
                let name = self.svc?;
                (self.sub == format!("service:{name}")).then(|| {
                    Identity::Service(ServiceIdentity {
                        name,
                        scopes: self
                            .scope
                            .unwrap_or_default()
                            .split_whitespace()
                            .map(str::to_owned)
                            .collect(),
                    })
                })
            }
        }
    }
}

/// Seconds since the Unix epoch.
#[must_use]
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An Ed25519 signing key with its `kid`.
pub struct SigningKey {
    kid: String,
    key: ed25519_dalek::SigningKey,
    encoding: EncodingKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key material.
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish()
    }
}

/// A signing key could not be loaded or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The PEM text is not a PKCS#8 Ed25519 private key.
    #[error("not a PKCS#8 Ed25519 private key")]
    BadPem,
    /// Signing failed.
    #[error("signing failed: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

impl SigningKey {
    /// A new random key; its `kid` is derived from the public key.
    ///
    /// # Panics
    /// Never in practice: encoding a fresh key cannot fail.
    #[must_use]
    pub fn generate() -> Self {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        Self::from_dalek(key).expect("a fresh key encodes")
    }

    /// Loads a PKCS#8 PEM private key.
    ///
    /// # Errors
    /// [`KeyError::BadPem`] when the text is not such a key.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey;
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(pem).map_err(|_| KeyError::BadPem)?;
        Self::from_dalek(key)
    }

    fn from_dalek(key: ed25519_dalek::SigningKey) -> Result<Self, KeyError> {
        let der = key.to_pkcs8_der().map_err(|_| KeyError::BadPem)?;
        let encoding = EncodingKey::from_ed_der(der.as_bytes());
        let public = key.verifying_key().to_bytes();
        let kid = URL_SAFE_NO_PAD.encode(&sha2_digest(&public)[..12]);
        Ok(Self { kid, key, encoding })
    }

    /// The PKCS#8 PEM of the private key, to store it.
    ///
    /// # Panics
    /// Never in practice: encoding a valid key cannot fail.
    #[must_use]
    pub fn to_pkcs8_pem(&self) -> String {
        self.key
            .to_pkcs8_pem(LineEnding::LF)
            .expect("a valid key encodes")
            .to_string()
    }

    /// The key id.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as an RFC 7517 JWK (`kty: OKP`, `crv: Ed25519`).
    #[must_use]
    pub fn public_jwk(&self) -> serde_json::Value {
        serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.key.verifying_key().to_bytes()),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        })
    }

    /// A JWK set holding this key's public half.
    ///
    /// # Panics
    /// Never in practice: the JWK built above is valid.
    #[must_use]
    pub fn jwk_set(&self) -> JwkSet {
        serde_json::from_value(serde_json::json!({ "keys": [self.public_jwk()] }))
            .expect("a valid JWK set")
    }

    /// Signs `claims`.
    ///
    /// # Errors
    /// [`KeyError::Sign`] when encoding fails.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        self.sign_payload(claims)
    }

    /// Signs any JSON payload as a compact JWS (EdDSA, this key's `kid`): what
    /// Audit's checkpoints are.
    ///
    /// # Errors
    /// [`KeyError::Sign`] when encoding fails.
    pub fn sign_payload<T: serde::Serialize>(&self, payload: &T) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, payload, &self.encoding)?)
    }
}

fn sha2_digest(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// Auth's signing keys over time: several may be published at once so that keys
/// rotate without downtime. A new key is published at once but signs only after
/// `grace` (longer than the verifiers' key-set refresh), so every verifier knows it
/// before it meets a token signed with it; older keys stay published, and keep
/// verifying their tokens, until they are removed.
#[derive(Debug)]
pub struct KeyRing {
    /// (created at, key), oldest first.
    keys: Vec<(u64, Arc<SigningKey>)>,
    grace: Duration,
}

impl KeyRing {
    /// A ring of `keys` (each with its creation time, seconds since the epoch).
    ///
    /// # Panics
    /// When `keys` is empty: Auth cannot run without a key.
    #[must_use]
    pub fn new(mut keys: Vec<(u64, Arc<SigningKey>)>, grace: Duration) -> Self {
        assert!(!keys.is_empty(), "a key ring needs a key");
        keys.sort_by_key(|(created, _)| *created);
        Self { keys, grace }
    }

    /// A ring of one key, signing at once.
    #[must_use]
    pub fn single(key: Arc<SigningKey>) -> Self {
        Self::new(vec![(0, key)], Duration::ZERO)
    }

    /// The key to sign with at `now`: the newest whose grace period is over (the
    /// oldest key signs at once, there being nothing else).
    #[must_use]
    pub fn signing_key(&self, now: u64) -> &Arc<SigningKey> {
        let grace = self.grace.as_secs();
        self.keys
            .iter()
            .rev()
            .find(|(created, _)| created + grace <= now)
            .or_else(|| self.keys.first())
            .map(|(_, key)| key)
            .expect("a key ring is never empty")
    }

    /// Every published key, as an RFC 7517 JWK set.
    ///
    /// # Panics
    /// Never in practice: the JWKs built here are valid.
    #[must_use]
    pub fn jwk_set(&self) -> JwkSet {
        let keys: Vec<serde_json::Value> = self.keys.iter().map(|(_, k)| k.public_jwk()).collect();
        serde_json::from_value(serde_json::json!({ "keys": keys })).expect("a valid JWK set")
    }

    /// The published public keys as JSON values.
    #[must_use]
    pub fn public_jwks(&self) -> Vec<serde_json::Value> {
        self.keys.iter().map(|(_, k)| k.public_jwk()).collect()
    }
}

#[cfg(test)]
mod ring_tests {
    use super::*;

    #[test]
    fn a_new_key_signs_only_after_its_grace_period() {
        let old = Arc::new(SigningKey::generate());
        let new = Arc::new(SigningKey::generate());
        let ring = KeyRing::new(
            vec![(1_000, old.clone()), (2_000, new.clone())],
            Duration::from_secs(120),
        );
        assert_eq!(
            ring.signing_key(2_050).kid(),
            old.kid(),
            "in grace: the old key signs"
        );
        assert_eq!(
            ring.signing_key(2_120).kid(),
            new.kid(),
            "after grace: the new key signs"
        );
        assert_eq!(ring.jwk_set().keys.len(), 2, "both published throughout");
        let lone = KeyRing::single(new.clone());
        assert_eq!(lone.signing_key(0).kid(), new.kid());
    }
}
