//! Signed checkpoints: a tenant's chain head (sequence, hash) signed with
//! Audit's own Ed25519 key as a compact JWS, so that any JWT library can check
//! one against the published key set. A checkpoint kept outside the database
//! (an export, a witness's copy) later proves how far the chain reached.

use std::sync::Arc;

use bulkhead_guard::token::SigningKey;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// What a checkpoint signs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Payload {
    /// The tenant (UUID).
    pub tenant_id: String,
    /// The last event covered.
    pub sequence: i64,
    /// Its hash, hex.
    pub hash: String,
    /// When it was signed (Unix seconds).
    pub iat: i64,
}

/// Signs and checks checkpoints with one key.
#[derive(Debug, Clone)]
pub struct Notary {
    key: Arc<SigningKey>,
    decoding: Arc<DecodingKey>,
}

/// Hex of `bytes`.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Notary {
    /// A notary signing with `key`.
    ///
    /// # Panics
    /// Never in practice: the key's own public JWK is valid.
    #[must_use]
    pub fn new(key: Arc<SigningKey>) -> Self {
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_value(key.public_jwk()).expect("a valid JWK");
        let decoding = DecodingKey::from_jwk(&jwk).expect("an Ed25519 JWK decodes");
        Self {
            key,
            decoding: Arc::new(decoding),
        }
    }

    /// The public key set, as JSON.
    #[must_use]
    pub fn jwks_json(&self) -> String {
        serde_json::json!({ "keys": [self.key.public_jwk()] }).to_string()
    }

    /// Signs `tenant`'s head (`sequence`, `hash`) now.
    ///
    /// # Errors
    /// When signing fails (it does not in practice).
    pub fn sign(
        &self,
        tenant: uuid::Uuid,
        sequence: i64,
        hash: &[u8],
    ) -> Result<(String, DateTime<Utc>), String> {
        let now = Utc::now();
        let payload = Payload {
            tenant_id: tenant.to_string(),
            sequence,
            hash: hex(hash),
            iat: now.timestamp(),
        };
        let jws = self.key.sign_payload(&payload).map_err(|e| e.to_string())?;
        Ok((jws, now))
    }

    /// The payload of `jws` when this notary signed it.
    #[must_use]
    pub fn verify(&self, jws: &str) -> Option<Payload> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let header = jsonwebtoken::decode_header(jws).ok()?;
        if header.kid.as_deref() != Some(self.key.kid()) {
            return None;
        }
        jsonwebtoken::decode::<Payload>(jws, &self.decoding, &validation)
            .ok()
            .map(|data| data.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_verifies_with_its_key_only() {
        let notary = Notary::new(Arc::new(SigningKey::generate()));
        let tenant = uuid::Uuid::now_v7();
        let (jws, _) = notary.sign(tenant, 7, &[0xab; 32]).expect("sign");
        let payload = notary.verify(&jws).expect("verifies");
        assert_eq!((payload.sequence, payload.hash.len()), (7, 64));
        assert_eq!(payload.tenant_id, tenant.to_string());
        let other = Notary::new(Arc::new(SigningKey::generate()));
        assert!(other.verify(&jws).is_none(), "another key's");
        let mut forged = jws.clone().into_bytes();
        let at = forged.len() - 3;
        forged[at] = if forged[at] == b'A' { b'B' } else { b'A' };
        assert!(
            notary
                .verify(&String::from_utf8(forged).expect("ascii"))
                .is_none()
        );
    }
}
