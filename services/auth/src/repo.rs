//! Repository functions for users and sessions.

use bulkhead_context::{PlatformRole, SessionId, TenantId, UserId};
use bulkhead_db::{DbError, PlatformConn, UserConn};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::error::AuthError;
use crate::schema::{membership_changes, refresh_tokens, sessions, users};
use crate::sessions::Presented;

diesel::define_sql_function!(fn lower(x: diesel::sql_types::Text) -> diesel::sql_types::Text);

/// A user row.
#[derive(Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub platform_role: String,
    pub is_active: bool,
    pub password_hash: String,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password hash.
        f.debug_struct("User")
            .field("id", &self.id)
            .field("platform_role", &self.platform_role)
            .field("is_active", &self.is_active)
            .finish_non_exhaustive()
    }
}

impl User {
    /// The platform role as a domain value (the column's CHECK admits only the
    /// two spellings; anything else would be the least powerful).
    #[must_use]
    pub fn platform_role(&self) -> PlatformRole {
        PlatformRole::parse(&self.platform_role).unwrap_or(PlatformRole::User)
    }
}

/// A session row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = sessions)]
pub struct Session {
    pub id: Uuid,
    pub user_id: Uuid,
    pub tenant_id: Uuid,
    pub refresh_expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A user by email, whatever its case.
///
/// # Errors
/// On database failure.
pub async fn user_by_email(tx: PlatformConn<'_>, email: &str) -> Result<Option<User>, AuthError> {
    Ok(users::table
        .filter(lower(users::email).eq(email.to_lowercase()))
        .select(User::as_select())
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// Creates a user unless one with that email exists; returns the user and
/// whether it was created now.
///
/// # Errors
/// On database failure.
pub async fn ensure_user(
    tx: PlatformConn<'_>,
    email: &str,
    password_hash: &str,
    role: PlatformRole,
) -> Result<(User, bool), AuthError> {
    if let Some(existing) = user_by_email(tx, email).await? {
        return Ok((existing, false));
    }
    let user = diesel::insert_into(users::table)
        .values((
            users::id.eq(Uuid::now_v7()),
            users::email.eq(email),
            users::platform_role.eq(role.as_str()),
            users::password_hash.eq(password_hash),
        ))
        .returning(User::as_returning())
        .get_result(&mut tx.pg())
        .await?;
    Ok((user, true))
}

/// A new user.
///
/// # Errors
/// `EmailTaken` when a user has this email in any case.
pub async fn create_user(
    tx: PlatformConn<'_>,
    email: &str,
    display_name: &str,
    password_hash: &str,
    role: PlatformRole,
) -> Result<User, AuthError> {
    Ok(diesel::insert_into(users::table)
        .values((
            users::id.eq(Uuid::now_v7()),
            users::email.eq(email),
            users::display_name.eq(display_name),
            users::platform_role.eq(role.as_str()),
            users::password_hash.eq(password_hash),
        ))
        .returning(User::as_returning())
        .get_result(&mut tx.pg())
        .await?)
}

/// Replaces a user's password hash.
///
/// # Errors
/// On database failure.
pub async fn set_password(tx: PlatformConn<'_>, user: UserId, hash: &str) -> Result<(), AuthError> {
    diesel::update(users::table.filter(users::id.eq(user.as_uuid())))
        .set((
            users::password_hash.eq(hash),
            users::update_time.eq(diesel::dsl::now),
        ))
        .execute(&mut tx.pg())
        .await?;
    Ok(())
}

/// The transaction's own user.
///
/// # Errors
/// On database failure.
pub async fn own_user(tx: UserConn<'_>) -> Result<Option<User>, AuthError> {
    Ok(users::table
        .filter(users::id.eq(tx.user_id().as_uuid()))
        .select(User::as_select())
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// What a new session starts with.
#[derive(Debug)]
pub struct NewSession<'a> {
    pub id: SessionId,
    pub user: UserId,
    pub tenant: TenantId,
    pub refresh_hash: &'a [u8],
    pub refresh_expires_at: DateTime<Utc>,
    pub access_expires_at: DateTime<Utc>,
    /// The session it was switched from (SwitchTenant).
    pub switched_from: Option<SessionId>,
}

/// Stores a new session and its first refresh token.
///
/// # Errors
/// On database failure.
pub async fn create_session(tx: PlatformConn<'_>, s: &NewSession<'_>) -> Result<(), AuthError> {
    diesel::insert_into(sessions::table)
        .values((
            sessions::id.eq(s.id.as_uuid()),
            sessions::user_id.eq(s.user.as_uuid()),
            sessions::tenant_id.eq(s.tenant.as_uuid()),
            sessions::refresh_hash.eq(s.refresh_hash),
            sessions::refresh_expires_at.eq(s.refresh_expires_at),
            sessions::access_expires_at.eq(s.access_expires_at),
            sessions::switched_from.eq(s.switched_from.map(|f| *f.as_uuid())),
        ))
        .execute(&mut tx.pg())
        .await?;
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::hash.eq(s.refresh_hash),
            refresh_tokens::session_id.eq(s.id.as_uuid()),
        ))
        .execute(&mut tx.pg())
        .await?;
    Ok(())
}

/// A place in the order of membership changes, drawn before a membership is
/// read from Tenant: [`gate_session`] refuses the session if a change was
/// recorded after it (an order of one sequence, not a clock, so no clock step
/// can reorder them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipRead(i64);

/// Draws a [`MembershipRead`]: call it before asking Tenant.
///
/// # Errors
/// On database failure.
pub async fn membership_read(tx: PlatformConn<'_>) -> Result<MembershipRead, AuthError> {
    Ok(MembershipRead(
        diesel::select(next_membership_change())
            .get_result(&mut tx.pg())
            .await?,
    ))
}

diesel::define_sql_function! {
    /// `nextval('membership_change_order')`.
    #[sql_name = "nextval"]
    fn nextval(sequence: diesel::sql_types::Text) -> diesel::sql_types::BigInt;
}

fn next_membership_change() -> nextval<&'static str> {
    nextval("membership_change_order")
}

/// A session started from another (SwitchTenant).
#[derive(Debug, Clone, Copy)]
pub struct Switch {
    /// The session the call came from.
    pub from: SessionId,
    /// Sessions the user may have started in the last minute.
    pub per_minute: u32,
}

/// How a transaction holds a tenant's access ([`lock_tenant_access`]).
#[derive(Debug, Clone, Copy)]
enum TenantAccess {
    /// Starting a session in the tenant, changing a password in it.
    Shared,
    /// Revoking the whole tenant's sessions.
    Exclusive,
}

/// Takes the transaction-scoped advisory lock on `tenant`'s access
/// (Postgres hashes the key to 64 bits, the same on every replica).
async fn lock_tenant_access(
    tx: PlatformConn<'_>,
    tenant: TenantId,
    how: TenantAccess,
) -> QueryResult<()> {
    let statement = match how {
        TenantAccess::Shared => "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))",
        TenantAccess::Exclusive => "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
    };
    diesel::sql_query(statement)
        .bind::<diesel::sql_types::Text, _>(format!("auth.tenant_access:{tenant}"))
        .execute(&mut tx.pg())
        .await?;
    Ok(())
}

/// Locks `user`'s row until the transaction ends (what every revocation of
/// the user's sessions takes).
async fn lock_user_row(tx: PlatformConn<'_>, user: Uuid) -> QueryResult<()> {
    users::table
        .select(users::id)
        .filter(users::id.eq(user))
        .for_no_key_update()
        .load::<Uuid>(&mut tx.pg())
        .await?;
    Ok(())
}

/// The gate of a new session for `user` in `tenant` (Login, SwitchTenant),
/// in the transaction that stores it; `read` was drawn before the membership
/// was read from Tenant.
///
/// * locks the user's row and (shared) the tenant's access, waiting at most a
///   second: revocations take the same locks ([`revoke`]), so a revocation
///   and a session start run one after the other, on every replica: either
///   the revocation's update sees the session, or the gate sees the change;
/// * the user is active;
/// * no change of the user's (or the whole tenant's) access was recorded
///   after the membership was read: a membership removed, a role lowered or a
///   tenant deactivated while Tenant's answer was on its way would otherwise
///   leave a session the revocation missed. Tenant sends the revocation only
///   once its change committed, so after any read that did not see it: the
///   revocation draws a later place in the order than the read's;
/// * for a switch, `from` (the session the call came from) is live, whatever
///   this replica's guard has heard so far, and the user started fewer than
///   `per_minute` sessions in the last minute, by the database's clock at
///   this moment (switches of one user take the row's lock in turn, so they
///   count each other).
///
/// # Errors
/// [`AuthError::Forbidden`] for an inactive user,
/// [`AuthError::InvalidCredentials`] when the password hash is no longer
/// `verified` (the one a login checked),
/// [`AuthError::MembershipChanged`] after a recorded change,
/// [`AuthError::SessionRevoked`] for a revoked or unknown `from`,
/// [`AuthError::TooManySessions`] over the cap (a switch),
/// [`AuthError::Contended`] when the locks are not had in time; a database
/// error otherwise.
pub async fn gate_session(
    tx: PlatformConn<'_>,
    user: UserId,
    tenant: TenantId,
    read: MembershipRead,
    switch: Option<Switch>,
    verified: Option<&str>,
) -> Result<(), AuthError> {
    let lock = async {
        diesel::sql_query("SET LOCAL lock_timeout = '1s'")
            .execute(&mut tx.pg())
            .await?;
        lock_tenant_access(tx, tenant, TenantAccess::Shared).await?;
        // Exclusive: a user's session starts count each other (the
        // per-minute cap, the live-session cap), one at a time.
        users::table
            .select((users::is_active, users::password_hash))
            .filter(users::id.eq(user.as_uuid()))
            .for_no_key_update()
            .get_result::<(bool, String)>(&mut tx.pg())
            .await
            .optional()
    };
    let active = match lock.await.map_err(DbError::from) {
        Ok(active) => active,
        // Switches of one user wait for each other: that is a flood.
        Err(err) if err.is_lock_timeout() && switch.is_some() => {
            return Err(AuthError::TooManySessions(std::time::Duration::from_secs(
                1,
            )));
        }
        Err(err) if err.is_lock_timeout() => return Err(AuthError::Contended),
        Err(err) => return Err(AuthError::Db(err)),
    };
    let Some((true, hash)) = active else {
        return Err(AuthError::Forbidden);
    };
    // A password changed since it was checked: its sessions were all
    // revoked, and this one must not start after them.
    if verified.is_some_and(|verified| verified != hash) {
        return Err(AuthError::InvalidCredentials);
    }
    let changed: bool = diesel::select(diesel::dsl::exists(
        membership_changes::table
            .filter(membership_changes::tenant_id.eq(tenant.as_uuid()))
            .filter(membership_changes::user_id.eq_any([*user.as_uuid(), Uuid::nil()]))
            .filter(membership_changes::change_order.gt(read.0)),
    ))
    .get_result(&mut tx.pg())
    .await?;
    if changed {
        return Err(AuthError::MembershipChanged);
    }
    match switch {
        Some(switch) => gate_switch(tx, user, switch).await,
        None => Ok(()),
    }
}

/// Ends `user`'s oldest live sessions (refresh token unexpired, not revoked)
/// but the newest `cap - 1`, making room for one more: a user holds at most
/// `cap` at once, so no account can pile up sessions (and, revoking them all,
/// a flood of revocations for every guard). The sessions ended, with their
/// access expiries. Call with the user's row locked ([`gate_session`]).
///
/// # Errors
/// On database failure.
pub async fn make_room(
    tx: PlatformConn<'_>,
    user: UserId,
    cap: u32,
) -> Result<Vec<(Uuid, DateTime<Utc>)>, AuthError> {
    #[derive(QueryableByName)]
    struct Ended {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Timestamptz)]
        access_expires_at: DateTime<Utc>,
    }
    let ended: Vec<Ended> = diesel::sql_query(
        "WITH past_cap AS (
             SELECT id FROM sessions
              WHERE user_id = $1 AND revoked_at IS NULL AND refresh_expires_at > now()
              ORDER BY create_time DESC, id DESC
             OFFSET $2)
         UPDATE sessions s
            SET revoked_at = now(), revoke_reason = 'live-session cap', update_time = now()
           FROM past_cap WHERE s.id = past_cap.id
         RETURNING s.id, s.access_expires_at",
    )
    .bind::<diesel::sql_types::Uuid, _>(user.as_uuid())
    .bind::<diesel::sql_types::BigInt, _>(i64::from(cap.max(1)) - 1)
    .load(&mut tx.pg())
    .await?;
    Ok(ended
        .into_iter()
        .map(|e| (e.id, e.access_expires_at))
        .collect())
}

