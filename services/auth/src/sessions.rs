//! Sessions (refresh-token families): starting one, ending them (everywhere in
//! this process at once, and for every `WatchRevocations` subscriber), and the
//! state machine of a presented refresh token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bulkhead_clients::MembershipView;
use bulkhead_context::{SessionId, TenantId, TenantUser, UserId};
use bulkhead_db::Db;
use bulkhead_guard::{KEPT_PAST_EXPIRY, RevokedSessions};
use bulkhead_outbox::audit::{Actor, Event};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::error::AuthError;
use crate::repo::{self, NewSession, Revoke, Session, Switch, User};
use crate::tokens::{Signer, new_refresh_token};

/// A revoked session and when its last access token expires (until then every
/// guard must refuse it).
pub type Revoked = (Uuid, DateTime<Utc>);

/// The tokens of a session just started or refreshed.
#[derive(Debug, Clone)]
pub struct IssuedTokens {
    /// The session (refresh-token family).
    pub session: SessionId,
    /// The signed access token.
    pub access_token: String,
    /// When it expires.
    pub access_expires: DateTime<Utc>,
    /// The opaque refresh token (only its hash is stored).
    pub refresh_token: String,
    /// When the session ends.
    pub refresh_expires: DateTime<Utc>,
}

/// What a presented refresh token turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    /// The current token of this session (locked until the transaction ends).
    Current(Session),
    /// A token this session had before a rotation: someone holds a copy.
    Rotated(Uuid),
    /// No session ever had it.
    Unknown,
}

/// What `Refresh` does about a presented token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshStep {
    /// Rotate the session's token and sign a new access token.
    Rotate(Session),
    /// End the whole family: a rotated token came back (reuse).
    EndFamily(Uuid),
    /// Refuse: unknown, revoked or expired.
    Refuse,
}

/// The refresh-family state machine: only a live session's current token
/// rotates; a rotated token ends its family; anything else is refused.
#[must_use]
pub fn next_step(presented: Presented, now: DateTime<Utc>) -> RefreshStep {
    match presented {
        Presented::Current(session)
            if session.revoked_at.is_none() && session.refresh_expires_at > now =>
        {
            RefreshStep::Rotate(session)
        }
        Presented::Current(_) | Presented::Unknown => RefreshStep::Refuse,
        Presented::Rotated(session) => RefreshStep::EndFamily(session),
    }
}

/// Starts and ends sessions.
#[derive(Debug, Clone)]
pub struct Sessions {
    db: Db,
    signer: Signer,
    refresh_ttl: Duration,
    /// Live sessions a user may hold at once ([`repo::make_room`]).
    live_cap: u32,
    revoked: RevokedSessions,
    /// Every revocation, for `WatchRevocations` subscribers.
    feed: tokio::sync::broadcast::Sender<Revoked>,
    /// Sessions marked (by this replica, or read from the database) whose
    /// access tokens have not expired, with their expiry:
    /// [`Sessions::follow_database`] marks each once.
    marked: Arc<Mutex<HashMap<uuid::Uuid, DateTime<Utc>>>>,
    /// When [`Sessions::follow_database`] last read the database (or when
    /// this was made): see [`Sessions::in_step`].
    synced: Arc<Mutex<std::time::Instant>>,
}

impl Sessions {
    /// Sessions stored in `db`, signed by `signer`, marked revoked in `revoked`
    /// (the guards' set of this process).
    #[must_use]
    pub fn new(db: Db, signer: Signer, refresh_ttl: Duration, revoked: RevokedSessions) -> Self {
        Self {
            db,
            signer,
            refresh_ttl,
            live_cap: crate::LimitsConfig::default().live_sessions_per_user,
            revoked,
            feed: tokio::sync::broadcast::channel(4096).0,
            marked: Arc::default(),
            synced: Arc::new(Mutex::new(std::time::Instant::now())),
        }
    }

    /// A user holds at most `cap` live sessions: a new one ends the oldest.
    #[must_use]
    pub const fn with_live_cap(mut self, cap: u32) -> Self {
        self.live_cap = cap;
        self
    }

    /// Whether this Auth has read the revocations other replicas store within
    /// [`IN_STEP_WITHIN`]: while it has not, its `WatchRevocations` streams
    /// end (their subscribers fail closed and reconnect, to another replica).
    #[must_use]
    pub fn in_step(&self) -> bool {
        self.synced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed()
            <= IN_STEP_WITHIN
    }

    /// When this Auth last read the stored revocations (wall clock).
    #[must_use]
    pub fn in_step_since(&self) -> SystemTime {
        let elapsed = self
            .synced
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .elapsed();
        SystemTime::now()
            .checked_sub(elapsed)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }

