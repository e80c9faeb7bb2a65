//! The in-memory set of revoked sessions, fed by Auth's `WatchRevocations` stream.

use std::time::{Duration, SystemTime};

use bulkhead_context::SessionId;
use moka::Expiry;
use moka::sync::Cache;

/// Revoked session ids, each kept until its tokens would have expired anyway, so
/// the set stays small and needs no database lookup per request.
#[derive(Clone)]
pub struct RevokedSessions {
    sessions: Cache<SessionId, SystemTime>,
}

impl std::fmt::Debug for RevokedSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevokedSessions")
            .field("len", &self.sessions.entry_count())
            .finish()
    }
}

struct UntilExpiry;

impl Expiry<SessionId, SystemTime> for UntilExpiry {
    fn expire_after_create(
        &self,
        _key: &SessionId,
        expires_at: &SystemTime,
        _now: std::time::Instant,
    ) -> Option<Duration> {
        Some(
            expires_at
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    }
}

impl Default for RevokedSessions {
    fn default() -> Self {
        Self {
            sessions: Cache::builder()
                .max_capacity(1_000_000)
                .expire_after(UntilExpiry)
                .build(),
        }
    }
}

impl RevokedSessions {
    /// Marks `session` revoked until `expires_at` (the expiry of its last token).
    pub fn revoke(&self, session: SessionId, expires_at: SystemTime) {
        self.sessions.insert(session, expires_at);
    }

    /// Whether `session` is revoked.
    #[must_use]
    pub fn is_revoked(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }
}
