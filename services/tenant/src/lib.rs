//! The Bulkhead tenant service: tenants, memberships with roles, organization
//! settings, all under row-level security, with every mutation audited through
//! the shared outbox.

mod audit;
pub mod checks;
mod convert;
pub mod domain;
mod error;
mod grpc;
mod module;
mod repo;
mod requests;
mod schema;

use bulkhead_context::TenantRole;
use bulkhead_db::schema::ServiceSchema;
use bulkhead_guard::{Policy, Rule};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

pub use audit::{AUDIT_TOPIC, RELEASE_TOPIC, REVOKE_TOPIC};
pub use error::TenantError;
pub use grpc::TenantApi;
pub use module::{SPEC, TenantModule};

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "bulkhead.tenant.v1.TenantService";

static MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The service's roles, database and migrations (its own, then the outbox's).
pub static SCHEMA: ServiceSchema =
    ServiceSchema::new("tenant", &MIGRATIONS).with_shared(&[&bulkhead_outbox::MIGRATIONS]);

/// Who may call each RPC (ARCHITECTURE.md §1 roles). A method missing here is denied.
/// Handlers re-check the caller's live role in the database for every change.
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
            Rule::tenant_role(TenantRole::Viewer)
                .or_super_admin()
                // Every other service follows deactivated tenants.
                .or_service_named(&["auth", "task", "audit"]),
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
        // Auth, to sign a user's memberships into their token.
        .allow(
            SERVICE_NAME,
            "ListUserMemberships",
            Rule::service_named(&["auth"]),
        )
        // Task, to check an assignee with its caller's identity.
        .allow(
            SERVICE_NAME,
            "CheckMembership",
            Rule::service_named(&["task"]),
        )
}
