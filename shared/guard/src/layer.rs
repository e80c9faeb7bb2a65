//! The guard layer: authenticate, check the tenant assertion, authorize, and put the
//! [`RequestContext`] on the request. Refusals never reach the handler.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bulkhead_context::{Principal, TenantId};
use futures_util::future::{BoxFuture, Either, Ready, ready};
use http::HeaderMap;

use crate::headers::{AUTHORIZATION, SERVICE_AUTHORIZATION, TENANT_ID};
use crate::standing::Standing;
use crate::token::{Identity, TokenUse};
use crate::{
    Fairness, GuardError, InactiveTenants, Policy, RequestContext, RequestId, RevokedSessions,
    Rule, SecurityEvent, SecurityEvents, SecurityKind, TokenVerifier,
};

/// Layer adding [`Guard`]; one per server, holding that service's policy table.
#[derive(Debug, Clone)]
pub struct GuardLayer {
    verifier: Arc<TokenVerifier>,
    policy: Arc<Policy>,
    standing: Standing,
    security: Option<SecurityEvents>,
    /// Whether a service token needs a client certificate naming its service.
    bind_service_certificates: bool,
    /// Per-tenant limits and load shedding, when on.
    fairness: Option<Fairness>,
    /// Whether a public call is admitted once its message has come (a layer
    /// inside takes its [`crate::PendingAdmission`]), not on its headers.
    public_on_message: bool,
}

impl GuardLayer {
    /// A guard verifying with `verifier`, authorizing with `policy` and refusing
    /// the sessions in `revoked`.
    #[must_use]
    pub fn new(verifier: Arc<TokenVerifier>, policy: Policy, revoked: RevokedSessions) -> Self {
        Self {
            verifier,
            policy: Arc::new(policy),
            standing: Standing::new(revoked, InactiveTenants::default()),
            security: None,
            bind_service_certificates: false,
            fairness: None,
            public_on_message: false,
        }
    }

    /// Admits public calls once their message has come in full, not on
    /// their headers: each carries a [`crate::PendingAdmission`] that a layer
    /// inside this one must take as the request body ends (the server's
    /// request-body bound does), so a caller sending headers alone holds no
    /// place. Only for a stack with such a layer: without it, a public call
    /// would hold none at all.
    #[must_use]
    pub const fn admitting_public_calls_on_their_message(mut self) -> Self {
        self.public_on_message = true;
        self
    }

    /// Holds each tenant to its share and sheds load past the server's
    /// limit (see [`Fairness`]).
    #[must_use]
    pub fn with_fairness(mut self, fairness: Fairness) -> Self {
        self.fairness = Some(fairness);
        self
    }

    /// Binds service tokens to the connection's client certificate (mutual
    /// TLS): a call with a service token is refused (UNAUTHENTICATED) unless
    /// the client presented a certificate, checked against the server's
    /// client CA during the handshake, that is valid for the DNS name of the
    /// token's service (e.g. `task`). A leaked service secret or token is then
    /// of no use without that service's key. User tokens need no certificate.
    #[must_use]
    pub const fn binding_service_certificates(mut self) -> Self {
        self.bind_service_certificates = true;
        self
    }

    /// Hands refusals of authenticated callers to `events` (for the audit trail).
    #[must_use]
    pub fn with_security_events(mut self, events: SecurityEvents) -> Self {
        self.security = Some(events);
        self
    }

    /// The policy table: the methods this server knows.
    #[must_use]
    pub fn policy(&self) -> Arc<Policy> {
        Arc::clone(&self.policy)
    }

    /// Refuses requests in the tenants of `inactive` with `FAILED_PRECONDITION`.
    #[must_use]
    pub fn with_inactive_tenants(mut self, inactive: InactiveTenants) -> Self {
        self.standing = self.standing.with_inactive(inactive);
        self
    }
}

impl<S> tower_layer::Layer<S> for GuardLayer {
    type Service = Guard<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Guard {
            inner,
            layer: self.clone(),
        }
    }
}

