//! The catalog (`CatalogService`): a tenant's services, the requests its
//! members make for them and the slots they book. Same crate, database, guard
//! and outbox as the tasks; its own proto service, so its roles read apart.
//!
//! Requests and bookings reference services by `(tenant_id, service_id)`, and
//! a service is always looked up in the caller's tenant first (another
//! tenant's id: NOT_FOUND); no two confirmed bookings of a service overlap, by
//! an exclusion constraint.

mod convert;
pub mod domain;
mod grpc;
pub(crate) mod repo;
pub(crate) mod requests;

pub use grpc::CatalogApi;