    /// Every revocation from now on.
    #[must_use]
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Revoked> {
        self.feed.subscribe()
    }

    /// An access token for `user` acting in `membership`'s tenant under `session`.
    ///
    /// # Errors
    /// [`AuthError::Signing`] when signing fails.
    pub fn access_token(
        &self,
        user: &User,
        session: SessionId,
        membership: &MembershipView,
    ) -> Result<(String, DateTime<Utc>), AuthError> {
        self.signer.access(&TenantUser {
            user_id: UserId::from_uuid(user.id),
            session_id: session,
            tenant_id: membership.tenant_id,
            tenant_slug: membership.slug.clone(),
            tenant_role: membership.role,
            platform_role: user.platform_role(),
        })
    }

    /// A place in the order of membership changes: draw it before reading a
    /// membership from Tenant, for [`Sessions::start`].
    ///
    /// # Errors
    /// When the database fails.
    pub async fn membership_read(&self) -> Result<repo::MembershipRead, AuthError> {
        self.db
            .platform_tx(async |tx| repo::membership_read(tx).await)
            .await
    }

    /// A new session for `user` in `membership`'s tenant (read from Tenant
    /// after `read` was drawn, [`Sessions::membership_read`]), stored with
    /// its audit event (`action`) in one transaction once it passed
    /// [`repo::gate_session`] in that transaction: the user is active, their
    /// access to the tenant has not changed since it was read, and for a
    /// session started from another (`switch`), that one is live and the
    /// per-minute cap holds. All read in the database, so they hold across
    /// replicas.
    ///
    /// # Errors
    /// As [`repo::gate_session`]; otherwise when signing or the database fails.
    pub async fn start(
        &self,
        user: &User,
        membership: &MembershipView,
        read: repo::MembershipRead,
        action: &'static str,
        actor: &Actor,
        switch: Option<Switch>,
    ) -> Result<IssuedTokens, AuthError> {
        let session = SessionId::new_v7();
        let (access_token, access_expires) = self.access_token(user, session, membership)?;
        let (refresh_token, hash) = new_refresh_token();
        let refresh_expires = Utc::now() + self.refresh_ttl;
        let new = NewSession {
            id: session,
            user: UserId::from_uuid(user.id),
            tenant: membership.tenant_id,
            refresh_hash: &hash,
            refresh_expires_at: refresh_expires,
            access_expires_at: access_expires,
            switched_from: switch.map(|s| s.from),
        };
        let stored = self
            .db
            .platform_tx(async |tx| {
                // A login (no switch) checked this hash: it must still be the user's.
                let verified = switch.is_none().then_some(user.password_hash.as_str());
                repo::gate_session(tx, new.user, new.tenant, read, switch, verified).await?;
                let ended = repo::make_room(tx, new.user, self.live_cap).await?;
                if !ended.is_empty() {
                    sessions_revoked(new.user, "live-session cap", &ended)
                        .record_for(tx, membership.tenant_id, actor)
                        .await?;
                }
                repo::create_session(tx, &new).await?;
                Event::new(action, "session", session)
                    .new_value(serde_json::json!({
                        "user_id": user.id,
                        "tenant_id": membership.tenant_id.to_string(),
                    }))
                    .record_for(tx, membership.tenant_id, actor)
                    .await?;
                Ok::<_, AuthError>(ended)
            })
            .await;
        if let Err(AuthError::MembershipChanged) = stored {
            // After a right password: worth a line in the security log.
            tracing::info!(
                security = true,
                event = "session_refused",
                user_id = %user.id,
                tenant_id = %membership.tenant_id,
                "the membership changed while the session was being started"
            );
        }
        self.mark_revoked(&stored?);
        Ok(IssuedTokens {
            session,
            access_token,
            access_expires,
            refresh_token,
            refresh_expires,
        })
    }

    /// The tokens after rotating `session`'s refresh token for `user` in
    /// `membership`'s tenant, or why it did not rotate.
    ///
    /// # Errors
    /// When signing or the database fails.
    pub async fn rotate(
        &self,
        user: &User,
        session: &Session,
        presented: &[u8],
        membership: &MembershipView,
    ) -> Result<Result<IssuedTokens, repo::NotRotated>, AuthError> {
        let sid = SessionId::from_uuid(session.id);
        let (access_token, access_expires) = self.access_token(user, sid, membership)?;
        let (refresh_token, new_hash) = new_refresh_token();
        let rotated = self
            .db
            .platform_tx(async |tx| {
                repo::rotate(tx, session.id, presented, &new_hash, access_expires).await
            })
            .await?;
        if let Err(why) = rotated {
            // Rotated or revoked since it was read: the tokens just made are
            // dropped unsigned into the world.
            return Ok(Err(why));
        }
        Ok(Ok(IssuedTokens {
            session: sid,
            access_token,
            access_expires,
            refresh_token,
            refresh_expires: session.refresh_expires_at,
        }))
    }

