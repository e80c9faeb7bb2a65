//! The Bulkhead tenant service: tenants, memberships and organization settings.
//!
//! Its RPCs land with #3; until then every RPC answers `UNIMPLEMENTED` (after
//! the guard: callers still need a valid token and the role the policy table asks).

use bulkhead_context::TenantRole;
use bulkhead_db::Db;
use bulkhead_db::schema::ServiceSchema;
use bulkhead_guard::{Policy, Rule};
use bulkhead_proto::tenant::v1::tenant_service_server::{TenantService, TenantServiceServer};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "bulkhead.tenant.v1.TenantService";

static MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The service's roles, database and migrations.
pub static SCHEMA: ServiceSchema = ServiceSchema::new("tenant", &MIGRATIONS);

/// Who may call each RPC (ARCHITECTURE.md §1 roles). A method missing here is denied.
#[must_use]
pub fn policy() -> Policy {
    Policy::new()
        .allow(SERVICE_NAME, "CreateTenant", Rule::super_admin())
        .allow(
            SERVICE_NAME,
            "GetTenant",
            Rule::tenant_role(TenantRole::Viewer).or_super_admin(),
        )
        .allow(
            SERVICE_NAME,
            "ListTenants",
            Rule::tenant_role(TenantRole::Viewer).or_super_admin(),
        )
        .allow(
            SERVICE_NAME,
            "UpdateTenant",
            Rule::tenant_role(TenantRole::Admin),
        )
        .allow(SERVICE_NAME, "SetTenantActive", Rule::super_admin())
        .allow(
            SERVICE_NAME,
            "AddMember",
            Rule::tenant_role(TenantRole::Admin),
        )
        .allow(
            SERVICE_NAME,
            "RemoveMember",
            Rule::tenant_role(TenantRole::Admin),
        )
        .allow(
            SERVICE_NAME,
            "UpdateMemberRole",
            Rule::tenant_role(TenantRole::Admin),
        )
        .allow(
            SERVICE_NAME,
            "ListMembers",
            Rule::tenant_role(TenantRole::Viewer),
        )
        .allow(
            SERVICE_NAME,
            "GetSettings",
            Rule::tenant_role(TenantRole::Viewer),
        )
        .allow(
            SERVICE_NAME,
            "UpdateSettings",
            Rule::tenant_role(TenantRole::Admin).or_super_admin(),
        )
        .allow(SERVICE_NAME, "ListUserMemberships", Rule::service())
        .allow(SERVICE_NAME, "CheckMembership", Rule::service())
}

/// The gRPC handlers.
#[derive(Debug, Clone)]
pub struct TenantApi {
    #[expect(dead_code, reason = "read by the RPCs of #3")]
    db: Db,
}

impl TenantApi {
    /// Handlers over the service's pool (connected as `tenant_app`).
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The tonic service to mount.
    #[must_use]
    pub fn into_server(self) -> TenantServiceServer<Self> {
        TenantServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl TenantService for TenantApi {}

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
