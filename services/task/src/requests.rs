//! Requests as domain values (parse, don't validate): each conversion reports
//! every bad field at once, so handlers start from valid input. Lists take the
//! caller's tenant too: their page tokens are bound to it and to the filter.

use bulkhead_context::{TenantId, UserId};
use bulkhead_proto::task::v1 as pb;
use bulkhead_rpc::paging::{self, PageSize};
use bulkhead_rpc::{FieldViolations, InvalidRequest, fields};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::domain::{ComplianceStatus, Description, RequestKey, TaskStatus, Title, version_of};

/// Most ids in one bulk update.
pub const MAX_BULK: usize = 500;

use bulkhead_rpc::fields::entity_id as id;

fn task_status(value: i32) -> Result<TaskStatus, &'static str> {
    match pb::TaskStatus::try_from(value) {
        Ok(pb::TaskStatus::Pending) => Ok(TaskStatus::Pending),
        Ok(pb::TaskStatus::InProgress) => Ok(TaskStatus::InProgress),
        Ok(pb::TaskStatus::Completed) => Ok(TaskStatus::Completed),
        Ok(pb::TaskStatus::Cancelled) => Ok(TaskStatus::Cancelled),
        _ => Err("must be PENDING, IN_PROGRESS, COMPLETED or CANCELLED"),
    }
}

/// An optional user id: empty is none.
fn optional_user(text: &str) -> Result<Option<UserId>, &'static str> {
    if text.is_empty() {
        Ok(None)
    } else {
        fields::user_id(text).map(Some)
    }
}

/// An etag as the version it names; empty: no condition; malformed: a version
/// nothing has (so the update is refused as stale).
pub fn expected_version(etag: &str) -> Option<i64> {
    (!etag.is_empty()).then(|| version_of(etag).unwrap_or(-1))
}

pub use bulkhead_rpc::fields::EARLIEST;
use bulkhead_rpc::fields::{LATEST, time};

/// A new task.
#[derive(Debug)]
pub struct CreateTask {
    pub title: Title,
    pub description: Description,
    pub status: TaskStatus,
    pub assignee: Option<UserId>,
    pub request_key: Option<RequestKey>,
}

impl TryFrom<&pb::CreateTaskRequest> for CreateTask {
    type Error = InvalidRequest;

    fn try_from(r: &pb::CreateTaskRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let title = v.check("title", Title::parse(&r.title));
        let description = v.check("description", Description::parse(&r.description));
        let status = if r.status == 0 {
            Some(TaskStatus::Pending)
        } else {
            v.check("status", task_status(r.status))
        };
        let assignee = v.check("assignee_user_id", optional_user(&r.assignee_user_id));
        let request_key = if r.request_id.is_empty() {
            Some(None)
        } else {
            v.check("request_id", RequestKey::parse(&r.request_id))
                .map(Some)
        };
        v.build(|| {
            Some(Self {
                title: title?,
                description: description?,
                status: status?,
                assignee: assignee?,
                request_key: request_key?,
            })
        })
    }
}

/// A task named by id (GetTask, DeleteTask).
#[derive(Debug, Clone, Copy)]
pub struct TaskRef {
    pub id: Uuid,
    /// DeleteTask's optional etag.
    pub expected_version: Option<i64>,
}

impl TryFrom<&pb::GetTaskRequest> for TaskRef {
    type Error = InvalidRequest;

    fn try_from(r: &pb::GetTaskRequest) -> Result<Self, InvalidRequest> {
        let id = id(&r.task_id).map_err(|rule| InvalidRequest::field("task_id", rule))?;
        Ok(Self {
            id,
            expected_version: None,
        })
    }
}

impl TryFrom<&pb::DeleteTaskRequest> for TaskRef {
    type Error = InvalidRequest;

    fn try_from(r: &pb::DeleteTaskRequest) -> Result<Self, InvalidRequest> {
        let id = id(&r.task_id).map_err(|rule| InvalidRequest::field("task_id", rule))?;
        Ok(Self {
            id,
            expected_version: expected_version(&r.etag),
        })
    }
}

