//! Repository functions: tenant tables only through [`TenantConn`] (the
//! transaction's tenant is also named in every `WHERE`: the planner's index and
//! a second lock on the door), and the few platform operations through
//! [`PlatformConn`]. Every query here is a static shape, so diesel prepares it
//! once per connection and caches it.

use bulkhead_context::{TenantId, UserId};
use bulkhead_db::{PlatformConn, TenantConn};
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use uuid::Uuid;

use crate::domain::{ComplianceStatus, TaskStatus};
use crate::error::TaskError;
use crate::requests::TaskFilter;
use crate::schema::{compliance_records, member_removals, tasks};

/// A task row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = tasks)]
pub struct Task {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub title: String,
    pub description: String,
    pub status: String,
    pub assignee_id: Option<Uuid>,
    pub created_by: Uuid,
    pub version: i64,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

impl bulkhead_db::TenantRow for Task {
    fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }
}

impl Task {
    /// The status as a domain value (the column's CHECK admits only these).
    #[must_use]
    pub fn status(&self) -> TaskStatus {
        TaskStatus::parse(&self.status).unwrap_or(TaskStatus::Pending)
    }
}

/// A new task.
#[derive(Debug, Insertable)]
#[diesel(table_name = tasks)]
pub struct NewTask<'a> {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub title: &'a str,
    pub description: &'a str,
    pub status: &'a str,
    pub assignee_id: Option<Uuid>,
    /// When the assignee's membership began (Tenant's clock).
    pub assignee_member_since: Option<DateTime<Utc>>,
    pub created_by: Uuid,
    pub request_id: Option<&'a str>,
}

/// The fields an update sets (`None`: unchanged).
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = tasks)]
pub struct TaskChangeset<'a> {
    pub title: Option<&'a str>,
    pub description: Option<&'a str>,
    pub status: Option<&'a str>,
    pub assignee_id: Option<Option<Uuid>>,
    pub assignee_member_since: Option<Option<DateTime<Utc>>>,
}

/// Creates `new` in the transaction's tenant, unless a task with its request
/// key exists (AIP-155): then `None`.
///
/// # Errors
/// On database failure.
pub async fn insert_task(tx: TenantConn<'_>, new: &NewTask<'_>) -> Result<Option<Task>, TaskError> {
    Ok(diesel::insert_into(tasks::table)
        .values(new)
        .on_conflict((tasks::tenant_id, tasks::created_by, tasks::request_id))
        .do_nothing()
        .returning(Task::as_returning())
        .get_result(&mut tx.pg())
        .await
        .optional()?)
}