/// The part of [`gate_session`] that is a switch's own: `from` is live and
/// the per-minute cap holds.
async fn gate_switch(tx: PlatformConn<'_>, user: UserId, switch: Switch) -> Result<(), AuthError> {
    #[derive(QueryableByName)]
    struct Gate {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        from_live: bool,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        started: i64,
        #[diesel(sql_type = diesel::sql_types::Double)]
        until_free: f64,
    }
    let gate: Gate = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM sessions
                         WHERE id = $2 AND user_id = $1 AND revoked_at IS NULL
                           AND access_expires_at > clock_timestamp()) AS from_live,
                count(*) AS started,
                COALESCE(EXTRACT(EPOCH FROM min(create_time) + interval '60 seconds'
                                            - clock_timestamp()), 0)::float8 AS until_free
           FROM sessions
          WHERE user_id = $1 AND create_time > clock_timestamp() - interval '60 seconds'",
    )
    .bind::<diesel::sql_types::Uuid, _>(user.as_uuid())
    .bind::<diesel::sql_types::Uuid, _>(switch.from.as_uuid())
    .get_result(&mut tx.pg())
    .await?;
    if !gate.from_live {
        return Err(AuthError::SessionRevoked);
    }
    if gate.started >= i64::from(switch.per_minute) {
        return Err(AuthError::TooManySessions(
            std::time::Duration::from_secs_f64(gate.until_free.clamp(1.0, 60.0)),
        ));
    }
    Ok(())
}

