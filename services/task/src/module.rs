//! The Task service as `bulkhead up` and `bulkhead serve` run it.

use bulkhead_server::{Assembled, ServiceEnv, ServiceModule, ServiceSpec, StartError};
use tonic::service::Routes;

use crate::{SCHEMA, SERVICE_NAME, TaskApi};

/// What the task service is.
pub static SPEC: ServiceSpec = ServiceSpec {
    grpc_name: SERVICE_NAME,
    default_port: 50053,
    schema: &SCHEMA,
    policy: crate::policy,
    token_issuer: false,
    tenant_directory: false,
};

/// The Task service: tasks and compliance records.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskModule;

#[tonic::async_trait]
impl ServiceModule for TaskModule {
    fn spec(&self) -> &'static ServiceSpec {
        &SPEC
    }

    async fn assemble(&self, env: ServiceEnv) -> Result<Assembled, StartError> {
        Ok(Assembled::new(Routes::new(
            TaskApi::new(env.db).into_server(),
        )))
    }
}
