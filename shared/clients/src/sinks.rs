//! Outbox sinks over gRPC.

use std::sync::Arc;

use bulkhead_outbox::{Message, Sink, SinkError, SinkFuture};
use bulkhead_proto::audit::v1 as audit;
use bulkhead_proto::audit::v1::audit_service_client::AuditServiceClient;
use bulkhead_proto::auth::v1 as auth;
use bulkhead_proto::auth::v1::auth_service_client::AuthServiceClient;
use bulkhead_proto::task::v1 as task;
use bulkhead_proto::task::v1::task_service_client::TaskServiceClient;
use serde_json::Value;
use tonic::transport::Channel;

use crate::ServiceCredentials;

fn with_credentials<T>(
    credentials: &dyn ServiceCredentials,
    message: T,
) -> Result<tonic::Request<T>, SinkError> {
    crate::credentials::service_request(credentials, message).map_err(|s| failed(&s))
}

/// A refusal of the content (the receiver checked it and said no) may set a
/// message aside; anything else (down, overloaded, our credentials refused)
/// is waited out.
fn failed(status: &tonic::Status) -> SinkError {
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        tonic::Code::InvalidArgument
        | tonic::Code::FailedPrecondition
        | tonic::Code::OutOfRange => SinkError::rejected(message),
        _ => SinkError::unavailable(message),
    }
}

/// Delivers `audit` messages to `AuditService.AppendEvents`.
pub struct AuditSink {
    client: AuditServiceClient<Channel>,
    credentials: Arc<dyn ServiceCredentials>,
    source_service: String,
}

impl std::fmt::Debug for AuditSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSink")
            .field("source_service", &self.source_service)
            .finish_non_exhaustive()
    }
}

impl AuditSink {
    /// A sink calling Audit over `channel` as `source_service`.
    #[must_use]
    pub fn new(
        channel: Channel,
        credentials: Arc<dyn ServiceCredentials>,
        source_service: &str,
    ) -> Self {
        Self {
            client: AuditServiceClient::new(channel),
            credentials,
            source_service: source_service.to_owned(),
        }
    }

    fn event(&self, message: &Message) -> audit::AuditEvent {
        let p = &message.payload;
        let text = |key: &str| p[key].as_str().unwrap_or_default().to_owned();
        audit::AuditEvent {
            id: message.id.to_string(),
            tenant_id: message.tenant_id.to_string(),
            actor_user_id: text("actor_user_id"),
            actor_service: text("actor_service"),
            source_service: self.source_service.clone(),
            action: text("action"),
            resource_type: text("resource_type"),
            resource_id: text("resource_id"),
            old_value: json_to_struct(&p["old_value"]),
            new_value: json_to_struct(&p["new_value"]),
            metadata: None,
            request_id: text("request_id"),
            trace_id: text("trace_id"),
            occur_time: chrono::DateTime::parse_from_rfc3339(
                p["occur_time"].as_str().unwrap_or_default(),
            )
            .ok()
            .map(|t| prost_types::Timestamp {
                seconds: t.timestamp(),
                nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
            }),
            traceparent: message.traceparent.clone().unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// Most bytes of events in one AppendEvents request.
const APPEND_BYTES: usize = 1024 * 1024;
/// Most events in one AppendEvents request (Audit takes 500).
const APPEND_EVENTS: usize = 500;

impl AuditSink {
    async fn append(&self, events: Vec<audit::AuditEvent>) -> Result<(), SinkError> {
        let request = with_credentials(&*self.credentials, audit::AppendEventsRequest { events })?;
        self.client
            .clone()
            .append_events(request)
            .await
            .map_err(|s| failed(&s))?;
        Ok(())
    }
}

impl Sink for AuditSink {
    fn deliver<'a>(&'a self, messages: &'a [Message]) -> SinkFuture<'a> {
        Box::pin(async move {
            // Requests of at most APPEND_BYTES and APPEND_EVENTS (gRPC's
            // default limit is 4 MiB a message; an event may hold 48 KiB).
            // A failure after some requests went through redelivers them
            // all: Audit acknowledges an event it has without a second copy.
            let mut events: Vec<audit::AuditEvent> = Vec::new();
            let mut bytes = 0;
            for message in messages {
                let event = self.event(message);
                let size = prost::Message::encoded_len(&event);
                if !events.is_empty()
                    && (bytes + size > APPEND_BYTES || events.len() >= APPEND_EVENTS)
                {
                    self.append(std::mem::take(&mut events)).await?;
                    bytes = 0;
                }
                bytes += size;
                events.push(event);
            }
            if !events.is_empty() {
                self.append(events).await?;
            }
            Ok(())
        })
    }
}

/// Delivers `auth.revoke` messages to `AuthService.RevokeSessions` (one call each).
pub struct RevokeSink {
    client: AuthServiceClient<Channel>,
    credentials: Arc<dyn ServiceCredentials>,
}

impl std::fmt::Debug for RevokeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevokeSink")
    }
}

impl RevokeSink {
    /// A sink calling Auth over `channel`.
    #[must_use]
    pub fn new(channel: Channel, credentials: Arc<dyn ServiceCredentials>) -> Self {
        Self {
            client: AuthServiceClient::new(channel),
            credentials,
        }
    }
}

impl Sink for RevokeSink {
    fn deliver<'a>(&'a self, messages: &'a [Message]) -> SinkFuture<'a> {
        Box::pin(async move {
            for message in messages {
                let p = &message.payload;
                let request = auth::RevokeSessionsRequest {
                    user_id: p["user_id"].as_str().unwrap_or_default().to_owned(),
                    tenant_id: Some(message.tenant_id.to_string()),
                    reason: p["reason"].as_str().unwrap_or_default().to_owned(),
                };
                let request = with_credentials(&*self.credentials, request)?;
                self.client
                    .clone()
                    .revoke_sessions(request)
                    .await
                    .map_err(|s| failed(&s))?;
            }
            Ok(())
        })
    }
}

/// Delivers `task.release` messages (someone left a tenant, or it was
/// deactivated) to `TaskService.ReleaseAssignments` (one call each; idempotent).
pub struct ReleaseSink {
    client: TaskServiceClient<Channel>,
    credentials: Arc<dyn ServiceCredentials>,
}

impl std::fmt::Debug for ReleaseSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReleaseSink")
    }
}

