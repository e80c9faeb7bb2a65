//! Security events: requests the guard refused although their caller proved who
//! they are (a tenant assertion that is not their token's tenant, a method
//! their role may not call). The guard never touches a database: it hands each
//! event to its service through a bounded channel, and the service writes it
//! to the audit trail through its outbox. A flood cannot fill the trail: each
//! principal gets a few events a minute (GCRA, `governor`); the rest are only
//! counted (`security_events_suppressed_total`), as are events the service did
//! not take in time (`security_events_dropped_total`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, PoisonError};

use bulkhead_context::Principal;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::mpsc;

/// What the guard refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityKind {
    /// `x-tenant-id` named another tenant than the token's.
    TenantMismatch,
    /// The caller's role (or service) may not call the method.
    PermissionDenied,
    /// A service token came without its service's client certificate where
    /// the server binds them (mutual TLS): a leaked token or secret, or a
    /// misconfigured service.
    ServiceCertificate,
}

impl SecurityKind {
    /// The audit action.
    #[must_use]
    pub const fn action(self) -> &'static str {
        match self {
            Self::TenantMismatch => "security.tenant_mismatch",
            Self::PermissionDenied => "security.permission_denied",
            Self::ServiceCertificate => "security.service_certificate",
        }
    }
}

/// One refusal, with who was refused and what they asked.
#[derive(Debug, Clone)]
pub struct SecurityEvent {
    /// What was refused.
    pub kind: SecurityKind,
    /// The authenticated caller.
    pub principal: Principal,
    /// The gRPC method (`/package.Service/Method`).
    pub method: String,
    /// The tenant the caller asserted, as sent (mismatches only; at most 64 characters).
    pub asserted_tenant: Option<String>,
    /// The request's id.
    pub request_id: String,
    /// The request's trace id.
    pub trace_id: Option<String>,
    /// Refusals of the same principal in the same tenant left out (over the
    /// limit) since the last one recorded.
    pub suppressed_before: u64,
}

impl SecurityEvent {
    /// What the trail keeps of it beside actor and method: the caller's roles
    /// and the tenant they asserted.
    #[must_use]
    pub fn details(&self) -> serde_json::Value {
        let user = self.principal.user();
        serde_json::json!({
            "tenant_role": user.map(|u| u.tenant_role.as_str()),
            "platform_role": user.map(|u| u.platform_role.as_str()),
            "asserted_tenant_id": self.asserted_tenant,
            "suppressed_before": self.suppressed_before,
        })
    }

    /// Whom the limit counts against: the user in their token's tenant (junk
    /// in one tenant cannot spend another's allowance), else the service.
    fn principal_key(&self) -> String {
        match (self.principal.user(), self.principal.service()) {
            (Some(user), _) => format!("user:{}:{}", user.user_id, user.tenant_id),
            (None, Some(service)) => format!("service:{}", service.name),
            (None, None) => String::new(),
        }
    }
}

/// Events per principal per minute let through.
pub const DEFAULT_PER_MINUTE: u32 = 10;

/// Events waiting for the service at most.
const CAPACITY: usize = 1024;

/// Principals whose suppressed refusals are counted at most (beyond, they are
/// only in the metric).
const SUPPRESSED_KEYS: usize = 10_000;

/// The guard's end: reports events, limited per principal, never waiting.
#[derive(Debug, Clone)]
pub struct SecurityEvents {
    sender: mpsc::Sender<SecurityEvent>,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    /// Refusals left out per principal since its last recorded one: the next
    /// recorded event says how many, so a burst of junk cannot hide a probe
    /// without leaving its count.
    suppressed: Arc<Mutex<HashMap<String, u64>>>,
}

impl SecurityEvents {
    /// A reporter letting `per_minute` events per principal through, and the
    /// service's end of the channel.
    #[must_use]
    pub fn channel(per_minute: u32) -> (Self, mpsc::Receiver<SecurityEvent>) {
        let (sender, receiver) = mpsc::channel(CAPACITY);
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let limiter = Arc::new(RateLimiter::keyed(Quota::per_minute(per_minute)));
        let suppressed = Arc::new(Mutex::new(HashMap::new()));
        (
            Self {
                sender,
                limiter,
                suppressed,
            },
            receiver,
        )
    }

    /// Hands `event` to the service, unless its principal is over the limit or
    /// the service is behind.
    pub fn report(&self, mut event: SecurityEvent) {
        let key = event.principal_key();
        let mut suppressed = self
            .suppressed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if self.limiter.check_key(&key).is_err() {
            metrics::counter!("security_events_suppressed_total", "action" => event.kind.action())
                .increment(1);
            if suppressed.len() < SUPPRESSED_KEYS || suppressed.contains_key(&key) {
                *suppressed.entry(key).or_default() += 1;
            }
            return;
        }
        event.suppressed_before = suppressed.remove(&key).unwrap_or_default();
        drop(suppressed);
        let action = event.kind.action();
        if self.sender.try_send(event).is_err() {
            metrics::counter!("security_events_dropped_total", "action" => action).increment(1);
        }
    }

    /// Reports a refusal a handler made past the guard (the caller is known
    /// from `ctx`) of `method` (`/package.Service/Method`).
    pub fn report_denied(&self, ctx: &crate::RequestContext, method: String) {
        self.report(SecurityEvent {
            kind: SecurityKind::PermissionDenied,
            principal: ctx.principal().clone(),
            method,
            asserted_tenant: None,
            request_id: ctx.request_id().as_str().to_owned(),
            trace_id: ctx.trace_id().map(str::to_owned),
            suppressed_before: 0,
        });
    }

    /// Forgets the limits of principals quiet for a while (the limiter's state
    /// would otherwise only grow).
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
