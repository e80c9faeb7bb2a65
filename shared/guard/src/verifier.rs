//! Token verification with a bounded cache of verified tokens.
//!
//! An EdDSA check costs ~50–80 µs; a gRPC call ~150 µs. So each token's signature
//! is checked once: the verified identity is cached, keyed by the SHA-256 of the
//! whole token, until the token's `exp` (capped), in a bounded `moka` cache.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::Expiry;
use moka::sync::Cache;
use sha2::Digest as _;

use crate::GuardError;
use crate::token::{Claims, Identity, TokenUse, unix_now};

/// What a verifier accepts.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// The only accepted `iss`.
    pub issuer: String,
    /// The only accepted `aud`.
    pub audience: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// Tokens longer than this are refused before any parsing.
    pub max_token_bytes: usize,
    /// Most verified tokens kept.
    pub cache_capacity: u64,
    /// Longest a verified token stays cached, whatever its `exp`.
    pub cache_ttl_cap: Duration,
    /// Longest lifetime (`exp - iat`) of a token accepted: Auth's tokens live
    /// 15 minutes, and a token minted for longer (a leaked key, a careless
    /// break-glass) is refused whatever its signature.
    pub max_lifetime: Duration,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            issuer: "bulkhead-auth".to_owned(),
            audience: "bulkhead".to_owned(),
            leeway: Duration::from_secs(5),
            max_token_bytes: 4096,
            cache_capacity: 100_000,
            cache_ttl_cap: Duration::from_secs(15 * 60),
            max_lifetime: Duration::from_secs(60 * 60),
        }
    }
}

/// A token whose signature and claims were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// Who the token names.
    pub identity: Identity,
    /// Its `exp`, seconds since the epoch.
    pub expires_at: u64,
}

impl Verified {
    /// When the token expires.
    #[must_use]
    pub fn expiry(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(self.expires_at)
    }
}

