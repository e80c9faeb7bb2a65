//! One place that sets up logs and traces for a Bulkhead process.
//!
//! * Logs: JSON lines (`BULKHEAD_LOG_FORMAT=json`, the default for `serve`;
//!   see [`json`]) or human-readable (`pretty`, the default for `up`),
//!   filtered by `RUST_LOG`.
//! * Traces: every span has W3C ids (logs and audit events name them, and
//!   [`propagation`] carries them between services), whether or not they are
//!   exported. They are exported with OTLP/gRPC when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set (Jaeger accepts OTLP), configured by
//!   the standard variables: `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER` / `_ARG` (default: always on; a caller's sampled
//!   flag is not obeyed: see sampling.rs), `OTEL_BSP_*`. With no endpoint nothing is exported and nothing is logged
//!   about it.

pub mod json;
pub mod propagation;
mod sampling;

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line, for collectors.
    Json,
    /// Human-readable, for a terminal.
    Pretty,
}

/// Keeps the trace exporter alive; flushes it when dropped.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take() {
            let _ = provider.shutdown();
        }
    }
}

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans leave this process (an OTLP endpoint is set): work that
/// exists only to be seen in a trace (e.g. Audit's span per relayed event)
/// is skipped otherwise.
#[must_use]
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Installs the global subscriber for process `service_name` (which
/// `OTEL_SERVICE_NAME` overrides).
///
/// # Errors
/// When the OTLP exporter cannot be built or a subscriber is already installed.
pub fn init(service_name: &'static str, default_format: LogFormat) -> anyhow::Result<Telemetry> {
    let format = match std::env::var("BULKHEAD_LOG_FORMAT").as_deref() {
        Ok("json") => LogFormat::Json,
        Ok("pretty") => LogFormat::Pretty,
        _ => default_format,
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = match format {
        LogFormat::Json => json::layer().boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().compact().boxed(),
    };
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none_or(|name| name.is_empty()) {
        resource = resource.with_service_name(service_name);
    }
    // Spans get ids (and sampling decisions) even when none is exported.
    let mut builder = SdkTracerProvider::builder()
        .with_resource(resource.build())
        .with_sampler(sampling::from_env());
    let exporting = std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_ok_and(|e| !e.is_empty());
    if exporting {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()?;
        builder = builder.with_batch_exporter(exporter);
    }
    let provider = builder.build();
    // `RUST_LOG` chooses the log lines, not the spans: a quieter log keeps
    // its traces (our spans are at INFO; libraries' DEBUG and TRACE ones stay
    // out of them).
    let otel = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer(service_name))
        .with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init()?;
    EXPORTING.store(exporting, Ordering::Relaxed);
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// Serves Prometheus metrics (text format) at `http://addr/metrics` and installs
/// the global recorder: request outcomes, `tenant_mismatch_total`, outbox backlog.
/// Must be called inside a Tokio runtime.
///
/// # Errors
/// When the listener cannot be bound or a recorder is already installed.
pub fn serve_metrics(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    // Durations as histograms (with buckets), not summaries: they aggregate
    // across replicas.
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".to_owned()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0,
            ],
        )?
        .install()?;
    metrics::describe_counter!(
        "tenant_mismatch_total",
        "requests whose x-tenant-id named another tenant than their token"
    );
    metrics::describe_counter!(
        "grpc_server_handled_total",
        "RPCs completed, by service, method and gRPC status code"
    );
    metrics::describe_histogram!(
        "grpc_server_handling_seconds",
        metrics::Unit::Seconds,
        "time from the request to the end of the response stream"
    );
    metrics::describe_counter!(
        "tenant_requests_total",
        "RPCs by caller tenant (the 20 busiest by id, the rest as other) and status code"
    );
    metrics::describe_gauge!("active_tenants", "tenants that called in the last minute");
    metrics::describe_gauge!(
        "service_serving",
        "1 while the service reports SERVING (its database answers), 0 otherwise"
    );
    metrics::describe_counter!(
        "tenant_context_error_total",
        "requests the guard refused, by kind (missing_token, expired, tenant_mismatch, forbidden, ...)"
    );
    // Counters exist from the start (at 0), so a dashboard or an alert sees
    // "none yet", not "no data".
    for counter in [
        "tenant_mismatch_total",
        "token_cache_hits_total",
        "token_cache_misses_total",
        "session_revocations_total",
    ] {
        metrics::counter!(counter).absolute(0);
    }
    for kind in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
        metrics::counter!("db_query_errors_total", "kind" => kind).absolute(0);
    }
    metrics::describe_gauge!("outbox_pending", "outbox messages not yet delivered");
    metrics::describe_histogram!(
        "db_query_duration_seconds",
        metrics::Unit::Seconds,
        "statement time seen by the service, by kind (SELECT, INSERT, BEGIN, ...)"
    );
    metrics::describe_counter!("db_query_errors_total", "statements that failed, by kind");
    metrics::describe_counter!(
        "token_cache_hits_total",
        "tokens found already verified in the guard's cache"
    );
    metrics::describe_counter!(
        "token_cache_misses_total",
        "tokens whose signature the guard checked (not in its cache)"
    );
    metrics::describe_counter!(
        "session_revocations_total",
        "session revocations this process's guards took in"
    );
    metrics::describe_gauge!(
        "revoked_sessions",
        "revoked sessions held by this process's guards (until their tokens expire)"
    );
    metrics::describe_gauge!(
        "revocation_feed_current",
        "1 while this process's guards know every revocation (Auth in this process, or its feed heard within the bound); 0 while they fail closed"
    );
    // Current until a followed feed says otherwise.
    metrics::gauge!("revocation_feed_current").set(1.0);
    metrics::describe_gauge!(
        "revocation_follower_lag_seconds",
        metrics::Unit::Seconds,
        "Auth: time since it last read the revocations stored by every replica"
    );
    metrics::describe_gauge!(
        "outbox_oldest_age_seconds",
        "age of the oldest undelivered outbox message"
    );
    Ok(())
}
