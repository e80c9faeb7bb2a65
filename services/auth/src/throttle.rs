//! Password guessing, capped in the database without a lockout anyone can
//! trigger (NIST SP 800-63B §5.2.2; OWASP's authentication cheat sheet).
//!
//! Every password check (Login, ChangePassword) is counted before Argon2 runs,
//! in one short transaction holding the counters' rows, so concurrent guesses
//! never slip past a cap and every Auth replica counts the same. The account's
//! rows are locked in key order first; the client network's row, which every
//! login from one address shares, is taken last, by one conditional update
//! just before the commit (held for a round trip: when it was locked with the
//! others, a login flood from one address queued on it and left the hashers
//! waiting for work: 0.65x of the Argon2 ceiling with 16 clients):
//!
//! * **account × client network**: [`ThrottleConfig::free_failures`] free, then
//!   waits doubling from 1 s up to 15 min after each failure. Only that network
//!   waits: the owner, from anywhere else, still logs in.
//! * **account, per hour, across networks**: past
//!   [`ThrottleConfig::account_failures_per_hour`], only networks the account
//!   logged in from in the last 90 days (2,160 hours) are let in (a distributed guesser is
//!   capped; the owner at home is not).
//! * **client network, per hour, across accounts**:
//!   [`ThrottleConfig::network_failures_per_hour`].
//!
//! A success takes its own attempt back (the counters count failures) and
//! clears the account × network waits. The client network is the address, or
//! its /64 for IPv6; behind a configured trusted proxy it comes from the
//! proxy's `x-forwarded-for`, otherwise never. Keys are digests.

use std::net::IpAddr;
use std::time::Duration;

use bulkhead_db::PlatformConn;
use chrono::{DateTime, Utc};
use diesel::QueryableByName;
use diesel::sql_types::{Array, Bytea, Integer, Timestamptz};
use diesel_async::RunQueryDsl;
use sha2::{Digest as _, Sha256};

use crate::error::AuthError;

/// The caps.
#[derive(Debug, Clone)]
pub struct ThrottleConfig {
    /// Failures of one account from one network before waits begin.
    pub free_failures: u32,
    /// Failures of one account per hour, all networks together, before only
    /// known networks are let in.
    pub account_failures_per_hour: u32,
    /// Failures from one network per hour, all accounts together.
    pub network_failures_per_hour: u32,
    /// Proxies whose `x-forwarded-for` names the client (none: the header is
    /// ignored).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            free_failures: 5,
            account_failures_per_hour: 50,
            network_failures_per_hour: 100,
            trusted_proxies: Vec::new(),
        }
    }
}

/// An attempt let through: what to take back if it succeeds.
#[derive(Debug, Clone)]
pub struct Attempt {
    account: Vec<u8>,
    pair: Option<Vec<u8>>,
    network: Option<Vec<u8>>,
    known: Option<Vec<u8>>,
    /// The account's counters this attempt counted in, each with its
    /// window's start then: a row deleted and inserted again since, or in a
    /// new window, holds others' counts, not this one.
    counted: Vec<(Vec<u8>, DateTime<Utc>)>,
}

#[derive(QueryableByName)]
struct Counted {
    #[diesel(sql_type = Bytea)]
    key: Vec<u8>,
    #[diesel(sql_type = Timestamptz)]
    window_start: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Counter {
    #[diesel(sql_type = Bytea)]
    key: Vec<u8>,
    #[diesel(sql_type = Integer)]
    failures: i32,
    #[diesel(sql_type = Timestamptz)]
    window_start: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    last_failure: DateTime<Utc>,
}

#[derive(QueryableByName)]
struct Found {
    #[diesel(sql_type = Integer)]
    n: i32,
}

const WINDOW: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// The longest wait of one account on one network.
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);

/// How long one network waits after the account's `failures`-th failure from
/// it: nothing for the first `free`, then 1 s, 2 s, 4 s … up to 15 minutes.
#[must_use]
pub fn pair_wait(failures: u32, free: u32) -> Option<Duration> {
    let step = failures.checked_sub(free.saturating_add(1))?.min(10);
    Some(Duration::from_secs(1 << step).min(MAX_WAIT))
}

fn digest(parts: &[&str]) -> Vec<u8> {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize().to_vec()
}

