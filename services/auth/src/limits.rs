//! Login limits: a rate per client address in this process (`governor`'s
//! GCRA, a cheap first line against floods, before any database work), and the
//! password-guessing caps kept in the database ([`crate::throttle`]). Answered
//! with `RESOURCE_EXHAUSTED` and a `RetryInfo` saying when to come back.
//!
//! There is no limit per email in memory: a rate anyone can spend for an
//! address they know would let anyone keep its owner out.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::throttle::ThrottleConfig;

/// Checks between two prunings of the per-address state.
const PRUNE_EVERY: u64 = 10_000;

/// Attempts between two purges of the database's login counters.
const PURGE_EVERY: u64 = 1_000;

/// The in-process login rate of one Auth process.
pub struct LoginLimits {
    per_peer: DefaultKeyedRateLimiter<String>,
    /// Failed `IssueServiceToken` calls per client network (as `per_peer`,
    /// but a budget of its own: logins cannot spend it).
    service_failures: DefaultKeyedRateLimiter<String>,
    /// See [`LimitsConfig::sessions_per_user_per_minute`].
    pub sessions_per_user_per_minute: u32,
    /// SwitchTenant calls per user in this process, at twice that cap: a
    /// flood is turned away before it costs a database transaction.
    switches: DefaultKeyedRateLimiter<String>,
    checks: AtomicU64,
    attempts: AtomicU64,
}

impl std::fmt::Debug for LoginLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginLimits")
    }
}

/// How many logins are allowed.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Attempts per minute from one client network, in one process (burst: a
    /// quarter of it).
    pub per_peer_per_minute: u32,
    /// Sessions one user may have started (by logging in or switching) in
    /// the last minute for SwitchTenant to start another: each switch is a
    /// new session row and token pair, so a token holder cannot mint them
    /// without end. Counted in the database, across replicas.
    pub sessions_per_user_per_minute: u32,
    /// Live sessions one user may hold at once: a new one (Login,
    /// SwitchTenant) past it ends the user's oldest. Bounds what one account
    /// can pile up, and so the revocations a logout of them all sends to
    /// every guard.
    pub live_sessions_per_user: u32,
    /// The password-guessing caps, shared by every replica.
    pub throttle: ThrottleConfig,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            per_peer_per_minute: 120,
            sessions_per_user_per_minute: 10,
            live_sessions_per_user: 50,
            throttle: ThrottleConfig::default(),
        }
    }
}

impl LoginLimits {
    /// Limits as `config` says.
    #[must_use]
    pub fn new(config: &LimitsConfig) -> Self {
        let n = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
        Self {
            per_peer: RateLimiter::keyed(
                Quota::per_minute(n(config.per_peer_per_minute))
                    .allow_burst(n(config.per_peer_per_minute / 4)),
            ),
            service_failures: RateLimiter::keyed(
                Quota::per_minute(n(config.per_peer_per_minute))
                    .allow_burst(n(config.per_peer_per_minute / 4)),
            ),
            sessions_per_user_per_minute: config.sessions_per_user_per_minute,
            switches: RateLimiter::keyed(
                Quota::per_minute(n(config.sessions_per_user_per_minute.saturating_mul(2)))
                    .allow_burst(n(config.sessions_per_user_per_minute.saturating_mul(2))),
            ),
            checks: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
        }
    }

    /// `Err(wait)` when `user` called SwitchTenant in this process at more
    /// than twice the cap the database enforces.
    pub fn check_switch(&self, user: &str) -> Result<(), Duration> {
        bulkhead_guard::rate_wait(&self.switches, &user.to_owned())
    }

    /// `Err(wait)` when the client's network failed `IssueServiceToken` too
    /// often (its failures are counted here, its successes never).
    pub fn check_service_failure(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        let Some(client) = client else {
            return Ok(());
        };
        bulkhead_guard::rate_wait(&self.service_failures, &crate::throttle::network(client))
    }

    /// Whether this attempt should also purge the database's stale login
    /// counters (one attempt in [`PURGE_EVERY`], the first included).
    pub fn due_for_purge(&self) -> bool {
        self.attempts
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PURGE_EVERY)
    }

    /// `Err(wait)` when the client's network is over its rate.
    pub fn check(&self, client: Option<IpAddr>) -> Result<(), Duration> {
        // Keys of idle networks are dropped now and then: memory stays bounded
        // by the networks seen within a minute.
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.per_peer.retain_recent();
            self.per_peer.shrink_to_fit();
            self.switches.retain_recent();
            self.switches.shrink_to_fit();
            self.service_failures.retain_recent();
            self.service_failures.shrink_to_fit();
        }
        let Some(client) = client else {
            return Ok(());
        };
        bulkhead_guard::rate_wait(&self.per_peer, &crate::throttle::network(client))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_network_gets_its_burst_then_is_told_how_long_to_wait() {
        let limits = LoginLimits::new(&LimitsConfig {
            per_peer_per_minute: 8,
            ..LimitsConfig::default()
        });
        let peer: IpAddr = [192, 0, 2, 1].into();
        for _ in 0..2 {
            assert!(limits.check(Some(peer)).is_ok());
        }
        let wait = limits.check(Some(peer)).expect_err("over its burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(8),
            "{wait:?}"
        );
        // Another address of the same IPv6 /64 shares the budget; others not.
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        let b: IpAddr = "2001:db8::2".parse().expect("ip");
        assert!(limits.check(Some(a)).is_ok());
        assert!(limits.check(Some(b)).is_ok());
        assert!(limits.check(Some(a)).is_err());
        assert!(limits.check(Some([192, 0, 2, 2].into())).is_ok());
    }
}
