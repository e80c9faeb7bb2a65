//! The Bulkhead task service: tasks, compliance records and their analytics.
//!
//! Its RPCs land with the Task issue; until then each handler below says so and
//! answers `UNIMPLEMENTED` (after the guard: callers still need a valid token and
//! the role the policy table asks). No default stubs: the compiler lists every
//! RPC of the proto this crate has not written.

use bulkhead_context::TenantRole;
use bulkhead_db::Db;
use bulkhead_db::schema::ServiceSchema;
use bulkhead_guard::{Policy, Rule};
use bulkhead_proto::task::v1 as pb;
use bulkhead_proto::task::v1::task_service_server::{TaskService, TaskServiceServer};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "bulkhead.task.v1.TaskService";

mod module;

pub use module::{SPEC, TaskModule};

static MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The service's roles, database and migrations.
pub static SCHEMA: ServiceSchema = ServiceSchema::new("task", &MIGRATIONS);

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
            Rule::tenant_role(TenantRole::Member),
        )
        .allow(
            SERVICE_NAME,
            "GetTaskAnalytics",
            Rule::tenant_role(TenantRole::Viewer),
        )
}

/// The gRPC handlers.
#[derive(Debug, Clone)]
pub struct TaskApi {
    #[expect(dead_code, reason = "read by the RPCs of the Task issue")]
    db: Db,
}

impl TaskApi {
    /// Handlers over the service's pool (connected as `task_app`).
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    /// The tonic service to mount.
    #[must_use]
    pub fn into_server(self) -> TaskServiceServer<Self> {
        TaskServiceServer::new(self)
    }
}

type Reply<T> = Result<tonic::Response<T>, tonic::Status>;

/// The answer of every RPC until the Task issue lands.
fn not_yet<T>() -> Reply<T> {
    Err(tonic::Status::unimplemented(
        "the Task service's RPCs are not implemented yet",
    ))
}

#[tonic::async_trait]
impl TaskService for TaskApi {
    async fn create_task(
        &self,
        _request: tonic::Request<pb::CreateTaskRequest>,
    ) -> Reply<pb::CreateTaskResponse> {
        not_yet()
    }

    async fn get_task(
        &self,
        _request: tonic::Request<pb::GetTaskRequest>,
    ) -> Reply<pb::GetTaskResponse> {
        not_yet()
    }

    async fn update_task(
        &self,
        _request: tonic::Request<pb::UpdateTaskRequest>,
    ) -> Reply<pb::UpdateTaskResponse> {
        not_yet()
    }

    async fn delete_task(
        &self,
        _request: tonic::Request<pb::DeleteTaskRequest>,
    ) -> Reply<pb::DeleteTaskResponse> {
        not_yet()
    }

    async fn list_tasks(
        &self,
        _request: tonic::Request<pb::ListTasksRequest>,
    ) -> Reply<pb::ListTasksResponse> {
        not_yet()
    }

    async fn bulk_update_task_status(
        &self,
        _request: tonic::Request<pb::BulkUpdateTaskStatusRequest>,
    ) -> Reply<pb::BulkUpdateTaskStatusResponse> {
        not_yet()
    }

    async fn get_task_analytics(
        &self,
        _request: tonic::Request<pb::GetTaskAnalyticsRequest>,
    ) -> Reply<pb::GetTaskAnalyticsResponse> {
        not_yet()
    }
}
