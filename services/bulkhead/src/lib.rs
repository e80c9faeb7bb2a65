//! The Bulkhead process: the services it can run (each a module of one
//! interface), starting several of them together, and `bulkhead up` (all four
//! on a private Postgres). `main.rs` parses the command line and dispatches to
//! one module of `cli/` per subcommand.

pub mod cluster_home;
pub mod keys;
pub mod provision;
pub mod services;
pub mod suite;
pub mod up;
