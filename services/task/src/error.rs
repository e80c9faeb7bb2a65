//! The task service's errors and the one place they become gRPC statuses
//! (AIP-193): `NOT_FOUND` for anything of another tenant; bad fields and
//! database failures answer as in every service (`bulkhead-rpc`).

use bulkhead_db::DbError;
use bulkhead_rpc::InvalidRequest;
use tonic::Status;

/// Why a task RPC failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// Fields of the request break their rules.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// No such thing that the caller may see.
    #[error("not found")]
    NotFound,
    /// The etag given is not the current one (AIP-154).
    #[error("the {0} was changed since it was read: read it again")]
    StaleEtag(&'static str),
    /// The status cannot move this way.
    #[error("a {what} cannot go from {from} to {to}")]
    Transition {
        /// What moves (`task`, `booking`).
        what: &'static str,
        /// Its status now.
        from: &'static str,
        /// The status asked for.
        to: &'static str,
    },
    /// The assignee is not a member of the caller's tenant (one message
    /// whatever the reason: nothing is revealed about the user).
    #[error("the assignee must be a member of this tenant")]
    AssigneeNotMember,
    /// A compliance record names a task the tenant does not have.
    #[error("task_id names no task of this tenant")]
    NoSuchTask,
    /// Another service of the tenant has this slug.
    #[error("a service with this slug exists in this tenant")]
    SlugTaken,
    /// The service is deactivated: nothing new may be requested or booked.
    #[error("the service is not active")]
    ServiceInactive,
    /// A confirmed booking of the service overlaps the slot.
    #[error("the slot overlaps a confirmed booking of this service")]
    SlotTaken,
    /// The thing is closed (DONE or CANCELLED): it changes no more.
    #[error("a closed {0} cannot change")]
    Closed(&'static str),
    /// A MEMBER doing what only OWNER/ADMIN may (to another member's request
    /// or booking, say).
    #[error("only OWNER/ADMIN may {0}")]
    AdminOnly(&'static str),
    /// The Tenant service could not check the assignee.
    #[error("cannot check the assignee now: retry later")]
    TenantUnavailable(String),
    /// The call needs a user in a tenant behind it.
    #[error("a user in a tenant must be behind this call")]
    NoTenant,
    /// The database failed.
    #[error(transparent)]
    Db(DbError),
}

impl From<DbError> for TaskError {
    fn from(err: DbError) -> Self {
        match err.constraint_name() {
            Some("compliance_records_task") if err.is_foreign_key_violation() => Self::NoSuchTask,
            Some("services_slug_key") if err.is_unique_violation() => Self::SlugTaken,
            // An exclusion violation (23P01) has no diesel kind of its own.
            Some("bookings_no_overlap") => Self::SlotTaken,
            // The service is looked up in the caller's tenant first; a row
            // naming another tenant's service would land here.
            Some("service_requests_service" | "bookings_service")
                if err.is_foreign_key_violation() =>
            {
                Self::NotFound
            }
            _ => Self::Db(err),
        }
    }
}

impl From<diesel::result::Error> for TaskError {
    fn from(err: diesel::result::Error) -> Self {
        DbError::from(err).into()
    }
}

impl From<TaskError> for Status {
    fn from(err: TaskError) -> Self {
        let message = err.to_string();
        match err {
            TaskError::Invalid(invalid) => invalid.into(),
            TaskError::NotFound => Self::not_found(message),
            TaskError::StaleEtag(_) => Self::aborted(message),
            TaskError::Transition { .. }
            | TaskError::AssigneeNotMember
            | TaskError::NoSuchTask
            | TaskError::ServiceInactive
            | TaskError::Closed(_)
            | TaskError::SlotTaken => Self::failed_precondition(message),
            TaskError::SlugTaken => Self::already_exists(message),
            TaskError::AdminOnly(_) => Self::permission_denied(message),
            TaskError::TenantUnavailable(cause) => {
                tracing::warn!(%cause, "tenant service unavailable");
                Self::unavailable(message)
            }
            TaskError::NoTenant => Self::permission_denied(message),
            TaskError::Db(cause) => bulkhead_rpc::db_status(&cause),
        }
    }
}