/// What an UpdateTask changes (`None`: the field is not in the mask).
#[derive(Debug, Default)]
pub struct TaskChange {
    pub title: Option<Title>,
    pub description: Option<Description>,
    pub status: Option<TaskStatus>,
    /// `Some(None)` unassigns.
    pub assignee: Option<Option<UserId>>,
}

/// An UpdateTask.
#[derive(Debug)]
pub struct UpdateTask {
    pub id: Uuid,
    pub expected_version: Option<i64>,
    pub change: TaskChange,
}

const TASK_FIELDS: [&str; 4] = ["title", "description", "status", "assignee_user_id"];

impl TryFrom<&pb::UpdateTaskRequest> for UpdateTask {
    type Error = InvalidRequest;

    fn try_from(r: &pb::UpdateTaskRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let paths = fields::update_mask(r.update_mask.as_ref(), &TASK_FIELDS, &mut v);
        let given = r.task.clone().unwrap_or_default();
        let task_id = v.check("task.id", id(&given.id));
        let has = |p: &str| paths.iter().any(|x| x == p);
        let mut change = TaskChange::default();
        if has("title") {
            change.title = v.check("task.title", Title::parse(&given.title));
        }
        if has("description") {
            change.description =
                v.check("task.description", Description::parse(&given.description));
        }
        if has("status") {
            change.status = v.check("task.status", task_status(given.status));
        }
        if has("assignee_user_id") {
            change.assignee = v.check(
                "task.assignee_user_id",
                optional_user(&given.assignee_user_id),
            );
        }
        let expected_version = expected_version(&given.etag);
        v.build(|| {
            Some(Self {
                id: task_id?,
                expected_version,
                change,
            })
        })
    }
}

/// The filter of a task list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub assignee: Option<UserId>,
}

/// A page of tasks, newest first.
#[derive(Debug)]
pub struct ListTasks {
    pub size: PageSize,
    /// The id after which (older than which) the page starts.
    pub before: Option<Uuid>,
    pub filter: TaskFilter,
}

/// The page-token kind of a task list: bound to the tenant and the filter.
fn task_list_kind(tenant: TenantId, filter: TaskFilter) -> String {
    format!(
        "tasks/{tenant}/{}/{}",
        filter.status.map_or("", TaskStatus::as_str),
        filter.assignee.map(|a| a.to_string()).unwrap_or_default()
    )
}

impl ListTasks {
    /// The request for `tenant`.
    ///
    /// # Errors
    /// Every bad field; a page token of another tenant or filter is one.
    pub fn parse(r: &pb::ListTasksRequest, tenant: TenantId) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let size = v.check("page_size", PageSize::parse(r.page_size));
        let status = if r.status == 0 {
            Some(None)
        } else {
            v.check("status", task_status(r.status)).map(Some)
        };
        let assignee = v.check("assignee_user_id", optional_user(&r.assignee_user_id));
        // The token is checked against the filter as asked (if the filter is bad,
        // that is what gets reported).
        let filter = status
            .zip(assignee)
            .map(|(status, assignee)| TaskFilter { status, assignee });
        let before = filter.and_then(|filter| {
            v.check(
                "page_token",
                paging::decode(&task_list_kind(tenant, filter), &r.page_token).and_then(|cursor| {
                    cursor
                        .map(|text| {
                            Uuid::try_parse(&text).map_err(|_| "is not a page token of this list")
                        })
                        .transpose()
                }),
            )
        });
        v.build(|| {
            Some(Self {
                size: size?,
                before: before?,
                filter: filter?,
            })
        })
    }

    /// The token for the page after the one ending with `last`.
    #[must_use]
    pub fn kind(&self, tenant: TenantId) -> String {
        task_list_kind(tenant, self.filter)
    }
}

/// A bulk status change.
#[derive(Debug)]
pub struct BulkUpdate {
    /// Distinct ids, in the order given.
    pub ids: Vec<Uuid>,
    pub status: TaskStatus,
}

