//! The Bulkhead auth service: users, logins, tokens, tenant switching and revocation.
//!
//! Its RPCs land with #4; until then every RPC answers `UNIMPLEMENTED` (after
//! the guard: callers still need a valid token and the role the policy table asks).

use bulkhead_context::TenantRole;
use bulkhead_db::Db;
use bulkhead_db::schema::ServiceSchema;
use bulkhead_guard::{Policy, Rule};
use bulkhead_proto::auth::v1::auth_service_server::{AuthService, AuthServiceServer};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "bulkhead.auth.v1.AuthService";

static MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The service's roles, database and migrations.
pub static SCHEMA: ServiceSchema = ServiceSchema::new("auth", &MIGRATIONS);

/// Who may call each RPC (ARCHITECTURE.md §1 roles). A method missing here is denied.
#[must_use]
pub fn policy() -> Policy {
    Policy::new()
        .allow(SERVICE_NAME, "Login", Rule::public()) // credentials are the authentication
        .allow(SERVICE_NAME, "Refresh", Rule::public()) // the refresh token is the credential
        .allow(SERVICE_NAME, "GetJwks", Rule::public())
        .allow(SERVICE_NAME, "IssueServiceToken", Rule::public()) // client credentials are the authentication
        .allow(
            SERVICE_NAME,
            "SwitchTenant",
            Rule::tenant_role(TenantRole::Viewer),
        )
        .allow(
            SERVICE_NAME,
            "Logout",
            Rule::tenant_role(TenantRole::Viewer),
        )
        .allow(
            SERVICE_NAME,
            "WhoAmI",
            Rule::tenant_role(TenantRole::Viewer),
        )
        .allow(
            SERVICE_NAME,
            "ChangePassword",
            Rule::tenant_role(TenantRole::Viewer),
        )
        .allow(
            SERVICE_NAME,
            "CreateUser",
            Rule::tenant_role(TenantRole::Admin).or_super_admin(),
        )
        .allow(SERVICE_NAME, "RevokeSessions", Rule::service())
        .allow(SERVICE_NAME, "WatchRevocations", Rule::service())
}

/// The gRPC handlers.
#[derive(Debug, Clone)]
pub struct AuthApi {
    #[expect(dead_code, reason = "read by the RPCs of #4")]
    db: Db,
}

impl AuthApi {
    /// Handlers over the service's pool (connected as `auth_app`).
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The tonic service to mount.
    #[must_use]
    pub fn into_server(self) -> AuthServiceServer<Self> {
        AuthServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_has_a_policy_entry() {
        let missing =
            policy().methods_without_rule(bulkhead_proto::FILE_DESCRIPTOR_SET, SERVICE_NAME);
        assert!(missing.is_empty(), "RPCs without a rule: {missing:?}");
    }
}
