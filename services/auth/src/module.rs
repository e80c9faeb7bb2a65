//! The Auth service as `bulkhead up` and `bulkhead serve` run it.

use bulkhead_server::{Assembled, ServiceEnv, ServiceModule, ServiceSpec, StartError};
use tonic::service::Routes;

use crate::{AuthApi, AuthConfig, SCHEMA, SERVICE_NAME, SharedKeys};

/// What the auth service is.
pub static SPEC: ServiceSpec = ServiceSpec {
    grpc_services: &[SERVICE_NAME],
    default_port: 50051,
    schema: &SCHEMA,
    policy: crate::policy,
    token_issuer: true,
    tenant_directory: false,
};

/// The Auth service: users, logins, tokens, revocations. It signs tokens, so
/// it needs the signing keys; it reads memberships from Tenant, so it needs
/// Tenant's URL and service credentials.
#[derive(Debug, Clone, Default)]
pub struct AuthModule {
    keys: Option<SharedKeys>,
    config: AuthConfig,
}

impl AuthModule {
    /// Auth signing with `keys` (none: it cannot start, but its schema and
    /// policy are still known, e.g. for `migrate`), as `config` says.
    #[must_use]
    pub fn new(keys: Option<SharedKeys>, config: AuthConfig) -> Self {
        Self { keys, config }
    }
}

/// How often an Auth replica reads the revocations the others made.
const REVOCATION_REFRESH: std::time::Duration = std::time::Duration::from_millis(500);

#[tonic::async_trait]
impl ServiceModule for AuthModule {
    fn spec(&self) -> &'static ServiceSpec {
        &SPEC
    }

    async fn assemble(&self, env: ServiceEnv) -> Result<Assembled, StartError> {
        let service = self.name();
        let missing = |what: &str| StartError::Assembly {
            service,
            reason: format!("auth needs {what}"),
        };
        let keys = self.keys.clone().ok_or_else(|| missing("a signing key"))?;
        let tenant = env
            .peers
            .tenant
            .as_deref()
            .ok_or_else(|| missing("the tenant service's URL"))?;
        let credentials = env
            .credentials
            .clone()
            .ok_or_else(|| missing("service credentials to ask Tenant"))?;
        let directory =
            bulkhead_clients::TenantDirectory::new(env.peers.channel(tenant)?, credentials);
        let api = AuthApi::new(
            env.db.clone(),
            keys,
            self.config.clone(),
            directory,
            env.guard.revoked.clone(),
        );
        // This process's guards are current only while this Auth reads the
        // revocations every replica stores (fail closed otherwise).
        env.guard
            .revoked
            .follow_feed(crate::sessions::IN_STEP_WITHIN);
        api.load_revoked().await.map_err(|e| StartError::Assembly {
            service,
            reason: format!("loading revoked sessions: {e}"),
        })?;
        env.guard.revoked.heard();
        // Other Auth replicas' revocations, within about half a second.
        let follow = api.follow_revocations(REVOCATION_REFRESH, env.shutdown.clone());
        let relay = env.outbox_relay(service)?;
        let security = env.outbox_security_events();
        // Housekeeping: sessions long expired go, once an hour.
        let (db, mut shutdown) = (env.db.clone(), env.shutdown.clone());
        let purge: futures_util::future::BoxFuture<'static, ()> = Box::pin(async move {
            loop {
                match crate::sessions::purge_expired(&db).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(sessions = n, "purged expired sessions"),
                    Err(err) => tracing::warn!(%err, "purging expired sessions failed"),
                }
                tokio::select! {
                    () = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        });
        Ok(Assembled::new(Routes::new(api.into_server()))
            .with_task(relay)
            .with_task(security)
            .with_task(Some(purge))
            .with_task(Some(follow)))
    }
}
