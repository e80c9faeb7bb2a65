//! End-to-end tests: the real services on real sockets and a real Postgres. One
//! test binary (../shared/TESTING.md), a module per area.

mod auth;
mod outbox;
mod roles;
#[cfg(feature = "scale-out")]
mod scale_out;
mod suite;
mod support;
mod task;