/// See the module doc.
#[derive(Debug, Clone)]
pub struct Guard<S> {
    inner: S,
    layer: GuardLayer,
}

/// Who the guard let through: nobody to hold to a share (a public method;
/// `by_service` when a service called it with its valid token), or a
/// principal, with its tenant when it is a tenant's user.
enum Admitted {
    Public { by_service: bool },
    Principal(Option<TenantId>),
}

type Refusal<S, B> = Ready<
    Result<<S as tower_service::Service<B>>::Response, <S as tower_service::Service<B>>::Error>,
>;

impl<S, ReqBody, ResBody> tower_service::Service<http::Request<ReqBody>> for Guard<S>
where
    S: tower_service::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<
        Refusal<S, http::Request<ReqBody>>,
        Either<S::Future, BoxFuture<'static, Result<S::Response, S::Error>>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        // Kept for the handler's calls downstream (what is left of it).
        if let Some(deadline) = crate::Deadline::from_headers(request.headers()) {
            request.extensions_mut().insert(deadline);
        }
        let who = match self.layer.admit(&mut request) {
            Ok(Admitted::Principal(Some(tenant))) => crate::Who::Tenant(tenant),
            Ok(Admitted::Principal(None)) => crate::Who::Service,
            // Health and reflection answer whatever the load (probes must
            // see a loaded server as loaded, not as gone); other public RPCs
            // (Login, Refresh) are shed like service calls.
            Ok(Admitted::Public { .. }) if request.uri().path().starts_with("/grpc.") => {
                return Either::Right(Either::Left(self.inner.call(request)));
            }
            // A service keeping up its key set or its token (GetJwks,
            // IssueServiceToken) is a service's call, not one of an
            // anonymous flood's: it is not shed with them.
            Ok(Admitted::Public { by_service: true }) => crate::Who::Service,
            Ok(Admitted::Public { by_service: false }) => crate::Who::Public,
            Err(refusal) => return Either::Left(refuse(request.uri().path(), refusal)),
        };
        let Some(fairness) = self.layer.fairness.clone() else {
            return Either::Right(Either::Left(self.inner.call(request)));
        };
        // The call may wait for its tenant's place: the service that was
        // made ready goes with it, a clone stays (tower's usual swap).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if who == crate::Who::Public && self.layer.public_on_message {
            let pending = crate::PendingAdmission::new(fairness);
            request.extensions_mut().insert(pending.clone());
            return Either::Right(Either::Right(Box::pin(async move {
                let response = inner.call(request).await;
                // The places taken when the message came, held to here.
                drop(pending);
                response
            })));
        }
        Either::Right(Either::Right(Box::pin(async move {
            let admission = match fairness.admit(who).await {
                Ok(admission) => admission,
                Err(refusal) => return refuse(request.uri().path(), refusal).await,
            };
            // What was checked on arrival may change while the call waits
            // here (or for its message): the handler checks its standing
            // again as it takes the context (`RequestContext::from_request`).
            let response = inner.call(request).await;
            drop(admission);
            response
        })))
    }
}

fn refuse<R: Default, E>(path: &str, refusal: GuardError) -> Ready<Result<http::Response<R>, E>> {
    metrics::counter!("tenant_context_error_total", "kind" => refusal.kind()).increment(1);
    tracing::debug!(path, reason = %refusal, "request refused");
    ready(Ok(tonic::Status::from(refusal).into_http()))
}

