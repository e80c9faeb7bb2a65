//! Auth's settings: token lifetimes, the issuer, the services allowed to obtain
//! tokens, login limits; and the signing keys, replaceable while running.

use std::sync::Arc;
use std::time::Duration;

use bulkhead_guard::token::KeyRing;

use crate::limits::LimitsConfig;

/// Token lifetimes and identity of the issuer.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `iss` of every token.
    pub issuer: String,
    /// `aud` of every token.
    pub audience: String,
    /// Access token lifetime (ARCHITECTURE §2: 15 minutes by default).
    pub access_ttl: Duration,
    /// Refresh token (session) lifetime.
    pub refresh_ttl: Duration,
    /// Service lifetime of `IssueServiceToken` tokens.
    pub service_ttl: Duration,
    /// The services allowed to obtain tokens, with their secrets.
    pub service_clients: Vec<ServiceClient>,
    /// Login throttling.
    pub login_limits: LimitsConfig,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            issuer: "bulkhead-auth".into(),
            audience: "bulkhead".into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            service_ttl: Duration::from_secs(15 * 60),
            service_clients: Vec::new(),
            login_limits: LimitsConfig::default(),
        }
    }
}

/// A service that may call `IssueServiceToken`.
#[derive(Clone)]
pub struct ServiceClient {
    /// The client id, which is also the service's name in its tokens.
    pub client_id: String,
    /// The shared secret (from config; never logged).
    pub secret: String,
    /// Scopes its tokens carry.
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for ServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceClient")
            .field("client_id", &self.client_id)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

/// Auth's signing keys, replaceable while running (key rotation).
pub type SharedKeys = Arc<std::sync::RwLock<Arc<KeyRing>>>;
