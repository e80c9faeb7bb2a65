//! The audit event every writer service stores in its outbox (topic `audit`):
//! who did what to which resource, before and after, under which request.

use bulkhead_context::TenantId;
use bulkhead_db::{DbError, PlatformConn, TenantConn};
use bulkhead_guard::{RequestContext, SecurityEvent};
use serde_json::{Value, json};

/// The outbox topic of audit events.
pub const AUDIT_TOPIC: &str = "audit";

/// Most bytes of an event's old and new values together, as JSON: Audit
/// refuses events over 64 KiB of values, and a refused event would be set
/// aside, so a writer never stores one (a user's long text must not be a way
/// to keep their change out of the trail).
pub const VALUES_BUDGET: usize = 48 * 1024;

/// Texts longer than this (characters) are kept as a digest when an event's
/// values are over the budget.
const LONG_TEXT: usize = 1024;

/// Audit's limit on a resource id (characters).
const MAX_RESOURCE_ID: usize = 200;

/// `old` and `new` within [`VALUES_BUDGET`]: first long texts become their
/// digest, then, if still over, whole values do. The digests let anyone holding
/// the text prove it is the one the trail names.
fn fit(old: Value, new: Value) -> (Value, Value) {
    let size = |a: &Value, b: &Value| a.to_string().len() + b.to_string().len();
    if size(&old, &new) <= VALUES_BUDGET {
        return (old, new);
    }
    let (old, new) = (digest_long_texts(old), digest_long_texts(new));
    if size(&old, &new) <= VALUES_BUDGET {
        return (old, new);
    }
    let whole = |v: Value| {
        let text = v.to_string();
        json!({
            "omitted": "too large for the audit trail",
            "bytes": text.len(),
            "sha256": sha256_hex(&text),
        })
    };
    (whole(old), whole(new))
}

fn digest_long_texts(value: Value) -> Value {
    match value {
        Value::String(text) if text.chars().count() > LONG_TEXT => json!({
            "start": text.chars().take(200).collect::<String>(),
            "chars": text.chars().count(),
            "sha256": sha256_hex(&text),
        }),
        Value::Array(items) => Value::Array(items.into_iter().map(digest_long_texts).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, digest_long_texts(v)))
                .collect(),
        ),
        other => other,
    }
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(text.as_bytes()))
}

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

/// The audit event of a refusal the guard reported, with the tenant whose
/// trail it goes to (the caller's own; the platform chain, the nil tenant, for
/// a service on its own) and its actor.
#[must_use]
pub fn security_event(refusal: &SecurityEvent) -> (TenantId, Actor, Event) {
    let principal = &refusal.principal;
    let user = principal.user();
    let tenant = principal
        .tenant_id()
        .unwrap_or_else(|| TenantId::from_uuid(uuid::Uuid::nil()));
    let actor = Actor {
        user_id: user.map(|u| u.user_id.to_string()),
        service: principal.service().map(|s| s.name.clone()),
        request_id: refusal.request_id.clone(),
        trace_id: refusal.trace_id.clone(),
    };
    let event =
        Event::new(refusal.kind.action(), "method", &refusal.method).new_value(refusal.details());
    (tenant, actor, event)
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
            // Audit's limits: no control characters, at most 200 characters.
            resource_id: resource_id
                .to_string()
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_RESOURCE_ID)
                .collect(),
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

    fn payload(self, tenant: TenantId, actor: &Actor) -> Value {
        let (old, new) = fit(self.old, self.new);
        json!({
            "tenant_id": tenant.to_string(),
            "actor_user_id": actor.user_id,
            "actor_service": actor.service,
            "action": self.action,
            "resource_type": self.resource_type,
            "resource_id": self.resource_id,
            "old_value": old,
            "new_value": new,
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
        self.record_for_message(tx, tenant, actor).await.map(drop)
    }

    /// As [`Event::record_for`], returning the outbox message's id (to wait
    /// for Audit to confirm it: [`crate::undelivered`]).
    ///
    /// # Errors
    /// As [`Event::record_for`].
    pub async fn record_for_message(
        self,
        tx: PlatformConn<'_>,
        tenant: TenantId,
        actor: &Actor,
    ) -> Result<uuid::Uuid, DbError> {
        let payload = self.payload(tenant, actor);
        crate::enqueue_for(tx, tenant, AUDIT_TOPIC, &payload).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_over_the_budget_keep_their_digest_and_small_ones_stay() {
        let small = (json!({"title": "a"}), json!({"title": "b"}));
        assert_eq!(fit(small.0.clone(), small.1.clone()), small);

        // Two 10,000-character descriptions of 4-byte characters: 80 KB.
        let long = |c: char| c.to_string().repeat(10_000);
        let (old, new) = fit(
            json!({"description": long('😀'), "status": "PENDING"}),
            json!({"description": long('😎'), "status": "DONE"}),
        );
        assert!(old.to_string().len() + new.to_string().len() <= VALUES_BUDGET);
        assert_eq!(new["status"], "DONE", "short fields are kept as they are");
        assert_eq!(new["description"]["chars"], 10_000);
        assert_eq!(new["description"]["sha256"], sha256_hex(&long('😎')));

        // Many medium fields: whole values go.
        let wide: serde_json::Map<String, Value> = (0..100)
            .map(|i| (format!("f{i}"), json!("x".repeat(1000))))
            .collect();
        let (old, new) = fit(Value::Object(wide.clone()), Value::Object(wide));
        assert_eq!(new["omitted"], "too large for the audit trail");
        assert_eq!(old["sha256"], new["sha256"]);
    }

    #[test]
    fn resource_ids_fit_audits_limit() {
        let event = Event::new("security.permission_denied", "method", "/".repeat(5000));
        assert_eq!(event.resource_id.chars().count(), MAX_RESOURCE_ID);
    }
}
