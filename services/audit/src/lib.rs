//! The Bulkhead audit service: the append-only, hash-chained audit log.
//!
//! Its RPCs land with the Audit issue; until then each handler below says so and
//! answers `UNIMPLEMENTED` (after the guard: callers still need a valid token and
//! the role the policy table asks). No default stubs: the compiler lists every
//! RPC of the proto this crate has not written.

use bulkhead_context::TenantRole;
use bulkhead_db::Db;
use bulkhead_db::schema::ServiceSchema;
use bulkhead_guard::{Policy, Rule};
use bulkhead_proto::audit::v1 as pb;
use bulkhead_proto::audit::v1::audit_service_server::{AuditService, AuditServiceServer};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "bulkhead.audit.v1.AuditService";

mod module;

pub use module::{AuditModule, SPEC};

static MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The service's roles, database and migrations.
pub static SCHEMA: ServiceSchema = ServiceSchema::new("audit", &MIGRATIONS);

/// Who may call each RPC (ARCHITECTURE.md §1 roles). A method missing here is denied.
#[must_use]
pub fn policy() -> Policy {
    Policy::new()
        .allow(SERVICE_NAME, "AppendEvents", Rule::service())
        .allow(
            SERVICE_NAME,
            "QueryEvents",
            Rule::tenant_role(TenantRole::Admin),
        )
        .allow(
            SERVICE_NAME,
            "ExportEvents",
            Rule::tenant_role(TenantRole::Admin),
        )
        .allow(
            SERVICE_NAME,
            "VerifyChain",
            Rule::tenant_role(TenantRole::Admin),
        )
}

/// The gRPC handlers.
#[derive(Debug, Clone)]
pub struct AuditApi {
    #[expect(dead_code, reason = "read by the RPCs of the Audit issue")]
    db: Db,
}

impl AuditApi {
    /// Handlers over the service's pool (connected as `audit_app`).
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The tonic service to mount.
    #[must_use]
    pub fn into_server(self) -> AuditServiceServer<Self> {
        AuditServiceServer::new(self)
    }
}

type Reply<T> = Result<tonic::Response<T>, tonic::Status>;

/// The answer of every RPC until the Audit issue lands.
fn not_yet<T>() -> Reply<T> {
    Err(tonic::Status::unimplemented(
        "the Audit service's RPCs are not implemented yet",
    ))
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn append_events(
        &self,
        _request: tonic::Request<pb::AppendEventsRequest>,
    ) -> Reply<pb::AppendEventsResponse> {
        not_yet()
    }

    async fn query_events(
        &self,
        _request: tonic::Request<pb::QueryEventsRequest>,
    ) -> Reply<pb::QueryEventsResponse> {
        not_yet()
    }

    type ExportEventsStream =
        futures_util::stream::BoxStream<'static, Result<pb::ExportEventsResponse, tonic::Status>>;

    async fn export_events(
        &self,
        _request: tonic::Request<pb::ExportEventsRequest>,
    ) -> Reply<Self::ExportEventsStream> {
        not_yet()
    }

    async fn verify_chain(
        &self,
        _request: tonic::Request<pb::VerifyChainRequest>,
    ) -> Reply<pb::VerifyChainResponse> {
        not_yet()
    }
}
