//! The guard: the shared tower layers every Bulkhead gRPC server runs, and the
//! request context they build.
//!
//! Outermost first (see [`GuardLayer`] and [`RequestIdLayer`]):
//! 1. **request id**: accept a valid `x-request-id`, else generate one; echo it back;
//! 2. **authenticate**: verify the `authorization` (user) and
//!    `x-service-authorization` (service) bearer tokens against the JWK set, pinned
//!    to EdDSA, with `exp`/`nbf`/`iss`/`aud`, `kid` lookup and a size limit; refuse
//!    revoked sessions; refuse an `x-tenant-id` that is not the token's tenant;
//! 3. **authorize**: the service's [`Policy`] table decides; a method missing from
//!    the table is denied. A refusal of an authenticated caller (tenant mismatch,
//!    permission denied) is also handed to the service as a [`SecurityEvent`],
//!    for its audit trail.
//!
//! Only this crate can build a [`RequestContext`], and handlers can only find one
//! that the guard put on the request: no context, no access (fail-secure).

mod caller;
mod context;
mod deadline;
mod error;
mod fairness;
mod layer;
mod peer;
pub use peer::{ServiceCertificatesBound, certificate_valid_for, presented_certificate_for};
mod policy;
mod request_id;
mod revocation;
mod security;
mod standing;
pub mod token;
mod verifier;

pub use caller::CallerSlot;
pub use context::RequestContext;
#[cfg(feature = "test-util")]
pub use context::RequestContextBuilder;
pub use deadline::{Deadline, grpc_timeout};
pub use error::GuardError;
pub use fairness::{
    Admission, Fairness, FairnessConfig, FairnessOverrides, PendingAdmission, Who, rate_wait,
};
pub use layer::{Guard, GuardLayer};
pub use policy::{Policy, REFLECTION, Rule};
pub use request_id::{RequestId, RequestIdLayer, RequestIdService};
pub use revocation::{InactiveTenants, KEPT_PAST_EXPIRY, RevokedSessions};
pub use security::{DEFAULT_PER_MINUTE, SecurityEvent, SecurityEvents, SecurityKind};
pub use verifier::{TokenVerifier, Verified, VerifierConfig};

/// The metadata keys of the wire contract (ARCHITECTURE.md §2).
pub mod headers {
    /// The user's access token: `Bearer <jwt>`.
    pub const AUTHORIZATION: &str = "authorization";
    /// The calling service's token: `Bearer <jwt>`.
    pub const SERVICE_AUTHORIZATION: &str = "x-service-authorization";
    /// Optional tenant assertion; must equal the token's tenant.
    pub const TENANT_ID: &str = "x-tenant-id";
    /// Request correlation id, echoed in the response.
    pub const REQUEST_ID: &str = "x-request-id";
}

/// The metric counting requests whose `x-tenant-id` differed from their token's tenant.
pub const TENANT_MISMATCH_TOTAL: &str = "tenant_mismatch_total";
