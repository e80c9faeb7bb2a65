//! The Task service as `bulkhead up` and `bulkhead serve` run it.

use bulkhead_db::schema::ServiceSchema;
use bulkhead_guard::Policy;
use bulkhead_server::{Assembled, ServiceEnv, ServiceModule, StartError};
use tonic::service::Routes;

use crate::{SCHEMA, SERVICE_NAME, TaskApi};

/// The Task service: tasks and compliance records.
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskModule;

#[tonic::async_trait]
impl ServiceModule for TaskModule {
    fn name(&self) -> &'static str {
        SCHEMA.service()
    }

    fn grpc_name(&self) -> &'static str {
        SERVICE_NAME
    }

    fn default_port(&self) -> u16 {
        50053
    }

    fn schema(&self) -> &'static ServiceSchema {
        &SCHEMA
    }

    fn policy(&self) -> Policy {
        crate::policy()
    }

    async fn assemble(&self, env: ServiceEnv) -> Result<Assembled, StartError> {
        Ok(Assembled::new(Routes::new(
            TaskApi::new(env.db).into_server(),
        )))
    }
}
