//! Every Task and Catalog RPC's request checks, runnable alone on raw bytes
//! (see `bulkhead_rpc::checks`): the property tests and fuzz targets call
//! [`check_request`] for each RPC in the descriptor set.

use bulkhead_context::TenantId;
use bulkhead_proto::task::v1 as pb;
use bulkhead_rpc::checks::check;
use tonic::Status;

use crate::catalog::requests as catalog;
use crate::requests::{
    Analytics, BulkUpdate, CreateCompliance, CreateTask, ListCompliance, ListTasks, Release,
    TaskRef, UpdateCompliance, UpdateTask,
};

/// Decodes `body` as the request of the RPC at `path`
/// (`/bulkhead.task.v1.TaskService/CreateTask`) and runs the checks its
/// handler runs before any state, for a caller of `tenant`; `None` for an RPC
/// this service does not serve.
#[must_use]
pub fn check_request(path: &str, body: &[u8], tenant: TenantId) -> Option<Result<(), Status>> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    Some(match (service, method) {
        (crate::SERVICE_NAME, "CreateTask") => {
            check(body, |r: &pb::CreateTaskRequest| CreateTask::try_from(r))
        }
        (crate::SERVICE_NAME, "GetTask") => {
            check(body, |r: &pb::GetTaskRequest| TaskRef::try_from(r))
        }
        (crate::SERVICE_NAME, "UpdateTask") => {
            check(body, |r: &pb::UpdateTaskRequest| UpdateTask::try_from(r))
        }
        (crate::SERVICE_NAME, "DeleteTask") => {
            check(body, |r: &pb::DeleteTaskRequest| TaskRef::try_from(r))
        }
        (crate::SERVICE_NAME, "ListTasks") => {
            check(body, |r: &pb::ListTasksRequest| ListTasks::parse(r, tenant))
        }
        (crate::SERVICE_NAME, "BulkUpdateTaskStatus") => {
            check(body, |r: &pb::BulkUpdateTaskStatusRequest| {
                BulkUpdate::try_from(r)
            })
        }
        (crate::SERVICE_NAME, "GetTaskAnalytics") => {
            check(body, |r: &pb::GetTaskAnalyticsRequest| {
                Analytics::try_from(r)
            })
        }
        (crate::SERVICE_NAME, "CreateComplianceRecord") => {
            check(body, |r: &pb::CreateComplianceRecordRequest| {
                CreateCompliance::try_from(r)
            })
        }
        (crate::SERVICE_NAME, "ListComplianceRecords") => {
            check(body, |r: &pb::ListComplianceRecordsRequest| {
                ListCompliance::parse(r, tenant)
            })
        }
        (crate::SERVICE_NAME, "UpdateComplianceRecord") => {
            check(body, |r: &pb::UpdateComplianceRecordRequest| {
                UpdateCompliance::try_from(r)
            })
        }
        (crate::SERVICE_NAME, "ReleaseAssignments") => {
            check(body, |r: &pb::ReleaseAssignmentsRequest| {
                Release::try_from(r)
            })
        }
        (crate::CATALOG_SERVICE_NAME, "CreateService") => {
            check(body, |r: &pb::CreateServiceRequest| {
                catalog::NewService::try_from(r)
            })
        }
        (crate::CATALOG_SERVICE_NAME, "GetService") => check(body, |r: &pb::GetServiceRequest| {
            catalog::ServiceKey::try_from(r)
        }),
        (crate::CATALOG_SERVICE_NAME, "ListServices") => {
            check(body, |r: &pb::ListServicesRequest| {
                catalog::ListServices::parse(r, tenant)
            })
        }
        (crate::CATALOG_SERVICE_NAME, "UpdateService") => {
            check(body, |r: &pb::UpdateServiceRequest| {
                catalog::UpdateService::try_from(r)
            })
        }
        (crate::CATALOG_SERVICE_NAME, "DeactivateService") => {
            check(body, |r: &pb::DeactivateServiceRequest| {
                catalog::Target::try_from(r)
            })
        }
        (crate::CATALOG_SERVICE_NAME, "CreateServiceRequest") => {
            check(body, |r: &pb::CreateServiceRequestRequest| {
                catalog::NewRequest::try_from(r)
            })
        }
        (crate::CATALOG_SERVICE_NAME, "ListServiceRequests") => {
            check(body, |r: &pb::ListServiceRequestsRequest| {
                catalog::ListRequests::parse(r, tenant)
            })
        }
        (crate::CATALOG_SERVICE_NAME, "UpdateServiceRequest") => {
            check(body, |r: &pb::UpdateServiceRequestRequest| {
                catalog::UpdateRequest::try_from(r)
            })
        }
        (crate::CATALOG_SERVICE_NAME, "CreateBooking") => {
            check(body, |r: &pb::CreateBookingRequest| {
                catalog::NewBooking::try_from(r)
            })
        }
        (crate::CATALOG_SERVICE_NAME, "ListBookings") => {
            check(body, |r: &pb::ListBookingsRequest| {
                catalog::ListBookings::parse(r, tenant)
            })
        }
        (crate::CATALOG_SERVICE_NAME, "ConfirmBooking") => {
            check(body, |r: &pb::ConfirmBookingRequest| {
                catalog::Target::try_from(r)
            })
        }
        (crate::CATALOG_SERVICE_NAME, "CancelBooking") => {
            check(body, |r: &pb::CancelBookingRequest| {
                catalog::Target::try_from(r)
            })
        }
        _ => return None,
    })
}