/// Verifies Bulkhead tokens against a JWK set.
pub struct TokenVerifier {
    config: VerifierConfig,
    validation: Validation,
    keys: RwLock<HashMap<String, DecodingKey>>,
    cache: Cache<[u8; 32], Arc<Verified>>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("config", &self.config)
            .field("cached", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

struct UntilTokenExpiry {
    cap: Duration,
}

impl Expiry<[u8; 32], Arc<Verified>> for UntilTokenExpiry {
    fn expire_after_create(
        &self,
        _: &[u8; 32],
        verified: &Arc<Verified>,
        _: Instant,
    ) -> Option<Duration> {
        let left = verified.expires_at.saturating_sub(unix_now());
        Some(Duration::from_secs(left).min(self.cap))
    }
}

impl TokenVerifier {
    /// A verifier trusting the Ed25519 keys of `jwks`.
    #[must_use]
    pub fn new(config: VerifierConfig, jwks: &JwkSet) -> Self {
        // Pinned: only EdDSA. A token claiming HS256 (key confusion) or `none` is
        // refused before any key is used.
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        let cache = Cache::builder()
            .max_capacity(config.cache_capacity)
            .expire_after(UntilTokenExpiry {
                cap: config.cache_ttl_cap,
            })
            .build();
        let verifier = Self {
            config,
            validation,
            keys: RwLock::new(HashMap::new()),
            cache,
        };
        verifier.replace_keys(jwks);
        verifier
    }

    /// Trusts exactly the Ed25519 signing keys of `jwks` from now on (key rotation:
    /// the new set keeps the old key until its tokens expire). Keys of other types
    /// or algorithms are ignored.
    pub fn replace_keys(&self, jwks: &JwkSet) {
        let keys = jwks
            .keys
            .iter()
            .filter(|jwk| matches!(jwk.algorithm, AlgorithmParameters::OctetKeyPair(_)))
            .filter(|jwk| {
                jwk.common
                    .key_algorithm
                    .is_none_or(|alg| alg == jsonwebtoken::jwk::KeyAlgorithm::EdDSA)
            })
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, DecodingKey::from_jwk(jwk).ok()?)))
            .collect::<HashMap<_, _>>();
        let mut trusted = self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // A key taken away (compromised, retired) takes its tokens with it at
        // once: none stays verified in the cache.
        let removed = trusted.keys().any(|kid| !keys.contains_key(kid));
        *trusted = keys;
        drop(trusted);
        if removed {
            self.cache.invalidate_all();
        }
    }

    /// The last moment `verified` is accepted: its `exp` and the leeway.
    #[must_use]
    pub fn valid_until(&self, verified: &Verified) -> SystemTime {
        verified.expiry() + self.config.leeway
    }

    /// Verifies `token`, expecting `token_use`.
    ///
    /// # Errors
    /// A [`GuardError`] saying which class of problem it was.
    pub fn verify(&self, token: &str, token_use: TokenUse) -> Result<Arc<Verified>, GuardError> {
        if token.len() > self.config.max_token_bytes {
            return Err(GuardError::TokenTooLarge);
        }
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let verified = match self.cache.get(&key) {
            Some(hit) => {
                metrics::counter!("token_cache_hits_total").increment(1);
                hit
            }
            None => {
                metrics::counter!("token_cache_misses_total").increment(1);
                let fresh = Arc::new(self.verify_signature(token)?);
                self.cache.insert(key, Arc::clone(&fresh));
                fresh
            }
        };
        // The cache may keep an entry a moment past `exp`: check on every use.
        if verified
            .expires_at
            .saturating_add(self.config.leeway.as_secs())
            < unix_now()
        {
            return Err(GuardError::Expired);
        }
        let kind = match verified.identity {
            Identity::User(_) => TokenUse::Access,
            Identity::Service(_) => TokenUse::Service,
        };
        if kind != token_use {
            return Err(GuardError::WrongTokenKind);
        }
        Ok(verified)
    }

    /// Whether a token's times are those of a token issued for at most
    /// [`VerifierConfig::max_lifetime`]: its `iat` is not in the future, it
    /// expires after it and within the lifetime of it, and, whatever `iat`
    /// says, within the lifetime from now (so no chosen `iat` stretches it).
    fn lifetime_ok(&self, claims: &Claims, now: u64) -> bool {
        let (leeway, max) = (
            self.config.leeway.as_secs(),
            self.config.max_lifetime.as_secs(),
        );
        claims.iat <= now.saturating_add(leeway)
            && claims.exp > claims.iat
            && claims.exp - claims.iat <= max
            && claims.nbf.saturating_add(leeway) >= claims.iat
            && claims.exp <= now.saturating_add(max).saturating_add(leeway)
    }

    fn verify_signature(&self, token: &str) -> Result<Verified, GuardError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| GuardError::InvalidToken)?;
        if header.alg != Algorithm::EdDSA {
            return Err(GuardError::InvalidToken);
        }
        let kid = header.kid.ok_or(GuardError::InvalidToken)?;
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = keys.get(&kid).ok_or(GuardError::InvalidToken)?;
        let data = jsonwebtoken::decode::<Claims>(token, key, &self.validation).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => GuardError::Expired,
                _ => GuardError::InvalidToken,
            }
        })?;
        if !self.lifetime_ok(&data.claims, unix_now()) {
            return Err(GuardError::InvalidToken);
        }
        let expires_at = data.claims.exp;
        let identity = data
            .claims
            .into_verified()
            .ok_or(GuardError::InvalidToken)?;
        Ok(Verified {
            identity,
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use bulkhead_context::{PlatformRole, SessionId, TenantId, TenantRole, TenantUser, UserId};

    use super::*;
    use crate::token::SigningKey;

    #[test]
    fn a_removed_key_takes_its_cached_tokens_with_it() {
        let (old, new) = (SigningKey::generate(), SigningKey::generate());
        let config = VerifierConfig::default();
        let verifier = TokenVerifier::new(config.clone(), &old.jwk_set());
        let user = TenantUser {
            user_id: UserId::new_v7(),
            session_id: SessionId::new_v7(),
            tenant_id: TenantId::new_v7(),
            tenant_slug: "acme".into(),
            tenant_role: TenantRole::Viewer,
            platform_role: PlatformRole::User,
        };
        let claims = Claims::access(
            &config.issuer,
            &config.audience,
            &user,
            Duration::from_secs(600),
        );
        let token = old.sign(&claims).expect("sign");
        assert!(
            verifier.verify(&token, TokenUse::Access).is_ok(),
            "cached now"
        );
        // Both keys (a rotation): still good.
        let mut both = old.jwk_set();
        both.keys.extend(new.jwk_set().keys);
        verifier.replace_keys(&both);
        assert!(verifier.verify(&token, TokenUse::Access).is_ok());
        // The old key withdrawn: refused at once, cached or not.
        verifier.replace_keys(&new.jwk_set());
        assert_eq!(
            verifier.verify(&token, TokenUse::Access).err(),
            Some(GuardError::InvalidToken)
        );
    }
}
