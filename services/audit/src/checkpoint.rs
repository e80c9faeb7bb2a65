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
    /// `"prune"` when it records a prune: events 1 to `sequence` were deleted
    /// by retention. Only such a signature opens a chain after its start; a
    /// checkpoint (no kind) never does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// For a prune: the events deleted were received before this time (Unix
    /// seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cutoff: Option<i64>,
}

/// The kind of a prune's signature.
pub const PRUNE: &str = "prune";

impl Payload {
    /// Whether this signs a prune (not a mere checkpoint).
    #[must_use]
    pub fn is_prune(&self) -> bool {
        self.kind.as_deref() == Some(PRUNE)
    }

    /// Whether this names `tenant`'s event `sequence` with hash `hash` (hex).
    #[must_use]
    pub fn names(&self, tenant: &str, sequence: i64, hash: &str) -> bool {
        self.tenant_id == tenant && self.sequence == sequence && self.hash == hash
    }
}

/// Signs checkpoints with the current key, and checks them against it and
/// the keys it replaced (rotation: a retired key's public half keeps its
/// checkpoints checkable, and stays in the published set).
#[derive(Debug, Clone)]
pub struct Notary {
    key: Arc<SigningKey>,
    /// Public JWKs of every key, current first.
    published: Arc<Vec<serde_json::Value>>,
    /// By key id.
    decoding: Arc<std::collections::HashMap<String, DecodingKey>>,
}

/// Hex of `bytes`.
#[must_use]
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a retired key cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("retired checkpoint key: {0}")]
pub struct RetiredKeyError(String);

impl Notary {
    /// A notary signing with `key`.
    ///
    /// # Panics
    /// Never in practice: the key's own public JWK is valid.
    #[must_use]
    pub fn new(key: Arc<SigningKey>) -> Self {
        Self::with_retired(key, &[]).expect("the current key's own JWK is valid")
    }

    /// A notary signing with `key` that also checks checkpoints signed by the
    /// `retired` keys (public JWKs, e.g. from an earlier `GetCheckpointKeys`).
    ///
    /// # Errors
    /// When a retired JWK is not an Ed25519 public key with a key id.
    pub fn with_retired(
        key: Arc<SigningKey>,
        retired: &[serde_json::Value],
    ) -> Result<Self, RetiredKeyError> {
        let mut published = Vec::new();
        let mut decoding = std::collections::HashMap::new();
        for jwk_json in std::iter::once(&key.public_jwk()).chain(retired) {
            let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk_json.clone())
                .map_err(|e| RetiredKeyError(e.to_string()))?;
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or_else(|| RetiredKeyError("a key without a key id (kid)".into()))?;
            if decoding.contains_key(&kid) {
                continue;
            }
            let key = DecodingKey::from_jwk(&jwk).map_err(|e| RetiredKeyError(e.to_string()))?;
            if !matches!(
                jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_)
            ) {
                return Err(RetiredKeyError(format!("{kid} is not an Ed25519 key")));
            }
            decoding.insert(kid, key);
            // Only the public members: a retired key given whole (with its
            // private `d`) is never published.
            let public: serde_json::Map<String, serde_json::Value> = jwk_json
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(name, _)| {
                    ["kty", "crv", "x", "kid", "alg", "use"].contains(&name.as_str())
                })
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            published.push(serde_json::Value::Object(public));
        }
        Ok(Self {
            key,
            published: Arc::new(published),
            decoding: Arc::new(decoding),
        })
    }

    /// The public key set (current and retired keys), as JSON.
    #[must_use]
    pub fn jwks_json(&self) -> String {
        serde_json::json!({ "keys": *self.published }).to_string()
    }

    /// The current key's id.
    #[must_use]
    pub fn kid(&self) -> &str {
        self.key.kid()
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
            kind: None,
            cutoff: None,
        };
        let jws = self.key.sign_payload(&payload).map_err(|e| e.to_string())?;
        Ok((jws, now))
    }

    /// Signs a prune of `tenant`'s events 1 to `sequence` (whose hash is
    /// `hash`), all received before `cutoff`.
    ///
    /// # Errors
    /// When signing fails (it does not in practice).
    pub fn sign_prune(
        &self,
        tenant: uuid::Uuid,
        sequence: i64,
        hash: &[u8],
        cutoff: DateTime<Utc>,
    ) -> Result<String, String> {
        let payload = Payload {
            tenant_id: tenant.to_string(),
            sequence,
            hash: hex(hash),
            iat: Utc::now().timestamp(),
            kind: Some(PRUNE.to_owned()),
            cutoff: Some(cutoff.timestamp()),
        };
        self.key.sign_payload(&payload).map_err(|e| e.to_string())
    }

    /// The payload of `jws` when this notary's current or a retired key
    /// signed it.
    #[must_use]
    pub fn verify(&self, jws: &str) -> Option<Payload> {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_aud = false;
        let header = jsonwebtoken::decode_header(jws).ok()?;
        let key = self.decoding.get(header.kid.as_deref()?)?;
        jsonwebtoken::decode::<Payload>(jws, key, &validation)
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

    #[test]
    fn a_rotated_notary_still_checks_the_retired_keys_checkpoints() {
        let old = Arc::new(SigningKey::generate());
        let (jws, _) = Notary::new(old.clone())
            .sign(uuid::Uuid::now_v7(), 3, &[1; 32])
            .expect("sign");
        let new = Arc::new(SigningKey::generate());
        assert!(Notary::new(new.clone()).verify(&jws).is_none());
        let rotated = Notary::with_retired(new.clone(), &[old.public_jwk()]).expect("retired");
        assert_eq!(rotated.verify(&jws).map(|p| p.sequence), Some(3));
        assert_eq!(rotated.kid(), new.kid(), "signs with the new key");
        let published: serde_json::Value =
            serde_json::from_str(&rotated.jwks_json()).expect("json");
        assert_eq!(published["keys"].as_array().map(Vec::len), Some(2));
        assert_eq!(published["keys"][0]["kid"], new.kid());
        let mut with_private = old.public_jwk();
        with_private["d"] = serde_json::json!("c2VjcmV0");
        let careful = Notary::with_retired(Arc::new(SigningKey::generate()), &[with_private])
            .expect("retired");
        assert!(
            !careful.jwks_json().contains("\"d\""),
            "no private member published"
        );
        let mut no_kid = old.public_jwk();
        no_kid.as_object_mut().expect("object").remove("kid");
        assert!(Notary::with_retired(new, &[no_kid]).is_err());
    }
}