/// The network a client address stands for: the address, or its /64 for IPv6
/// (one host holds a whole /64); an IPv4-mapped IPv6 address is its IPv4.
#[must_use]
pub fn network(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

/// An address as written in a header: bare, `[v6]:port` or `v4:port`;
/// IPv4-mapped IPv6 as IPv4.
fn hop_address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .or_else(|_| text.parse::<std::net::SocketAddr>().map(|a| a.ip()))
        .ok()
        .map(|ip| ip.to_canonical())
}

/// The client's address: the peer's, or — when the peer is a trusted proxy —
/// the nearest hop of `x-forwarded-for` (all its lines, in order) that is not
/// a trusted proxy. Addresses are compared in canonical form (IPv4-mapped
/// IPv6 as IPv4).
#[must_use]
pub fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: &[&str],
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let hops: Vec<&str> = forwarded_for
        .iter()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .collect();
    for hop in hops.into_iter().rev() {
        match hop_address(hop) {
            Some(ip) if is_trusted(&ip) => {}
            Some(ip) => return Some(ip),
            // A hop that is no address: nothing left of it can be trusted.
            None => return Some(peer),
        }
    }
    Some(peer)
}

impl ThrottleConfig {
    /// Counts an attempt on `account` (its normalized email) from `client`, or
    /// says how long to wait. Run before the password is checked.
    ///
    /// # Errors
    /// [`AuthError::Throttled`] with the wait, or a database error.
    pub async fn admit(
        &self,
        tx: PlatformConn<'_>,
        account: &str,
        client: Option<IpAddr>,
    ) -> Result<Attempt, AuthError> {
        let net = client.map(network);
        let mut attempt = Attempt {
            account: digest(&["account", account]),
            pair: net.as_deref().map(|n| digest(&["pair", account, n])),
            network: net.as_deref().map(|n| digest(&["network", n])),
            known: net.as_deref().map(|n| digest(&["known", account, n])),
            counted: Vec::new(),
        };
        // The account's counters, each inserted or locked in key order, in
        // one statement, until this transaction ends: a concurrent attempt
        // on the account reads the counts with this one in them. Inserting
        // the missing ones first and locking after left a window: a success
        // could delete a row in between, and a third attempt, inserting it
        // again, held it while it waited for the first row (a deadlock).
        let counters: Vec<Counter> = diesel::sql_query(
            "INSERT INTO login_attempts (key, failures, window_start, last_failure)
             SELECT k, 0, now(), to_timestamp(0) FROM unnest($1::bytea[]) k ORDER BY k
             ON CONFLICT (key) DO UPDATE SET failures = login_attempts.failures
             RETURNING key, failures, window_start, last_failure",
        )
        .bind::<Array<Bytea>, _>(&attempt.account_keys())
        .load(&mut tx.pg())
        .await?;
        let now = Utc::now();
        let counter = |key: &Option<Vec<u8>>| {
            key.as_ref()
                .and_then(|k| counters.iter().find(|c| &c.key == k))
        };
        let mut waits: Vec<Duration> = Vec::new();
        if let Some(pair) = counter(&attempt.pair)
            && let Some(lockout) = pair_wait(pair.in_window(now), self.free_failures)
        {
            let until = pair.last_failure + chrono::TimeDelta::from_std(lockout).unwrap_or(WINDOW);
            waits.extend((until - now).to_std().ok());
        }
        if let Some(account) = counters.iter().find(|c| c.key == attempt.account)
            && account.in_window(now) >= self.account_failures_per_hour
            && !known_network(&tx, attempt.known.as_deref()).await?
        {
            waits.extend(account.until_window_ends(now));
        }
        if !waits.is_empty() {
            // Refused already: the network's own wait, if longer, is the one
            // to name (read, not counted).
            if let Some(network) = &attempt.network
                && let Some(net) = read(&tx, network).await?
                && net.in_window(now) >= self.network_failures_per_hour
            {
                waits.extend(net.until_window_ends(now));
            }
        }
        if let Some(wait) = waits.into_iter().max() {
            return Err(AuthError::Throttled(wait.max(Duration::from_secs(1))));
        }
        // Counted as a failure until it proves otherwise (upserts: a purge
        // may have taken a stale row since).
        let counted: Vec<Counted> = diesel::sql_query(format!(
            "INSERT INTO login_attempts (key, failures, window_start, last_failure)
             SELECT k, 1, now(), now() FROM unnest($1::bytea[]) k
             ON CONFLICT (key) DO UPDATE SET {COUNT_ONE}
             RETURNING key, window_start"
        ))
        .bind::<Array<Bytea>, _>(&attempt.account_keys())
        .load(&mut tx.pg())
        .await?;
        attempt.counted = counted
            .into_iter()
            .map(|c| (c.key, c.window_start))
            .collect();
        // The network's row last, in one statement that counts only under the
        // cap: every login from one address (a NAT, a proxy) takes this row,
        // so it is held for the commit's round trip alone.
        if let Some(network) = &attempt.network {
            let counted = diesel::sql_query(format!(
                "INSERT INTO login_attempts (key, failures, window_start, last_failure)
                 VALUES ($1, 1, now(), now())
                 ON CONFLICT (key) DO UPDATE SET {COUNT_ONE}
                  WHERE login_attempts.window_start + interval '1 hour' <= now()
                     OR login_attempts.failures < $2"
            ))
            .bind::<Bytea, _>(network)
            .bind::<Integer, _>(i32::try_from(self.network_failures_per_hour).unwrap_or(i32::MAX))
            .execute(&mut tx.pg())
            .await?;
            if counted == 0 {
                let wait = read(&tx, network)
                    .await?
                    .and_then(|net| net.until_window_ends(Utc::now()));
                // The transaction rolls back: the account's counts with it.
                return Err(AuthError::Throttled(
                    wait.unwrap_or_default().max(Duration::from_secs(1)),
                ));
            }
        }
        Ok(attempt)
    }