    /// Revokes `which` and leaves the audit event in the same transaction.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn revoke(
        &self,
        which: Revoke,
        reason: &str,
        tenant: TenantId,
        actor: &Actor,
    ) -> Result<Vec<Revoked>, AuthError> {
        let revoked = self
            .db
            .platform_tx(async |tx| {
                let revoked = repo::revoke(tx, which, reason).await?;
                sessions_revoked(format!("{which:?}"), reason, &revoked)
                    .record_for(tx, tenant, actor)
                    .await?;
                Ok::<_, AuthError>(revoked)
            })
            .await?;
        self.mark_revoked(&revoked);
        Ok(revoked)
    }

    /// Marks `revoked` in this process's guards and tells every subscriber.
    pub fn mark_revoked(&self, revoked: &[Revoked]) {
        // Sessions whose access tokens have expired need no mark (a mass
        // revocation returns old sessions too: they would only flood the
        // subscribers).
        // Until past the verifiers' leeway, as the guards keep them.
        let now = Utc::now() - KEPT_PAST_EXPIRY;
        let revoked: Vec<Revoked> = revoked
            .iter()
            .filter(|(_, expires)| *expires > now)
            .copied()
            .collect();
        self.marked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(revoked.iter().copied());
        for (session, expires) in &revoked {
            let expiry = SystemTime::UNIX_EPOCH
                + Duration::from_secs(u64::try_from(expires.timestamp()).unwrap_or(0));
            self.revoked.revoke(SessionId::from_uuid(*session), expiry);
            // No subscriber is not an error: they load the revoked set when they connect.
            let _ = self.feed.send((*session, *expires));
        }
    }

    /// Revoked sessions whose access tokens have not expired yet.
    ///
    /// # Errors
    /// When the database fails.
    pub async fn revoked_unexpired(&self) -> Result<Vec<Revoked>, AuthError> {
        self.db
            .platform_tx(async |tx| repo::revoked_unexpired(tx).await)
            .await
    }

    /// Every `every` until `shutdown`, reads the sessions revoked lately and
    /// marks those not yet marked (in this process's guards, and for this
    /// Auth's `WatchRevocations` subscribers): another Auth replica revokes
    /// sessions too, and streams only its own.
    ///
    /// Most reads look back [`LOOK_BACK_SECONDS`] by the database's clock. A
    /// revocation's time is its transaction's start, and a transaction may
    /// commit later than that: every [`FULL_READ_EVERY`] reads, and after a
    /// failed one, every revoked session whose access tokens are still valid
    /// is read, so none is missed for longer than that.
    #[must_use]
    pub fn follow_database(
        self,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut reads: u32 = 0;
            let mut full = true;
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                full |= reads.is_multiple_of(FULL_READ_EVERY);
                reads = reads.wrapping_add(1);
                let read = self.db.platform_tx(async |tx| {
                    if full {
                        repo::revoked_unexpired(tx).await
                    } else {
                        repo::revoked_lately(tx, LOOK_BACK_SECONDS).await
                    }
                });
                match tokio::time::timeout(READ_TIMEOUT, read).await {
                    Ok(Ok(rows)) => {
                        full = false;
                        *self
                            .synced
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) =
                            std::time::Instant::now();
                        self.revoked.heard();
                        let new: Vec<Revoked> = {
                            let marked = self
                                .marked
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            rows.into_iter()
                                .filter(|(id, _)| !marked.contains_key(id))
                                .collect()
                        };
                        self.mark_revoked(&new);
                    }
                    Ok(Err(err)) => {
                        full = true;
                        tracing::warn!(%err, "could not read the revoked sessions");
                    }
                    Err(_) => {
                        full = true;
                        tracing::warn!("reading the revoked sessions took over {READ_TIMEOUT:?}");
                    }
                }
                let lag = self
                    .synced
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .elapsed();
                metrics::gauge!("revocation_follower_lag_seconds").set(lag.as_secs_f64());
                if lag > IN_STEP_WITHIN {
                    tracing::error!(
                        lag_seconds = lag.as_secs(),
                        "this Auth is behind the stored revocations: its revocation streams end until it catches up"
                    );
                }
                // Entries go once their tokens have expired (and the leeway).
                let now = Utc::now() - KEPT_PAST_EXPIRY;
                self.marked
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .retain(|_, expires| *expires > now);
            }
        })
    }

    /// Fills the revoked set with the revoked, unexpired sessions (at start-up).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn load_revoked(&self) -> Result<(), AuthError> {
        let revoked = self.revoked_unexpired().await?;
        self.mark_revoked(&revoked);
        Ok(())
    }
}

