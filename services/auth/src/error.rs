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
    /// Fields of the request break their rules: `(field, description)`.
    #[error("invalid request")]
    Fields(Vec<(String, String)>),
    /// The email is taken.
    #[error("a user with this email already exists")]
    EmailTaken,
    /// The caller may not do this.
    #[error("permission denied")]
    Forbidden,
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
        let err = DbError::from(err);
        if err.is_unique_violation() && err.constraint_name() == Some("users_email_key") {
            return Self::EmailTaken;
        }
        Self::Db(err)
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
            AuthError::Fields(violations) => {
                use tonic_types::StatusExt as _;
                let fields: Vec<&str> = violations.iter().map(|(f, _)| f.as_str()).collect();
                let mut details = tonic_types::ErrorDetails::new();
                for (field, description) in &violations {
                    details.add_bad_request_violation(field.clone(), description.clone());
                }
                Self::with_error_details(
                    tonic::Code::InvalidArgument,
                    format!("invalid request: check {}", fields.join(", ")),
                    details,
                )
            }
            AuthError::EmailTaken => Self::already_exists(message),
            AuthError::Forbidden => Self::permission_denied(message),
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