    /// Takes a successful attempt back: its count, and the account × network
    /// waits; the network becomes a known one of the account.
    ///
    /// # Errors
    /// On database failure.
    pub async fn succeeded(
        &self,
        tx: PlatformConn<'_>,
        attempt: &Attempt,
    ) -> Result<(), AuthError> {
        // The account's rows in key order, as `admit` takes them (no
        // deadlock between a success and a concurrent attempt). Only the rows
        // held here are touched: a pair row missing from this lock's snapshot
        // (another success deleted it) may since have been inserted again and
        // committed by a later attempt, and be held now by a third, which
        // waits for the account's row, held here. Deleting it would wait for
        // that third attempt: a deadlock (and it would erase later attempts'
        // counts; this attempt's went with the row deleted).
        let held = held_keys(lock(&tx, &attempt.account_keys()).await?);
        if let Some(pair) = attempt.pair.as_ref().filter(|k| held.contains(k)) {
            diesel::sql_query("DELETE FROM login_attempts WHERE key = $1")
                .bind::<Bytea, _>(pair)
                .execute(&mut tx.pg())
                .await?;
        }
        if let Some(known) = &attempt.known {
            diesel::sql_query(
                "INSERT INTO login_known_networks (key, last_success) VALUES ($1, now())
                 ON CONFLICT (key) DO UPDATE SET last_success = now()",
            )
            .bind::<Bytea, _>(known)
            .execute(&mut tx.pg())
            .await?;
        }
        if held.contains(&attempt.account) {
            uncount(&tx, std::slice::from_ref(&attempt.account)).await?;
        }
        // The shared network row last (see `admit`).
        if let Some(network) = &attempt.network {
            uncount(&tx, std::slice::from_ref(network)).await?;
        }
        Ok(())
    }
}

impl Attempt {
    /// The account's counters (the account, and the account × network pair).
    fn account_keys(&self) -> Vec<Vec<u8>> {
        std::iter::once(self.account.clone())
            .chain(self.pair.clone())
            .collect()
    }
}

/// Counts one failure, in a new window when the last one ended (the SET of
/// an upsert on `login_attempts`).
const COUNT_ONE: &str = "
    failures = CASE WHEN login_attempts.window_start + interval '1 hour' <= now() THEN 1
                    ELSE login_attempts.failures + 1 END,
    window_start = CASE WHEN login_attempts.window_start + interval '1 hour' <= now() THEN now()
                        ELSE login_attempts.window_start END,
    last_failure = now()";

impl Counter {
    /// Failures in the current window.
    fn in_window(&self, now: DateTime<Utc>) -> u32 {
        if self.window_start + WINDOW <= now {
            0
        } else {
            u32::try_from(self.failures).unwrap_or(0)
        }
    }

    fn until_window_ends(&self, now: DateTime<Utc>) -> Option<Duration> {
        (self.window_start + WINDOW - now).to_std().ok()
    }
}

