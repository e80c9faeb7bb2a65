//! The request context handlers receive.

use std::time::SystemTime;

use bulkhead_context::{Principal, TenantId, TenantUser};

use crate::standing::Standing;
use crate::{GuardError, RequestId};

/// Who is calling, in which tenant, under which request and trace ids.
///
/// Built only by [`crate::GuardLayer`] from verified tokens and put on the request;
/// handlers read it with [`RequestContext::from_request`]. Its constructor is
/// private to this crate (tests use [`RequestContextBuilder`] behind `test-util`).
#[derive(Debug, Clone)]
pub struct RequestContext {
    principal: Principal,
    request_id: RequestId,
    trace_id: Option<String>,
    /// What the guard checked the identity against (empty sets, fed by
    /// nothing, in a context a test built).
    standing: Standing,
    /// The last moment its token (the earlier-expiring, with two) is
    /// accepted; none in a context a test built.
    valid_until: Option<SystemTime>,
}

impl RequestContext {
    pub(crate) fn new(
        principal: Principal,
        request_id: RequestId,
        trace_id: Option<String>,
        standing: Standing,
        valid_until: Option<SystemTime>,
    ) -> Self {
        Self {
            principal,
            request_id,
            trace_id,
            standing,
            valid_until,
        }
    }

    /// The context the guard attached to `request`, while its identity still
    /// stands: the guard checked it when the request's headers arrived, and
    /// its message may have come much later.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` when there is none (fail-secure: e.g. a method wrongly
    /// marked public in the policy table gets no access, not an anonymous one);
    /// otherwise as [`RequestContext::still_stands`].
    pub fn from_request<T>(request: &tonic::Request<T>) -> Result<&Self, tonic::Status> {
        let Some(context) = request.extensions().get::<Self>() else {
            return Err(counted(GuardError::NoContext));
        };
        context.still_stands()?;
        Ok(context)
    }

    /// Checks again what may change while a call is under way; a long one (a
    /// stream) asks before each part of its answer. A call is served only
    /// while its token is: a stream ends when the token expires.
    ///
    /// # Errors
    /// `UNAUTHENTICATED` when the token has expired since or the user's
    /// session has been revoked, `UNAVAILABLE` when revocations may be
    /// unheard, `FAILED_PRECONDITION` when the tenant has been deactivated.
    pub fn still_stands(&self) -> Result<(), tonic::Status> {
        if self
            .valid_until
            .is_some_and(|until| SystemTime::now() > until)
        {
            return Err(counted(GuardError::Expired));
        }
        self.standing.check(&self.principal).map_err(counted)
    }

    /// Who is calling.
    #[must_use]
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// The user behind the call, if any.
    #[must_use]
    pub fn user(&self) -> Option<&TenantUser> {
        self.principal.user()
    }

    /// The tenant the call is scoped to: the token's, never a header's.
    #[must_use]
    pub fn tenant_id(&self) -> Option<TenantId> {
        self.principal.tenant_id()
    }

    /// The user and their tenant, for tenant-scoped handlers.
    ///
    /// # Errors
    /// `PERMISSION_DENIED` when no user is behind the call (a bare service).
    pub fn tenant_user(&self) -> Result<&TenantUser, tonic::Status> {
        self.user().ok_or_else(|| GuardError::Forbidden.into())
    }

    /// The request id (also echoed in `x-request-id`).
    #[must_use]
    pub fn request_id(&self) -> &RequestId {
        &self.request_id
    }

    /// The W3C trace id of the request's span (the caller's trace when it
    /// sent a `traceparent`); none where no tracer is installed.
    #[must_use]
    pub fn trace_id(&self) -> Option<&str> {
        self.trace_id.as_deref()
    }
}

/// A refusal past the guard layer, counted as the layer counts its own.
fn counted(refusal: GuardError) -> tonic::Status {
    metrics::counter!("tenant_context_error_total", "kind" => refusal.kind()).increment(1);
    refusal.into()
}

/// Builds contexts for tests of handlers, without tokens.
#[cfg(feature = "test-util")]
#[derive(Debug)]
pub struct RequestContextBuilder {
    principal: Principal,
    request_id: RequestId,
}

#[cfg(feature = "test-util")]
impl RequestContextBuilder {
    /// A context for `principal` with a generated request id.
    #[must_use]
    pub fn new(principal: Principal) -> Self {
        Self {
            principal,
            request_id: RequestId::generate(),
        }
    }

    /// Builds the context.
    #[must_use]
    pub fn build(self) -> RequestContext {
        RequestContext::new(
            self.principal,
            self.request_id,
            None,
            Standing::new(
                crate::RevokedSessions::default(),
                crate::InactiveTenants::default(),
            ),
            None,
        )
    }

    /// Puts the context on `request`, as the guard would.
    #[must_use]
    pub fn attach<T>(self, mut request: tonic::Request<T>) -> tonic::Request<T> {
        request.extensions_mut().insert(self.build());
        request
    }
}
