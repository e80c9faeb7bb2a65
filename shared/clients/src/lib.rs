//! Typed clients for calls between services. Every call carries the calling
//! service's token in `x-service-authorization`; the outbox sinks here deliver a
//! writer service's pending messages to Audit (`AppendEvents`) and Auth
//! (`RevokeSessions`), both idempotent by message id.

mod credentials;
mod issued;
mod revocations;
mod sinks;
mod tenant;

pub use credentials::{LocalServiceTokens, ServiceCredentials};
pub use issued::IssuedServiceTokens;
pub use revocations::{REVOCATION_FEED_BOUND, follow_jwks, follow_revocations};
pub use sinks::{AuditSink, ReleaseSink, RevokeSink, json_to_struct};
pub use tenant::{Membership, MembershipView, TenantDirectory, follow_inactive_tenants};
