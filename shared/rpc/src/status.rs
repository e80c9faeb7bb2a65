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
            // diesel-async keeps the SQLSTATE of errors it has no kind for
            // to itself: these are known by the server's (English) message.
            // The server ended the session under the call (57P01 admin
            // shutdown, `pg_terminate_backend`; 57P02; idle timeouts): as a
            // closed connection. A message in another language stays INTERNAL.
            Kind::Unknown if info.message().starts_with("terminating connection") => {
                tracing::warn!(cause = info.message(), "database session terminated");
                Status::unavailable("database unavailable, retry later")
            }
            // 55P03: a statement waited for a lock longer than the pool's
            // `lock_timeout` (another transaction holds the row): nothing
            // changed, and the call may be retried.
            _ if err.is_lock_timeout() => {
                tracing::warn!(cause = info.message(), "gave up waiting for a lock");
                Status::unavailable("busy, retry later")
            }
            // 40P01: the server rolled this transaction back to break a
            // deadlock; the call may be retried, as a serialization failure.
            Kind::Unknown if info.message() == "deadlock detected" => {
                tracing::warn!(
                    details = info.details(),
                    "deadlock: transaction rolled back"
                );
                Status::aborted("conflicting change, retry")
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

    /// An error the server sent, of a kind diesel has no name for.
    fn server_error(message: &str) -> DbError {
        DbError::Query(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::Unknown,
            Box::new(message.to_owned()),
        ))
    }

    #[test]
    fn sessions_the_server_ended_are_unavailable_and_deadlocks_aborted() {
        for terminated in [
            "terminating connection due to administrator command",
            "terminating connection because of crash of another server process",
            "terminating connection due to idle-in-transaction timeout",
        ] {
            assert_eq!(
                db_status(&server_error(terminated)).code(),
                tonic::Code::Unavailable,
                "{terminated}"
            );
        }
        assert_eq!(
            db_status(&server_error("deadlock detected")).code(),
            tonic::Code::Aborted
        );
        let busy = db_status(&server_error("canceling statement due to lock timeout"));
        assert_eq!(busy.code(), tonic::Code::Unavailable);
        assert_eq!(busy.message(), "busy, retry later");
        // Anything else the server says stays INTERNAL, its text unsent.
        let other = db_status(&server_error("division by zero"));
        assert_eq!(other.code(), tonic::Code::Internal);
        assert!(!other.message().contains("division"));
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
