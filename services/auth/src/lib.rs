//! The Bulkhead auth service: users, logins into a tenant, access tokens other
//! services verify offline, refresh rotation with reuse detection, revocation.

mod bootstrap;
pub mod break_glass;
pub mod checks;
mod config;
mod convert;
pub mod domain;
mod error;
mod grpc;
mod limits;
mod module;
mod password;
mod repo;
mod requests;
mod schema;
mod sessions;
mod throttle;
mod tokens;

use bulkhead_context::TenantRole;
use bulkhead_db::schema::ServiceSchema;
use bulkhead_guard::{Policy, Rule};
use diesel_migrations::{EmbeddedMigrations, embed_migrations};

pub use bootstrap::{Bootstrapped, Existing, bootstrap_admin};
pub use config::{AuthConfig, ServiceClient, SharedKeys};
pub use error::AuthError;
pub use grpc::AuthApi;
pub use limits::LimitsConfig;
pub use module::{AuthModule, SPEC};
pub use sessions::{IN_STEP_WITHIN, purge_expired};
pub use throttle::ThrottleConfig;

/// The fully-qualified gRPC service name.
pub const SERVICE_NAME: &str = "bulkhead.auth.v1.AuthService";

static MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

/// The service's roles, database and migrations (its own, then the outbox's).
pub static SCHEMA: ServiceSchema =
    ServiceSchema::new("auth", &MIGRATIONS).with_shared(&[&bulkhead_outbox::MIGRATIONS]);

/// Who may call each RPC. A method missing here is denied.
#[must_use]
pub fn policy() -> Policy {
    Policy::new()
        .allow(SERVICE_NAME, "Login", Rule::public()) // credentials are the authentication
        .allow(SERVICE_NAME, "Refresh", Rule::public()) // the refresh token is the credential
        // Public, and kept up by every service (its call is not shed with an
        // anonymous flood's when it presents its token).
        .allow(SERVICE_NAME, "GetJwks", Rule::public().or_any_service())
        .allow(
            SERVICE_NAME,
            "IssueServiceToken",
            Rule::public().or_any_service(),
        ) // client credentials
        .allow(
            SERVICE_NAME,
            "SwitchTenant",
            Rule::tenant_role(TenantRole::Viewer),
        )
        .allow(
            SERVICE_NAME,
            "Logout",
            Rule::tenant_role(TenantRole::Viewer),
        )
        .allow(
            SERVICE_NAME,
            "WhoAmI",
            Rule::tenant_role(TenantRole::Viewer),
        )
        .allow(
            SERVICE_NAME,
            "ChangePassword",
            Rule::tenant_role(TenantRole::Viewer),
        )
        .allow(
            SERVICE_NAME,
            "CreateUser",
            Rule::tenant_role(TenantRole::Admin).or_super_admin(),
        )
        // Tenant, when a member leaves a tenant (through its outbox).
        .allow(
            SERVICE_NAME,
            "RevokeSessions",
            Rule::service_named(&["tenant"]),
        )
        // Every other service's guard follows revocations.
        .allow(
            SERVICE_NAME,
            "WatchRevocations",
            Rule::service_named(&["tenant", "task", "audit"]),
        )
}