/// Records a change of `user`'s access to `tenant` (the whole tenant's, for
/// none), in the order of membership changes, now: sessions whose membership
/// was read before it are not stored ([`gate_session`]). A row only moves
/// forward in the order. Call holding the user's row or the tenant's access
/// lock.
async fn record_membership_change(
    tx: PlatformConn<'_>,
    tenant: TenantId,
    user: Option<UserId>,
) -> Result<(), AuthError> {
    diesel::insert_into(membership_changes::table)
        .values((
            membership_changes::tenant_id.eq(tenant.as_uuid()),
            membership_changes::user_id.eq(user.map_or_else(Uuid::nil, |u| *u.as_uuid())),
            membership_changes::change_order.eq(next_membership_change()),
        ))
        .on_conflict((membership_changes::tenant_id, membership_changes::user_id))
        .do_update()
        .set(
            membership_changes::change_order.eq(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                "GREATEST(membership_changes.change_order, excluded.change_order)",
            )),
        )
        .execute(&mut tx.pg())
        .await?;
    Ok(())
}

/// Session `id` and every session started from it by SwitchTenant, and from
/// those, and so on.
async fn switched_family(tx: PlatformConn<'_>, id: Uuid) -> Result<Vec<Uuid>, AuthError> {
    #[derive(QueryableByName)]
    struct Member {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
    }
    let family: Vec<Member> = diesel::sql_query(
        "WITH RECURSIVE family AS (
             SELECT $1::uuid AS id
             UNION
             SELECT s.id FROM sessions s JOIN family f ON s.switched_from = f.id)
         SELECT id FROM family",
    )
    .bind::<diesel::sql_types::Uuid, _>(id)
    .load(&mut tx.pg())
    .await?;
    Ok(family.into_iter().map(|m| m.id).collect())
}

