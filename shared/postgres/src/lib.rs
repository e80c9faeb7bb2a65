//! A private PostgreSQL cluster started from the system's binaries.
//!
//! Used two ways: by tests, through `testing::test_database` (feature `testing`, for dev-dependencies only) (one cluster per test
//! process, a migrated template per service, a fresh database per test), and by
//! `bulkhead up`, through [`Cluster::start`] on a persistent data folder.
//!
//! The cluster listens only on a Unix socket in its own folder, so clusters never
//! fight over ports and nothing outside this machine can reach them. `initdb`
//! refuses to run as root; as root, the cluster runs as the `postgres` OS user.

mod cluster;
#[cfg(feature = "testing")]
pub mod testing;

pub use cluster::{Cluster, ClusterOptions, PgError, SUPERUSER, server_can_reach, socket_url};