/// Whether the account logged in from this network in the last 90 days.
async fn known_network(tx: &PlatformConn<'_>, known: Option<&[u8]>) -> Result<bool, AuthError> {
    let Some(key) = known else {
        return Ok(false);
    };
    Ok(diesel::sql_query(
        "SELECT count(*)::int AS n FROM login_known_networks
          WHERE key = $1 AND last_success > now() - interval '2160 hours'",
    )
    .bind::<Bytea, _>(key)
    .get_result::<Found>(&mut tx.pg())
    .await?
    .n > 0)
}

/// One counter, unlocked.
async fn read(tx: &PlatformConn<'_>, key: &[u8]) -> Result<Option<Counter>, AuthError> {
    use diesel::OptionalExtension as _;
    Ok(diesel::sql_query(
        "SELECT key, failures, window_start, last_failure FROM login_attempts WHERE key = $1",
    )
    .bind::<Bytea, _>(key)
    .get_result::<Counter>(&mut tx.pg())
    .await
    .optional()?)
}

/// Takes one counted attempt back from `keys`.
async fn uncount(tx: &PlatformConn<'_>, keys: &[Vec<u8>]) -> Result<(), AuthError> {
    diesel::sql_query(
        "UPDATE login_attempts SET failures = GREATEST(failures - 1, 0) WHERE key = ANY($1)",
    )
    .bind::<Array<Bytea>, _>(keys)
    .execute(&mut tx.pg())
    .await?;
    Ok(())
}

/// Locks the counters' rows in key order (every caller takes them in the same
/// order: no deadlock) and reads them.
async fn lock(tx: &PlatformConn<'_>, keys: &[Vec<u8>]) -> Result<Vec<Counter>, AuthError> {
    Ok(diesel::sql_query(
        "SELECT key, failures, window_start, last_failure FROM login_attempts
          WHERE key = ANY($1) ORDER BY key FOR UPDATE",
    )
    .bind::<Array<Bytea>, _>(keys)
    .load::<Counter>(&mut tx.pg())
    .await?)
}

/// The keys of the rows [`lock`] took.
fn held_keys(counters: Vec<Counter>) -> Vec<Vec<u8>> {
    counters.into_iter().map(|c| c.key).collect()
}

impl ThrottleConfig {
    /// Takes back an attempt that never reached a verdict (the hashers were
    /// busy, a call failed): it counts against nobody.
    ///
    /// # Errors
    /// On database failure.
    pub async fn refund(&self, tx: PlatformConn<'_>, attempt: &Attempt) -> Result<(), AuthError> {
        // Only the rows held (see `succeeded`), and of those only the ones
        // this attempt counted in: the same window, not a row inserted again.
        let held = lock(&tx, &attempt.account_keys()).await?;
        let own: Vec<Vec<u8>> = held
            .into_iter()
            .filter(|row| {
                attempt
                    .counted
                    .iter()
                    .any(|(key, start)| *key == row.key && *start == row.window_start)
            })
            .map(|row| row.key)
            .collect();
        uncount(&tx, &own).await?;
        // The shared network row last (see `admit`).
        if let Some(network) = &attempt.network {
            uncount(&tx, std::slice::from_ref(network)).await?;
        }
        Ok(())
    }