/// Locks the row of the user whose sessions `which` revokes (when it names
/// one user), or the access of the tenant whose sessions it revokes:
/// [`gate_session`] takes the same locks, so no session starts from one
/// being revoked, nor slips in between.
async fn lock_revoked_access(tx: PlatformConn<'_>, which: Revoke) -> Result<(), AuthError> {
    if let Revoke::Tenant(tenant) = which {
        lock_tenant_access(tx, tenant, TenantAccess::Exclusive).await?;
    }
    let user = match which {
        Revoke::User(user, _) | Revoke::UserExcept(user, _) => Some(*user.as_uuid()),
        Revoke::Session(id) => sessions::table
            .select(sessions::user_id)
            .filter(sessions::id.eq(id))
            .get_result::<Uuid>(&mut tx.pg())
            .await
            .optional()?,
        Revoke::Tenant(_) => None,
    };
    if let Some(user) = user {
        lock_user_row(tx, user).await?;
    }
    Ok(())
}

/// What the refresh token with this hash is: the current token of a session
/// (locked until the transaction ends), a rotated one, or unknown.
///
/// # Errors
/// On database failure.
pub async fn presented_refresh(tx: PlatformConn<'_>, hash: &[u8]) -> Result<Presented, AuthError> {
    let current = sessions::table
        .filter(sessions::refresh_hash.eq(hash))
        .select(Session::as_select())
        .for_update()
        .first(&mut tx.pg())
        .await
        .optional()?;
    if let Some(session) = current {
        return Ok(Presented::Current(session));
    }
    let rotated = refresh_tokens::table
        .filter(refresh_tokens::hash.eq(hash))
        .select(refresh_tokens::session_id)
        .first(&mut tx.pg())
        .await
        .optional()?;
    Ok(rotated.map_or(Presented::Unknown, Presented::Rotated))
}

