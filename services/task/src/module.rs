//! The Task service as `bulkhead up` and `bulkhead serve` run it.

use bulkhead_server::{Assembled, ServiceEnv, ServiceModule, ServiceSpec, StartError};
use tonic::service::Routes;

use crate::{CATALOG_SERVICE_NAME, CatalogApi, SCHEMA, SERVICE_NAME, TaskApi};

/// What the task service is.
pub static SPEC: ServiceSpec = ServiceSpec {
    grpc_services: &[SERVICE_NAME, CATALOG_SERVICE_NAME],
    default_port: 50053,
    schema: &SCHEMA,
    policy: crate::policy,
    token_issuer: false,
    tenant_directory: false,
};

/// The Task service: tasks and compliance records, and the catalog. It checks assignees with
/// Tenant (its URL and this service's credentials), and may let SUPER_ADMINs
/// read across tenants (off unless configured).
#[derive(Debug, Clone, Copy, Default)]
pub struct TaskModule {
    super_admin_bypass: bool,
}

impl TaskModule {
    /// Task, with the SUPER_ADMIN bypass on or off.
    #[must_use]
    pub const fn new(super_admin_bypass: bool) -> Self {
        Self { super_admin_bypass }
    }
}

#[tonic::async_trait]
impl ServiceModule for TaskModule {
    fn spec(&self) -> &'static ServiceSpec {
        &SPEC
    }

    async fn assemble(&self, env: ServiceEnv) -> Result<Assembled, StartError> {
        let tenants = match (&env.peers.tenant, &env.credentials) {
            (Some(url), Some(credentials)) => Some(bulkhead_clients::TenantDirectory::new(
                env.peers.channel(url)?,
                credentials.clone(),
            )),
            _ => {
                tracing::warn!("no tenant service: assigning a task answers UNAVAILABLE");
                None
            }
        };
        let api =
            TaskApi::new(env.db.clone(), tenants).with_super_admin_bypass(self.super_admin_bypass);
        let relay = env.outbox_relay(self.name())?;
        let security = env.outbox_security_events();
        let catalog = CatalogApi::new(env.db.clone());
        Ok(
            Assembled::new(Routes::new(api.into_server()).add_service(catalog.into_server()))
                .with_task(relay)
                .with_task(security),
        )
    }
}
