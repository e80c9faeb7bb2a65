//! Stored events on the wire: proto types stop here.

use bulkhead_clients::json_to_struct;
use bulkhead_proto::audit::v1 as pb;
use bulkhead_rpc::timestamp;

use crate::repo::EventRow;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An event on the wire.
#[must_use]
pub fn event(e: &EventRow) -> pb::AuditEvent {
    pb::AuditEvent {
        id: e.id.to_string(),
        tenant_id: e.tenant_id.to_string(),
        actor_user_id: e.actor_user_id.clone(),
        actor_service: e.actor_service.clone(),
        source_service: e.source_service.clone(),
        action: e.action.clone(),
        resource_type: e.resource_type.clone(),
        resource_id: e.resource_id.clone(),
        old_value: e.old_value.as_ref().and_then(json_to_struct),
        new_value: e.new_value.as_ref().and_then(json_to_struct),
        metadata: e.metadata.as_ref().and_then(json_to_struct),
        request_id: e.request_id.clone(),
        trace_id: e.trace_id.clone(),
        occur_time: Some(timestamp(e.occur_time)),
        sequence: e.sequence,
        prev_hash: hex(&e.prev_hash),
        hash: hex(&e.hash),
        receive_time: Some(timestamp(e.receive_time)),
        // Input only.
        traceparent: String::new(),
    }
}
