//! The Bulkhead process: which services exist, how one is provisioned in Postgres
//! and started behind the shared guard, and `bulkhead up` (all four on a private
//! embedded Postgres). `main.rs` only parses the command line.

pub mod keys;
pub mod provision;
pub mod services;
pub mod up;
