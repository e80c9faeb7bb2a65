//! The statuses every service answers the same way.

use std::time::Duration;

use bulkhead_db::DbError;
use tonic::Status;
use tonic_types::StatusExt as _;

/// The status of a database failure that the service did not map to a domain
/// error first (a known constraint, say). Internal causes are logged here, once,
/// and never sent: the caller gets a generic message and the request id it can
/// quote (echoed in `x-request-id`).
#[must_use]
pub fn db_status(err: &DbError) -> Status {
    use diesel::result::{DatabaseErrorKind as Kind, Error as Diesel};
    match err {
        DbError::Unavailable(cause) => {
            tracing::warn!(%cause, "database unavailable");
            Status::unavailable("database unavailable, retry later")
        }
        DbError::Query(Diesel::DatabaseError(kind, info)) => match kind {
            Kind::UniqueViolation => Status::already_exists("already exists"),
            Kind::ForeignKeyViolation => {
                Status::failed_precondition("refers to something that does not exist")
            }
            Kind::SerializationFailure => Status::aborted("conflicting change, retry"),
            // The connection died under the call (the server restarted, the
            // backend was terminated): the database is out of reach, not
            // broken. Whether a COMMIT sent just before took effect is
            // unknown to the caller either way; writes carry request ids.
            Kind::ClosedConnection | Kind::UnableToSendCommand => {
                tracing::warn!(cause = info.message(), "database connection closed");
                Status::unavailable("database unavailable, retry later")
            }
            _ => internal(err),
        },
        _ => internal(err),
    }
}

fn internal(err: &DbError) -> Status {
    tracing::error!(error = %err, "internal error");
    Status::internal("internal error")
}

/// `RESOURCE_EXHAUSTED` with a `RetryInfo` saying when to try again.
#[must_use]
pub fn throttled(what: &str, wait: Duration) -> Status {
    let wait = wait.max(Duration::from_millis(1));
    Status::with_error_details(
        tonic::Code::ResourceExhausted,
        format!("{what}: retry in {} s", wait.as_secs().max(1)),
        tonic_types::ErrorDetails::with_retry_info(Some(wait)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_exhaustion_is_unavailable_and_other_failures_internal() {
        let unavailable = db_status(&DbError::Unavailable("timed out".into()));
        assert_eq!(unavailable.code(), tonic::Code::Unavailable);
        let internal = db_status(&DbError::Migration("boom".into()));
        assert_eq!(internal.code(), tonic::Code::Internal);
        assert!(!internal.message().contains("boom"), "causes are not sent");
        // A connection that died under the call (no SQLSTATE: the server is gone).
        let gone = db_status(&DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UnableToSendCommand,
            Box::new("connection closed".to_owned()),
        )));
        assert_eq!(gone.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn throttled_carries_retry_info() {
        let status = throttled("too many login attempts", Duration::from_millis(1500));
        assert_eq!(status.code(), tonic::Code::ResourceExhausted);
        assert_eq!(status.message(), "too many login attempts: retry in 1 s");
        let retry = status.get_error_details().retry_info().cloned();
        assert_eq!(
            retry.and_then(|r| r.retry_delay),
            Some(Duration::from_millis(1500))
        );
    }
}