impl GuardLayer {
    fn admit<B>(&self, request: &mut http::Request<B>) -> Result<Admitted, GuardError> {
        if self.bind_service_certificates {
            // For public methods that hand out service identities (Auth's
            // IssueServiceToken): they bind too.
            request
                .extensions_mut()
                .insert(crate::ServiceCertificatesBound);
        }
        let rule = self.policy.rule(request.uri().path()).copied();
        if let Some(rule) = rule.filter(Rule::is_public) {
            return Ok(Admitted::Public {
                by_service: self.called_by_a_service(request, &rule),
            });
        }
        let (principal, valid_until) = self.authenticate(request.headers())?;
        if !self.certificate_binds(&principal, request) {
            return Err(GuardError::ServiceCertificate);
        }
        // Who it is, for the request's span (and so every log line in it) and
        // for the metrics layer outside: ids only, never the token.
        let span = tracing::Span::current();
        if let Some(tenant) = principal.tenant_id() {
            span.record("tenant.id", tracing::field::display(tenant));
            if let Some(slot) = request.extensions().get::<crate::CallerSlot>() {
                slot.set(tenant);
            }
        }
        if let Some(user) = principal.user() {
            span.record("user.id", tracing::field::display(user.user_id));
        }
        if let Some(service) = principal.service() {
            span.record("service.caller", service.name.as_str());
        }
        if let Err(err) =
            check_tenant_assertion(request.headers(), &principal, request.uri().path())
        {
            self.report(SecurityKind::TenantMismatch, &principal, request);
            return Err(err);
        }
        // Authenticated first, so an unknown method answers the same to everyone
        // without a token, and PERMISSION_DENIED to those with one.
        let Some(rule) = rule else {
            self.report(SecurityKind::PermissionDenied, &principal, request);
            return Err(GuardError::MethodNotAllowed);
        };
        if !rule.allows(&principal) {
            self.report(SecurityKind::PermissionDenied, &principal, request);
            return Err(GuardError::Forbidden);
        }
        self.standing.tenant(&principal)?;
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_else(RequestId::generate);
        let trace_id = current_trace_id();
        let tenant = principal.user().map(|user| user.tenant_id);
        request.extensions_mut().insert(RequestContext::new(
            principal,
            request_id,
            trace_id,
            self.standing.clone(),
            Some(valid_until),
        ));
        Ok(Admitted::Principal(tenant))
    }

    /// Whether a public method's caller presented, alone, a valid service
    /// token of a service its `rule` names (`Rule::or_any_service`; bound
    /// to its client certificate where services' are): it counts as that
    /// service's call for its share. Anything else about it (no token, a bad
    /// one, a user's too, a method no service keeps up with, such as Login)
    /// leaves the call public, as the method is.
    fn called_by_a_service<B>(&self, request: &http::Request<B>, rule: &Rule) -> bool {
        match self.authenticate(request.headers()) {
            Ok((principal @ Principal::Service(_), _)) => {
                principal
                    .service()
                    .is_some_and(|service| rule.allows_service(&service.name))
                    && self.certificate_binds(&principal, request)
            }
            _ => false,
        }
    }

    /// Whether `principal`'s service token, where service identities are
    /// bound to client certificates, came with its service's certificate; a
    /// token without it (a stolen one) is reported.
    fn certificate_binds<B>(&self, principal: &Principal, request: &http::Request<B>) -> bool {
        let Some(service) = principal
            .service()
            .filter(|_| self.bind_service_certificates)
        else {
            return true;
        };
        if crate::peer::presented_certificate_for(request.extensions(), &service.name) {
            return true;
        }
        self.report(SecurityKind::ServiceCertificate, principal, request);
        false
    }

    /// Hands a refusal of an authenticated caller to the service, if it listens.
    fn report<B>(&self, kind: SecurityKind, principal: &Principal, request: &http::Request<B>) {
        let Some(events) = &self.security else {
            return;
        };
        // Caller-chosen text is never copied into the trail as sent: a UUID
        // or a hex digest of it, a method of the table or a digest of the path.
        let asserted_tenant = (kind == SecurityKind::TenantMismatch).then(|| {
            let value = request.headers().get(TENANT_ID);
            let bytes = value.map(http::HeaderValue::as_bytes).unwrap_or_default();
            match std::str::from_utf8(bytes).ok().map(TenantId::parse) {
                Some(Ok(tenant)) => tenant.to_string(),
                _ => format!("not a tenant id, sha256 {}", digest(bytes)),
            }
        });
        let path = request.uri().path();
        let method = if self.policy.rule(path).is_some() {
            path.to_owned()
        } else {
            format!("unknown method, sha256 {}", digest(path.as_bytes()))
        };
        events.report(SecurityEvent {
            kind,
            principal: principal.clone(),
            method,
            asserted_tenant,
            request_id: request
                .extensions()
                .get::<RequestId>()
                .map(|id| id.as_str().to_owned())
                .unwrap_or_default(),
            trace_id: current_trace_id(),
            suppressed_before: 0,
        });
    }

