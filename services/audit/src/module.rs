//! The Audit service as `bulkhead up` and `bulkhead serve` run it.

use bulkhead_server::{Assembled, ServiceEnv, ServiceModule, ServiceSpec, StartError};
use tonic::service::Routes;

use std::sync::Arc;
use std::time::Duration;

use bulkhead_guard::token::SigningKey;

use bulkhead_context::TenantId;
use bulkhead_db::Db;
use bulkhead_guard::SecurityEvent;

use crate::checkpoint::Notary;
use crate::requests::NewEvent;
use crate::{AuditApi, SCHEMA, SERVICE_NAME};

/// What the audit service is.
pub static SPEC: ServiceSpec = ServiceSpec {
    grpc_services: &[SERVICE_NAME],
    default_port: 50054,
    schema: &SCHEMA,
    policy: crate::policy,
    token_issuer: false,
    tenant_directory: false,
};

/// The Audit service: the append-only, hash-chained audit log, checkpointed
/// with its own key every `checkpoint_every`.
#[derive(Debug, Clone)]
pub struct AuditModule {
    checkpoint_key: Option<Arc<SigningKey>>,
    retired_keys: Vec<serde_json::Value>,
    checkpoint_every: Duration,
}

impl Default for AuditModule {
    fn default() -> Self {
        Self {
            checkpoint_key: None,
            retired_keys: Vec::new(),
            checkpoint_every: Duration::from_secs(60),
        }
    }
}

impl AuditModule {
    /// Audit signing checkpoints with `key` (none: a key of this process only,
    /// whose checkpoints no later process can check) every `every`.
    #[must_use]
    pub fn new(key: Option<Arc<SigningKey>>, every: Duration) -> Self {
        Self {
            checkpoint_key: key,
            retired_keys: Vec::new(),
            checkpoint_every: every,
        }
    }

    /// Also checks (and publishes) checkpoints of the keys the current one
    /// replaced: their public JWKs.
    #[must_use]
    pub fn with_retired_keys(mut self, keys: Vec<serde_json::Value>) -> Self {
        self.retired_keys = keys;
        self
    }
}

#[tonic::async_trait]
impl ServiceModule for AuditModule {
    fn spec(&self) -> &'static ServiceSpec {
        &SPEC
    }

    async fn assemble(&self, env: ServiceEnv) -> Result<Assembled, StartError> {
        let key = self.checkpoint_key.clone().unwrap_or_else(|| {
            tracing::warn!(
                "no checkpoint key configured: checkpoints are signed with a key of this process only"
            );
            Arc::new(SigningKey::generate())
        });
        let notary =
            Notary::with_retired(key, &self.retired_keys).map_err(|e| StartError::Assembly {
                service: SPEC.grpc_services[0],
                reason: e.to_string(),
            })?;
        let api = AuditApi::new(env.db.clone(), notary).with_security(env.security.clone());
        let every = self.checkpoint_every;
        let (notary, mut shutdown) = (api.clone(), env.shutdown.clone());
        let checkpoints: futures_util::future::BoxFuture<'static, ()> = Box::pin(async move {
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                if let Err(err) = notary.checkpoint_all().await {
                    tracing::warn!(%err, "could not sign checkpoints");
                }
            }
        });
        Ok(Assembled::new(Routes::new(api.into_server()))
            .with_task(Some(checkpoints))
            .with_task(own_refusals(&env)))
    }
}

/// Audit's own guard refusals (say a VIEWER reading the trail), appended to
/// the trail directly: Audit has no outbox, it is where outboxes deliver.
fn own_refusals(env: &ServiceEnv) -> Option<futures_util::future::BoxFuture<'static, ()>> {
    env.record_security_events(|db: Db, refusals: Vec<SecurityEvent>| async move {
        let events: Vec<NewEvent> = refusals.iter().map(refusal_event).collect();
        db.platform_tx(async |tx| crate::repo::append(tx, "audit", &events).await)
            .await
            .map(drop)
    })
}

/// A refusal as an event of its caller's tenant (the platform chain for a bare
/// service).
fn refusal_event(refusal: &SecurityEvent) -> NewEvent {
    let principal = &refusal.principal;
    NewEvent {
        id: uuid::Uuid::now_v7(),
        tenant: principal
            .tenant_id()
            .unwrap_or_else(|| TenantId::from_uuid(uuid::Uuid::nil())),
        actor_user_id: principal
            .user()
            .map(|u| u.user_id.to_string())
            .unwrap_or_default(),
        actor_service: principal
            .service()
            .map(|s| s.name.clone())
            .unwrap_or_default(),
        action: refusal.kind.action().into(),
        resource_type: "method".into(),
        resource_id: refusal.method.clone(),
        old_value: None,
        new_value: Some(refusal.details()),
        metadata: None,
        request_id: refusal.request_id.clone(),
        trace_id: refusal.trace_id.clone().unwrap_or_default(),
        occur_time: crate::grpc::now_micros(),
    }
}