    /// Deletes counters past any window or wait, and networks not seen for 90
    /// days (up to 10,000 of each, skipping those in use); how many rows went. In a
    /// transaction of its own.
    ///
    /// # Errors
    /// On database failure.
    pub async fn purge(&self, tx: PlatformConn<'_>) -> Result<usize, AuthError> {
        // Rows an attempt holds are skipped (no waits, no deadlock with
        // one); a batch at a time keeps the transaction short.
        let attempts = diesel::sql_query(
            "DELETE FROM login_attempts WHERE key IN (
                 SELECT key FROM login_attempts
                  WHERE window_start < now() - interval '2 hours'
                    AND last_failure < now() - interval '2 hours'
                  LIMIT 10000 FOR UPDATE SKIP LOCKED)",
        )
        .execute(&mut tx.pg())
        .await?;
        // Likewise here: a success upserting an old network's row is
        // skipped, not waited for while the counters above stay locked.
        let known = diesel::sql_query(
            "DELETE FROM login_known_networks WHERE key IN (
                 SELECT key FROM login_known_networks
                  WHERE last_success < now() - interval '2160 hours'
                  LIMIT 10000 FOR UPDATE SKIP LOCKED)",
        )
        .execute(&mut tx.pg())
        .await?;
        Ok(attempts + known)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refund takes its attempt's count back from the rows it counted in,
    /// never from a row another success deleted and a later attempt
    /// inserted again (its count is that attempt's).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refund_takes_back_only_its_own_count() {
        let database = bulkhead_postgres::testing::test_database(&crate::SCHEMA).await;
        let db = database.app_db(2).await;
        let throttle = ThrottleConfig::default();
        let client = Some(IpAddr::from([192, 0, 2, 7]));
        let admit = async || {
            db.platform_tx(async |tx| throttle.admit(tx, "guessed@example.com", client).await)
                .await
                .expect("admitted")
        };
        let failures = async |key: &[u8]| {
            db.platform_tx(async |tx| read(&tx, key).await)
                .await
                .expect("read")
                .map(|row| row.failures)
        };
        let guess = admit().await;
        let pair = guess.pair.clone().expect("a pair");
        // The owner logs in meanwhile: the pair row goes with their success.
        let owner = admit().await;
        db.platform_tx(async |tx| throttle.succeeded(tx, &owner).await)
            .await
            .expect("succeeded");
        assert_eq!(failures(&pair).await, None);
        // A later attempt counts in a new pair row; then the guess is refunded.
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        let later = admit().await;
        assert_eq!(failures(&pair).await, Some(1));
        db.platform_tx(async |tx| throttle.refund(tx, &guess).await)
            .await
            .expect("refunded");
        assert_eq!(
            failures(&pair).await,
            Some(1),
            "the later attempt's count stays"
        );
        assert_eq!(
            failures(&guess.account).await,
            Some(1),
            "the guess's own count on the account went back (the later one's stays)"
        );
        db.platform_tx(async |tx| throttle.refund(tx, &later).await)
            .await
            .expect("refunded");
        assert_eq!(failures(&pair).await, Some(0), "its own row: taken back");
        assert_eq!(failures(&guess.account).await, Some(0));
    }

    #[test]
    fn waits_start_after_the_free_failures_and_double_up_to_fifteen_minutes() {
        for n in 0..=5 {
            assert_eq!(pair_wait(n, 5), None);
        }
        let secs = |n| pair_wait(n, 5).map(|d| d.as_secs());
        assert_eq!((secs(6), secs(7), secs(8)), (Some(1), Some(2), Some(4)));
        assert_eq!(secs(15), Some(512));
        assert_eq!(secs(16), Some(900));
        assert_eq!(secs(u32::MAX), Some(900));
    }

    #[test]
    fn ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(network(a), network(b));
        assert_ne!(network(a), network(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(network(mapped), "192.0.2.7");
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.5".parse().expect("ip");
        let client: IpAddr = "198.51.100.7".parse().expect("ip");
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.5/32".parse().expect("net")];
        let header = ["203.0.113.9, 198.51.100.7"];
        // Untrusted peer: its own address, whatever the header says.
        assert_eq!(
            client_address(Some(client), &header, &trusted),
            Some(client)
        );
        assert_eq!(client_address(Some(proxy), &header, &[]), Some(proxy));
        // Trusted peer: the nearest hop that is not a trusted proxy (the
        // left-most entries, and earlier header lines, are the client's to
        // forge: a proxy that appends a line appends the truth last).
        assert_eq!(client_address(Some(proxy), &header, &trusted), Some(client));
        let forged_first_line = ["6.6.6.6", "198.51.100.7"];
        assert_eq!(
            client_address(Some(proxy), &forged_first_line, &trusted),
            Some(client)
        );
        assert_eq!(client_address(Some(proxy), &[], &trusted), Some(proxy));
        assert_eq!(
            client_address(Some(proxy), &["junk, 10.0.0.5"], &trusted),
            Some(proxy)
        );
        // Ports, and a proxy seen through an IPv6 listener as IPv4-mapped.
        assert_eq!(
            client_address(Some(proxy), &["198.51.100.7:5678"], &trusted),
            Some(client)
        );
        let mapped: IpAddr = "::ffff:10.0.0.5".parse().expect("ip");
        assert_eq!(
            client_address(Some(mapped), &["[2001:db8::1]:443"], &trusted),
            Some("2001:db8::1".parse().expect("ip"))
        );
    }
}
