//! The gRPC handlers: take the context, turn the request into domain values
//! (every bad field at once), check an assignee live with Tenant, run one
//! scoped transaction that also writes the audit event, convert back.

use bulkhead_clients::{Membership, TenantDirectory};
use bulkhead_context::{PlatformRole, TenantId, TenantUser, UserId};
use bulkhead_db::Db;
use bulkhead_guard::RequestContext;
use bulkhead_outbox::audit::{Actor, Event};
use bulkhead_proto::task::v1 as pb;
use bulkhead_proto::task::v1::task_service_server::{TaskService, TaskServiceServer};
use bulkhead_rpc::paging;
use bulkhead_rpc::timestamp;
use chrono::{DateTime, Duration, DurationRound as _, Utc};
use serde_json::json;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::audit::{self, changes, snapshot};
use crate::catalog::domain::BookingStatus;
use crate::catalog::repo as catalog_repo;
use crate::convert;
use crate::domain::{ComplianceStatus, TaskStatus};
use crate::error::TaskError;
use crate::repo::{self, NewTask, RecordChangeset, TaskChangeset};
use crate::requests::{
    Analytics, BulkUpdate, CreateCompliance, CreateTask, ListCompliance, ListTasks, Release,
    TaskRef, UpdateCompliance, UpdateTask, compliance_list_kind, time_cursor,
};

/// The Task service's handlers.
#[derive(Debug, Clone)]
pub struct TaskApi {
    db: Db,
    /// Where assignees are checked; without it, assigning answers UNAVAILABLE.
    tenants: Option<TenantDirectory>,
    /// Whether a SUPER_ADMIN's GetTask/ListTasks cross tenants (audited).
    super_admin_bypass: bool,
}

impl TaskApi {
    /// Handlers over the service's pools, checking assignees with `tenants`.
    #[must_use]
    pub fn new(db: Db, tenants: Option<TenantDirectory>) -> Self {
        Self {
            db,
            tenants,
            super_admin_bypass: false,
        }
    }

    /// Lets a SUPER_ADMIN's GetTask and ListTasks cross tenants, through the
    /// platform role's pool, each call audited. Off by default.
    #[must_use]
    pub fn with_super_admin_bypass(mut self, enabled: bool) -> Self {
        self.super_admin_bypass = enabled;
        self
    }

    /// The tonic service to mount.
    #[must_use]
    pub fn into_server(self) -> TaskServiceServer<Self> {
        TaskServiceServer::new(self)
    }

    /// Whether this caller reads across tenants.
    fn bypasses(&self, user: &TenantUser) -> bool {
        self.super_admin_bypass && user.platform_role == PlatformRole::SuperAdmin
    }