impl ReleaseSink {
    /// A sink calling Task over `channel`.
    #[must_use]
    pub fn new(channel: Channel, credentials: Arc<dyn ServiceCredentials>) -> Self {
        Self {
            client: TaskServiceClient::new(channel),
            credentials,
        }
    }
}

impl Sink for ReleaseSink {
    fn deliver<'a>(&'a self, messages: &'a [Message]) -> SinkFuture<'a> {
        Box::pin(async move {
            for message in messages {
                // Only an explicit null means "every assignee": anything else
                // that is not a user id is refused, never widened.
                let user_id = match &message.payload["user_id"] {
                    Value::Null => String::new(),
                    Value::String(id) if !id.is_empty() => id.clone(),
                    other => {
                        return Err(SinkError::rejected(format!(
                            "task.release message {} names no user: {other}",
                            message.id
                        )));
                    }
                };
                // The membership that ended, by its create time; a deactivation
                // ends every membership begun by the time it was written.
                let ended = match &message.payload["membership_create_time"] {
                    Value::String(t) => chrono::DateTime::parse_from_rfc3339(t)
                        .map(|t| t.to_utc())
                        .map_err(|_| {
                            SinkError::rejected(format!(
                                "task.release message {} has a bad membership time",
                                message.id
                            ))
                        })?,
                    _ => message.create_time,
                };
                let request = task::ReleaseAssignmentsRequest {
                    tenant_id: message.tenant_id.to_string(),
                    user_id,
                    membership_create_time: Some(bulkhead_rpc::timestamp(ended)),
                };
                let request = with_credentials(&*self.credentials, request)?;
                self.client
                    .clone()
                    .release_assignments(request)
                    .await
                    .map_err(|s| failed(&s))?;
            }
            Ok(())
        })
    }
}

/// A JSON object as a `google.protobuf.Struct` (`None` for anything else).
#[must_use]
pub fn json_to_struct(value: &Value) -> Option<prost_types::Struct> {
    match value {
        Value::Object(map) => Some(prost_types::Struct {
            fields: map
                .iter()
                .map(|(k, v)| (k.clone(), json_to_value(v)))
                .collect(),
        }),
        _ => None,
    }
}

fn json_to_value(value: &Value) -> prost_types::Value {
    use prost_types::value::Kind;
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(prost_types::ListValue {
            values: items.iter().map(json_to_value).collect(),
        }),
        Value::Object(_) => Kind::StructValue(json_to_struct(value).unwrap_or_default()),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_objects_become_structs() {
        let s = json_to_struct(&serde_json::json!({"a": 1, "b": [true, null], "c": {"d": "e"}}))
            .expect("object");
        assert_eq!(s.fields.len(), 3);
        assert!(json_to_struct(&Value::Null).is_none());
    }
}
