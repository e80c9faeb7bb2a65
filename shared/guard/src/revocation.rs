//! The in-memory set of revoked sessions, fed by Auth's `WatchRevocations` stream.

use std::time::{Duration, Instant, SystemTime};

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use bulkhead_context::{SessionId, TenantId};
use moka::Expiry;
use moka::sync::Cache;

/// Revoked session ids, each kept until its tokens would have expired anyway, so
/// the set stays small and needs no database lookup per request.
#[derive(Clone)]
pub struct RevokedSessions {
    sessions: Cache<SessionId, SystemTime>,
    /// Past this many live revocations the set stops being current (user
    /// calls fail closed) rather than forget one: nothing is ever evicted
    /// but by expiry.
    capacity: u64,
    /// Read by every user call (`is_current`), written once a heartbeat.
    feed: Arc<RwLock<Feed>>,
}

/// Where the set learns of revocations: from Auth in this process (always
/// current), or from a feed it follows, current while heard within a bound.
#[derive(Debug, Clone, Copy)]
enum Feed {
    Local,
    Followed {
        bound: Duration,
        last_heard: Option<Instant>,
    },
}

impl std::fmt::Debug for RevokedSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RevokedSessions")
            .field("len", &self.sessions.entry_count())
            .finish()
    }
}

/// How long an entry outlives its session's last token: longer than any
/// verifier's leeway (5 s by default), which accepts a token that long past
/// its `exp`.
pub const KEPT_PAST_EXPIRY: Duration = Duration::from_secs(60);

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
                .unwrap_or(Duration::ZERO)
                .saturating_add(KEPT_PAST_EXPIRY),
        )
    }
}

impl Default for RevokedSessions {
    fn default() -> Self {
        Self::with_capacity(1_000_000)
    }
}

impl RevokedSessions {
    /// A set that holds `capacity` live revocations before it fails closed.
    #[must_use]
    pub fn with_capacity(capacity: u64) -> Self {
        Self {
            sessions: Cache::builder().expire_after(UntilExpiry).build(),
            capacity,
            feed: Arc::new(RwLock::new(Feed::Local)),
        }
    }

    /// Marks `session` revoked until `expires_at` (the expiry of its last token).
    pub fn revoke(&self, session: SessionId, expires_at: SystemTime) {
        self.sessions.insert(session, expires_at);
        metrics::counter!("session_revocations_total").increment(1);
        #[expect(clippy::cast_precision_loss, reason = "a gauge")]
        metrics::gauge!("revoked_sessions").set(self.sessions.entry_count() as f64);
    }

