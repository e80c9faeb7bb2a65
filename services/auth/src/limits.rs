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
    /// and longer.
    pub fn failed(&self, email: &str) {
        let failures = self.failures.get(email).map_or(0, |(n, _)| n) + 1;
        let locked_until = (failures > FREE_FAILURES).then(|| {
            let step = usize::try_from(failures - FREE_FAILURES - 1).unwrap_or(usize::MAX);
            let lockout = backon::ExponentialBuilder::default()
                .with_min_delay(Duration::from_secs(1))
                .with_max_delay(Duration::from_secs(15 * 60))
                .without_max_times()
                .build()
                .nth(step)
                .unwrap_or(Duration::from_secs(15 * 60));
            Instant::now() + lockout
        });
        self.failures
            .insert(email.to_owned(), (failures, locked_until));
    }

    /// Clears an email's failures after a successful login.
    pub fn succeeded(&self, email: &str) {
        self.failures.invalidate(email);
    }
}