/// Why a refresh token did not rotate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRotated {
    /// The session was revoked since the token was read (a logout, a
    /// membership ended): no theft, just late.
    Revoked,
    /// Another refresh with the same token rotated it first: a second use
    /// of one token, whoever sent it.
    Superseded,
}

/// Rotates a session's refresh token (and pushes its access expiry) if
/// `presented` is still its current one and it is not revoked: one compare-and-
/// swap, so one presented token yields one rotation whatever the concurrency,
/// and a revocation committed first wins. Otherwise, why not.
///
/// # Errors
/// On database failure.
pub async fn rotate(
    tx: PlatformConn<'_>,
    session: Uuid,
    presented: &[u8],
    new_hash: &[u8],
    access_expires_at: DateTime<Utc>,
) -> Result<Result<(), NotRotated>, AuthError> {
    let swapped = diesel::update(
        sessions::table
            .filter(sessions::id.eq(session))
            .filter(sessions::refresh_hash.eq(presented))
            .filter(sessions::revoked_at.is_null()),
    )
    .set((
        sessions::refresh_hash.eq(new_hash),
        sessions::access_expires_at.eq(access_expires_at),
        sessions::update_time.eq(diesel::dsl::now),
    ))
    .execute(&mut tx.pg())
    .await?;
    if swapped == 0 {
        let revoked = sessions::table
            .select(sessions::revoked_at.is_not_null())
            .filter(sessions::id.eq(session))
            .get_result::<bool>(&mut tx.pg())
            .await
            .optional()?;
        return Ok(Err(if revoked == Some(false) {
            NotRotated::Superseded
        } else {
            NotRotated::Revoked
        }));
    }
    diesel::insert_into(refresh_tokens::table)
        .values((
            refresh_tokens::hash.eq(new_hash),
            refresh_tokens::session_id.eq(session),
        ))
        .execute(&mut tx.pg())
        .await?;
    Ok(Ok(()))
}

/// Whether `session` of `user` in `tenant` is live in the database (not
/// revoked; a break-glass session counts too), whatever this replica's guard
/// has heard of revocations so far; it stays so until the transaction ends.
///
/// Takes what every revocation takes first, in [`gate_session`]'s order: the
/// tenant's access (shared; a revocation of the whole tenant's sessions holds
/// it exclusively), then the user's row (revocations of the user's sessions,
/// or of one of them, take it), and a break-glass session's row (its
/// revocation updates that row alone). A revocation is then either committed
/// and seen here, or waits for this transaction to end.
///
/// # Errors
/// On database failure (a lock not had within the pool's lock timeout).
pub async fn hold_live_session(
    tx: PlatformConn<'_>,
    user: UserId,
    tenant: TenantId,
    session: SessionId,
) -> Result<bool, AuthError> {
    use crate::schema::break_glass_sessions;
    lock_tenant_access(tx, tenant, TenantAccess::Shared).await?;
    lock_user_row(tx, *user.as_uuid()).await?;
    let stored: bool = diesel::select(diesel::dsl::exists(
        sessions::table
            .filter(sessions::id.eq(session.as_uuid()))
            .filter(sessions::user_id.eq(user.as_uuid()))
            .filter(sessions::revoked_at.is_null()),
    ))
    .get_result(&mut tx.pg())
    .await?;
    if stored {
        return Ok(true);
    }
    // FOR SHARE: a revocation of it in progress is waited for, then seen.
    let break_glass: Option<Option<DateTime<Utc>>> = break_glass_sessions::table
        .select(break_glass_sessions::revoked_at)
        .filter(break_glass_sessions::id.eq(session.as_uuid()))
        .for_share()
        .get_result(&mut tx.pg())
        .await
        .optional()?;
    Ok(matches!(break_glass, Some(None)))
}

/// Which sessions to revoke.
#[derive(Debug, Clone, Copy)]
pub enum Revoke {
    /// One session.
    Session(Uuid),
    /// Every session of a user (optionally only in one tenant).
    User(UserId, Option<TenantId>),
    /// Every session in a tenant.
    Tenant(TenantId),
    /// Every session of a user but one (after a password change).
    UserExcept(UserId, Uuid),
}

