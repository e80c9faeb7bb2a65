//! One place that sets up logs and traces for a Bulkhead process.
//!
//! * Logs: JSON lines (`BULKHEAD_LOG_FORMAT=json`, the default for `serve`) or
//!   human-readable (`pretty`, the default for `up`), filtered by `RUST_LOG`.
//! * Traces: exported with OTLP/gRPC when `OTEL_EXPORTER_OTLP_ENDPOINT` is set
//!   (Jaeger accepts OTLP); otherwise spans stay local.

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

/// Installs the global subscriber for process `service_name`.
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
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().compact().boxed(),
    };
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(Resource::builder().with_service_name(service_name).build())
                    .build(),
            )
        }
        _ => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service_name)));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()?;
    Ok(Telemetry { provider })
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
    metrics::describe_gauge!("outbox_pending", "outbox messages not yet delivered");
    metrics::describe_gauge!(
        "outbox_oldest_age_seconds",
        "age of the oldest undelivered outbox message"
    );
    Ok(())
}
