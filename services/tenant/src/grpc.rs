//! The gRPC handlers: take the context, turn the request into validated domain
//! values (collecting every violation), run one scoped transaction, convert back.

use bulkhead_context::{PlatformRole, TenantId, TenantRole, TenantUser, UserId};
use bulkhead_db::{Db, TenantConn};
use bulkhead_guard::{InactiveTenants, RequestContext};
use bulkhead_proto::tenant::v1 as pb;
use bulkhead_proto::tenant::v1::tenant_service_server::TenantService;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::audit::{self, Event, membership_json, settings_json, tenant_json};
use crate::convert;
use crate::domain::{DisplayName, Domain, Locale, LogoUrl, Slug, TenantName, Timezone};
use crate::error::{TenantError, Violations};
use crate::paging;
use crate::repo::{self, SettingsChange, TenantKey};

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
        let ids = self
            .db
            .platform_tx(async |tx| repo::inactive_tenants(tx).await)
            .await?;
        self.inactive
            .replace(ids.into_iter().map(TenantId::from_uuid));
        Ok(())
    }

    /// The tonic service to mount.
    #[must_use]
    pub fn into_server(self) -> pb::tenant_service_server::TenantServiceServer<Self> {
        pb::tenant_service_server::TenantServiceServer::new(self)
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn user_id(field: &str, text: &str, v: &mut Violations) -> Option<UserId> {
    v.check(
        field,
        UserId::parse(text).map_err(|_| "must be a user id (UUID)"),
    )
}

/// Never reached: called only after `Violations::finish` returned `Ok`, which
/// means every `check` produced a value.
fn validated() -> TenantError {
    TenantError::Invalid(Vec::new())
}

/// The `user_id` and `role` of a membership request, both checked.
fn member_and_role(user: &str, role: i32) -> Result<(UserId, TenantRole), TenantError> {
    let mut v = Violations::default();
    let member = user_id("user_id", user, &mut v);
    let role = v.check(
        "role",
        convert::role_from_proto(role).ok_or("must be OWNER, ADMIN, MEMBER or VIEWER"),
    );
    v.finish()?;
    member.zip(role).ok_or_else(validated)
}

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

fn mask_paths(
    mask: Option<&prost_types::FieldMask>,
    allowed: &[&str],
    v: &mut Violations,
) -> Vec<String> {
    let paths = mask.map(|m| m.paths.clone()).unwrap_or_default();
    if paths.is_empty() {
        v.add(
            "update_mask",
            &format!("must name the fields to update: {}", allowed.join(", ")),
        );
    }
    for path in &paths {
        if !allowed.contains(&path.as_str()) {
            v.add(
                "update_mask",
                &format!("unknown field {path:?}; updatable: {}", allowed.join(", ")),
            );
        }
    }
    paths
}

#[tonic::async_trait]
impl TenantService for TenantApi {
    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Reply<pb::CreateTenantResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let r = request.get_ref();
        let mut v = Violations::default();
        let slug = v.check("slug", Slug::parse(&r.slug));
        let name = v.check("name", TenantName::parse(&r.name));
        let domain = if r.domain.is_empty() {
            Some(None)
        } else {
            v.check("domain", Domain::parse(&r.domain)).map(Some)
        };
        let owner = user_id("owner_user_id", &r.owner_user_id, &mut v);
        v.finish()?;
        let (Some(slug), Some(name), Some(domain), Some(owner)) = (slug, name, domain, owner)
        else {
            return Err(validated().into());
        };
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
        let mut v = Violations::default();
        let key = match &request.get_ref().tenant {
            Some(pb::get_tenant_request::Tenant::TenantId(id)) => v
                .check(
                    "tenant_id",
                    TenantId::parse(id).map_err(|_| "must be a tenant id (UUID)"),
                )
                .map(TenantKey::Id),
            Some(pb::get_tenant_request::Tenant::TenantSlug(slug)) => v
                .check("tenant_slug", Slug::parse(slug))
                .map(TenantKey::Slug),
            None => {
                v.add("tenant", "set tenant_id or tenant_slug");
                None
            }
        };
        v.finish()?;
        let key = key.ok_or_else(validated)?;
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
        let r = request.get_ref();
        // A page token belongs to one filter.
        let kind = if r.inactive_only {
            "inactive-tenants"
        } else {
            "tenants"
        };
        let mut v = Violations::default();
        let limit = paging::page_size(r.page_size, &mut v);
        let after = paging::decode(kind, &r.page_token, &mut v);
        v.finish()?;
        // Users see the tenants they belong to; SUPER_ADMINs and services (which
        // follow deactivations for their guards) see them all.
        let member = ctx.user().filter(|u| !is_super_admin(u)).map(|u| u.user_id);
        let inactive_only = r.inactive_only;
        let mut tenants = self
            .db
            .platform_tx(async |tx| {
                repo::list_tenants(tx, member, inactive_only, after.as_deref(), limit + 1).await
            })
            .await?;
        let next_page_token = page_after(&mut tenants, limit, |t| t.slug.clone(), kind);
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
        let r = request.get_ref();
        let mut v = Violations::default();
        let paths = mask_paths(r.update_mask.as_ref(), &["name", "domain"], &mut v);
        let name = if paths.iter().any(|p| p == "name") {
            v.check("name", TenantName::parse(&r.name)).map(Some)
        } else {
            Some(None)
        };
        let domain = if !paths.iter().any(|p| p == "domain") {
            Some(None)
        } else if r.domain.is_empty() {
            Some(Some(None))
        } else {
            v.check("domain", Domain::parse(&r.domain))
                .map(|d| Some(Some(d)))
        };
        v.finish()?;
        let (Some(name), Some(domain)) = (name, domain) else {
            return Err(validated().into());
        };
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
        let r = request.get_ref();
        let mut v = Violations::default();
        let id = v.check(
            "tenant_id",
            TenantId::parse(&r.tenant_id).map_err(|_| "must be a tenant id (UUID)"),
        );
        v.finish()?;
        let id = id.ok_or_else(validated)?;
        let is_active = r.is_active;
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
        let r = request.get_ref();
        let (member, role) = member_and_role(&r.user_id, r.role)?;
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
        let mut v = Violations::default();
        let member = user_id("user_id", &request.get_ref().user_id, &mut v);
        v.finish()?;
        let member = member.ok_or_else(validated)?;
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
        let r = request.get_ref();
        let (member, role) = member_and_role(&r.user_id, r.role)?;
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
        let r = request.get_ref();
        let mut v = Violations::default();
        let limit = paging::page_size(r.page_size, &mut v);
        let after = paging::decode("members", &r.page_token, &mut v).and_then(|text| {
            v.check(
                "page_token",
                Uuid::parse_str(&text).map_err(|_| "is not a page token of this list"),
            )
        });
        let role = if r.role == 0 {
            Some(None)
        } else {
            v.check(
                "role",
                convert::role_from_proto(r.role).ok_or("must be a tenant role"),
            )
            .map(Some)
        };
        v.finish()?;
        let role = role.ok_or_else(validated)?;
        let mut members = self
            .db
            .tenant_read(user.tenant_id, async |tx| {
                // Both statements go out in one flight.
                let (_, members) = futures_util::try_join!(
                    repo::current_tenant(tx),
                    repo::list_memberships(tx, after, role, limit + 1)
                )?;
                Ok::<_, TenantError>(members)
            })
            .await?;
        let next_page_token = page_after(&mut members, limit, |m| m.user_id.to_string(), "members");
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
        let r = request.get_ref();
        let global = r.global_default;
        if global && !is_super_admin(user) {
            return Err(TenantError::Forbidden.into());
        }
        let mut v = Violations::default();
        let paths = mask_paths(
            r.update_mask.as_ref(),
            &["display_name", "logo_url", "timezone", "locale"],
            &mut v,
        );
        let given = r.settings.clone().unwrap_or_default();
        let mut change = SettingsChange::default();
        for path in &paths {
            // An empty value clears a tenant's override (the global default shows
            // through); the global default itself keeps a value in every field
            // but the logo.
            let (field, text) = match path.as_str() {
                "display_name" => (&mut change.display_name, given.display_name.as_str()),
                "logo_url" => (&mut change.logo_url, given.logo_url.as_str()),
                "timezone" => (&mut change.timezone, given.timezone.as_str()),
                "locale" => (&mut change.locale, given.locale.as_str()),
                _ => continue,
            };
            if text.is_empty() {
                if global && path != "logo_url" {
                    v.add(
                        &format!("settings.{path}"),
                        "the global default needs a value",
                    );
                } else {
                    *field = Some(if global { Some(String::new()) } else { None });
                }
                continue;
            }
            let checked = match path.as_str() {
                "display_name" => DisplayName::parse(text).map(|x| x.to_string()),
                "logo_url" => LogoUrl::parse(text).map(|x| x.to_string()),
                "timezone" => Timezone::parse(text).map(|x| x.to_string()),
                _ => Locale::parse(text).map(|x| x.to_string()),
            };
            if let Some(value) = v.check(&format!("settings.{path}"), checked) {
                *field = Some(Some(value));
            }
        }
        v.finish()?;
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
        let mut v = Violations::default();
        let member = user_id("user_id", &request.get_ref().user_id, &mut v);
        v.finish()?;
        let member = member.ok_or_else(validated)?;
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
        let mut v = Violations::default();
        let member = user_id("user_id", &request.get_ref().user_id, &mut v);
        v.finish()?;
        let member = member.ok_or_else(validated)?;
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
            role: convert::role_to_proto(found.role()).into(),
        }))
    }
}

/// Trims the extra row fetched to learn whether another page exists, and returns
/// the next page's token.
fn page_after<T>(rows: &mut Vec<T>, limit: i64, key: impl Fn(&T) -> String, kind: &str) -> String {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    if rows.len() > limit {
        rows.truncate(limit);
        rows.last()
            .map(|last| paging::encode(kind, &key(last)))
            .unwrap_or_default()
    } else {
        String::new()
    }
}
