//! Requests as domain values (parse, don't validate): each conversion reports
//! every bad field at once, so handlers start from valid input.

use bulkhead_context::{TenantId, TenantRole, UserId};
use bulkhead_proto::tenant::v1 as pb;
use bulkhead_rpc::paging::{self, PageSize};
use bulkhead_rpc::{FieldViolations, InvalidRequest, fields};
use uuid::Uuid;

use crate::domain::{DisplayName, Domain, Locale, LogoUrl, Slug, TenantName, Timezone};
use crate::repo::{SettingsChange, TenantKey};

const ROLE_RULE: &str = "must be OWNER, ADMIN, MEMBER or VIEWER";

/// A tenant role from the wire; `UNSPECIFIED` and unknown numbers are refused.
fn role(value: i32) -> Result<TenantRole, &'static str> {
    pb::TenantRole::domain_from_i32(value).ok_or(ROLE_RULE)
}

/// A new tenant and its first OWNER.
#[derive(Debug)]
pub struct CreateTenant {
    pub slug: Slug,
    pub name: TenantName,
    pub domain: Option<Domain>,
    pub owner: UserId,
}

impl TryFrom<&pb::CreateTenantRequest> for CreateTenant {
    type Error = InvalidRequest;

    fn try_from(r: &pb::CreateTenantRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let slug = v.check("slug", Slug::parse(&r.slug));
        let name = v.check("name", TenantName::parse(&r.name));
        let domain = if r.domain.is_empty() {
            Some(None)
        } else {
            v.check("domain", Domain::parse(&r.domain)).map(Some)
        };
        let owner = v.check("owner_user_id", fields::user_id(&r.owner_user_id));
        v.build(|| {
            Some(Self {
                slug: slug?,
                name: name?,
                domain: domain?,
                owner: owner?,
            })
        })
    }
}

impl TryFrom<&pb::GetTenantRequest> for TenantKey {
    type Error = InvalidRequest;

    fn try_from(r: &pb::GetTenantRequest) -> Result<Self, InvalidRequest> {
        use pb::get_tenant_request::Tenant;
        match &r.tenant {
            Some(Tenant::TenantId(id)) => fields::tenant_id(id)
                .map(Self::Id)
                .map_err(|rule| InvalidRequest::field("tenant_id", rule)),
            Some(Tenant::TenantSlug(slug)) => Slug::parse(slug)
                .map(Self::Slug)
                .map_err(|rule| InvalidRequest::field("tenant_slug", rule)),
            None => Err(InvalidRequest::field(
                "tenant",
                "set tenant_id or tenant_slug",
            )),
        }
    }
}

/// A page of tenants.
#[derive(Debug)]
pub struct ListTenants {
    pub size: PageSize,
    /// The slug after which the page starts.
    pub after: Option<String>,
    pub inactive_only: bool,
}

impl ListTenants {
    /// A page token belongs to one filter.
    pub fn list_kind(inactive_only: bool) -> &'static str {
        if inactive_only {
            "inactive-tenants"
        } else {
            "tenants"
        }
    }
}

impl TryFrom<&pb::ListTenantsRequest> for ListTenants {
    type Error = InvalidRequest;

    fn try_from(r: &pb::ListTenantsRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let size = v.check("page_size", PageSize::parse(r.page_size));
        let after = v.check(
            "page_token",
            paging::decode(Self::list_kind(r.inactive_only), &r.page_token),
        );
        v.build(|| {
            Some(Self {
                size: size?,
                after: after?,
                inactive_only: r.inactive_only,
            })
        })
    }
}

/// What an `UpdateTenant` changes (a field not in the mask stays as it is).
#[derive(Debug)]
pub struct UpdateTenant {
    pub name: Option<TenantName>,
    /// `Some(None)` clears the domain.
    pub domain: Option<Option<Domain>>,
}

impl TryFrom<&pb::UpdateTenantRequest> for UpdateTenant {
    type Error = InvalidRequest;

    fn try_from(r: &pb::UpdateTenantRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let paths = fields::update_mask(r.update_mask.as_ref(), &["name", "domain"], &mut v);
        let has = |field: &str| paths.iter().any(|p| p == field);
        let name = if has("name") {
            v.check("name", TenantName::parse(&r.name)).map(Some)
        } else {
            Some(None)
        };
        let domain = if !has("domain") {
            Some(None)
        } else if r.domain.is_empty() {
            Some(Some(None))
        } else {
            v.check("domain", Domain::parse(&r.domain))
                .map(|d| Some(Some(d)))
        };
        v.build(|| {
            Some(Self {
                name: name?,
                domain: domain?,
            })
        })
    }
}

