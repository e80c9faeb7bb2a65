//! The Bulkhead task service: a tenant's tasks and compliance records, keyset
//! pagination, analytics, bulk status updates, assignees checked live with
//! Tenant, and every mutation audited through the shared outbox; beside them,
//! on the same port and database, the catalog of services, service requests
//! and bookings ([`CatalogApi`]).

mod audit;
mod catalog;
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

pub use catalog::CatalogApi;
pub use catalog::domain as catalog_domain;
pub use error::TaskError;
pub use grpc::TaskApi;

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "bulkhead.task.v1.TaskService";

/// The fully-qualified gRPC name of the catalog, served beside the tasks.
pub const CATALOG_SERVICE_NAME: &str = "bulkhead.task.v1.CatalogService";

pub use module::{SPEC, TaskModule};

static MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The service's roles, database and migrations (its own, then the outbox's).
pub static SCHEMA: ServiceSchema =
    ServiceSchema::new("task", &MIGRATIONS).with_shared(&[&bulkhead_outbox::MIGRATIONS]);

/// Who may call each RPC (ARCHITECTURE.md §1 roles). A method missing here is denied.
#[must_use]
pub fn policy() -> Policy {
    let tasks = Policy::new()
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
        );
    CATALOG_ROLES
        .into_iter()
        .fold(tasks, |policy, (method, role)| {
            policy.allow(CATALOG_SERVICE_NAME, method, Rule::tenant_role(role))
        })
}

/// Who may call each catalog RPC: roles only (whose request or booking a
/// MEMBER may change is the handler's to check).
const CATALOG_ROLES: [(&str, TenantRole); 12] = [
    // The catalog is managed by OWNER/ADMIN…
    ("CreateService", TenantRole::Admin),
    ("UpdateService", TenantRole::Admin),
    ("DeactivateService", TenantRole::Admin),
    ("ConfirmBooking", TenantRole::Admin),
    // …requested and booked by members…
    ("CreateServiceRequest", TenantRole::Member),
    ("UpdateServiceRequest", TenantRole::Member),
    ("CreateBooking", TenantRole::Member),
    ("CancelBooking", TenantRole::Member),
    // …and read by everyone in the tenant.
    ("GetService", TenantRole::Viewer),
    ("ListServices", TenantRole::Viewer),
    ("ListServiceRequests", TenantRole::Viewer),
    ("ListBookings", TenantRole::Viewer),
];