    /// `assignee` must be a member of the caller's tenant now (asked of Tenant
    /// with the caller's own token, so it answers for that tenant only): when
    /// their membership began, for [`repo::hold_assignee`] in the write. One
    /// answer whatever the reason; never assigned unchecked.
    async fn check_assignee<T>(
        &self,
        request: &Request<T>,
        assignee: UserId,
    ) -> Result<DateTime<Utc>, TaskError> {
        let bearer = request
            .metadata()
            .get(bulkhead_guard::headers::AUTHORIZATION)
            .ok_or(TaskError::NoTenant)?;
        let tenants = self
            .tenants
            .as_ref()
            .ok_or_else(|| TaskError::TenantUnavailable("no tenant service configured".into()))?;
        match tenants
            .check_membership(
                bearer,
                &assignee.to_string(),
                bulkhead_guard::Deadline::of(request),
            )
            .await
        {
            Ok(Membership::Member { since, .. }) => Ok(since),
            Ok(Membership::NotMember) => Err(TaskError::AssigneeNotMember),
            Err(status) => Err(TaskError::TenantUnavailable(status.to_string())),
        }
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn create_task(
        &self,
        request: Request<pb::CreateTaskRequest>,
    ) -> Reply<pb::CreateTaskResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let new = CreateTask::try_from(request.get_ref())?;
        let member_since = match new.assignee {
            Some(assignee) => Some(self.check_assignee(&request, assignee).await?),
            None => None,
        };
        let row = NewTask {
            tenant_id: *user.tenant_id.as_uuid(),
            id: Uuid::now_v7(),
            title: new.title.as_str(),
            description: new.description.as_str(),
            status: new.status.as_str(),
            assignee_id: new.assignee.map(|a| *a.as_uuid()),
            assignee_member_since: member_since,
            created_by: *user.user_id.as_uuid(),
            request_id: new.request_key.as_ref().map(|k| k.as_str()),
        };
        let task = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                if let (Some(assignee), Some(since)) = (new.assignee, member_since) {
                    repo::hold_assignee(tx, assignee, since).await?;
                }
                if let Some(task) = repo::insert_task(tx, &row).await? {
                    let event =
                        Event::new("task.created", "task", task.id).new_value(snapshot(&task));
                    audit::record(tx, ctx, event).await?;
                    return Ok(task);
                }
                // A retry (AIP-155): the task its first attempt created, no second event.
                let key = row.request_id.unwrap_or_default();
                repo::task_by_request(tx, user.user_id, key)
                    .await?
                    .ok_or(TaskError::NotFound)
            })
            .await?;
        Ok(Response::new(pb::CreateTaskResponse {
            task: Some(convert::task(task)),
        }))
    }

    async fn get_task(&self, request: Request<pb::GetTaskRequest>) -> Reply<pb::GetTaskResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let TaskRef { id, .. } = TaskRef::try_from(request.get_ref())?;
        let task = if self.bypasses(user) {
            self.db
                .platform_tx(async |tx| {
                    let task = repo::any_task(tx, id).await?.ok_or(TaskError::NotFound)?;
                    Event::new("task.read_across_tenants", "task", task.id)
                        .record_for(tx, TenantId::from_uuid(task.tenant_id), &Actor::of(ctx))
                        .await?;
                    Ok::<_, TaskError>(task)
                })
                .await?
        } else {
            self.db
                .tenant_read_rows(user.tenant_id, async |tx| repo::task(tx, id).await)
                .await?
                .ok_or(TaskError::NotFound)?
        };
        Ok(Response::new(pb::GetTaskResponse {
            task: Some(convert::task(task)),
        }))
    }

    async fn update_task(
        &self,
        request: Request<pb::UpdateTaskRequest>,
    ) -> Reply<pb::UpdateTaskResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let update = UpdateTask::try_from(request.get_ref())?;
        let member_since = match update.change.assignee {
            Some(Some(assignee)) => Some(self.check_assignee(&request, assignee).await?),
            _ => None,
        };
        let change = &update.change;
        let task = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                // Before the task's row lock: a release takes the assignee's
                // lock, then the rows (the other order deadlocks).
                if let (Some(Some(assignee)), Some(since)) = (change.assignee, member_since) {
                    repo::hold_assignee(tx, assignee, since).await?;
                }
                let before = repo::lock_task(tx, update.id)
                    .await?
                    .ok_or(TaskError::NotFound)?;
                if update.expected_version.is_some_and(|v| v != before.version) {
                    return Err(TaskError::StaleEtag("task"));
                }
                let from = before.status();
                let status = change.status.filter(|to| *to != from);
                if let Some(to) = status.filter(|to| !from.can_become(*to)) {
                    return Err(TaskError::Transition {
                        what: "task",
                        from: from.as_str(),
                        to: to.as_str(),
                    });
                }
                let set = TaskChangeset {
                    title: change.title.as_ref().map(|t| t.as_str()),
                    description: change.description.as_ref().map(|d| d.as_str()),
                    status: status.map(TaskStatus::as_str),
                    assignee_id: change.assignee.map(|a| a.map(|u| *u.as_uuid())),
                    assignee_member_since: change.assignee.map(|_| member_since),
                };
                let mut after = repo::update_task(tx, update.id, &set).await?;
                // Reopened with its assignee kept: not if they left meanwhile.
                let reopened = !from.is_open() && status.is_some_and(TaskStatus::is_open);
                if let (true, None, Some(assignee)) = (reopened, change.assignee, after.assignee_id)
                {
                    repo::lock_assignee(tx, UserId::from_uuid(assignee)).await?;
                    if let Some(task) = repo::drop_departed_assignees(tx, &[after.id]).await?.pop()
                    {
                        after = task;
                    }
                }
                let (old, new) = changes(&before, &after);
                let event = Event::new("task.updated", "task", after.id)
                    .old(old)
                    .new_value(new);
                audit::record(tx, ctx, event).await?;
                Ok(after)
            })
            .await?;
        Ok(Response::new(pb::UpdateTaskResponse {
            task: Some(convert::task(task)),
        }))
    }

    async fn delete_task(
        &self,
        request: Request<pb::DeleteTaskRequest>,
    ) -> Reply<pb::DeleteTaskResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let target = TaskRef::try_from(request.get_ref())?;
        self.db
            .tenant_tx(user.tenant_id, async |tx| {
                let before = repo::lock_task(tx, target.id)
                    .await?
                    .ok_or(TaskError::NotFound)?;
                if target.expected_version.is_some_and(|v| v != before.version) {
                    return Err(TaskError::StaleEtag("task"));
                }
                // Its compliance records lose the link visibly: a new version
                // and an event each (the foreign key would clear it silently).
                for record in repo::unlink_records(tx, target.id).await? {
                    let event = Event::new("compliance.updated", "compliance_record", record.id)
                        .old(json!({ "task_id": record.task_id }))
                        .new_value(json!({ "task_id": null }));
                    audit::record(tx, ctx, event).await?;
                }
                repo::delete_task(tx, target.id).await?;
                let event = Event::new("task.deleted", "task", before.id).old(snapshot(&before));
                audit::record(tx, ctx, event).await
            })
            .await?;
        Ok(Response::new(pb::DeleteTaskResponse {}))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Reply<pb::ListTasksResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let list = ListTasks::parse(request.get_ref(), user.tenant_id)?;
        let bypass = self.bypasses(user);
        if bypass && (list.filter.status.is_some() || list.filter.assignee.is_some()) {
            return Err(bulkhead_rpc::InvalidRequest::field(
                "status",
                "lists across tenants take no filter",
            )
            .into());
        }
        let mut tasks = if bypass {
            self.db
                .platform_tx(async |tx| {
                    let tasks = repo::list_all_tasks(tx, list.before, list.size.fetch()).await?;
                    Event::new("task.listed_across_tenants", "task", "*")
                        .record_for(tx, TenantId::from_uuid(Uuid::nil()), &Actor::of(ctx))
                        .await?;
                    Ok::<_, TaskError>(tasks)
                })
                .await?
        } else {
            self.db
                .tenant_read_rows(user.tenant_id, async |tx| {
                    repo::list_tasks(tx, list.filter, list.before, list.size.fetch()).await
                })
                .await?
        };
        let next_page_token =
            paging::next_page(&mut tasks, list.size, &list.kind(user.tenant_id), |t| {
                t.id.to_string()
            });
        Ok(Response::new(pb::ListTasksResponse {
            tasks: tasks.into_iter().map(convert::task).collect(),
            next_page_token,
        }))
    }

    async fn bulk_update_task_status(
        &self,
        request: Request<pb::BulkUpdateTaskStatusRequest>,
    ) -> Reply<pb::BulkUpdateTaskStatusResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let bulk = BulkUpdate::try_from(request.get_ref())?;
        let sources: Vec<&str> = TaskStatus::sources(bulk.status)
            .into_iter()
            .map(TaskStatus::as_str)
            .collect();
        let moved = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                // Other tenants' ids, unknown ids and tasks that cannot move are
                // simply not among these.
                let movable = repo::lock_movable(tx, &bulk.ids, &sources).await?;
                if movable.is_empty() {
                    return Ok::<_, TaskError>(Vec::new());
                }
                let ids: Vec<Uuid> = movable.iter().map(|(id, _)| *id).collect();
                repo::set_status(tx, &ids, bulk.status).await?;
                // Reopened tasks do not bring back assignees who left.
                let mut departed = 0;
                if bulk.status.is_open() {
                    for assignee in repo::assignees(tx, &ids).await? {
                        repo::lock_assignee(tx, UserId::from_uuid(assignee)).await?;
                    }
                    departed = repo::drop_departed_assignees(tx, &ids).await?.len();
                }
                let tasks: Vec<_> = movable
                    .iter()
                    .map(|(id, from)| json!({ "id": id, "status": from }))
                    .collect();
                let event = Event::new("task.bulk_status_updated", "task", "*")
                    .old(json!({ "tasks": tasks }))
                    .new_value(json!({
                        "status": bulk.status.as_str(),
                        "count": ids.len(),
                        "unassigned_departed": departed,
                    }));
                audit::record(tx, ctx, event).await?;
                Ok(ids)
            })
            .await?;
        let updated_task_ids = bulk
            .ids
            .iter()
            .filter(|id| moved.contains(id))
            .map(Uuid::to_string)
            .collect();
        Ok(Response::new(pb::BulkUpdateTaskStatusResponse {
            updated_task_ids,
        }))
    }

    async fn get_task_analytics(
        &self,
        request: Request<pb::GetTaskAnalyticsRequest>,
    ) -> Reply<pb::GetTaskAnalyticsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let Analytics { trend_days } = Analytics::try_from(request.get_ref())?;
        let now = Utc::now();
        let today = now.duration_trunc(Duration::days(1)).unwrap_or(now);
        let first_day = today - Duration::days(i64::from(trend_days) - 1);
        let (by_status, compliance, overdue, per_day, open_requests, upcoming) = self
            .db
            .tenant_read(user.tenant_id, async |tx| {
                // The six statements go out in one flight.
                futures_util::try_join!(
                    repo::status_counts(tx),
                    repo::compliance_counts(tx),
                    repo::overdue_count(tx, now),
                    repo::created_per_day(tx, first_day),
                    catalog_repo::open_request_count(tx),
                    catalog_repo::upcoming_booking_counts(tx, now),
                )
            })
            .await?;
        let upcoming_in = |status: BookingStatus| {
            upcoming
                .iter()
                .filter(|(s, _)| s == status.as_str())
                .map(|(_, n)| n)
                .sum::<i64>()
        };
        let count_of = |rows: &[(String, i64)], status: TaskStatus| {
            rows.iter()
                .filter(|(s, _)| s == status.as_str())
                .map(|(_, n)| n)
                .sum::<i64>()
        };
        let status_counts = |rows: &[(String, i64)]| {
            TaskStatus::ALL
                .iter()
                .map(|s| pb::TaskStatusCount {
                    status: convert::status(*s).into(),
                    count: count_of(rows, *s),
                })
                .collect::<Vec<_>>()
        };
        let stored = |status: ComplianceStatus| {
            compliance
                .iter()
                .filter(|(s, _)| s == status.as_str())
                .map(|(_, n)| n)
                .sum::<i64>()
        };
        let compliance_counts = [
            (
                pb::ComplianceStatus::Pending,
                stored(ComplianceStatus::Pending) - overdue,
            ),
            (
                pb::ComplianceStatus::Completed,
                stored(ComplianceStatus::Completed),
            ),
            (pb::ComplianceStatus::Overdue, overdue),
        ]
        .into_iter()
        .map(|(status, count)| pb::ComplianceStatusCount {
            status: status.into(),
            count,
        })
        .collect();
        let trend = (0..i64::from(trend_days))
            .map(|offset| {
                let day = first_day + Duration::days(offset);
                let rows: Vec<(String, i64)> = per_day
                    .iter()
                    .filter(|(d, _, _)| *d == day)
                    .map(|(_, s, n)| (s.clone(), *n))
                    .collect();
                pb::TaskTrendPoint {
                    day_start_time: Some(timestamp(day)),
                    created_count: rows.iter().map(|(_, n)| n).sum(),
                    status_counts: status_counts(&rows),
                }
            })
            .collect();
        Ok(Response::new(pb::GetTaskAnalyticsResponse {
            total_count: by_status.iter().map(|(_, n)| n).sum(),
            status_counts: status_counts(&by_status),
            compliance_counts,
            trend,
            open_service_request_count: open_requests,
            upcoming_requested_booking_count: upcoming_in(BookingStatus::Requested),
            upcoming_confirmed_booking_count: upcoming_in(BookingStatus::Confirmed),
        }))
    }

    async fn create_compliance_record(
        &self,
        request: Request<pb::CreateComplianceRecordRequest>,
    ) -> Reply<pb::CreateComplianceRecordResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let new = CreateCompliance::try_from(request.get_ref())?;
        let record = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                let record =
                    repo::insert_record(tx, Uuid::now_v7(), new.title.as_str(), new.due, new.task)
                        .await?;
                let event = Event::new("compliance.created", "compliance_record", record.id)
                    .new_value(snapshot(&record));
                audit::record(tx, ctx, event).await?;
                Ok::<_, TaskError>(record)
            })
            .await?;
        Ok(Response::new(pb::CreateComplianceRecordResponse {
            record: Some(convert::record(&record, Utc::now())),
        }))
    }

    async fn list_compliance_records(
        &self,
        request: Request<pb::ListComplianceRecordsRequest>,
    ) -> Reply<pb::ListComplianceRecordsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let list = ListCompliance::parse(request.get_ref(), user.tenant_id)?;
        let mut records = self
            .db
            .tenant_read(user.tenant_id, async |tx| {
                repo::list_records(tx, list.after, list.size.fetch()).await
            })
            .await?;
        let next_page_token = paging::next_page(
            &mut records,
            list.size,
            &compliance_list_kind(user.tenant_id),
            |r| time_cursor(r.due_time, r.id),
        );
        let now = Utc::now();
        Ok(Response::new(pb::ListComplianceRecordsResponse {
            records: records.iter().map(|r| convert::record(r, now)).collect(),
            next_page_token,
        }))
    }

    async fn update_compliance_record(
        &self,
        request: Request<pb::UpdateComplianceRecordRequest>,
    ) -> Reply<pb::UpdateComplianceRecordResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let user = ctx.tenant_user()?;
        let update = UpdateCompliance::try_from(request.get_ref())?;
        let change = &update.change;
        let record = self
            .db
            .tenant_tx(user.tenant_id, async |tx| {
                let before = repo::lock_record(tx, update.id)
                    .await?
                    .ok_or(TaskError::NotFound)?;
                if update.expected_version.is_some_and(|v| v != before.version) {
                    return Err(TaskError::StaleEtag("compliance record"));
                }
                let set = RecordChangeset {
                    title: change.title.as_ref().map(|t| t.as_str()),
                    status: change.status.map(ComplianceStatus::as_str),
                    due_time: change.due,
                    task_id: change.task,
                };
                let after = repo::update_record(tx, update.id, &set).await?;
                let (old, new) = changes(&before, &after);
                let event = Event::new("compliance.updated", "compliance_record", after.id)
                    .old(old)
                    .new_value(new);
                audit::record(tx, ctx, event).await?;
                Ok(after)
            })
            .await?;
        Ok(Response::new(pb::UpdateComplianceRecordResponse {
            record: Some(convert::record(&record, Utc::now())),
        }))
    }

    async fn release_assignments(
        &self,
        request: Request<pb::ReleaseAssignmentsRequest>,
    ) -> Reply<pb::ReleaseAssignmentsResponse> {
        let ctx = RequestContext::from_request(&request)?;
        let release = Release::try_from(request.get_ref())?;
        let released = self
            .db
            .platform_tx(async |tx| {
                let released =
                    repo::release(tx, release.tenant, release.user, release.ended_since).await?;
                if released > 0 {
                    Event::new(
                        "task.assignments_released",
                        "task",
                        release
                            .user
                            .map_or_else(|| "*".to_owned(), |u| u.to_string()),
                    )
                    .new_value(json!({ "unassigned": released }))
                    .record_for(tx, release.tenant, &Actor::of(ctx))
                    .await?;
                }
                Ok::<_, TaskError>(released)
            })
            .await?;
        Ok(Response::new(pb::ReleaseAssignmentsResponse {
            released_count: i32::try_from(released).unwrap_or(i32::MAX),
        }))
    }
}
