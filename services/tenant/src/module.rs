//! The Tenant service as `bulkhead up` and `bulkhead serve` run it.

use bulkhead_server::{Assembled, ServiceEnv, ServiceModule, ServiceSpec, StartError};
use tonic::service::Routes;

use crate::{SCHEMA, SERVICE_NAME, TenantApi};

/// What the tenant service is.
pub static SPEC: ServiceSpec = ServiceSpec {
    grpc_services: &[SERVICE_NAME],
    default_port: 50052,
    schema: &SCHEMA,
    policy: crate::policy,
    token_issuer: false,
    tenant_directory: true,
};

/// The Tenant service: tenants, memberships, settings; the source of
/// deactivations, which it shares with the other services of its process.
#[derive(Debug, Clone, Copy, Default)]
pub struct TenantModule;

/// How often a Tenant replica re-reads the deactivated tenants (another
/// replica's changes reach it within this; the other services poll Tenant
/// at the same pace).
const INACTIVE_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

#[tonic::async_trait]
impl ServiceModule for TenantModule {
    fn spec(&self) -> &'static ServiceSpec {
        &SPEC
    }

    async fn assemble(&self, env: ServiceEnv) -> Result<Assembled, StartError> {
        let api = TenantApi::new(env.db.clone()).with_inactive_tenants(env.guard.inactive.clone());
        api.load_inactive_tenants()
            .await
            .map_err(|e| StartError::Assembly {
                service: self.name(),
                reason: format!("loading inactive tenants: {e}"),
            })?;
        let follow = api.follow_database(INACTIVE_REFRESH, env.shutdown.clone());
        let relay = env.outbox_relay(self.name())?;
        let security = env.outbox_security_events();
        Ok(Assembled::new(Routes::new(api.into_server()))
            .with_task(Some(follow))
            .with_task(relay)
            .with_task(security))
    }
}
