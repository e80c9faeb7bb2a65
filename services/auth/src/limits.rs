//! Login throttling: a rate per client address and per email (`governor`'s GCRA),
//! and after repeated failures for one email an exponential lockout (1 s, 2 s,
//! 4 s … up to 15 min, `backon`'s schedule). Answered with `RESOURCE_EXHAUSTED`
//! and a `RetryInfo` saying when to come back.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use backon::BackoffBuilder as _;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Failures for one email before lockouts begin.
const FREE_FAILURES: u32 = 5;

/// The login limits of one Auth process.
pub struct LoginLimits {
    per_peer: DefaultKeyedRateLimiter<IpAddr>,
    per_email: DefaultKeyedRateLimiter<String>,
    failures: moka::sync::Cache<String, (u32, Option<Instant>)>,
}

impl std::fmt::Debug for LoginLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LoginLimits")
    }
}

/// How many logins are allowed.
#[derive(Debug, Clone, Copy)]
pub struct LimitsConfig {
    /// Attempts per minute from one client address (burst: a quarter of it).
    pub per_peer_per_minute: u32,
    /// Attempts per minute for one email (burst: half of it).
    pub per_email_per_minute: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            per_peer_per_minute: 120,
            per_email_per_minute: 20,
        }
    }
}

impl LoginLimits {
    /// Limits as `config` says.
    #[must_use]
    pub fn new(config: LimitsConfig) -> Self {
        let n = |v: u32| NonZeroU32::new(v).unwrap_or(NonZeroU32::MIN);
        Self {
            per_peer: RateLimiter::keyed(
                Quota::per_minute(n(config.per_peer_per_minute))
                    .allow_burst(n(config.per_peer_per_minute / 4)),
            ),
            per_email: RateLimiter::keyed(
                Quota::per_minute(n(config.per_email_per_minute))
                    .allow_burst(n(config.per_email_per_minute / 2)),
            ),
            failures: moka::sync::Cache::builder()
                .max_capacity(1_000_000)
                .time_to_idle(Duration::from_secs(30 * 60))
                .build(),
        }
    }
}

impl LoginLimits {
    /// `Err(wait)` when this attempt must not even be checked.
    pub fn check(&self, email: &str, peer: Option<IpAddr>) -> Result<(), Duration> {
        if let Some((_, Some(until))) = self.failures.get(email) {
            let now = Instant::now();
            if until > now {
                return Err(until - now);
            }
        }
        let clock = DefaultClock::default();
        if let Some(peer) = peer {
            self.per_peer
                .check_key(&peer)
                .map_err(|not_until| not_until.wait_time_from(clock.now()))?;
        }
        self.per_email
            .check_key(&email.to_owned())
            .map_err(|not_until| not_until.wait_time_from(clock.now()))
    }

    /// Counts a failed attempt; from the sixth on, the email is locked for longer
    /// and longer ([`lockout_after`]).
    pub fn failed(&self, email: &str) {
        let failures = self.failures.get(email).map_or(0, |(n, _)| n) + 1;
        let locked_until = lockout_after(failures).map(|lockout| Instant::now() + lockout);
        self.failures
            .insert(email.to_owned(), (failures, locked_until));
    }

    /// Clears an email's failures after a successful login.
    pub fn succeeded(&self, email: &str) {
        self.failures.invalidate(email);
    }
}

/// How long an email is locked after its `failures`-th consecutive failure:
/// nothing for the first [`FREE_FAILURES`], then 1 s, 2 s, 4 s … doubling up to
/// 15 minutes (`backon`'s exponential schedule, without jitter).
#[must_use]
pub fn lockout_after(failures: u32) -> Option<Duration> {
    // Past 2^10 s the schedule sits at its cap: never walk it further.
    let step = failures.checked_sub(FREE_FAILURES + 1)?.min(16);
    let step = usize::try_from(step).unwrap_or(16);
    Some(
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_secs(1))
            .with_max_delay(MAX_LOCKOUT)
            .without_max_times()
            .build()
            .nth(step)
            .unwrap_or(MAX_LOCKOUT),
    )
}

/// The longest lockout.
const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockouts_start_after_five_failures_and_double_up_to_fifteen_minutes() {
        for free in 0..=FREE_FAILURES {
            assert_eq!(lockout_after(free), None, "failure {free} is free");
        }
        let secs = |n| lockout_after(n).map(|d| d.as_secs());
        assert_eq!(secs(6), Some(1));
        assert_eq!(secs(7), Some(2));
        assert_eq!(secs(8), Some(4));
        assert_eq!(secs(15), Some(512));
        assert_eq!(secs(16), Some(900), "capped at 15 minutes");
        assert_eq!(secs(u32::MAX), Some(900));
    }

    #[test]
    fn a_locked_email_is_refused_until_a_success_clears_it() {
        let limits = LoginLimits::new(LimitsConfig {
            per_peer_per_minute: 1000,
            per_email_per_minute: 1000,
        });
        for _ in 0..FREE_FAILURES {
            limits.failed("ada@example.com");
            assert!(limits.check("ada@example.com", None).is_ok());
        }
        limits.failed("ada@example.com");
        let wait = limits
            .check("ada@example.com", None)
            .expect_err("locked after the sixth failure");
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert!(
            limits.check("bob@example.com", None).is_ok(),
            "other emails are not locked"
        );
        limits.succeeded("ada@example.com");
        assert!(limits.check("ada@example.com", None).is_ok());
    }

    #[test]
    fn rates_allow_their_burst_per_key_then_say_how_long_to_wait() {
        let limits = LoginLimits::new(LimitsConfig {
            per_peer_per_minute: 8,
            per_email_per_minute: 20,
        });
        let peer: IpAddr = [192, 0, 2, 1].into();
        // Per address: a burst of a quarter of the minute's quota.
        for n in 0..2 {
            assert!(limits.check(&format!("u{n}@x.io"), Some(peer)).is_ok());
        }
        let wait = limits
            .check("u9@x.io", Some(peer))
            .expect_err("the address is over its burst");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(8),
            "{wait:?}"
        );
        // Per email: a burst of half the minute's quota, whatever the address.
        for _ in 0..10 {
            assert!(limits.check("ada@example.com", None).is_ok());
        }
        assert!(limits.check("ada@example.com", None).is_err());
    }
}
