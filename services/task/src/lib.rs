//! The Bulkhead task service: a tenant's tasks and compliance records, keyset
//! pagination, analytics, bulk status updates, assignees checked live with
//! Tenant, and every mutation audited through the shared outbox.

mod audit;
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

pub use error::TaskError;
pub use grpc::TaskApi;

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "bulkhead.task.v1.TaskService";

pub use module::{SPEC, TaskModule};

static MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The service's roles, database and migrations (its own, then the outbox's).
pub static SCHEMA: ServiceSchema =
    ServiceSchema::new("task", &MIGRATIONS).with_shared(&[&bulkhead_outbox::MIGRATIONS]);

/// Who may call each RPC (ARCHITECTURE.md §1 roles). A method missing here is denied.
#[must_use]
pub fn policy() -> Policy {
    Policy::new()
        .allow(
            SERVICE_NAME,
            "CreateTask",
            Rule::tenant_role(TenantRole::Member),
        )
        .allow(
            SERVICE_NAME,
            "GetTask",
            Rule::tenant_role(TenantRole::Viewer),
        )
        .allow(
            SERVICE_NAME,
            "UpdateTask",
            Rule::tenant_role(TenantRole::Member),
        )
        .allow(
            SERVICE_NAME,
            "DeleteTask",
            Rule::tenant_role(TenantRole::Admin),
        )
        .allow(
            SERVICE_NAME,
            "ListTasks",
            Rule::tenant_role(TenantRole::Viewer),
        )
        .allow(
            SERVICE_NAME,
            "BulkUpdateTaskStatus",
            Rule::tenant_role(TenantRole::Admin),
        )
        .allow(
            SERVICE_NAME,
            "GetTaskAnalytics",
            Rule::tenant_role(TenantRole::Viewer),
        )
        .allow(
            SERVICE_NAME,
            "CreateComplianceRecord",
            Rule::tenant_role(TenantRole::Member),
        )
        .allow(
            SERVICE_NAME,
            "ListComplianceRecords",
            Rule::tenant_role(TenantRole::Viewer),
        )
        .allow(
            SERVICE_NAME,
            "UpdateComplianceRecord",
            Rule::tenant_role(TenantRole::Member),
        )
        // Only Tenant knows who left a tenant.
        .allow(
            SERVICE_NAME,
            "ReleaseAssignments",
            Rule::service_named(&["tenant"]),
        )
}
