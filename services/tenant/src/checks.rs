//! Every Tenant RPC's request checks, runnable alone on raw bytes (see
//! `bulkhead_rpc::checks`): the property tests and fuzz targets call
//! [`check_request`] for each RPC in the descriptor set.

use bulkhead_proto::tenant::v1 as pb;
use bulkhead_rpc::checks::{check, decodes};
use tonic::Status;

use crate::repo::TenantKey;
use crate::requests::{
    CreateTenant, ListMembers, ListTenants, Member, MemberRole, SetTenantActive, UpdateSettings,
    UpdateTenant,
};

/// Decodes `body` as the request of the RPC at `path`
/// (`/bulkhead.tenant.v1.TenantService/AddMember`) and runs the checks its
/// handler runs before any state; `None` for an RPC this service does not
/// serve.
#[must_use]
pub fn check_request(path: &str, body: &[u8]) -> Option<Result<(), Status>> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    if service != crate::SERVICE_NAME {
        return None;
    }
    Some(match method {
        "CreateTenant" => check(body, |r: &pb::CreateTenantRequest| {
            CreateTenant::try_from(r)
        }),
        "GetTenant" => check(body, |r: &pb::GetTenantRequest| TenantKey::try_from(r)),
        "ListTenants" => check(body, |r: &pb::ListTenantsRequest| ListTenants::try_from(r)),
        "UpdateTenant" => check(body, |r: &pb::UpdateTenantRequest| {
            UpdateTenant::try_from(r)
        }),
        "SetTenantActive" => check(body, |r: &pb::SetTenantActiveRequest| {
            SetTenantActive::try_from(r)
        }),
        "AddMember" => check(body, |r: &pb::AddMemberRequest| MemberRole::try_from(r)),
        "RemoveMember" => check(body, |r: &pb::RemoveMemberRequest| Member::try_from(r)),
        "UpdateMemberRole" => check(body, |r: &pb::UpdateMemberRoleRequest| {
            MemberRole::try_from(r)
        }),
        "ListMembers" => check(body, |r: &pb::ListMembersRequest| ListMembers::try_from(r)),
        "GetSettings" => decodes::<pb::GetSettingsRequest>(body),
        "UpdateSettings" => check(body, |r: &pb::UpdateSettingsRequest| {
            UpdateSettings::try_from(r)
        }),
        "ListUserMemberships" => check(body, |r: &pb::ListUserMembershipsRequest| {
            Member::try_from(r)
        }),
        "CheckMembership" => check(body, |r: &pb::CheckMembershipRequest| Member::try_from(r)),
        _ => return None,
    })
}
