//! Every Audit RPC's request checks, runnable alone on raw bytes (see
//! `bulkhead_rpc::checks`): the property tests and fuzz targets call
//! [`check_request`] for each RPC in the descriptor set.

use bulkhead_context::TenantId;
use bulkhead_proto::audit::v1 as pb;
use bulkhead_rpc::checks::{check, decodes};
use tonic::Status;

use crate::requests::{Append, Query, export_filter};

/// Decodes `body` as the request of the RPC at `path`
/// (`/bulkhead.audit.v1.AuditService/AppendEvents`) and runs the checks its
/// handler runs before any state, for events sent by the `task` service and a
/// reader of `tenant`'s chain; `None` for an RPC this service does not serve.
/// (VerifyChain's checkpoint is checked against Audit's keys: decoding is
/// all before that.)
#[must_use]
pub fn check_request(path: &str, body: &[u8], tenant: TenantId) -> Option<Result<(), Status>> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    if service != crate::SERVICE_NAME {
        return None;
    }
    Some(match method {
        "AppendEvents" => check(body, |r: &pb::AppendEventsRequest| Append::parse(r, "task")),
        "QueryEvents" => check(body, |r: &pb::QueryEventsRequest| Query::parse(r, tenant)),
        "ExportEvents" => check(body, |r: &pb::ExportEventsRequest| export_filter(r)),
        "VerifyChain" => decodes::<pb::VerifyChainRequest>(body),
        "CreateCheckpoint" => decodes::<pb::CreateCheckpointRequest>(body),
        "GetCheckpointKeys" => decodes::<pb::GetCheckpointKeysRequest>(body),
        _ => return None,
    })
}
