//! The `bulkhead` binary as operators run it: `up` (the whole suite on its
//! own Postgres), and `serve audit` on its own (bounded export memory).

mod crash;
mod deploy;
mod drain;
mod health;
#[cfg(feature = "scale-out")]
mod scale_out;
mod serve_audit;
mod serve_config;
mod traces;
mod up;
