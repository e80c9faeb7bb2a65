//! Where a service gets the token it presents to other services.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bulkhead_context::ServiceIdentity;
use bulkhead_guard::VerifierConfig;
use bulkhead_guard::token::{Claims, SigningKey, unix_now};

/// A source of this service's bearer token.
pub trait ServiceCredentials: Send + Sync + 'static {
    /// A currently valid token.
    fn token(&self) -> Option<String>;
}

/// `message` as a request carrying this service's token in
/// `x-service-authorization`, and the current span as its W3C `traceparent`.
///
/// # Errors
/// `UNAVAILABLE` when no token is available yet.
pub fn service_request<T>(
    credentials: &dyn ServiceCredentials,
    message: T,
) -> Result<tonic::Request<T>, tonic::Status> {
    let mut request = tonic::Request::new(message);
    carry_token(credentials, &mut request)?;
    // The callee's span joins the caller's trace.
    bulkhead_telemetry::propagation::inject(&tracing::Span::current(), request.metadata_mut());
    Ok(request)
}

/// `message` as a request carrying this service's token when it has one: for
/// a public method, which needs none (GetJwks, IssueServiceToken), it makes
/// the call count as this service's for the callee's shares, not as one of
/// an anonymous flood's.
pub fn with_token_if_any<T>(
    credentials: Option<&dyn ServiceCredentials>,
    message: T,
) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(credentials) = credentials {
        // Without a token yet, the call goes as it is: the method is public.
        let _ = carry_token(credentials, &mut request);
    }
    request
}

/// Puts this service's current token in `request`'s `x-service-authorization`.
fn carry_token<T>(
    credentials: &dyn ServiceCredentials,
    request: &mut tonic::Request<T>,
) -> Result<(), tonic::Status> {
    let token = credentials
        .token()
        .ok_or_else(|| tonic::Status::unavailable("no service token available"))?;
    let value = format!("Bearer {token}")
        .parse()
        .map_err(|_| tonic::Status::internal("service token is not valid metadata"))?;
    request
        .metadata_mut()
        .insert("x-service-authorization", value);
    Ok(())
}

/// Mints service tokens with a signing key held in this process — what `bulkhead
/// up` does, where Auth's key lives beside the services. (Deployed services get
/// theirs from Auth's `IssueServiceToken`.) Each token is reused until a minute
/// before it expires.
pub struct LocalServiceTokens {
    key: Arc<SigningKey>,
    identity: ServiceIdentity,
    config: VerifierConfig,
    cached: Mutex<Option<(String, u64)>>,
}

impl std::fmt::Debug for LocalServiceTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalServiceTokens")
            .field("service", &self.identity.name)
            .finish_non_exhaustive()
    }
}

const TTL: Duration = Duration::from_secs(15 * 60);

impl LocalServiceTokens {
    /// Tokens for `service`, signed by `key`, for the issuer and audience of `config`.
    #[must_use]
    pub fn new(key: Arc<SigningKey>, service: &str, config: VerifierConfig) -> Self {
        Self {
            key,
            identity: ServiceIdentity {
                name: service.to_owned(),
                scopes: Vec::new(),
            },
            config,
            cached: Mutex::new(None),
        }
    }
}

impl ServiceCredentials for LocalServiceTokens {
    fn token(&self) -> Option<String> {
        let mut cached = self
            .cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((token, exp)) = cached.as_ref()
            && *exp > unix_now() + 60
        {
            return Some(token.clone());
        }
        let claims = Claims::service(
            &self.config.issuer,
            &self.config.audience,
            &self.identity,
            TTL,
        );
        let token = self.key.sign(&claims).ok()?;
        *cached = Some((token.clone(), claims.exp));
        Some(token)
    }
}
