//! The audit event every writer service stores in its outbox (topic `audit`):
//! who did what to which resource, before and after, under which request.

use bulkhead_context::TenantId;
use bulkhead_db::{DbError, PlatformConn, TenantConn};
use bulkhead_guard::RequestContext;
use serde_json::{Value, json};

/// The outbox topic of audit events.
pub const AUDIT_TOPIC: &str = "audit";

/// Who acted, for an event.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// The user behind the call.
    pub user_id: Option<String>,
    /// The service making the call.
    pub service: Option<String>,
    /// The request's id.
    pub request_id: String,
    /// The request's trace id.
    pub trace_id: Option<String>,
}

impl Actor {
    /// The actor of an authenticated request.
    #[must_use]
    pub fn of(ctx: &RequestContext) -> Self {
        Self {
            user_id: ctx.user().map(|u| u.user_id.to_string()),
            service: ctx.principal().service().map(|s| s.name.clone()),
            request_id: ctx.request_id().as_str().to_owned(),
            trace_id: ctx.trace_id().map(str::to_owned),
        }
    }
}

/// One audit event.
#[derive(Debug)]
pub struct Event {
    action: &'static str,
    resource_type: &'static str,
    resource_id: String,
    old: Value,
    new: Value,
}

impl Event {
    /// An event of `action` on `resource_type` `resource_id`.
    #[must_use]
    pub fn new(
        action: &'static str,
        resource_type: &'static str,
        resource_id: impl ToString,
    ) -> Self {
        Self {
            action,
            resource_type,
            resource_id: resource_id.to_string(),
            old: Value::Null,
            new: Value::Null,
        }
    }

    /// The resource before.
    #[must_use]
    pub fn old(mut self, old: Value) -> Self {
        self.old = old;
        self
    }

    /// The resource after.
    #[must_use]
    pub fn new_value(mut self, new: Value) -> Self {
        self.new = new;
        self
    }

    fn payload(&self, tenant: TenantId, actor: &Actor) -> Value {
        json!({
            "tenant_id": tenant.to_string(),
            "actor_user_id": actor.user_id,
            "actor_service": actor.service,
            "action": self.action,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "old_value": self.old,
            "new_value": self.new,
            "request_id": actor.request_id,
            "trace_id": actor.trace_id,
            "occur_time": chrono::Utc::now().to_rfc3339(),
        })
    }

    /// Stores the event for the transaction's tenant.
    ///
    /// # Errors
    /// When the outbox insert fails (the change fails with it).
    pub async fn record(self, tx: TenantConn<'_>, actor: &Actor) -> Result<(), DbError> {
        let payload = self.payload(tx.tenant_id(), actor);
        crate::enqueue(tx, AUDIT_TOPIC, &payload).await.map(drop)
    }

    /// Stores the event for `tenant` from a platform transaction (the nil tenant
    /// for events of no tenant, such as a failed login).
    ///
    /// # Errors
    /// When the outbox insert fails.
    pub async fn record_for(
        self,
        tx: PlatformConn<'_>,
        tenant: TenantId,
        actor: &Actor,
    ) -> Result<(), DbError> {
        let payload = self.payload(tenant, actor);
        crate::enqueue_for(tx, tenant, AUDIT_TOPIC, &payload)
            .await
            .map(drop)
    }
}
