//! End-to-end tests: the real services on real sockets and a real Postgres. One
//! test binary (../shared/TESTING.md), a module per area.

mod attacks;
mod auth;
mod fairness;
mod faults;
mod load;
mod outbox;
mod roles;
#[cfg(feature = "scale-out")]
mod scale_out;
/// Every end-to-end test again, over two replicas of every service on one
/// database each, behind one client-side balanced channel
/// (`support::replicated`).
#[cfg(feature = "scale-out")]
#[path = "."]
#[allow(
    clippy::duplicate_mod,
    reason = "the same tests, compiled a second time against the replicated suite"
)]
mod scale_out_replicas {
    mod support {
        pub use crate::support::replicated::*;
    }
    mod auth;
    mod outbox;
    mod roles;
    mod suite;
    mod task;
}
mod suite;
mod support;
mod task;
mod tls;
