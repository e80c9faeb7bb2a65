//! The Tenant service as `bulkhead up` and `bulkhead serve` run it.

use bulkhead_db::schema::ServiceSchema;
use bulkhead_guard::Policy;
use bulkhead_server::{Assembled, ServiceEnv, ServiceModule, StartError};
use tonic::service::Routes;

use crate::{REVOKE_TOPIC, SCHEMA, SERVICE_NAME, TenantApi};

/// The Tenant service: tenants, memberships, settings; the source of
/// deactivations, which it shares with the other services of its process.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantModule;

#[tonic::async_trait]
impl ServiceModule for TenantModule {
    fn name(&self) -> &'static str {
        SCHEMA.service()
    }

    fn grpc_name(&self) -> &'static str {
        SERVICE_NAME
    }

    fn default_port(&self) -> u16 {
        50052
    }

    fn schema(&self) -> &'static ServiceSchema {
        &SCHEMA
    }

    fn policy(&self) -> Policy {
        crate::policy()
    }

    fn is_tenant_directory(&self) -> bool {
        true
    }

    async fn assemble(&self, env: ServiceEnv) -> Result<Assembled, StartError> {
        let api = TenantApi::new(env.db.clone()).with_inactive_tenants(env.guard.inactive.clone());
        api.load_inactive_tenants()
            .await
            .map_err(|e| StartError::Assembly {
                service: self.name(),
                reason: format!("loading inactive tenants: {e}"),
            })?;
        let relay = env.outbox_relay(self.name(), Some(REVOKE_TOPIC))?;
        Ok(Assembled::new(Routes::new(api.into_server())).with_task(relay))
    }
}
