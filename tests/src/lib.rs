//! The end-to-end tests live in `e2e/` (one test binary, a module per area) and
//! the benchmarks in `benches/`; this crate has no library code of its own.
