//! The Audit service as `bulkhead up` and `bulkhead serve` run it.

use bulkhead_db::schema::ServiceSchema;
use bulkhead_guard::Policy;
use bulkhead_server::{Assembled, ServiceEnv, ServiceModule, StartError};
use tonic::service::Routes;

use crate::{AuditApi, SCHEMA, SERVICE_NAME};

/// The Audit service: the append-only, hash-chained audit log.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditModule;

#[tonic::async_trait]
impl ServiceModule for AuditModule {
    fn name(&self) -> &'static str {
        SCHEMA.service()
    }

    fn grpc_name(&self) -> &'static str {
        SERVICE_NAME
    }

    fn default_port(&self) -> u16 {
        50054
    }

    fn schema(&self) -> &'static ServiceSchema {
        &SCHEMA
    }

    fn policy(&self) -> Policy {
        crate::policy()
    }

    async fn assemble(&self, env: ServiceEnv) -> Result<Assembled, StartError> {
        Ok(Assembled::new(Routes::new(
            AuditApi::new(env.db).into_server(),
        )))
    }
}
