//! The auth service's errors and the one place they become gRPC statuses.

use bulkhead_db::DbError;
use tonic::Status;

/// Why an auth RPC failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Wrong email or password, inactive user, or no accessible tenant: one
    /// answer for all, so nobody learns which accounts exist.
    #[error("invalid credentials")]
    InvalidCredentials,
    /// The refresh token is unknown, expired, revoked, or was already used.
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    /// A request field is malformed.
    #[error("{0}")]
    Invalid(String),
    /// No such thing the caller may see.
    #[error("not found")]
    NotFound,
    /// Tenant did not answer.
    #[error("tenant service unavailable")]
    TenantUnavailable(String),
    /// A token could not be signed.
    #[error("signing failed")]
    Signing(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<diesel::result::Error> for AuthError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Db(err.into())
    }
}

impl From<AuthError> for Status {
    fn from(err: AuthError) -> Self {
        let message = err.to_string();
        match err {
            AuthError::InvalidCredentials | AuthError::InvalidRefreshToken => {
                Self::unauthenticated(message)
            }
            AuthError::Invalid(_) => Self::invalid_argument(message),
            AuthError::NotFound => Self::not_found(message),
            AuthError::TenantUnavailable(cause) => {
                tracing::warn!(%cause, "tenant service unavailable");
                Self::unavailable(message)
            }
            AuthError::Db(DbError::Unavailable(cause)) => {
                tracing::warn!(%cause, "database unavailable");
                Self::unavailable("database unavailable, retry later")
            }
            AuthError::Signing(cause) => {
                tracing::error!(%cause, "token signing failed");
                Self::internal("internal error")
            }
            AuthError::Db(cause) => {
                tracing::error!(error = %cause, "internal error");
                Self::internal("internal error")
            }
        }
    }
}