impl TryFrom<&pb::BulkUpdateTaskStatusRequest> for BulkUpdate {
    type Error = InvalidRequest;

    fn try_from(r: &pb::BulkUpdateTaskStatusRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let ids = if r.task_ids.is_empty() || r.task_ids.len() > MAX_BULK {
            v.add("task_ids", format!("must name 1 to {MAX_BULK} tasks"));
            None
        } else {
            let mut ids: Vec<Uuid> = Vec::with_capacity(r.task_ids.len());
            let mut ok = true;
            for (i, text) in r.task_ids.iter().enumerate() {
                match id(text) {
                    Ok(u) if !ids.contains(&u) => ids.push(u),
                    Ok(_) => {}
                    Err(rule) => {
                        ok = false;
                        v.add(&format!("task_ids[{i}]"), rule);
                    }
                }
            }
            ok.then_some(ids)
        };
        let status = v.check("status", task_status(r.status));
        v.build(|| {
            Some(Self {
                ids: ids?,
                status: status?,
            })
        })
    }
}

/// The analytics asked for.
#[derive(Debug, Clone, Copy)]
pub struct Analytics {
    /// Days in the trend, ending today.
    pub trend_days: u32,
}

impl TryFrom<&pb::GetTaskAnalyticsRequest> for Analytics {
    type Error = InvalidRequest;

    fn try_from(r: &pb::GetTaskAnalyticsRequest) -> Result<Self, InvalidRequest> {
        match r.trend_days {
            0 => Ok(Self { trend_days: 30 }),
            n @ 1..=90 => Ok(Self {
                trend_days: n.unsigned_abs(),
            }),
            _ => Err(InvalidRequest::field(
                "trend_days",
                "must be 1 to 90 (0: 30)",
            )),
        }
    }
}

/// A new compliance record.
#[derive(Debug)]
pub struct CreateCompliance {
    pub title: Title,
    pub due: DateTime<Utc>,
    pub task: Option<Uuid>,
}

impl TryFrom<&pb::CreateComplianceRecordRequest> for CreateCompliance {
    type Error = InvalidRequest;

    fn try_from(r: &pb::CreateComplianceRecordRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let title = v.check("title", Title::parse(&r.title));
        let due = v.check("due_time", time(r.due_time.as_ref()));
        let task = if r.task_id.is_empty() {
            Some(None)
        } else {
            v.check("task_id", id(&r.task_id)).map(Some)
        };
        v.build(|| {
            Some(Self {
                title: title?,
                due: due?,
                task: task?,
            })
        })
    }
}

/// A page of compliance records, soonest due first.
#[derive(Debug)]
pub struct ListCompliance {
    pub size: PageSize,
    /// The (due time, id) after which the page starts.
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// The page-token kind of a compliance list: bound to the tenant.
pub fn compliance_list_kind(tenant: TenantId) -> String {
    format!("compliance/{tenant}")
}

/// A page token's cursor for list `kind`, parsed by `parse`.
///
/// # Errors
/// The rule, for a token of another list or one that does not parse.
pub fn cursor<T>(
    kind: &str,
    token: &str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<T>, &'static str> {
    paging::decode(kind, token)?
        .map(|text| parse(&text).ok_or("is not a page token of this list"))
        .transpose()
}

/// A time-and-id cursor as text: `<µs>_<id>` (compliance records by due
/// time, bookings by start).
#[must_use]
pub fn time_cursor(t: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{id}", t.timestamp_micros())
}

/// The time and id of a [`time_cursor`], if `text` is one.
#[must_use]
pub fn parse_time_cursor(text: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (micros, id) = text.split_once('_')?;
    let t = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .filter(|t| (EARLIEST..=LATEST).contains(t))?;
    Some((t, Uuid::try_parse(id).ok()?))
}

impl ListCompliance {
    /// The request for `tenant`.
    ///
    /// # Errors
    /// Every bad field; a page token of another tenant is one.
    pub fn parse(
        r: &pb::ListComplianceRecordsRequest,
        tenant: TenantId,
    ) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let size = v.check("page_size", PageSize::parse(r.page_size));
        let after = v.check(
            "page_token",
            cursor(
                &compliance_list_kind(tenant),
                &r.page_token,
                parse_time_cursor,
            ),
        );
        v.build(|| {
            Some(Self {
                size: size?,
                after: after?,
            })
        })
    }
}

