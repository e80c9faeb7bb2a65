//! Postgres access for Bulkhead services.
//!
//! * [`Db`] is a bb8 pool of diesel-async connections, opened as the service's
//!   runtime role `<svc>_app` (`NOSUPERUSER NOBYPASSRLS`, DML only).
//! * [`Db::tenant_tx`] / [`Db::tenant_read`] run work in a tenant-scoped transaction
//!   and hand it a [`TenantConn`]: the only connection type repository functions for
//!   tenant tables accept, so an unscoped query on a tenant table does not compile.
//! * [`Db::platform_tx`] runs work on a second pool, opened as the service's
//!   `<svc>_platform` login role, whose own policies span tenants: SUPER_ADMIN
//!   operations, internal cross-tenant lookups, the outbox relay. The runtime
//!   role is a member of no role, so it cannot `SET ROLE` there itself.
//! * [`Db::system`] is the separately named path for work that is not about one
//!   tenant (global tables, health checks); row-level security still applies to it.
//! * [`schema`] holds what the migrating side needs: roles, databases, embedded
//!   migrations and the start-up check that the runtime role cannot bypass RLS.
//!
//! Error policy: every function returns [`DbError`]; services map it to a gRPC status
//! in their one error module.

mod error;
mod observe;
mod pool;
pub mod schema;
mod scoped;

pub use error::DbError;
pub use pool::{Db, PoolConfig, SystemConn};
pub use scoped::{PlatformConn, TenantConn, TenantRow, TenantRows, UserConn};

/// Re-exported so repository code names one connection type without depending on
/// diesel-async directly.
pub use diesel_async::AsyncPgConnection;
