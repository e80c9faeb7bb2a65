//! Domain ↔ wire conversions: proto types stop here.

use bulkhead_proto::task::v1 as pb;
use bulkhead_rpc::timestamp;
use chrono::{DateTime, Utc};

use crate::domain::{ComplianceStatus, TaskStatus, etag};
use crate::repo::{Record, Task};

/// A status on the wire.
#[must_use]
pub fn status(s: TaskStatus) -> pb::TaskStatus {
    match s {
        TaskStatus::Pending => pb::TaskStatus::Pending,
        TaskStatus::InProgress => pb::TaskStatus::InProgress,
        TaskStatus::Completed => pb::TaskStatus::Completed,
        TaskStatus::Cancelled => pb::TaskStatus::Cancelled,
    }
}

/// A task on the wire; taken by value, its strings move into the message (a
/// page is 50 of them).
#[must_use]
pub fn task(t: Task) -> pb::Task {
    pb::Task {
        id: id(t.id),
        status: status(t.status()).into(),
        title: t.title,
        description: t.description,
        assignee_user_id: t.assignee_id.map(id).unwrap_or_default(),
        creator_user_id: id(t.created_by),
        create_time: Some(timestamp(t.create_time)),
        update_time: Some(timestamp(t.update_time)),
        etag: etag(t.version),
    }
}

/// An id on the wire, encoded without the formatting machinery (a page of
/// tasks holds up to 150).
fn id(id: uuid::Uuid) -> String {
    id.hyphenated()
        .encode_lower(&mut uuid::Uuid::encode_buffer())
        .to_owned()
}

/// The status a record reads as `now`: PENDING past its due time is OVERDUE.
#[must_use]
pub fn compliance_status(stored: ComplianceStatus, overdue: bool) -> pb::ComplianceStatus {
    match stored {
        ComplianceStatus::Completed => pb::ComplianceStatus::Completed,
        ComplianceStatus::Pending if overdue => pb::ComplianceStatus::Overdue,
        ComplianceStatus::Pending => pb::ComplianceStatus::Pending,
    }
}

/// A compliance record on the wire, as it reads at `now`.
#[must_use]
pub fn record(r: &Record, now: DateTime<Utc>) -> pb::ComplianceRecord {
    pb::ComplianceRecord {
        id: r.id.to_string(),
        title: r.title.clone(),
        status: compliance_status(r.status(), r.due_time < now).into(),
        due_time: Some(timestamp(r.due_time)),
        task_id: r.task_id.map(|t| t.to_string()).unwrap_or_default(),
        create_time: Some(timestamp(r.create_time)),
        update_time: Some(timestamp(r.update_time)),
        etag: etag(r.version),
    }
}
