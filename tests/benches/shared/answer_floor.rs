//! A same-answer gRPC floor for `ListTasks`: a Task service whose `ListTasks`
//! answers a fixed page (a clone of a real first page) without a database,
//! started through the same server stack as the real one (`start_module`:
//! observe layer, guard with its token check and fairness, health). The
//! health check, the other floor, answers 2 bytes; a page of 50 tasks is
//! about 10 KB, and its encoding and the loopback send of it are costs of any
//! gRPC service answering it, not of the tenant boundary.

use std::sync::Arc;

use bulkhead_proto::task::v1 as pb;
use bulkhead_proto::task::v1::task_service_server::{TaskService, TaskServiceServer};
use bulkhead_server::{Assembled, ServiceEnv, ServiceModule, ServiceSpec, StartError};
use tonic::service::Routes;
use tonic::{Request, Response, Status};

/// Task's spec (policy, schema, port) with [`FixedPage`] as its handlers.
#[derive(Debug)]
pub struct FixedPageModule(pub pb::ListTasksResponse);

#[tonic::async_trait]
impl ServiceModule for FixedPageModule {
    fn spec(&self) -> &'static ServiceSpec {
        &bulkhead_task::SPEC
    }

    async fn assemble(&self, _env: ServiceEnv) -> Result<Assembled, StartError> {
        Ok(Assembled::new(Routes::new(TaskServiceServer::new(
            FixedPage(Arc::new(self.0.clone())),
        ))))
    }
}

/// `ListTasks` answers the page; every other RPC is not part of the floor.
#[derive(Debug)]
struct FixedPage(Arc<pb::ListTasksResponse>);

type Reply<T> = Result<Response<T>, Status>;

fn not_measured<T>() -> Reply<T> {
    Err(Status::unimplemented("not part of the floor"))
}

#[tonic::async_trait]
impl TaskService for FixedPage {
    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Reply<pb::ListTasksResponse> {
        // What every handler does first: the guard's context, or nothing.
        bulkhead_guard::RequestContext::from_request(&request)?.tenant_user()?;
        Ok(Response::new(pb::ListTasksResponse::clone(&self.0)))
    }
    async fn create_task(
        &self,
        _: Request<pb::CreateTaskRequest>,
    ) -> Reply<pb::CreateTaskResponse> {
        not_measured()
    }
    async fn get_task(&self, _: Request<pb::GetTaskRequest>) -> Reply<pb::GetTaskResponse> {
        not_measured()
    }
    async fn update_task(
        &self,
        _: Request<pb::UpdateTaskRequest>,
    ) -> Reply<pb::UpdateTaskResponse> {
        not_measured()
    }
    async fn delete_task(
        &self,
        _: Request<pb::DeleteTaskRequest>,
    ) -> Reply<pb::DeleteTaskResponse> {
        not_measured()
    }
    async fn bulk_update_task_status(
        &self,
        _: Request<pb::BulkUpdateTaskStatusRequest>,
    ) -> Reply<pb::BulkUpdateTaskStatusResponse> {
        not_measured()
    }
    async fn get_task_analytics(
        &self,
        _: Request<pb::GetTaskAnalyticsRequest>,
    ) -> Reply<pb::GetTaskAnalyticsResponse> {
        not_measured()
    }
    async fn create_compliance_record(
        &self,
        _: Request<pb::CreateComplianceRecordRequest>,
    ) -> Reply<pb::CreateComplianceRecordResponse> {
        not_measured()
    }
    async fn list_compliance_records(
        &self,
        _: Request<pb::ListComplianceRecordsRequest>,
    ) -> Reply<pb::ListComplianceRecordsResponse> {
        not_measured()
    }
    async fn update_compliance_record(
        &self,
        _: Request<pb::UpdateComplianceRecordRequest>,
    ) -> Reply<pb::UpdateComplianceRecordResponse> {
        not_measured()
    }
    async fn release_assignments(
        &self,
        _: Request<pb::ReleaseAssignmentsRequest>,
    ) -> Reply<pb::ReleaseAssignmentsResponse> {
        not_measured()
    }
}