    /// Whether `session` is revoked.
    #[must_use]
    pub fn is_revoked(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    fn feed(&self) -> Feed {
        *self
            .feed
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn feed_mut(&self) -> std::sync::RwLockWriteGuard<'_, Feed> {
        self.feed
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// From now on the set is fed from afar (Auth's `WatchRevocations`) and is
    /// current only while that feed was heard within `bound`; not before it
    /// is first heard.
    pub fn follow_feed(&self, bound: Duration) {
        *self.feed_mut() = Feed::Followed {
            bound,
            last_heard: None,
        };
    }

    /// The followed feed said it is live and everything before was sent.
    pub fn heard(&self) {
        self.heard_as_of(SystemTime::now());
    }

    /// The followed feed said it held every revocation as of `as_of` (the
    /// sender's clock): fresh from then, not from now, so a message held up
    /// on its way counts as old as it is. A time ahead of this clock counts
    /// as now.
    pub fn heard_as_of(&self, as_of: SystemTime) {
        let age = SystemTime::now().duration_since(as_of).unwrap_or_default();
        if let Feed::Followed { last_heard, .. } = &mut *self.feed_mut() {
            let at = Instant::now().checked_sub(age);
            // Never move backwards (messages of two streams interleave).
            if at > *last_heard {
                *last_heard = at;
            }
        }
    }

    /// How long since the followed feed was last heard (`None`: fed in this
    /// process, or never heard).
    #[must_use]
    pub fn feed_silence(&self) -> Option<Duration> {
        match self.feed() {
            Feed::Local => None,
            Feed::Followed { last_heard, .. } => last_heard.map(|at| at.elapsed()),
        }
    }

    /// Whether every revocation made until a moment ago can be in the set: it
    /// holds no more than its capacity, and it is fed in this process, or the
    /// feed was heard within its bound. A guard whose set is not current
    /// refuses user tokens (fail closed).
    #[must_use]
    pub fn is_current(&self) -> bool {
        if self.sessions.entry_count() > self.capacity {
            return false;
        }
        match self.feed() {
            Feed::Local => true,
            Feed::Followed { bound, last_heard } => {
                last_heard.is_some_and(|at| at.elapsed() <= bound)
            }
        }
    }
}

/// Deactivated tenants: every request in one answers `FAILED_PRECONDITION`
/// "tenant inactive". Fed by the Tenant service (at start and on every change);
/// the services of one process share one set, so a deactivation is in force at
/// once in all of them.
#[derive(Debug, Clone, Default)]
pub struct InactiveTenants {
    tenants: Arc<RwLock<Inactive>>,
}

#[derive(Debug, Default)]
struct Inactive {
    set: HashSet<TenantId>,
    /// Changes made one tenant at a time ([`InactiveTenants::set`]) so far.
    changes: u64,
}

impl InactiveTenants {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inactive> {
        self.tenants
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records `tenant` as active or not.
    pub fn set(&self, tenant: TenantId, active: bool) {
        let mut inactive = self.write();
        if active {
            inactive.set.remove(&tenant);
        } else {
            inactive.set.insert(tenant);
        }
        inactive.changes += 1;
    }

    /// Replaces the whole set (at start-up, or from another service's list).
    pub fn replace(&self, inactive: impl IntoIterator<Item = TenantId>) {
        self.write().set = inactive.into_iter().collect();
    }

    /// How many one-tenant changes there have been: read before a list, for
    /// [`InactiveTenants::replace_unless_changed`].
    #[must_use]
    pub fn changes(&self) -> u64 {
        self.tenants
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .changes
    }

    /// Replaces the whole set with a list read when [`InactiveTenants::changes`]
    /// said `since`, unless a tenant changed in between (the list may predate
    /// it: the next list will not). Returns whether it replaced the set.
    pub fn replace_unless_changed(
        &self,
        since: u64,
        inactive: impl IntoIterator<Item = TenantId>,
    ) -> bool {
        let mut current = self.write();
        if current.changes != since {
            return false;
        }
        current.set = inactive.into_iter().collect();
        true
    }

    /// Whether `tenant` is deactivated.
    #[must_use]
    pub fn contains(&self, tenant: TenantId) -> bool {
        self.tenants
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .set
            .contains(&tenant)
    }
}

#[cfg(test)]
mod revoked_tests {
    use super::*;

    #[test]
    fn past_its_capacity_the_set_fails_closed_and_forgets_nothing() {
        let revoked = RevokedSessions::with_capacity(3);
        let later = SystemTime::now() + Duration::from_secs(600);
        let sessions: Vec<SessionId> = (0..4).map(|_| SessionId::new_v7()).collect();
        for session in &sessions[..3] {
            revoked.revoke(*session, later);
        }
        revoked.sessions.run_pending_tasks();
        assert!(revoked.is_current());
        revoked.revoke(sessions[3], later);
        revoked.sessions.run_pending_tasks();
        assert!(!revoked.is_current(), "one more than it holds: fail closed");
        assert!(
            sessions.iter().all(|s| revoked.is_revoked(*s)),
            "none was evicted"
        );
    }

    #[test]
    fn a_followed_feed_is_current_only_once_heard_and_within_its_bound() {
        let revoked = RevokedSessions::default();
        assert!(revoked.is_current(), "fed in this process");
        revoked.follow_feed(Duration::from_secs(1));
        assert!(!revoked.is_current(), "not heard yet");
        revoked.heard();
        assert!(revoked.is_current());
        std::thread::sleep(Duration::from_millis(1_200));
        assert!(!revoked.is_current(), "silent past its bound");
        revoked.heard();
        assert!(revoked.is_current());
    }

    #[test]
    fn a_heartbeat_counts_as_old_as_the_state_it_reports() {
        let revoked = RevokedSessions::default();
        revoked.follow_feed(Duration::from_secs(10));
        // Held up on its way: the state it reports is 30 s old.
        revoked.heard_as_of(SystemTime::now() - Duration::from_secs(30));
        assert!(!revoked.is_current());
        revoked.heard_as_of(SystemTime::now() - Duration::from_secs(2));
        assert!(revoked.is_current());
        // An older one afterwards does not move freshness back.
        revoked.heard_as_of(SystemTime::now() - Duration::from_secs(60));
        assert!(revoked.is_current());
        // A sender's clock ahead of ours counts as now.
        let ahead = RevokedSessions::default();
        ahead.follow_feed(Duration::from_secs(10));
        ahead.heard_as_of(SystemTime::now() + Duration::from_secs(3600));
        assert!(ahead.is_current());
    }
}

#[cfg(test)]
mod inactive_tests {
    use super::*;

    #[test]
    fn a_list_read_before_a_change_does_not_undo_it() {
        let inactive = InactiveTenants::default();
        let tenant = TenantId::new_v7();
        let since = inactive.changes();
        // A deactivation lands while the list (which predates it) is read.
        inactive.set(tenant, false);
        assert!(!inactive.replace_unless_changed(since, []));
        assert!(inactive.contains(tenant));
        // The next list, read after it, applies.
        let since = inactive.changes();
        assert!(inactive.replace_unless_changed(since, [tenant]));
        assert!(inactive.contains(tenant));
    }
}