/// Revokes the live sessions `which` names; returns their ids and access expiries.
///
/// # Errors
/// On database failure.
pub async fn revoke(
    tx: PlatformConn<'_>,
    which: Revoke,
    reason: &str,
) -> Result<Vec<(Uuid, DateTime<Utc>)>, AuthError> {
    lock_revoked_access(tx, which).await?;
    // A revocation naming a tenant is Tenant's: a membership ended, a role
    // was lowered, the tenant was deactivated.
    match which {
        Revoke::User(user, Some(tenant)) => {
            record_membership_change(tx, tenant, Some(user)).await?
        }
        Revoke::Tenant(tenant) => record_membership_change(tx, tenant, None).await?,
        Revoke::User(_, None) | Revoke::Session(_) | Revoke::UserExcept(..) => {}
    }
    // A break-glass token's session is ended by its own logout too.
    let break_glass = match which {
        Revoke::Session(id) => crate::break_glass::revoke(tx, SessionId::from_uuid(id), reason)
            .await?
            .map(|expires| (id, expires)),
        _ => None,
    };
    let mut query = diesel::update(sessions::table)
        .filter(sessions::revoked_at.is_null())
        .into_boxed();
    query = match which {
        // The session and every session switched from it, and so on.
        Revoke::Session(id) => query.filter(sessions::id.eq_any(switched_family(tx, id).await?)),
        Revoke::User(user, None) => query.filter(sessions::user_id.eq(*user.as_uuid())),
        Revoke::User(user, Some(tenant)) => query
            .filter(sessions::user_id.eq(*user.as_uuid()))
            .filter(sessions::tenant_id.eq(*tenant.as_uuid())),
        Revoke::Tenant(tenant) => query.filter(sessions::tenant_id.eq(*tenant.as_uuid())),
        Revoke::UserExcept(user, keep) => query
            .filter(sessions::user_id.eq(*user.as_uuid()))
            .filter(sessions::id.ne(keep)),
    };
    let mut revoked: Vec<(Uuid, DateTime<Utc>)> = query
        .set((
            sessions::revoked_at.eq(diesel::dsl::now),
            sessions::revoke_reason.eq(reason),
            sessions::update_time.eq(diesel::dsl::now),
        ))
        .returning((sessions::id, sessions::access_expires_at))
        .get_results(&mut tx.pg())
        .await?;
    revoked.extend(break_glass);
    Ok(revoked)
}

/// Sessions revoked in the last `seconds` by the database's clock (a
/// revocation's time is its transaction's start) whose access tokens have
/// not expired (a minute ago), break-glass sessions included.
///
/// # Errors
/// On database failure.
pub async fn revoked_lately(
    tx: PlatformConn<'_>,
    seconds: i32,
) -> Result<Vec<(Uuid, DateTime<Utc>)>, AuthError> {
    revoked(tx, Some(seconds)).await
}

/// Revoked sessions whose access tokens have not expired (a minute ago),
/// break-glass sessions included.
///
/// # Errors
/// On database failure.
pub async fn revoked_unexpired(
    tx: PlatformConn<'_>,
) -> Result<Vec<(Uuid, DateTime<Utc>)>, AuthError> {
    revoked(tx, None).await
}

/// Revoked sessions and break-glass sessions whose tokens have not expired
/// (a minute ago), revoked in the last `seconds` when given.
async fn revoked(
    tx: PlatformConn<'_>,
    seconds: Option<i32>,
) -> Result<Vec<(Uuid, DateTime<Utc>)>, AuthError> {
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
        #[diesel(sql_type = diesel::sql_types::Timestamptz)]
        expires: DateTime<Utc>,
    }
    // Told until their token expired KEPT_PAST_EXPIRY ago: past any
    // verifier's leeway (the guards keep them as long).
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT id, access_expires_at AS expires FROM sessions
          WHERE revoked_at IS NOT NULL AND access_expires_at > now() - make_interval(secs => $1)
            AND ($2::int IS NULL OR revoked_at >= now() - make_interval(secs => $2))
         UNION ALL
         SELECT id, access_expires_at FROM break_glass_sessions
          WHERE revoked_at IS NOT NULL AND access_expires_at > now() - make_interval(secs => $1)
            AND ($2::int IS NULL OR revoked_at >= now() - make_interval(secs => $2))",
    )
    .bind::<diesel::sql_types::Double, _>(bulkhead_guard::KEPT_PAST_EXPIRY.as_secs_f64())
    .bind::<diesel::sql_types::Nullable<diesel::sql_types::Integer>, _>(seconds)
    .load(&mut tx.pg())
    .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.expires)).collect())
}
