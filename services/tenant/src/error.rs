//! The tenant service's errors and the one place they become gRPC statuses
//! (AIP-193): `NOT_FOUND` for anything of another tenant; bad fields and
//! database failures answer as in every service (`bulkhead-rpc`).

use bulkhead_db::DbError;
use bulkhead_rpc::InvalidRequest;
use tonic::Status;

/// Why a tenant RPC failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TenantError {
    /// Fields of the request break their rules.
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
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
            let taken = match err.constraint_name() {
                Some("tenants_slug_key") => "slug",
                Some("tenants_domain_key") => "domain",
                Some("memberships_pkey") => "membership",
                Some("tenants_single_default") => "default tenant",
                _ => return Self::Db(err),
            };
            return Self::AlreadyExists(taken);
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
            TenantError::Invalid(invalid) => invalid.into(),
            TenantError::NotFound => Self::not_found(message),
            TenantError::AlreadyExists(_) => Self::already_exists(message),
            TenantError::LastOwner | TenantError::Inactive => Self::failed_precondition(message),
            TenantError::OwnerOnly | TenantError::NoTenant | TenantError::Forbidden => {
                Self::permission_denied(message)
            }
            TenantError::Db(cause) => bulkhead_rpc::db_status(&cause),
        }
    }
}
