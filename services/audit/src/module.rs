//! The Audit service as `bulkhead up` and `bulkhead serve` run it.

use bulkhead_server::{Assembled, ServiceEnv, ServiceModule, ServiceSpec, StartError};
use tonic::service::Routes;

use crate::{AuditApi, SCHEMA, SERVICE_NAME};

/// What the audit service is.
pub static SPEC: ServiceSpec = ServiceSpec {
    grpc_name: SERVICE_NAME,
    default_port: 50054,
    schema: &SCHEMA,
    policy: crate::policy,
    token_issuer: false,
    tenant_directory: false,
};

/// The Audit service: the append-only, hash-chained audit log.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditModule;

#[tonic::async_trait]
impl ServiceModule for AuditModule {
    fn spec(&self) -> &'static ServiceSpec {
        &SPEC
    }

    async fn assemble(&self, env: ServiceEnv) -> Result<Assembled, StartError> {
        Ok(Assembled::new(Routes::new(
            AuditApi::new(env.db).into_server(),
        )))
    }
}