    /// Who the tokens name, and the last moment the earlier-expiring of
    /// them is accepted.
    fn authenticate(&self, headers: &HeaderMap) -> Result<(Principal, SystemTime), GuardError> {
        // One token of each kind: with two, which one counts would be up to
        // whoever reads them (this guard took the first).
        if [AUTHORIZATION, SERVICE_AUTHORIZATION]
            .iter()
            .any(|name| headers.get_all(*name).iter().nth(1).is_some())
        {
            return Err(GuardError::AmbiguousIdentity);
        }
        let user = bearer(headers, AUTHORIZATION)?
            .map(|token| self.verifier.verify(token, TokenUse::Access))
            .transpose()?;
        let service = bearer(headers, SERVICE_AUTHORIZATION)?
            .map(|token| self.verifier.verify(token, TokenUse::Service))
            .transpose()?;
        let valid_until = user
            .iter()
            .chain(&service)
            .map(|verified| self.verifier.valid_until(verified))
            .min()
            .ok_or(GuardError::MissingToken)?;
        let user = match user.as_deref().map(|v| &v.identity) {
            Some(Identity::User(user)) => {
                self.standing.session(user)?;
                Some(user.clone())
            }
            Some(Identity::Service(_)) => return Err(GuardError::WrongTokenKind),
            None => None,
        };
        let service = match service.as_deref().map(|v| &v.identity) {
            Some(Identity::Service(service)) => Some(service.clone()),
            Some(Identity::User(_)) => return Err(GuardError::WrongTokenKind),
            None => None,
        };
        let principal = match (user, service) {
            (Some(user), None) => Principal::User(user),
            (None, Some(service)) => Principal::Service(service),
            (Some(user), Some(service)) => Principal::ServiceForUser { service, user },
            (None, None) => return Err(GuardError::MissingToken),
        };
        Ok((principal, valid_until))
    }
}

/// The first 16 hex digits of the SHA-256 of `bytes`.
fn digest(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let sum = sha2::Sha256::digest(bytes);
    sum.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// The bearer token in header `name`, if the header is present.
fn bearer<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, GuardError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| GuardError::InvalidToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(GuardError::InvalidToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(GuardError::InvalidToken);
    }
    Ok(Some(token.trim()))
}

/// `x-tenant-id`, when present, must name the token's own tenant.
fn check_tenant_assertion(
    headers: &HeaderMap,
    principal: &Principal,
    path: &str,
) -> Result<(), GuardError> {
    let mut values = headers.get_all(TENANT_ID).iter();
    let Some(value) = values.next() else {
        return Ok(());
    };
    let asserted = value.to_str().ok().and_then(|v| TenantId::parse(v).ok());
    // Sent twice, it asserts nothing certain (a proxy or a service might
    // read the other one): a mismatch, whatever the values.
    let once = values.next().is_none();
    if once && asserted.is_some() && asserted == principal.tenant_id() {
        return Ok(());
    }
    metrics::counter!(crate::TENANT_MISMATCH_TOTAL).increment(1);
    tracing::warn!(
        security = true,
        event = "tenant_mismatch",
        path,
        token_tenant = principal.tenant_id().map(|t| t.to_string()),
        user_id = principal.user().map(|u| u.user_id.to_string()),
        "x-tenant-id does not match the token's tenant"
    );
    Err(GuardError::TenantMismatch)
}

/// The trace id of the request: its span's (which continues the caller's
/// `traceparent`, if it sent a well-formed one; see bulkhead-telemetry).
fn current_trace_id() -> Option<String> {
    bulkhead_telemetry::propagation::trace_id(&tracing::Span::current())
}
