//! The Bulkhead audit service: every tenant's audit trail, append-only and
//! hash-chained per tenant (`chain`), fed by the writer services' outbox relays
//! (AppendEvents, idempotent by event id), and read by a tenant's OWNER/ADMIN:
//! query, streaming export, chain verification.

mod chain;
mod checkpoint;
pub mod checks;
mod convert;
mod error;
mod grpc;
mod module;
pub mod offline;
mod repo;
mod requests;
pub mod retention;
mod schema;

use bulkhead_context::TenantRole;
use bulkhead_db::schema::ServiceSchema;
use bulkhead_guard::{Policy, Rule};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

pub use chain::{Chained, GENESIS, canonical, hash};
pub use checkpoint::{Notary, Payload};
pub use error::AuditError;
pub use grpc::AuditApi;
pub use module::{AuditModule, SPEC};

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "bulkhead.audit.v1.AuditService";

static MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The service's roles, database and migrations.
pub static SCHEMA: ServiceSchema =
    ServiceSchema::new("audit", &MIGRATIONS).with_jobs(&["retention"]);

/// Who may call each RPC (ARCHITECTURE.md §1 roles). A method missing here is denied.
#[must_use]
pub fn policy() -> Policy {
    Policy::new()
        // The writer services' relays; the source service comes from the token.
        .allow(
            SERVICE_NAME,
            "AppendEvents",
            Rule::service_named(&["auth", "tenant", "task"]),
        )
        .allow(
            SERVICE_NAME,
            "QueryEvents",
            Rule::tenant_role(TenantRole::Admin).or_super_admin(),
        )
        .allow(
            SERVICE_NAME,
            "ExportEvents",
            Rule::tenant_role(TenantRole::Admin).or_super_admin(),
        )
        .allow(
            SERVICE_NAME,
            "VerifyChain",
            Rule::tenant_role(TenantRole::Admin).or_super_admin(),
        )
        .allow(
            SERVICE_NAME,
            "CreateCheckpoint",
            Rule::tenant_role(TenantRole::Admin).or_super_admin(),
        )
        // Anyone may check a checkpoint: the keys are public.
        .allow(SERVICE_NAME, "GetCheckpointKeys", Rule::public())
}