/// What an UpdateComplianceRecord changes.
#[derive(Debug, Default)]
pub struct ComplianceChange {
    pub title: Option<Title>,
    pub status: Option<ComplianceStatus>,
    pub due: Option<DateTime<Utc>>,
    /// `Some(None)` unlinks the task.
    pub task: Option<Option<Uuid>>,
}

/// An UpdateComplianceRecord.
#[derive(Debug)]
pub struct UpdateCompliance {
    pub id: Uuid,
    pub expected_version: Option<i64>,
    pub change: ComplianceChange,
}

const COMPLIANCE_FIELDS: [&str; 4] = ["title", "status", "due_time", "task_id"];

impl TryFrom<&pb::UpdateComplianceRecordRequest> for UpdateCompliance {
    type Error = InvalidRequest;

    fn try_from(r: &pb::UpdateComplianceRecordRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let paths = fields::update_mask(r.update_mask.as_ref(), &COMPLIANCE_FIELDS, &mut v);
        let given = r.record.clone().unwrap_or_default();
        let record_id = v.check("record.id", id(&given.id));
        let has = |p: &str| paths.iter().any(|x| x == p);
        let mut change = ComplianceChange::default();
        if has("title") {
            change.title = v.check("record.title", Title::parse(&given.title));
        }
        if has("status") {
            change.status = v.check(
                "record.status",
                match pb::ComplianceStatus::try_from(given.status) {
                    Ok(pb::ComplianceStatus::Pending) => Ok(ComplianceStatus::Pending),
                    Ok(pb::ComplianceStatus::Completed) => Ok(ComplianceStatus::Completed),
                    _ => Err("must be PENDING or COMPLETED (OVERDUE is read, not set)"),
                },
            );
        }
        if has("due_time") {
            change.due = v.check("record.due_time", time(given.due_time.as_ref()));
        }
        if has("task_id") {
            change.task = if given.task_id.is_empty() {
                Some(None)
            } else {
                v.check("record.task_id", id(&given.task_id)).map(Some)
            };
        }
        let expected_version = expected_version(&given.etag);
        v.build(|| {
            Some(Self {
                id: record_id?,
                expected_version,
                change,
            })
        })
    }
}

/// Assignments to release (Tenant's outbox, when someone left a tenant).
#[derive(Debug, Clone, Copy)]
pub struct Release {
    pub tenant: TenantId,
    /// `None`: every assignee (the tenant was deactivated).
    pub user: Option<UserId>,
    /// The membership that ended, by its create time (Tenant's clock).
    pub ended_since: DateTime<Utc>,
}

impl TryFrom<&pb::ReleaseAssignmentsRequest> for Release {
    type Error = InvalidRequest;

    fn try_from(r: &pb::ReleaseAssignmentsRequest) -> Result<Self, InvalidRequest> {
        let mut v = FieldViolations::new();
        let tenant = v.check("tenant_id", fields::tenant_id(&r.tenant_id));
        let user = v.check("user_id", optional_user(&r.user_id));
        // Not in the future: a far-future time would refuse the user for good.
        let ended_since = v.check(
            "membership_create_time",
            time(r.membership_create_time.as_ref()).and_then(|t| {
                if t > Utc::now() + chrono::Duration::minutes(5) {
                    Err("must not be in the future")
                } else {
                    Ok(t)
                }
            }),
        );
        v.build(|| {
            Some(Self {
                tenant: tenant?,
                user: user?,
                ended_since: ended_since?,
            })
        })
    }
}
