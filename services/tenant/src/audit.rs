//! Messages this service leaves in its outbox, in the same transaction as the
//! change: audit events (topic `audit`) for every tenant, membership and settings
//! mutation, and revocation requests to Auth (topic `auth.revoke`) whenever a
//! change lowers or ends someone's access.

use bulkhead_context::{TenantId, UserId};
use bulkhead_db::{PlatformConn, TenantConn};
use bulkhead_guard::RequestContext;
use bulkhead_outbox::audit::Actor;
use serde_json::{Value, json};

use crate::error::TenantError;
use crate::repo::{Membership, SettingsRow, Tenant};

pub use bulkhead_outbox::audit::{AUDIT_TOPIC, Event};
pub use bulkhead_outbox::{RELEASE_TOPIC, REVOKE_TOPIC};

/// Stores `event` for the transaction's tenant.
///
/// # Errors
/// When the outbox insert fails (the change fails with it).
pub async fn record(
    tx: TenantConn<'_>,
    ctx: &RequestContext,
    event: Event,
) -> Result<(), TenantError> {
    Ok(event.record(tx, &Actor::of(ctx)).await?)
}

/// Stores `event` for `tenant` from a platform transaction.
///
/// # Errors
/// When the outbox insert fails.
pub async fn record_platform(
    tx: PlatformConn<'_>,
    tenant: TenantId,
    ctx: &RequestContext,
    event: Event,
) -> Result<(), TenantError> {
    Ok(event.record_for(tx, tenant, &Actor::of(ctx)).await?)
}

fn revocation(tenant: TenantId, user: Option<UserId>, reason: &str) -> Value {
    json!({
        "tenant_id": tenant.to_string(),
        "user_id": user.map(|u| u.to_string()),
        "reason": reason,
    })
}

/// Asks Auth (through the outbox) to end `user`'s sessions in the transaction's tenant.
///
/// # Errors
/// When the outbox insert fails.
pub async fn revoke_user(
    tx: TenantConn<'_>,
    user: UserId,
    reason: &str,
) -> Result<(), TenantError> {
    let payload = revocation(tx.tenant_id(), Some(user), reason);
    bulkhead_outbox::enqueue(tx, REVOKE_TOPIC, &payload).await?;
    Ok(())
}

/// Asks Task (through the outbox) to unassign `user`'s open tasks in the
/// transaction's tenant: they left it. The membership that ended is named by
/// its create time (what CheckMembership showed), so a later re-join is not
/// mistaken for it, whatever the clocks.
///
/// # Errors
/// When the outbox insert fails.
pub async fn release_user(
    tx: TenantConn<'_>,
    user: UserId,
    membership_create_time: chrono::DateTime<chrono::Utc>,
) -> Result<(), TenantError> {
    let payload = json!({
        "user_id": user.to_string(),
        "membership_create_time": membership_create_time
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
    });
    bulkhead_outbox::enqueue(tx, RELEASE_TOPIC, &payload).await?;
    Ok(())
}

/// Asks Auth (through the outbox) to end every session in `tenant`.
///
/// # Errors
/// When the outbox insert fails.
pub async fn revoke_tenant(
    tx: PlatformConn<'_>,
    tenant: TenantId,
    reason: &str,
) -> Result<(), TenantError> {
    let payload = revocation(tenant, None, reason);
    bulkhead_outbox::enqueue_for(tx, tenant, REVOKE_TOPIC, &payload).await?;
    // Nobody acts in it any more: Task unassigns its open tasks.
    bulkhead_outbox::enqueue_for(tx, tenant, RELEASE_TOPIC, &json!({ "user_id": null })).await?;
    Ok(())
}

/// A tenant as audit data.
#[must_use]
pub fn tenant_json(t: &Tenant) -> Value {
    json!({
        "id": t.id, "slug": t.slug, "name": t.name, "domain": t.domain,
        "is_active": t.is_active, "is_default": t.is_default,
    })
}

/// A membership as audit data.
#[must_use]
pub fn membership_json(m: &Membership) -> Value {
    json!({ "tenant_id": m.tenant_id, "user_id": m.user_id, "role": m.role, "is_default": m.is_default })
}

/// Settings as audit data.
#[must_use]
pub fn settings_json(s: &SettingsRow) -> Value {
    json!({
        "display_name": s.display_name, "logo_url": s.logo_url,
        "timezone": s.timezone, "locale": s.locale,
    })
}
