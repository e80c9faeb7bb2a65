//! The auth service's errors and the one place they become gRPC statuses
//! (AIP-193). Bad fields and database failures answer as every service does
//! (`bulkhead-rpc`); what is Auth's own is chosen here.

use bulkhead_db::DbError;
use bulkhead_rpc::InvalidRequest;
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
    /// Fields of the request break their rules.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// The email is taken.
    #[error("a user with this email already exists")]
    EmailTaken,
    /// The caller may not do this.
    #[error("permission denied")]
    Forbidden,
    /// The session the call came from was revoked (the guard may not know
    /// yet: another replica revoked it).
    #[error("session revoked")]
    SessionRevoked,
    /// The caller is no member of the tenant asked for.
    #[error("not a member of that tenant")]
    NotAMember,
    /// No such thing the caller may see.
    #[error("not found")]
    NotFound,
    /// Tenant did not answer.
    #[error("tenant service unavailable")]
    TenantUnavailable(String),
    /// A token could not be signed.
    #[error("signing failed")]
    Signing(String),
    /// A password could not be hashed.
    #[error("hashing failed")]
    Hashing(String),
    /// Every password hasher is busy and the line is full.
    #[error("too many password checks at once")]
    Busy,
    /// Too many failed password checks (this account from this network, this
    /// network, or this account from unknown networks): wait this long.
    #[error("too many login attempts")]
    Throttled(std::time::Duration),
    /// The user started too many sessions in the last minute (SwitchTenant):
    /// wait this long.
    #[error("too many new sessions")]
    TooManySessions(std::time::Duration),
    /// The user's access to the tenant changed (a membership removed, a role
    /// lowered, the tenant deactivated) while its membership was being read:
    /// nothing was stored; asking again reads it anew.
    #[error("the membership changed while the session was being started: try again")]
    MembershipChanged,
    /// The user's or tenant's sessions are being revoked right now and the
    /// wait ran out: nothing was stored; asking again is safe.
    #[error("sessions are being changed: try again")]
    Contended,
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<crate::password::Busy> for AuthError {
    fn from(_: crate::password::Busy) -> Self {
        Self::Busy
    }
}

impl From<crate::password::HashError> for AuthError {
    fn from(err: crate::password::HashError) -> Self {
        match err {
            crate::password::HashError::Busy(_) => Self::Busy,
            crate::password::HashError::Failed(cause) => Self::Hashing(cause),
        }
    }
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
            AuthError::InvalidCredentials
            | AuthError::InvalidRefreshToken
            | AuthError::SessionRevoked => Self::unauthenticated(message),
            AuthError::Invalid(invalid) => invalid.into(),
            AuthError::EmailTaken => Self::already_exists(message),
            AuthError::Forbidden | AuthError::NotAMember => Self::permission_denied(message),
            AuthError::NotFound => Self::not_found(message),
            AuthError::TenantUnavailable(cause) => {
                tracing::warn!(%cause, "tenant service unavailable");
                Self::unavailable(message)
            }
            AuthError::Signing(cause) | AuthError::Hashing(cause) => {
                tracing::error!(%cause, "{message}");
                Self::internal("internal error")
            }
            AuthError::Busy => bulkhead_rpc::throttled(&message, std::time::Duration::from_secs(1)),
            AuthError::Throttled(wait) => {
                tracing::warn!(
                    security = true,
                    event = "login_throttled",
                    "password check throttled"
                );
                bulkhead_rpc::throttled(&message, wait)
            }
            AuthError::TooManySessions(wait) => bulkhead_rpc::throttled(&message, wait),
            AuthError::MembershipChanged => Self::aborted(message),
            AuthError::Contended => Self::unavailable(message),
            AuthError::Db(cause) => bulkhead_rpc::db_status(&cause),
        }
    }
}
