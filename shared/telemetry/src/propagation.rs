//! W3C Trace Context (`traceparent`, `tracestate`) between services: a call
//! carries the caller's span as its parent, a server's span continues it, and
//! a message in the outbox keeps the span that wrote it, so one request is one
//! trace across Auth, Tenant, Task and Audit.
//!
//! W3C always, whatever `OTEL_PROPAGATORS` says: every Bulkhead hop speaks it.

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry::trace::TraceContextExt as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The `traceparent` header.
pub const TRACEPARENT: &str = "traceparent";

/// Longest `traceparent` or `tracestate` value taken from outside (the W3C
/// limits are 55 and 512 characters).
const MAX_VALUE: usize = 512;

/// Writes `span`'s context into outgoing gRPC metadata.
pub fn inject(span: &tracing::Span, metadata: &mut tonic::metadata::MetadataMap) {
    let cx = span.context();
    TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
}

/// `span`'s context as a `traceparent` value, when it has a valid one (to
/// store beside work that continues later, e.g. an outbox message).
#[must_use]
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the remote span in `headers` (an incoming
/// request's), if they carry a well-formed one. Call before anything reads
/// `span`'s context: a span's parent is fixed once it starts.
pub fn continue_from_headers(span: &tracing::Span, headers: &http::HeaderMap) {
    let cx = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Makes `span` a child of the span a `traceparent` value names (one stored
/// with an outbox message); a malformed value is ignored.
pub fn continue_from(span: &tracing::Span, traceparent: &str) {
    if traceparent.len() > MAX_VALUE {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// The trace id (32 hex digits) of `span`, when it has one.
#[must_use]
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let span_context = cx.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

struct MetadataInjector<'a>(&'a mut tonic::metadata::MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
            tonic::metadata::MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        // The caller's `tracestate` (vendor data, up to 512 bytes we would
        // forward on every call) is not taken; only the trace and parent ids.
        if key != TRACEPARENT {
            return None;
        }
        // One value only: a header sent twice is not a context to trust.
        let mut values = self.0.get_all(key).iter();
        let value = values.next()?;
        if values.next().is_some() || value.len() > MAX_VALUE {
            return None;
        }
        value.to_str().ok()
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    fn traced<T>(f: impl FnOnce() -> T) -> T {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f)
    }

    const REMOTE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_server_span_continues_the_callers_trace_and_passes_it_on() {
        traced(|| {
            let mut headers = http::HeaderMap::new();
            headers.insert(TRACEPARENT, REMOTE.parse().expect("ascii"));
            let server = tracing::info_span!("rpc");
            continue_from_headers(&server, &headers);
            assert_eq!(
                trace_id(&server).as_deref(),
                Some("0af7651916cd43dd8448eb211c80319c")
            );
            let mut outgoing = tonic::metadata::MetadataMap::new();
            inject(&server, &mut outgoing);
            let sent = outgoing
                .get(TRACEPARENT)
                .and_then(|v| v.to_str().ok())
                .expect("traceparent sent");
            assert!(
                sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
                "{sent}"
            );
            assert!(!sent.contains("b7ad6b7169203331"), "a new parent: {sent}");
            assert_eq!(traceparent(&server).as_deref(), Some(sent));

            let later = tracing::info_span!("audit");
            continue_from(&later, sent);
            assert_eq!(trace_id(&later), trace_id(&server));
        });
    }

    #[test]
    fn an_ambiguous_or_malformed_context_starts_a_new_trace() {
        traced(|| {
            let mut twice = http::HeaderMap::new();
            twice.append(TRACEPARENT, REMOTE.parse().expect("ascii"));
            twice.append(
                TRACEPARENT,
                "00-11111111111111111111111111111111-b7ad6b7169203331-01"
                    .parse()
                    .expect("ascii"),
            );
            let mut malformed = http::HeaderMap::new();
            malformed.insert(TRACEPARENT, "00-zz-yy-01".parse().expect("ascii"));
            for headers in [twice, malformed] {
                let span = tracing::info_span!("rpc");
                continue_from_headers(&span, &headers);
                let id = trace_id(&span).expect("a trace of its own");
                assert_ne!(id, "0af7651916cd43dd8448eb211c80319c");
                assert_ne!(id, "11111111111111111111111111111111");
            }
            let span = tracing::info_span!("audit");
            continue_from(&span, &"0".repeat(600));
            assert!(trace_id(&span).is_some());
        });
    }
}
