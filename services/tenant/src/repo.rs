//! Repository functions. Tenant-owned data is reached through [`TenantConn`]
//! (a tenant-scoped transaction); platform operations through [`PlatformConn`].
//! Queries filter by tenant as well as relying on RLS: the planner uses the key,
//! and it is a second lock on the door.

use bulkhead_context::{TenantId, TenantRole, UserId};
use bulkhead_db::{PlatformConn, TenantConn};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::domain::{Domain, Slug, TenantName};
use crate::error::TenantError;
use crate::schema::{memberships, organization_settings, tenants};

/// A tenant row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = tenants)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub domain: Option<String>,
    pub is_active: bool,
    pub is_default: bool,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

/// A membership row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = memberships)]
pub struct Membership {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub role: String,
    pub is_default: bool,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

impl Membership {
    /// The role as a domain value.
    #[must_use]
    pub fn role(&self) -> TenantRole {
        // The column's CHECK admits only the four spellings.
        TenantRole::parse(&self.role).unwrap_or(TenantRole::Viewer)
    }
}

/// A settings row: the global default (`tenant_id` NULL) or a tenant's overrides.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = organization_settings)]
pub struct SettingsRow {
    pub tenant_id: Option<Uuid>,
    pub display_name: Option<String>,
    pub logo_url: Option<String>,
    pub timezone: Option<String>,
    pub locale: Option<String>,
    pub update_time: DateTime<Utc>,
}

/// A settings change: `None` leaves a field, `Some(None)` clears a tenant's
/// override, `Some(Some(v))` sets it.
#[derive(Debug, Clone, Default, PartialEq, Eq, AsChangeset)]
#[diesel(table_name = organization_settings)]
pub struct SettingsChange {
    pub display_name: Option<Option<String>>,
    pub logo_url: Option<Option<String>>,
    pub timezone: Option<Option<String>>,
    pub locale: Option<Option<String>>,
}

// --- tenant scope --------------------------------------------------------------------

/// The transaction's tenant, locked for update: serialises every membership
/// change of one tenant, so "at least one OWNER" holds under concurrency.
///
/// # Errors
/// `NotFound` when the tenant does not exist, `Inactive` when it is deactivated.
pub async fn lock_tenant(tx: TenantConn<'_>) -> Result<Tenant, TenantError> {
    let tenant: Option<Tenant> = tenants::table
        .filter(tenants::id.eq(tx.tenant_id().as_uuid()))
        .select(Tenant::as_select())
        .for_update()
        .first(&mut tx.pg())
        .await
        .optional()?;
    active(tenant)
}

/// The transaction's tenant, if it exists and is active.
///
/// # Errors
/// As [`lock_tenant`].
pub async fn current_tenant(tx: TenantConn<'_>) -> Result<Tenant, TenantError> {
    let tenant: Option<Tenant> = tenants::table
        .filter(tenants::id.eq(tx.tenant_id().as_uuid()))
        .select(Tenant::as_select())
        .first(&mut tx.pg())
        .await
        .optional()?;
    active(tenant)
}

fn active(tenant: Option<Tenant>) -> Result<Tenant, TenantError> {
    match tenant {
        None => Err(TenantError::NotFound),
        Some(t) if !t.is_active => Err(TenantError::Inactive),
        Some(t) => Ok(t),
    }
}

/// A user's membership in the transaction's tenant.
///
/// # Errors
/// On database failure.
pub async fn membership(
    tx: TenantConn<'_>,
    user: UserId,
) -> Result<Option<Membership>, TenantError> {
    Ok(memberships::table
        .filter(memberships::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(memberships::user_id.eq(user.as_uuid()))
        .select(Membership::as_select())
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// How many OWNERs the transaction's tenant has.
///
/// # Errors
/// On database failure.
pub async fn owner_count(tx: TenantConn<'_>) -> Result<i64, TenantError> {
    Ok(memberships::table
        .filter(memberships::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(memberships::role.eq(TenantRole::Owner.as_str()))
        .count()
        .get_result(&mut tx.pg())
        .await?)
}

/// Adds a member to the transaction's tenant.
///
/// # Errors
/// `AlreadyExists("membership")` when the user is a member already.
pub async fn insert_membership(
    tx: TenantConn<'_>,
    user: UserId,
    role: TenantRole,
) -> Result<Membership, TenantError> {
    Ok(diesel::insert_into(memberships::table)
        .values((
            memberships::tenant_id.eq(tx.tenant_id().as_uuid()),
            memberships::user_id.eq(user.as_uuid()),
            memberships::role.eq(role.as_str()),
        ))
        .returning(Membership::as_returning())
        .get_result(&mut tx.pg())
        .await?)
}

/// Removes a member from the transaction's tenant.
///
/// # Errors
/// On database failure.
pub async fn delete_membership(tx: TenantConn<'_>, user: UserId) -> Result<usize, TenantError> {
    Ok(diesel::delete(
        memberships::table
            .filter(memberships::tenant_id.eq(tx.tenant_id().as_uuid()))
            .filter(memberships::user_id.eq(user.as_uuid())),
    )
    .execute(&mut tx.pg())
    .await?)
}

/// Changes a member's role.
///
/// # Errors
/// On database failure.
pub async fn set_role(
    tx: TenantConn<'_>,
    user: UserId,
    role: TenantRole,
) -> Result<Membership, TenantError> {
    Ok(diesel::update(
        memberships::table
            .filter(memberships::tenant_id.eq(tx.tenant_id().as_uuid()))
            .filter(memberships::user_id.eq(user.as_uuid())),
    )
    .set((
        memberships::role.eq(role.as_str()),
        memberships::update_time.eq(diesel::dsl::now),
    ))
    .returning(Membership::as_returning())
    .get_result(&mut tx.pg())
    .await?)
}

/// A page of the transaction's tenant's members, by user id after `after`.
///
/// # Errors
/// On database failure.
pub async fn list_memberships(
    tx: TenantConn<'_>,
    after: Option<Uuid>,
    role: Option<TenantRole>,
    limit: i64,
) -> Result<Vec<Membership>, TenantError> {
    let mut query = memberships::table
        .filter(memberships::tenant_id.eq(*tx.tenant_id().as_uuid()))
        .select(Membership::as_select())
        .order(memberships::user_id)
        .limit(limit)
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(memberships::user_id.gt(after));
    }
    if let Some(role) = role {
        query = query.filter(memberships::role.eq(role.as_str()));
    }
    Ok(query.load(&mut tx.pg()).await?)
}

/// Updates the transaction's tenant's name and/or domain.
///
/// # Errors
/// `AlreadyExists("domain")` when the domain is taken.
pub async fn update_tenant(
    tx: TenantConn<'_>,
    name: Option<&TenantName>,
    domain: Option<Option<&Domain>>,
) -> Result<Tenant, TenantError> {
    #[derive(AsChangeset)]
    #[diesel(table_name = tenants)]
    struct Change<'a> {
        name: Option<&'a str>,
        domain: Option<Option<&'a str>>,
    }
    let change = Change {
        name: name.map(TenantName::as_str),
        domain: domain.map(|d| d.map(Domain::as_str)),
    };
    Ok(
        diesel::update(tenants::table.filter(tenants::id.eq(tx.tenant_id().as_uuid())))
            .set((&change, tenants::update_time.eq(diesel::dsl::now)))
            .returning(Tenant::as_returning())
            .get_result(&mut tx.pg())
            .await?,
    )
}

/// The global default settings and the transaction's tenant's overrides.
///
/// # Errors
/// On database failure.
pub async fn settings(
    tx: TenantConn<'_>,
) -> Result<(SettingsRow, Option<SettingsRow>), TenantError> {
    let rows: Vec<SettingsRow> = organization_settings::table
        .filter(
            organization_settings::tenant_id
                .eq(tx.tenant_id().as_uuid())
                .or(organization_settings::tenant_id.is_null()),
        )
        .select(SettingsRow::as_select())
        .load(&mut tx.pg())
        .await?;
    split_settings(rows)
}

fn split_settings(
    rows: Vec<SettingsRow>,
) -> Result<(SettingsRow, Option<SettingsRow>), TenantError> {
    let (global, own): (Vec<_>, Vec<_>) = rows.into_iter().partition(|r| r.tenant_id.is_none());
    let global = global.into_iter().next().ok_or_else(|| {
        TenantError::Db(bulkhead_db::DbError::UnsafeSchema(
            "no global settings row".into(),
        ))
    })?;
    Ok((global, own.into_iter().next()))
}

/// Applies `change` to the transaction's tenant's overrides (creating the row).
///
/// # Errors
/// On database failure.
pub async fn upsert_tenant_settings(
    tx: TenantConn<'_>,
    change: &SettingsChange,
) -> Result<(), TenantError> {
    let tenant = *tx.tenant_id().as_uuid();
    diesel::insert_into(organization_settings::table)
        .values((
            organization_settings::id.eq(Uuid::now_v7()),
            organization_settings::tenant_id.eq(Some(tenant)),
        ))
        .on_conflict_do_nothing()
        .execute(&mut tx.pg())
        .await?;
    if change != &SettingsChange::default() {
        diesel::update(
            organization_settings::table.filter(organization_settings::tenant_id.eq(tenant)),
        )
        .set((
            change,
            organization_settings::update_time.eq(diesel::dsl::now),
        ))
        .execute(&mut tx.pg())
        .await?;
    }
    Ok(())
}

// --- platform scope ------------------------------------------------------------------

/// A new tenant and its first OWNER.
///
/// # Errors
/// `AlreadyExists` when the slug or domain is taken.
pub async fn create_tenant(
    tx: PlatformConn<'_>,
    id: TenantId,
    slug: &Slug,
    name: &TenantName,
    domain: Option<&Domain>,
    owner: UserId,
) -> Result<(Tenant, Membership), TenantError> {
    let tenant = diesel::insert_into(tenants::table)
        .values((
            tenants::id.eq(id.as_uuid()),
            tenants::slug.eq(slug.as_str()),
            tenants::name.eq(name.as_str()),
            tenants::domain.eq(domain.map(Domain::as_str)),
        ))
        .returning(Tenant::as_returning())
        .get_result(&mut tx.pg())
        .await?;
    // The owner's first membership becomes their default one.
    let has_default: bool = diesel::select(diesel::dsl::exists(
        memberships::table
            .filter(memberships::user_id.eq(owner.as_uuid()))
            .filter(memberships::is_default),
    ))
    .get_result(&mut tx.pg())
    .await?;
    let membership = diesel::insert_into(memberships::table)
        .values((
            memberships::tenant_id.eq(id.as_uuid()),
            memberships::user_id.eq(owner.as_uuid()),
            memberships::role.eq(TenantRole::Owner.as_str()),
            memberships::is_default.eq(!has_default),
        ))
        .returning(Membership::as_returning())
        .get_result(&mut tx.pg())
        .await?;
    Ok((tenant, membership))
}

/// How a tenant is named in a request.
#[derive(Debug, Clone)]
pub enum TenantKey {
    /// By id.
    Id(TenantId),
    /// By slug.
    Slug(Slug),
}

/// Any tenant, by id or slug.
///
/// # Errors
/// On database failure.
pub async fn find_tenant(
    tx: PlatformConn<'_>,
    key: &TenantKey,
) -> Result<Option<Tenant>, TenantError> {
    let query = tenants::table.select(Tenant::as_select()).into_boxed();
    let query = match key {
        TenantKey::Id(id) => query.filter(tenants::id.eq(*id.as_uuid())),
        TenantKey::Slug(slug) => query.filter(tenants::slug.eq(slug.as_str().to_owned())),
    };
    Ok(query.first(&mut tx.pg()).await.optional()?)
}

/// A page of tenants by slug after `after`: all of them, or those `member` belongs
/// to; only the deactivated ones if `inactive_only`.
///
/// # Errors
/// On database failure.
pub async fn list_tenants(
    tx: PlatformConn<'_>,
    member: Option<UserId>,
    inactive_only: bool,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Tenant>, TenantError> {
    let mut query = tenants::table
        .select(Tenant::as_select())
        .order(tenants::slug)
        .limit(limit)
        .into_boxed();
    if let Some(user) = member {
        query = query.filter(
            tenants::id.eq_any(
                memberships::table
                    .filter(memberships::user_id.eq(*user.as_uuid()))
                    .select(memberships::tenant_id),
            ),
        );
    }
    if let Some(after) = after {
        query = query.filter(tenants::slug.gt(after.to_owned()));
    }
    if inactive_only {
        query = query.filter(tenants::is_active.eq(false));
    }
    Ok(query.load(&mut tx.pg()).await?)
}

/// Sets a tenant's `is_active`; returns the row before and after.
///
/// # Errors
/// On database failure.
pub async fn set_active(
    tx: PlatformConn<'_>,
    tenant: TenantId,
    is_active: bool,
) -> Result<Option<(Tenant, Tenant)>, TenantError> {
    let before: Option<Tenant> = tenants::table
        .filter(tenants::id.eq(tenant.as_uuid()))
        .select(Tenant::as_select())
        .for_update()
        .first(&mut tx.pg())
        .await
        .optional()?;
    let Some(before) = before else {
        return Ok(None);
    };
    let after = diesel::update(tenants::table.filter(tenants::id.eq(tenant.as_uuid())))
        .set((
            tenants::is_active.eq(is_active),
            tenants::update_time.eq(diesel::dsl::now),
        ))
        .returning(Tenant::as_returning())
        .get_result(&mut tx.pg())
        .await?;
    Ok(Some((before, after)))
}

/// Ids of all inactive tenants (for the guards' inactive-tenant set).
///
/// # Errors
/// On database failure.
pub async fn inactive_tenants(tx: PlatformConn<'_>) -> Result<Vec<Uuid>, TenantError> {
    Ok(tenants::table
        .filter(tenants::is_active.eq(false))
        .select(tenants::id)
        .load(&mut tx.pg())
        .await?)
}

/// A user's memberships in active tenants, with their tenants: the default
/// one first, then the oldest. (Not by slug: any tenant's ADMIN may add any
/// user, and a membership added later must not become where their logins
/// without a slug land.)
///
/// # Errors
/// On database failure.
pub async fn user_memberships(
    tx: PlatformConn<'_>,
    user: UserId,
) -> Result<Vec<(Membership, Tenant)>, TenantError> {
    Ok(memberships::table
        .inner_join(tenants::table)
        .filter(memberships::user_id.eq(user.as_uuid()))
        .filter(tenants::is_active)
        .order((
            memberships::is_default.desc(),
            memberships::create_time.asc(),
            tenants::slug,
        ))
        .select((Membership::as_select(), Tenant::as_select()))
        .load(&mut tx.pg())
        .await?)
}

/// The global default settings.
///
/// # Errors
/// On database failure.
pub async fn global_settings(tx: PlatformConn<'_>) -> Result<SettingsRow, TenantError> {
    Ok(organization_settings::table
        .filter(organization_settings::tenant_id.is_null())
        .select(SettingsRow::as_select())
        .first(&mut tx.pg())
        .await?)
}

/// Applies `change` to the global default.
///
/// # Errors
/// On database failure.
pub async fn update_global_settings(
    tx: PlatformConn<'_>,
    change: &SettingsChange,
) -> Result<SettingsRow, TenantError> {
    Ok(diesel::update(
        organization_settings::table.filter(organization_settings::tenant_id.is_null()),
    )
    .set((
        change,
        organization_settings::update_time.eq(diesel::dsl::now),
    ))
    .returning(SettingsRow::as_returning())
    .get_result(&mut tx.pg())
    .await?)
}
