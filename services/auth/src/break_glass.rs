//! Break-glass sessions (`bulkhead token`): a token minted with Auth's key
//! outside any login still has a session, stored here, so it can be revoked
//! like any other (Auth's revocation follower streams it to every guard).

use bulkhead_context::SessionId;
use bulkhead_db::PlatformConn;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::error::AuthError;
use crate::schema::break_glass_sessions;

/// Stores the session of a break-glass token whose access expires at `expires`.
///
/// # Errors
/// On database failure.
pub async fn store(
    tx: PlatformConn<'_>,
    session: SessionId,
    expires: DateTime<Utc>,
) -> Result<(), AuthError> {
    diesel::insert_into(break_glass_sessions::table)
        .values((
            break_glass_sessions::id.eq(session.as_uuid()),
            break_glass_sessions::access_expires_at.eq(expires),
        ))
        .execute(&mut tx.pg())
        .await?;
    Ok(())
}

/// Revokes a break-glass session; its token's expiry, or `None` when it is
/// unknown or already revoked.
///
/// # Errors
/// On database failure.
pub async fn revoke(
    tx: PlatformConn<'_>,
    session: SessionId,
    reason: &str,
) -> Result<Option<DateTime<Utc>>, AuthError> {
    Ok(diesel::update(break_glass_sessions::table)
        .filter(break_glass_sessions::id.eq(session.as_uuid()))
        .filter(break_glass_sessions::revoked_at.is_null())
        .set((
            break_glass_sessions::revoked_at.eq(diesel::dsl::now),
            break_glass_sessions::revoke_reason.eq(reason),
        ))
        .returning(break_glass_sessions::access_expires_at)
        .get_result(&mut tx.pg())
        .await
        .optional()?)
}
