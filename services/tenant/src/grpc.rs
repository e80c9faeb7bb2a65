//! The gRPC handlers: take the context, turn the request into validated domain
//! values (collecting every violation), run one scoped transaction, convert back.

use bulkhead_context::{PlatformRole, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_db::{Db, TenantConn};
use bulkhead_guard::{InactiveTenants, RequestContext};
use bulkhead_proto::tenant::v1 as pb;
use bulkhead_proto::tenant::v1::tenant_service_server::TenantService;
use tonic::{Request, Response, Status};

use crate::audit::{self, Event, membership_json, settings_json, tenant_json};
use crate::convert;
use crate::error::TenantError;
use crate::repo::{self, TenantKey};
use crate::requests::{
    CreateTenant, ListMembers, ListTenants, MEMBERS, Member, MemberRole, SetTenantActive,
    UpdateSettings, UpdateTenant,
};
use bulkhead_rpc::paging;

/// The Tenant service's handlers.
#[derive(Debug, Clone)]
pub struct TenantApi {
    db: Db,
    inactive: InactiveTenants,
}

impl TenantApi {
    /// Handlers over the service's pool (connected as `tenant_app`, with the
    /// `tenant_support` role for platform operations).
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self {
            db,
            inactive: InactiveTenants::default(),
        }
    }

    /// Keeps `inactive` (the guards' set of deactivated tenants) in step with the
    /// database: filled by [`TenantApi::load_inactive_tenants`], updated by every
    /// `SetTenantActive` once it commits.
    #[must_use]
    pub fn with_inactive_tenants(mut self, inactive: InactiveTenants) -> Self {
        self.inactive = inactive;
        self
    }

    /// Fills the inactive-tenant set from the database (at start-up).
    ///
    /// # Errors
    /// When the database fails.
    pub async fn load_inactive_tenants(&self) -> Result<(), TenantError> {
        load_inactive_tenants(&self.db, &self.inactive).await
    }

    /// Keeps the set in step with the database every `every` until
    /// `shutdown`: another replica of Tenant may (de)activate a tenant, and
    /// only this replica's own changes reach its set at once.
    pub fn follow_database(
        &self,
        every: std::time::Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> futures_util::future::BoxFuture<'static, ()> {
        let (db, inactive) = (self.db.clone(), self.inactive.clone());
        Box::pin(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                if let Err(err) = load_inactive_tenants(&db, &inactive).await {
                    tracing::warn!(%err, "could not refresh the inactive tenants");
                }
            }
        })
    }

    /// The tonic service to mount.
    #[must_use]
    pub fn into_server(self) -> pb::tenant_service_server::TenantServiceServer<Self> {
        pb::tenant_service_server::TenantServiceServer::new(self)
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn is_super_admin(user: &TenantUser) -> bool {
    user.platform_role == PlatformRole::SuperAdmin
}

/// The caller's *live* role in the transaction's tenant (the token's may be stale),
/// required to be at least `min`.
async fn live_role(
    tx: TenantConn<'_>,
    user: UserId,
    min: TenantRole,
) -> Result<TenantRole, TenantError> {
    match repo::membership(tx, user).await? {
        Some(m) if m.role() >= min => Ok(m.role()),
        _ => Err(TenantError::Forbidden),
    }
}

#[tonic::async_trait]
impl TenantService for TenantApi {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Reply<pb::CreateTenantResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let CreateTenant {
            slug,
            name,
            domain,
            owner,
        } = CreateTenant::try_from(request.get_ref())?;
        let id = TenantId::new_v7();
        let (tenant, membership) = self
            .db
            .platform_tx(async |tx| {
                let (tenant, membership) =
                    repo::create_tenant(tx, id, &slug, &name, domain.as_ref(), owner).await?;
                let created =
                    Event::new("tenant.create", "tenant", id).new_value(tenant_json(&tenant));
                audit::record_platform(tx, id, ctx, created).await?;
                let owner_added = Event::new("membership.create", "membership", owner)
                    .new_value(membership_json(&membership));
                audit::record_platform(tx, id, ctx, owner_added).await?;
                Ok::<_, TenantError>((tenant, membership))
            })
            .await?;
        Ok(Response::new(pb::CreateTenantResponse {
            tenant: Some(convert::tenant(&tenant)),
            owner_membership: Some(convert::membership(&membership)),
        }))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Reply<pb::GetTenantResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let key = TenantKey::try_from(request.get_ref())?;
        let tenant = if is_super_admin(user) {
            self.db
                .platform_tx(async |tx| repo::find_tenant(tx, &key).await)
                .await?
                .ok_or(TenantError::NotFound)?
        } else {
            // Members see their active tenant (RLS shows no other row); a tenant
            // they do not act in now answers NOT_FOUND, exactly like a stranger's.
            let tenant = self
                .db
                .tenant_read(user.tenant_id, async |tx| repo::current_tenant(tx).await)
                .await?;
            let matches = match &key {
                TenantKey::Id(id) => tenant.id == *id.as_uuid(),
                TenantKey::Slug(slug) => tenant.slug == slug.as_str(),
            };
            if !matches {
                return Err(TenantError::NotFound.into());
            }
            tenant
        };
        Ok(Response::new(pb::GetTenantResponse {
            tenant: Some(convert::tenant(&tenant)),
        }))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Reply<pb::ListTenantsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let list = ListTenants::try_from(request.get_ref())?;
        // Users see the tenants they belong to; SUPER_ADMINs and services (which
        // follow deactivations for their guards) see them all.
        let member = ctx.user().filter(|u| !is_super_admin(u)).map(|u| u.user_id);
        let mut tenants = self
            .db
            .platform_tx(async |tx| {
                repo::list_tenants(
                    tx,
                    member,
                    list.inactive_only,
                    list.after.as_deref(),
                    list.size.fetch(),
                )
                .await
            })
            .await?;
        let next_page_token = paging::next_page(
            &mut tenants,
            list.size,
            ListTenants::list_kind(list.inactive_only),
            |t| t.slug.clone(),
        );
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: tenants.iter().map(convert::tenant).collect(),
            next_page_token,
        }))
    }

    async fn update_tenant(
        &self,
        request: Request<pb::UpdateTenantRequest>,
    ) -> Reply<pb::UpdateTenantResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let UpdateTenant { name, domain } = UpdateTenant::try_from(request.get_ref())?;
        let tenant = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                let before = repo::lock_tenant(tx).await?;
                live_role(tx, user.user_id, TenantRole::Admin).await?;
                let after =
                    repo::update_tenant(tx, name.as_ref(), domain.as_ref().map(Option::as_ref))
                        .await?;
                let event = Event::new("tenant.update", "tenant", after.id)
                    .old(tenant_json(&before))
                    .new_value(tenant_json(&after));
                audit::record(tx, ctx, event).await?;
                Ok::<_, TenantError>(after)
            })
            .await?;
        Ok(Response::new(pb::UpdateTenantResponse {
            tenant: Some(convert::tenant(&tenant)),
        }))
    }

    async fn set_tenant_active(
        &self,
        request: Request<pb::SetTenantActiveRequest>,
    ) -> Reply<pb::SetTenantActiveResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let SetTenantActive {
            tenant: id,
            is_active,
        } = SetTenantActive::try_from(request.get_ref())?;
        let tenant = self
            .db
            .platform_tx(async |tx| {
                let (before, after) = repo::set_active(tx, id, is_active)
                    .await?
                    .ok_or(TenantError::NotFound)?;
                if before.is_active != after.is_active {
                    let action = if is_active {
                        "tenant.activate"
                    } else {
                        "tenant.deactivate"
                    };
                    let event = Event::new(action, "tenant", id)
                        .old(tenant_json(&before))
                        .new_value(tenant_json(&after));
                    audit::record_platform(tx, id, ctx, event).await?;
                    if !is_active {
                        audit::revoke_tenant(tx, id, "tenant deactivated").await?;
                    }
                }
                Ok::<_, TenantError>(after)
            })
            .await?;
        self.inactive.set(id, tenant.is_active);
        Ok(Response::new(pb::SetTenantActiveResponse {
            tenant: Some(convert::tenant(&tenant)),
        }))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Reply<pb::AddMemberResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let MemberRole { user: member, role } = MemberRole::try_from(request.get_ref())?;
        let membership = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                repo::lock_tenant(tx).await?;
                let caller = live_role(tx, user.user_id, TenantRole::Admin).await?;
                if role == TenantRole::Owner && caller != TenantRole::Owner {
                    return Err(TenantError::OwnerOnly);
                }
                let added = repo::insert_membership(tx, member, role).await?;
                let event = Event::new("membership.create", "membership", member)
                    .new_value(membership_json(&added));
                audit::record(tx, ctx, event).await?;
                Ok(added)
            })
            .await?;
        Ok(Response::new(pb::AddMemberResponse {
            membership: Some(convert::membership(&membership)),
        }))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Reply<pb::RemoveMemberResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let Member(member) = Member::try_from(request.get_ref())?;
        self.db
            .tenant_tx(user.tenant_id, async |tx| {
                // The tenant row lock serialises concurrent membership changes: the
                // OWNER count below cannot go stale before this commits.
                repo::lock_tenant(tx).await?;
                let caller = live_role(tx, user.user_id, TenantRole::Admin).await?;
                let target = repo::membership(tx, member)
                    .await?
                    .ok_or(TenantError::NotFound)?;
                if target.role() == TenantRole::Owner {
                    if caller != TenantRole::Owner {
                        return Err(TenantError::OwnerOnly);
                    }
                    if repo::owner_count(tx).await? <= 1 {
                        return Err(TenantError::LastOwner);
                    }
                }
                repo::delete_membership(tx, member).await?;
                let event = Event::new("membership.delete", "membership", member)
                    .old(membership_json(&target));
                audit::record(tx, ctx, event).await?;
                audit::revoke_user(tx, member, "membership removed").await?;
                audit::release_user(tx, member, target.create_time).await?;
                Ok::<_, TenantError>(())
            })
            .await?;
        Ok(Response::new(pb::RemoveMemberResponse {}))
    }

    async fn update_member_role(
        &self,
        request: Request<pb::UpdateMemberRoleRequest>,
    ) -> Reply<pb::UpdateMemberRoleResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let MemberRole { user: member, role } = MemberRole::try_from(request.get_ref())?;
        let membership = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                repo::lock_tenant(tx).await?;
                let caller = live_role(tx, user.user_id, TenantRole::Admin).await?;
                let target = repo::membership(tx, member)
                    .await?
                    .ok_or(TenantError::NotFound)?;
                let old = target.role();
                if (old == TenantRole::Owner || role == TenantRole::Owner)
                    && caller != TenantRole::Owner
                {
                    return Err(TenantError::OwnerOnly);
                }
                if old == TenantRole::Owner
                    && role != TenantRole::Owner
                    && repo::owner_count(tx).await? <= 1
                {
                    return Err(TenantError::LastOwner);
                }
                let updated = repo::set_role(tx, member, role).await?;
                let event = Event::new("membership.update", "membership", member)
                    .old(membership_json(&target))
                    .new_value(membership_json(&updated));
                audit::record(tx, ctx, event).await?;
                if role < old {
                    audit::revoke_user(tx, member, "role lowered").await?;
                }
                Ok::<_, TenantError>(updated)
            })
            .await?;
        Ok(Response::new(pb::UpdateMemberRoleResponse {
            membership: Some(convert::membership(&membership)),
        }))
    }

    async fn list_members(
        &self,
        request: Request<pb::ListMembersRequest>,
    ) -> Reply<pb::ListMembersResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let list = ListMembers::try_from(request.get_ref())?;
        let mut members = self
            .db
            .tenant_read(user.tenant_id, async |tx| {
                // Both statements go out in one flight.
                let (_, members) = futures_util::try_join!(
                    repo::current_tenant(tx),
                    repo::list_memberships(tx, list.after, list.role, list.size.fetch())
                )?;
                Ok::<_, TenantError>(members)
            })
            .await?;
        let next_page_token =
            paging::next_page(&mut members, list.size, MEMBERS, |m| m.user_id.to_string());
        Ok(Response::new(pb::ListMembersResponse {
            memberships: members.iter().map(convert::membership).collect(),
            next_page_token,
        }))
    }

    async fn get_settings(
        &self,
        request: Request<pb::GetSettingsRequest>,
    ) -> Reply<pb::GetSettingsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let global_only = request.get_ref().global_default;
        let (global, own) = self
            .db
            .tenant_read(user.tenant_id, async |tx| {
                let (_, settings) =
                    futures_util::try_join!(repo::current_tenant(tx), repo::settings(tx))?;
                Ok::<_, TenantError>(settings)
            })
            .await?;
        let settings = if global_only {
            convert::global_settings(&global)
        } else {
            convert::effective_settings(&global, own.as_ref())
        };
        Ok(Response::new(pb::GetSettingsResponse {
            settings: Some(settings),
        }))
    }

    async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Reply<pb::UpdateSettingsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        // Only a SUPER_ADMIN edits the global default: said before any field is checked.
        if request.get_ref().global_default && !is_super_admin(user) {
            return Err(TenantError::Forbidden.into());
        }
        let UpdateSettings { change, global } = UpdateSettings::try_from(request.get_ref())?;
        let settings = if global {
            let row = self
                .db
                .platform_tx(async |tx| {
                    let before = repo::global_settings(tx).await?;
                    let after = repo::update_global_settings(tx, &change).await?;
                    let event = Event::new("settings.update", "organization_settings", "global")
                        .old(settings_json(&before))
                        .new_value(settings_json(&after));
                    audit::record_platform(tx, user.tenant_id, ctx, event).await?;
                    Ok::<_, TenantError>(after)
                })
                .await?;
            convert::global_settings(&row)
        } else {
            let (global_row, own) = self
                .db
                .tenant_tx(user.tenant_id, async |tx| {
                    repo::lock_tenant(tx).await?;
                    live_role(tx, user.user_id, TenantRole::Admin).await?;
                    let (_, before) = repo::settings(tx).await?;
                    repo::upsert_tenant_settings(tx, &change).await?;
                    let (global_row, after) = repo::settings(tx).await?;
                    let mut event =
                        Event::new("settings.update", "organization_settings", tx.tenant_id());
                    if let Some(before) = &before {
                        event = event.old(settings_json(before));
                    }
                    if let Some(after) = &after {
                        event = event.new_value(settings_json(after));
                    }
                    audit::record(tx, ctx, event).await?;
                    Ok::<_, TenantError>((global_row, after))
                })
                .await?;
            convert::effective_settings(&global_row, own.as_ref())
        };
        Ok(Response::new(pb::UpdateSettingsResponse {
            settings: Some(settings),
        }))
    }

    async fn list_user_memberships(
        &self,
        request: Request<pb::ListUserMembershipsRequest>,
    ) -> Reply<pb::ListUserMembershipsResponse> {
        let _ctx = RequestContext::from_request(&request)?;
        let Member(member) = Member::try_from(request.get_ref())?;
        let rows = self
            .db
            .platform_tx(async |tx| repo::user_memberships(tx, member).await)
            .await?;
        Ok(Response::new(pb::ListUserMembershipsResponse {
            memberships: rows
                .iter()
                .map(|(m, t)| pb::UserMembership {
                    membership: Some(convert::membership(m)),
                    tenant: Some(convert::tenant(t)),
                })
                .collect(),
        }))
    }

    async fn check_membership(
        &self,
        request: Request<pb::CheckMembershipRequest>,
    ) -> Reply<pb::CheckMembershipResponse> {
        let ctx = RequestContext::from_request(&request)?;
        // "The caller's tenant" is the tenant of the user on whose behalf the service calls.
        let tenant = ctx.tenant_id().ok_or(TenantError::NoTenant)?;
        let Member(member) = Member::try_from(request.get_ref())?;
        let found = self
            .db
            .tenant_read(tenant, async |tx| {
                let (_, found) = futures_util::try_join!(
                    repo::current_tenant(tx),
                    repo::membership(tx, member)
                )?;
                Ok::<_, TenantError>(found)
            })
            .await?
            .ok_or(TenantError::NotFound)?;
        Ok(Response::new(pb::CheckMembershipResponse {
            role: pb::TenantRole::from(found.role()).into(),
            membership_create_time: Some(bulkhead_rpc::timestamp(found.create_time)),
        }))
    }
}

/// Reads the deactivated tenants and puts them in `inactive`, unless one
/// changed in this process meanwhile (then the next read does it).
async fn load_inactive_tenants(db: &Db, inactive: &InactiveTenants) -> Result<(), TenantError> {
    let since = inactive.changes();
    let ids = db
        .platform_tx(async |tx| repo::inactive_tenants(tx).await)
        .await?;
    inactive.replace_unless_changed(since, ids.into_iter().map(TenantId::from_uuid));
    Ok(())
}
