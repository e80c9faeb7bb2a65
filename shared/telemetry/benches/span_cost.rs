//! What tracing costs a request when no trace is exported (the default): the
//! spans of one typical RPC (its `rpc` span continuing the caller's
//! `traceparent`, and four statement spans under it) with the OpenTelemetry
//! layer installed as `init` installs it, against the same spans with no
//! layer at all. A Task RPC costs ~1 ms on this machine (task_load), so the
//! difference is what ids in every log line and trace cost.
//!
//! Run: `cargo bench -p bulkhead-telemetry --bench span_cost`.

use std::time::Instant;

use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;

const ROUNDS: u32 = 200_000;

fn one_request(headers: &http::HeaderMap) {
    let rpc = tracing::info_span!(
        "rpc",
        otel.name = "bulkhead.task.v1.TaskService/GetTask",
        rpc.system = "grpc",
        tenant.id = tracing::field::Empty,
    );
    bulkhead_telemetry::propagation::continue_from_headers(&rpc, headers);
    rpc.record("tenant.id", "0190a0d2-0000-7000-8000-000000000001");
    let _rpc = rpc.enter();
    for kind in ["BEGIN", "SELECT", "SELECT", "COMMIT"] {
        let _db = tracing::info_span!(
            parent: &rpc,
            "db",
            otel.name = kind,
            db.system.name = "postgresql",
            db.operation.name = kind
        );
    }
}

fn per_request(headers: &http::HeaderMap) -> f64 {
    let started = Instant::now();
    for _ in 0..ROUNDS {
        one_request(headers);
    }
    started.elapsed().as_secs_f64() / f64::from(ROUNDS) * 1e6
}

fn main() {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .expect("ascii"),
    );
    let bare = tracing_subscriber::registry();
    let without = tracing::subscriber::with_default(bare, || {
        per_request(&headers);
        per_request(&headers)
    });
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let traced = tracing_subscriber::registry().with(
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("bench"))
            .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
    );
    let with = tracing::subscriber::with_default(traced, || {
        per_request(&headers);
        per_request(&headers)
    });
    println!("spans of one request (1 rpc + 4 statements), {ROUNDS} rounds:");
    println!("  registry only:                 {without:>6.2} µs");
    println!("  with the OpenTelemetry layer:  {with:>6.2} µs (not exported)");
    println!(
        "  cost of trace ids:             {:>6.2} µs per request",
        with - without
    );
}
