//! Every Auth RPC's request checks, runnable alone on raw bytes (see
//! `bulkhead_rpc::checks`): the property tests and fuzz targets call
//! [`check_request`] for each RPC in the descriptor set.

use bulkhead_proto::auth::v1 as pb;
use bulkhead_rpc::checks::{check, decodes};
use tonic::Status;

use crate::requests::{ChangePassword, CreateUser, Login, RevokeSessions, SwitchTarget};

/// Decodes `body` as the request of the RPC at `path`
/// (`/bulkhead.auth.v1.AuthService/Login`) and runs the checks its handler
/// runs before any state; `None` for an RPC this service does not serve.
/// (Refresh, IssueServiceToken and the rest check their fields against
/// stored data only: for them, decoding is all.)
#[must_use]
pub fn check_request(path: &str, body: &[u8]) -> Option<Result<(), Status>> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    if service != crate::SERVICE_NAME {
        return None;
    }
    Some(match method {
        "Login" => check(body, |r: &pb::LoginRequest| Login::try_from(r.clone())),
        "Refresh" => decodes::<pb::RefreshRequest>(body),
        "SwitchTenant" => check(body, |r: &pb::SwitchTenantRequest| {
            SwitchTarget::try_from(r)
        }),
        "Logout" => decodes::<pb::LogoutRequest>(body),
        "WhoAmI" => decodes::<pb::WhoAmIRequest>(body),
        "GetJwks" => decodes::<pb::GetJwksRequest>(body),
        "CreateUser" => check(body, |r: &pb::CreateUserRequest| {
            CreateUser::try_from(r.clone())
        }),
        "ChangePassword" => check(body, |r: &pb::ChangePasswordRequest| {
            ChangePassword::try_from(r.clone())
        }),
        "IssueServiceToken" => decodes::<pb::IssueServiceTokenRequest>(body),
        "RevokeSessions" => check(body, |r: &pb::RevokeSessionsRequest| {
            RevokeSessions::try_from(r.clone())
        }),
        "WatchRevocations" => decodes::<pb::WatchRevocationsRequest>(body),
        _ => return None,
    })
}
