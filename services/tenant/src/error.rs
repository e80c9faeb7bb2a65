//! The tenant service's errors and the one place they become gRPC statuses
//! (AIP-193): every field violation of a request together, `NOT_FOUND` for
//! anything of another tenant, and internal causes logged, never sent.

use bulkhead_db::DbError;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt as _};

/// Why a tenant RPC failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantError {
    /// Fields of the request break their rules: `(field, description)`.
    #[error("invalid request")]
    Invalid(Vec<(String, String)>),
    /// No such thing that the caller may see.
    #[error("not found")]
    NotFound,
    /// A unique field is taken (`slug`, `domain`, a membership).
    #[error("{0} already exists")]
    AlreadyExists(&'static str),
    /// The change would leave the tenant without an OWNER.
    #[error("a tenant must keep at least one OWNER")]
    LastOwner,
    /// Only an OWNER may grant, change or remove the OWNER role.
    #[error("only an OWNER may grant, change or remove OWNER")]
    OwnerOnly,
    /// The caller's tenant is deactivated.
    #[error("tenant inactive")]
    Inactive,
    /// The call needs a user in a tenant behind it.
    #[error("a user in a tenant must be behind this call")]
    NoTenant,
    /// The caller's live role is below what the call needs.
    #[error("permission denied")]
    Forbidden,
    /// The database failed.
    #[error(transparent)]
    Db(DbError),
}

impl From<DbError> for TenantError {
    fn from(err: DbError) -> Self {
        if err.is_unique_violation() {
            return match err.constraint_name() {
                Some("tenants_slug_key") => Self::AlreadyExists("slug"),
                Some("tenants_domain_key") => Self::AlreadyExists("domain"),
                Some("memberships_pkey") => Self::AlreadyExists("membership"),
                Some("tenants_single_default") => Self::AlreadyExists("default tenant"),
                _ => Self::Db(err),
            };
        }
        Self::Db(err)
    }
}

impl From<diesel::result::Error> for TenantError {
    fn from(err: diesel::result::Error) -> Self {
        DbError::from(err).into()
    }
}

impl From<TenantError> for Status {
    fn from(err: TenantError) -> Self {
        let message = err.to_string();
        match err {
            TenantError::Invalid(violations) => {
                let fields: Vec<&str> = violations.iter().map(|(f, _)| f.as_str()).collect();
                let message = format!("invalid request: check {}", fields.join(", "));
                let mut details = ErrorDetails::new();
                for (field, description) in violations {
                    details.add_bad_request_violation(field, description);
                }
                Self::with_error_details(Code::InvalidArgument, message, details)
            }
            TenantError::NotFound => Self::not_found(message),
            TenantError::AlreadyExists(_) => Self::already_exists(message),
            TenantError::LastOwner | TenantError::Inactive => Self::failed_precondition(message),
            TenantError::OwnerOnly | TenantError::NoTenant | TenantError::Forbidden => {
                Self::permission_denied(message)
            }
            TenantError::Db(DbError::Unavailable(cause)) => {
                tracing::warn!(%cause, "database unavailable");
                Self::unavailable("database unavailable, retry later")
            }
            TenantError::Db(cause) => {
                tracing::error!(error = %cause, "internal error");
                Self::internal("internal error")
            }
        }
    }
}

/// Collects every field violation of one request.
#[derive(Debug, Default)]
pub struct Violations(Vec<(String, String)>);

impl Violations {
    /// Keeps `result`'s value, or records its error against `field`.
    pub fn check<T>(&mut self, field: &str, result: Result<T, &str>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(description) => {
                self.0.push((field.to_owned(), description.to_owned()));
                None
            }
        }
    }

    /// Records a violation.
    pub fn add(&mut self, field: &str, description: &str) {
        self.0.push((field.to_owned(), description.to_owned()));
    }

    /// `Ok` when nothing was recorded.
    ///
    /// # Errors
    /// [`TenantError::Invalid`] with every violation.
    pub fn finish(self) -> Result<(), TenantError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(TenantError::Invalid(self.0))
        }
    }
}