/// The task `user` created with request key `key`.
///
/// # Errors
/// On database failure.
pub async fn task_by_request(
    tx: TenantConn<'_>,
    user: UserId,
    key: &str,
) -> Result<Option<Task>, TaskError> {
    Ok(tasks::table
        .filter(tasks::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(tasks::created_by.eq(user.as_uuid()))
        .filter(tasks::request_id.eq(key))
        .select(Task::as_select())
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// A task of the transaction's tenant.
///
/// # Errors
/// On database failure.
pub async fn task(tx: TenantConn<'_>, id: Uuid) -> Result<Option<Task>, TaskError> {
    Ok(tasks::table
        .filter(tasks::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(tasks::id.eq(id))
        .select(Task::as_select())
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// A task of the transaction's tenant, locked until the transaction ends.
///
/// # Errors
/// On database failure.
pub async fn lock_task(tx: TenantConn<'_>, id: Uuid) -> Result<Option<Task>, TaskError> {
    Ok(tasks::table
        .filter(tasks::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(tasks::id.eq(id))
        .select(Task::as_select())
        .for_update()
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// Applies `change` to a task (a new version).
///
/// # Errors
/// On database failure.
pub async fn update_task(
    tx: TenantConn<'_>,
    id: Uuid,
    change: &TaskChangeset<'_>,
) -> Result<Task, TaskError> {
    Ok(diesel::update(
        tasks::table
            .filter(tasks::tenant_id.eq(tx.tenant_id().as_uuid()))
            .filter(tasks::id.eq(id)),
    )
    .set((
        change,
        tasks::version.eq(tasks::version + 1),
        tasks::update_time.eq(diesel::dsl::now),
    ))
    .returning(Task::as_returning())
    .get_result(&mut tx.pg())
    .await?)
}

/// Deletes a task; whether it existed.
///
/// # Errors
/// On database failure.
pub async fn delete_task(tx: TenantConn<'_>, id: Uuid) -> Result<bool, TaskError> {
    let deleted = diesel::delete(
        tasks::table
            .filter(tasks::tenant_id.eq(tx.tenant_id().as_uuid()))
            .filter(tasks::id.eq(id)),
    )
    .execute(&mut tx.pg())
    .await?;
    Ok(deleted > 0)
}

/// A page of the tenant's tasks older than `before`, newest first (ids are
/// UUID v7). One static query per filter shape, each with its index.
///
/// # Errors
/// On database failure.
pub async fn list_tasks(
    tx: TenantConn<'_>,
    filter: TaskFilter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Task>, TaskError> {
    let tenant = *tx.tenant_id().as_uuid();
    let before = before.unwrap_or(Uuid::max());
    let page = tasks::table
        .filter(tasks::tenant_id.eq(tenant))
        .filter(tasks::id.lt(before))
        .order(tasks::id.desc())
        .limit(limit)
        .select(Task::as_select());
    let rows = match (filter.status, filter.assignee) {
        (None, None) => page.load(&mut tx.pg()).await?,
        (Some(status), None) => {
            page.filter(tasks::status.eq(status.as_str()))
                .load(&mut tx.pg())
                .await?
        }
        (None, Some(assignee)) => {
            page.filter(tasks::assignee_id.eq(assignee.as_uuid()))
                .load(&mut tx.pg())
                .await?
        }
        (Some(status), Some(assignee)) => {
            page.filter(tasks::assignee_id.eq(assignee.as_uuid()))
                .filter(tasks::status.eq(status.as_str()))
                .load(&mut tx.pg())
                .await?
        }
    };
    Ok(rows)
}

/// Of `ids`, the tenant's tasks whose status is one of `from`, locked; with
/// their status now.
///
/// # Errors
/// On database failure.
pub async fn lock_movable(
    tx: TenantConn<'_>,
    ids: &[Uuid],
    from: &[&str],
) -> Result<Vec<(Uuid, String)>, TaskError> {
    Ok(tasks::table
        .filter(tasks::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(tasks::id.eq_any(ids))
        .filter(tasks::status.eq_any(from))
        .select((tasks::id, tasks::status))
        .for_update()
        .load(&mut tx.pg())
        .await?)
}

/// Sets the status of the tenant's tasks `ids`.
///
/// # Errors
/// On database failure.
pub async fn set_status(
    tx: TenantConn<'_>,
    ids: &[Uuid],
    status: TaskStatus,
) -> Result<usize, TaskError> {
    Ok(diesel::update(
        tasks::table
            .filter(tasks::tenant_id.eq(tx.tenant_id().as_uuid()))
            .filter(tasks::id.eq_any(ids)),
    )
    .set((
        tasks::status.eq(status.as_str()),
        tasks::version.eq(tasks::version + 1),
        tasks::update_time.eq(diesel::dsl::now),
    ))
    .execute(&mut tx.pg())
    .await?)
}

/// The distinct assignees of `ids`, sorted (locks are taken in this order).
///
/// # Errors
/// On database failure.
pub async fn assignees(tx: TenantConn<'_>, ids: &[Uuid]) -> Result<Vec<Uuid>, TaskError> {
    Ok(tasks::table
        .filter(tasks::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(tasks::id.eq_any(ids))
        .filter(tasks::assignee_id.is_not_null())
        .select(tasks::assignee_id.assume_not_null())
        .distinct()
        .order(tasks::assignee_id.assume_not_null())
        .load(&mut tx.pg())
        .await?)
}

/// The tenant's task count per status.
///
/// # Errors
/// On database failure.
pub async fn status_counts(tx: TenantConn<'_>) -> Result<Vec<(String, i64)>, TaskError> {
    Ok(tasks::table
        .filter(tasks::tenant_id.eq(tx.tenant_id().as_uuid()))
        .group_by(tasks::status)
        .select((tasks::status, diesel::dsl::count_star()))
        .load(&mut tx.pg())
        .await?)
}

/// The tenant's compliance records per stored status.
///
/// # Errors
/// On database failure.
pub async fn compliance_counts(tx: TenantConn<'_>) -> Result<Vec<(String, i64)>, TaskError> {
    Ok(compliance_records::table
        .filter(compliance_records::tenant_id.eq(tx.tenant_id().as_uuid()))
        .group_by(compliance_records::status)
        .select((compliance_records::status, diesel::dsl::count_star()))
        .load(&mut tx.pg())
        .await?)
}

/// The tenant's PENDING compliance records past their due time at `now`.
///
/// # Errors
/// On database failure.
pub async fn overdue_count(tx: TenantConn<'_>, now: DateTime<Utc>) -> Result<i64, TaskError> {
    Ok(compliance_records::table
        .filter(compliance_records::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(compliance_records::status.eq(ComplianceStatus::Pending.as_str()))
        .filter(compliance_records::due_time.lt(now))
        .count()
        .get_result(&mut tx.pg())
        .await?)
}

#[derive(QueryableByName)]
struct DayCount {
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    day: DateTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// The tenant's tasks created since `since`, counted per UTC day and current
/// status. (Diesel's query builder cannot group by an expression, so this one
/// statement is plain SQL with binds.)
///
/// # Errors
/// On database failure.
pub async fn created_per_day(
    tx: TenantConn<'_>,
    since: DateTime<Utc>,
) -> Result<Vec<(DateTime<Utc>, String, i64)>, TaskError> {
    let rows: Vec<DayCount> = diesel::sql_query(
        "SELECT date_trunc('day', create_time, 'UTC') AS day, status, count(*) AS n
           FROM tasks WHERE tenant_id = $1 AND create_time >= $2
          GROUP BY 1, 2",
    )
    .bind::<diesel::sql_types::Uuid, _>(tx.tenant_id().as_uuid())
    .bind::<diesel::sql_types::Timestamptz, _>(since)
    .load(&mut tx.pg())
    .await?;
    Ok(rows.into_iter().map(|r| (r.day, r.status, r.n)).collect())
}

/// Unlinks the tenant's compliance records from task `task` (a new version
/// each); returns them as they were before.
///
/// # Errors
/// On database failure.
pub async fn unlink_records(tx: TenantConn<'_>, task: Uuid) -> Result<Vec<Record>, TaskError> {
    let linked: Vec<Record> = compliance_records::table
        .filter(compliance_records::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(compliance_records::task_id.eq(task))
        .select(Record::as_select())
        .for_update()
        .load(&mut tx.pg())
        .await?;
    if !linked.is_empty() {
        diesel::update(
            compliance_records::table
                .filter(compliance_records::tenant_id.eq(tx.tenant_id().as_uuid()))
                .filter(compliance_records::task_id.eq(task)),
        )
        .set((
            compliance_records::task_id.eq(None::<Uuid>),
            compliance_records::version.eq(compliance_records::version + 1),
            compliance_records::update_time.eq(diesel::dsl::now),
        ))
        .execute(&mut tx.pg())
        .await?;
    }
    Ok(linked)
}

/// A compliance record row.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = compliance_records)]
pub struct Record {
    pub tenant_id: Uuid,
    pub id: Uuid,
    pub title: String,
    pub status: String,
    pub due_time: DateTime<Utc>,
    pub task_id: Option<Uuid>,
    pub version: i64,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
}

impl Record {
    /// The stored status as a domain value.
    #[must_use]
    pub fn status(&self) -> ComplianceStatus {
        ComplianceStatus::parse(&self.status).unwrap_or(ComplianceStatus::Pending)
    }
}

/// The fields a compliance update sets.
#[derive(Debug, Default, AsChangeset)]
#[diesel(table_name = compliance_records)]
pub struct RecordChangeset<'a> {
    pub title: Option<&'a str>,
    pub status: Option<&'a str>,
    pub due_time: Option<DateTime<Utc>>,
    pub task_id: Option<Option<Uuid>>,
}

/// Creates a compliance record in the transaction's tenant; the foreign key
/// `(tenant_id, task_id)` refuses a task of another tenant.
///
/// # Errors
/// [`TaskError::NoSuchTask`] for a task the tenant does not have.
pub async fn insert_record(
    tx: TenantConn<'_>,
    id: Uuid,
    title: &str,
    due: DateTime<Utc>,
    task: Option<Uuid>,
) -> Result<Record, TaskError> {
    Ok(diesel::insert_into(compliance_records::table)
        .values((
            compliance_records::tenant_id.eq(tx.tenant_id().as_uuid()),
            compliance_records::id.eq(id),
            compliance_records::title.eq(title),
            compliance_records::status.eq(ComplianceStatus::Pending.as_str()),
            compliance_records::due_time.eq(due),
            compliance_records::task_id.eq(task),
        ))
        .returning(Record::as_returning())
        .get_result(&mut tx.pg())
        .await?)
}

/// A page of the tenant's records after `after`, soonest due first.
///
/// # Errors
/// On database failure.
pub async fn list_records(
    tx: TenantConn<'_>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Record>, TaskError> {
    // The first page starts before the earliest due time a request may set.
    let (due, id) = after.unwrap_or((crate::requests::EARLIEST, Uuid::nil()));
    Ok(compliance_records::table
        .filter(compliance_records::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(
            compliance_records::due_time
                .gt(due)
                .or(compliance_records::due_time
                    .eq(due)
                    .and(compliance_records::id.gt(id))),
        )
        .order((
            compliance_records::due_time.asc(),
            compliance_records::id.asc(),
        ))
        .limit(limit)
        .select(Record::as_select())
        .load(&mut tx.pg())
        .await?)
}

/// A record of the transaction's tenant, locked until the transaction ends.
///
/// # Errors
/// On database failure.
pub async fn lock_record(tx: TenantConn<'_>, id: Uuid) -> Result<Option<Record>, TaskError> {
    Ok(compliance_records::table
        .filter(compliance_records::tenant_id.eq(tx.tenant_id().as_uuid()))
        .filter(compliance_records::id.eq(id))
        .select(Record::as_select())
        .for_update()
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// Applies `change` to a record (a new version).
///
/// # Errors
/// [`TaskError::NoSuchTask`] for a task the tenant does not have.
pub async fn update_record(
    tx: TenantConn<'_>,
    id: Uuid,
    change: &RecordChangeset<'_>,
) -> Result<Record, TaskError> {
    Ok(diesel::update(
        compliance_records::table
            .filter(compliance_records::tenant_id.eq(tx.tenant_id().as_uuid()))
            .filter(compliance_records::id.eq(id)),
    )
    .set((
        change,
        compliance_records::version.eq(compliance_records::version + 1),
        compliance_records::update_time.eq(diesel::dsl::now),
    ))
    .returning(Record::as_returning())
    .get_result(&mut tx.pg())
    .await?)
}

// --- platform ------------------------------------------------------------------------

/// Any tenant's task (the SUPER_ADMIN bypass).
///
/// # Errors
/// On database failure.
pub async fn any_task(tx: PlatformConn<'_>, id: Uuid) -> Result<Option<Task>, TaskError> {
    Ok(tasks::table
        .filter(tasks::id.eq(id))
        .select(Task::as_select())
        .first(&mut tx.pg())
        .await
        .optional()?)
}

/// A page of every tenant's tasks older than `before` (the SUPER_ADMIN bypass).
///
/// # Errors
/// On database failure.
pub async fn list_all_tasks(
    tx: PlatformConn<'_>,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Task>, TaskError> {
    Ok(tasks::table
        .filter(tasks::id.lt(before.unwrap_or(Uuid::max())))
        .order(tasks::id.desc())
        .limit(limit)
        .select(Task::as_select())
        .load(&mut tx.pg())
        .await?)
}

/// The advisory lock key of `user`'s assignments in `tenant`: assigning
/// writes hold it shared, a release exclusively (Postgres hashes it, so every
/// replica and version agrees on the key).
fn assignee_lock_key(tenant: TenantId, user: UserId) -> String {
    format!("task.assignee:{tenant}:{user}")
}

/// Holds `assignee`'s assignments in this tenant against a concurrent release
/// until the transaction ends (shared: writers do not wait for each other).
///
/// # Errors
/// On database failure.
pub async fn lock_assignee(tx: TenantConn<'_>, assignee: UserId) -> Result<(), TaskError> {
    diesel::sql_query("SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))")
        .bind::<diesel::sql_types::Text, _>(assignee_lock_key(tx.tenant_id(), assignee))
        .execute(&mut tx.pg())
        .await?;
    Ok(())
}

/// Clears the assignee of those of `ids` whose assignee's membership has ended
/// (a release skips closed tasks: a reopened one must not bring a member who
/// left back); the tasks changed. Call with their assignees locked
/// ([`lock_assignee`]).
///
/// # Errors
/// On database failure.
pub async fn drop_departed_assignees(
    tx: TenantConn<'_>,
    ids: &[Uuid],
) -> Result<Vec<Task>, TaskError> {
    let departed = member_removals::table
        .filter(member_removals::tenant_id.eq(tasks::tenant_id))
        .filter(member_removals::user_id.nullable().eq(tasks::assignee_id))
        .filter(
            tasks::assignee_member_since
                .is_null()
                .or(member_removals::ended_membership_since
                    .nullable()
                    .ge(tasks::assignee_member_since)),
        );
    Ok(diesel::update(
        tasks::table
            .filter(tasks::tenant_id.eq(tx.tenant_id().as_uuid()))
            .filter(tasks::id.eq_any(ids))
            .filter(tasks::assignee_id.is_not_null())
            .filter(diesel::dsl::exists(departed)),
    )
    .set((
        tasks::assignee_id.eq(None::<Uuid>),
        tasks::assignee_member_since.eq(None::<DateTime<Utc>>),
        tasks::version.eq(tasks::version + 1),
        tasks::update_time.eq(diesel::dsl::now),
    ))
    .returning(Task::as_returning())
    .get_results(&mut tx.pg())
    .await?)
}

/// Holds `assignee`'s assignments in this tenant against a concurrent release
/// until the transaction ends, then refuses them if the membership Tenant showed
/// (begun at `member_since`) has ended: a released membership of theirs began
/// at or after it.
///
/// # Errors
/// [`TaskError::AssigneeNotMember`] when they were removed since; on database failure.
pub async fn hold_assignee(
    tx: TenantConn<'_>,
    assignee: UserId,
    member_since: DateTime<Utc>,
) -> Result<(), TaskError> {
    // Two statements: the check's snapshot must be taken after the lock is held.
    lock_assignee(tx, assignee).await?;
    let removed: bool = diesel::select(diesel::dsl::exists(
        member_removals::table
            .filter(member_removals::tenant_id.eq(tx.tenant_id().as_uuid()))
            .filter(member_removals::user_id.eq(assignee.as_uuid()))
            .filter(member_removals::ended_membership_since.ge(member_since)),
    ))
    .get_result(&mut tx.pg())
    .await?;
    if removed {
        return Err(TaskError::AssigneeNotMember);
    }
    Ok(())
}

/// Unassigns the open tasks of `user` (every assignee when `None`) in
/// `tenant` that were assigned on the membership that ended (begun at
/// `ended_since`) or an older one; how many. The user's ended membership is
/// also kept, for [`hold_assignee`].
///
/// # Errors
/// On database failure.
pub async fn release(
    tx: PlatformConn<'_>,
    tenant: TenantId,
    user: Option<UserId>,
    ended_since: DateTime<Utc>,
) -> Result<usize, TaskError> {
    let open = [
        TaskStatus::Pending.as_str(),
        TaskStatus::InProgress.as_str(),
    ];
    let scope = tasks::table
        .filter(tasks::tenant_id.eq(tenant.as_uuid()))
        .filter(tasks::status.eq_any(open))
        .filter(tasks::assignee_id.is_not_null())
        .filter(
            tasks::assignee_member_since
                .is_null()
                .or(tasks::assignee_member_since.le(ended_since)),
        );
    let set = (
        tasks::assignee_id.eq(None::<Uuid>),
        tasks::assignee_member_since.eq(None::<DateTime<Utc>>),
        tasks::version.eq(tasks::version + 1),
        tasks::update_time.eq(diesel::dsl::now),
    );
    let Some(user) = user else {
        return Ok(diesel::update(scope).set(set).execute(&mut tx.pg()).await?);
    };
    diesel::sql_query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind::<diesel::sql_types::Text, _>(assignee_lock_key(tenant, user))
        .execute(&mut tx.pg())
        .await?;
    diesel::insert_into(member_removals::table)
        .values((
            member_removals::tenant_id.eq(tenant.as_uuid()),
            member_removals::user_id.eq(user.as_uuid()),
            member_removals::ended_membership_since.eq(ended_since),
        ))
        .on_conflict((member_removals::tenant_id, member_removals::user_id))
        .do_update()
        .set(
            member_removals::ended_membership_since.eq(diesel::dsl::sql::<
                diesel::sql_types::Timestamptz,
            >(
                "GREATEST(member_removals.ended_membership_since, excluded.ended_membership_since)",
            )),
        )
        .execute(&mut tx.pg())
        .await?;
    Ok(
        diesel::update(scope.filter(tasks::assignee_id.eq(user.as_uuid())))
            .set(set)
            .execute(&mut tx.pg())
            .await?,
    )
}
