//! The guard's errors, and the one place they become gRPC statuses.
//!
//! Messages are safe to show a caller: they say what class of problem it was and
//! never carry a key, a token, a claim value or a stack.

/// Why the guard refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// No bearer token where one is required.
    #[error("missing bearer token")]
    MissingToken,
    /// The token is malformed, forged, for another issuer/audience, or signed by an
    /// unknown key or algorithm.
    #[error("invalid token")]
    InvalidToken,
    /// The token is larger than the configured limit.
    #[error("token too large")]
    TokenTooLarge,
    /// The token's `exp` has passed (or its `nbf` has not come).
    #[error("token expired or not yet valid")]
    Expired,
    /// The token's session was revoked.
    #[error("session revoked")]
    Revoked,
    /// A user token was sent as a service token or the other way round.
    #[error("wrong kind of token")]
    WrongTokenKind,
    /// `x-tenant-id` named another tenant than the token's.
    #[error("tenant mismatch")]
    TenantMismatch,
    /// The method is not in the service's policy table.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// The principal lacks the role the method requires.
    #[error("permission denied")]
    Forbidden,
    /// The token's tenant is deactivated.
    #[error("tenant inactive")]
    TenantInactive,
    /// This process follows Auth's revocations from afar and has not heard
    /// from that feed within its bound: a user token might be revoked without
    /// this guard knowing, so user calls wait until it has caught up.
    #[error("revocation feed lost: retry shortly")]
    RevocationFeedLost,
    /// A service token came over a connection without a client certificate
    /// naming its service, where this server binds service tokens to them.
    #[error("service token without its service's client certificate")]
    ServiceCertificate,
    /// `authorization` or `x-service-authorization` sent more than once.
    #[error("identity metadata sent more than once")]
    AmbiguousIdentity,
    /// A handler asked for a context the guard did not build.
    #[error("unauthenticated")]
    NoContext,
    /// The tenant is over its request rate, or has too many calls waiting.
    #[error("this tenant is sending more than its share")]
    TenantBusy(std::time::Duration),
    /// The server is shedding load: too many calls in flight.
    #[error("server overloaded")]
    Overloaded(std::time::Duration),
}

impl GuardError {
    /// The kind, as the `kind` label of `tenant_context_error_total`.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::InvalidToken => "invalid_token",
            Self::TokenTooLarge => "token_too_large",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::WrongTokenKind => "wrong_token_kind",
            Self::TenantMismatch => "tenant_mismatch",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Forbidden => "forbidden",
            Self::TenantInactive => "tenant_inactive",
            Self::NoContext => "no_context",
            Self::RevocationFeedLost => "revocation_feed_lost",
            Self::ServiceCertificate => "service_certificate",
            Self::AmbiguousIdentity => "ambiguous_identity",
            Self::TenantBusy(_) => "tenant_busy",
            Self::Overloaded(_) => "overloaded",
        }
    }
}

/// A refusal that says when to try again (`google.rpc.RetryInfo`).
fn retry_after(code: tonic::Code, message: &str, wait: std::time::Duration) -> tonic::Status {
    use tonic_types::StatusExt as _;
    tonic::Status::with_error_details(
        code,
        format!("{message}: retry in {} ms", wait.as_millis().max(1)),
        tonic_types::ErrorDetails::with_retry_info(Some(wait)),
    )
}

impl From<GuardError> for tonic::Status {
    fn from(err: GuardError) -> Self {
        let message = err.to_string();
        match err {
            GuardError::MissingToken
            | GuardError::InvalidToken
            | GuardError::TokenTooLarge
            | GuardError::Expired
            | GuardError::Revoked
            | GuardError::WrongTokenKind
            | GuardError::ServiceCertificate
            | GuardError::AmbiguousIdentity
            | GuardError::NoContext => Self::unauthenticated(message),
            GuardError::TenantMismatch | GuardError::MethodNotAllowed | GuardError::Forbidden => {
                Self::permission_denied(message)
            }
            GuardError::TenantInactive => Self::failed_precondition(message),
            GuardError::RevocationFeedLost => Self::unavailable(message),
            GuardError::TenantBusy(wait) => {
                retry_after(tonic::Code::ResourceExhausted, &message, wait)
            }
            GuardError::Overloaded(wait) => retry_after(tonic::Code::Unavailable, &message, wait),
        }
    }
}