/// A tenant to (de)activate.
#[derive(Debug)]
pub struct SetTenantActive {
    pub tenant: TenantId,
    pub is_active: bool,
}

impl TryFrom<&pb::SetTenantActiveRequest> for SetTenantActive {
    type Error = InvalidRequest;

    fn try_from(r: &pb::SetTenantActiveRequest) -> Result<Self, InvalidRequest> {
        let tenant = fields::tenant_id(&r.tenant_id)
            .map_err(|rule| InvalidRequest::field("tenant_id", rule))?;
        Ok(Self {
            tenant,
            is_active: r.is_active,
        })
    }
}

/// A member and the role to give them (AddMember, UpdateMemberRole).
#[derive(Debug, Clone, Copy)]
pub struct MemberRole {
    pub user: UserId,
    pub role: TenantRole,
}

impl MemberRole {
    fn parse(user: &str, role_value: i32) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let user = v.check("user_id", fields::user_id(user));
        let role = v.check("role", role(role_value));
        v.build(|| {
            Some(Self {
                user: user?,
                role: role?,
            })
        })
    }
}

impl TryFrom<&pb::AddMemberRequest> for MemberRole {
    type Error = InvalidRequest;

    fn try_from(r: &pb::AddMemberRequest) -> Result<Self, InvalidRequest> {
        Self::parse(&r.user_id, r.role)
    }
}

impl TryFrom<&pb::UpdateMemberRoleRequest> for MemberRole {
    type Error = InvalidRequest;

    fn try_from(r: &pb::UpdateMemberRoleRequest) -> Result<Self, InvalidRequest> {
        Self::parse(&r.user_id, r.role)
    }
}

/// The user a request names in `user_id` (RemoveMember, the internal lookups).
#[derive(Debug, Clone, Copy)]
pub struct Member(pub UserId);

impl Member {
    fn parse(text: &str) -> Result<Self, InvalidRequest> {
        fields::user_id(text)
            .map(Self)
            .map_err(|rule| InvalidRequest::field("user_id", rule))
    }
}

impl TryFrom<&pb::RemoveMemberRequest> for Member {
    type Error = InvalidRequest;

    fn try_from(r: &pb::RemoveMemberRequest) -> Result<Self, InvalidRequest> {
        Self::parse(&r.user_id)
    }
}

impl TryFrom<&pb::ListUserMembershipsRequest> for Member {
    type Error = InvalidRequest;

    fn try_from(r: &pb::ListUserMembershipsRequest) -> Result<Self, InvalidRequest> {
        Self::parse(&r.user_id)
    }
}

impl TryFrom<&pb::CheckMembershipRequest> for Member {
    type Error = InvalidRequest;

    fn try_from(r: &pb::CheckMembershipRequest) -> Result<Self, InvalidRequest> {
        Self::parse(&r.user_id)
    }
}

/// A page of the tenant's members.
#[derive(Debug)]
pub struct ListMembers {
    pub size: PageSize,
    /// The user after whom the page starts.
    pub after: Option<Uuid>,
    /// Only members with this role.
    pub role: Option<TenantRole>,
}

/// The page tokens of member lists.
pub const MEMBERS: &str = "members";

impl TryFrom<&pb::ListMembersRequest> for ListMembers {
    type Error = InvalidRequest;

    fn try_from(r: &pb::ListMembersRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let size = v.check("page_size", PageSize::parse(r.page_size));
        let after = v.check(
            "page_token",
            paging::decode(MEMBERS, &r.page_token).and_then(|cursor| {
                cursor
                    .map(|text| {
                        Uuid::parse_str(&text).map_err(|_| "is not a page token of this list")
                    })
                    .transpose()
            }),
        );
        let role = if r.role == 0 {
            Some(None)
        } else {
            v.check("role", role(r.role).map_err(|_| "must be a tenant role"))
                .map(Some)
        };
        v.build(|| {
            Some(Self {
                size: size?,
                after: after?,
                role: role?,
            })
        })
    }
}

/// The fields a settings update may name.
const SETTINGS_FIELDS: [&str; 4] = ["display_name", "logo_url", "timezone", "locale"];

/// A settings update: of the tenant's overrides, or of the global default.
#[derive(Debug)]
pub struct UpdateSettings {
    pub change: SettingsChange,
    pub global: bool,
}

impl TryFrom<&pb::UpdateSettingsRequest> for UpdateSettings {
    type Error = InvalidRequest;

    fn try_from(r: &pb::UpdateSettingsRequest) -> Result<Self, InvalidRequest> {
        let global = r.global_default;
        let mut v = FieldViolations::new();
        let paths = fields::update_mask(r.update_mask.as_ref(), &SETTINGS_FIELDS, &mut v);
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
        Ok(Self { change, global })
    }
}
