//! The audit service's errors and the one place they become gRPC statuses.

use bulkhead_db::DbError;
use bulkhead_rpc::InvalidRequest;
use tonic::Status;

/// Why an audit RPC failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Fields of the request break their rules.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The call needs a principal it does not have (a service for appends, a
    /// user in a tenant for reads).
    #[error("permission denied")]
    Forbidden,
    /// An event id already stored (or sent twice in one batch) with other
    /// content: the same id, another event.
    #[error("event {0} was already recorded with other content")]
    IdReused(uuid::Uuid),
    /// A checkpoint could not be signed.
    #[error("signing failed")]
    Signing(String),
    /// Retention refused to prune (the chain does not verify, or the time
    /// asked for is to come).
    #[error("{0}")]
    PruneRefused(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for AuditError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(err.into())
    }
}

impl From<AuditError> for Status {
    fn from(err: AuditError) -> Self {
        match err {
            AuditError::Invalid(invalid) => invalid.into(),
            AuditError::Forbidden => Self::permission_denied(err.to_string()),
            AuditError::IdReused(_) => Self::already_exists(err.to_string()),
            AuditError::Signing(cause) => {
                tracing::error!(%cause, "checkpoint signing failed");
                Self::internal("internal error")
            }
            AuditError::PruneRefused(why) => Self::failed_precondition(why),
            AuditError::Db(cause) => bulkhead_rpc::db_status(&cause),
        }
    }
}