/// The audit event of sessions ended together (`which`: what named them).
fn sessions_revoked(which: impl ToString, reason: &str, revoked: &[Revoked]) -> Event {
    let ids: Vec<String> = revoked.iter().map(|(id, _)| id.to_string()).collect();
    Event::new("auth.sessions_revoked", "session", which)
        .new_value(serde_json::json!({ "reason": reason, "sessions": ids }))
}

/// How far back (seconds, by the database's clock) a read of recent
/// revocations looks.
const LOOK_BACK_SECONDS: i32 = 60;

/// One read in this many reads every revoked session with valid tokens.
const FULL_READ_EVERY: u32 = 30;

/// How often `WatchRevocations` says its feed is live.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// How recent the last read of the stored revocations must be for this Auth
/// to stream revocations ([`Sessions::in_step`]).
pub const IN_STEP_WITHIN: Duration = Duration::from_secs(10);

/// Longest wait for one read: past it, the next read is a full one.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Sessions whose refresh token expired this long ago are purged.
const PURGE_AFTER: &str = "24 hours";

/// Deletes sessions whose refresh token expired a day ago or more, with their
/// refresh-token hashes, in batches; how many sessions went. The platform
/// role's policies allow exactly these deletions.
///
/// # Errors
/// On database failure.
pub async fn purge_expired(db: &bulkhead_db::Db) -> Result<usize, crate::error::AuthError> {
    use diesel_async::RunQueryDsl as _;
    // Break-glass sessions a day past their token's expiry: few, at once.
    db.platform_tx(async |tx| {
        diesel::sql_query(format!(
            "DELETE FROM break_glass_sessions
              WHERE access_expires_at < now() - interval '{PURGE_AFTER}'"
        ))
        .execute(&mut tx.pg())
        .await?;
        Ok::<_, crate::error::AuthError>(())
    })
    .await?;
    let mut purged = 0;
    loop {
        let n = db
            .platform_tx(async |tx| {
                diesel::sql_query(format!(
                    "WITH gone AS (
                         SELECT id FROM sessions
                          WHERE refresh_expires_at < now() - interval '{PURGE_AFTER}'
                          LIMIT 5000),
                     tokens AS (
                         DELETE FROM refresh_tokens t USING gone WHERE t.session_id = gone.id)
                     SELECT 1 FROM gone"
                ))
                .execute(&mut tx.pg())
                .await?;
                let n = diesel::sql_query(format!(
                    "DELETE FROM sessions WHERE id IN (
                         SELECT s.id FROM sessions s
                          WHERE s.refresh_expires_at < now() - interval '{PURGE_AFTER}'
                            AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.session_id = s.id)
                          LIMIT 5000)"
                ))
                .execute(&mut tx.pg())
                .await?;
                Ok::<_, crate::error::AuthError>(n)
            })
            .await?;
        purged += n;
        if n == 0 {
            return Ok(purged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(revoked: bool, expires_in_secs: i64) -> Session {
        let now = Utc::now();
        Session {
            id: Uuid::now_v7(),
            user_id: Uuid::now_v7(),
            tenant_id: Uuid::now_v7(),
            refresh_expires_at: now + chrono::Duration::seconds(expires_in_secs),
            revoked_at: revoked.then_some(now),
        }
    }

    #[test]
    fn only_a_live_sessions_current_token_rotates() {
        let now = Utc::now();
        let live = session(false, 60);
        assert_eq!(
            next_step(Presented::Current(live.clone()), now),
            RefreshStep::Rotate(live)
        );
        assert_eq!(
            next_step(Presented::Current(session(true, 60)), now),
            RefreshStep::Refuse,
            "revoked"
        );
        assert_eq!(
            next_step(Presented::Current(session(false, -1)), now),
            RefreshStep::Refuse,
            "expired"
        );
        assert_eq!(next_step(Presented::Unknown, now), RefreshStep::Refuse);
    }

    #[test]
    fn a_rotated_token_ends_its_family_even_when_the_session_is_revoked() {
        let id = Uuid::now_v7();
        assert_eq!(
            next_step(Presented::Rotated(id), Utc::now()),
            RefreshStep::EndFamily(id)
        );
    }
}
