//! JSON log lines, flat, one object per line: `timestamp`, `level`, `target`,
//! the event's fields (`message` first among them), the fields of every span
//! the event is in (dots become underscores: `tenant.id` → `tenant_id`,
//! `request.id` → `request_id`), and `trace_id` and `span_id` of the span it
//! is in — so a line inside a request names its tenant, user, request and
//! trace, and a collector can join it to the trace.

use std::fmt;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// The log layer: JSON lines as the module doc says.
pub fn layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    layer_writing_to(std::io::stdout)
}

fn layer_writing_to<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::Layer as _;
    let dispatch = Arc::new(OnceLock::new());
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .fmt_fields(JsonFields::new())
        .event_format(JsonLines {
            dispatch: Arc::clone(&dispatch),
        })
        .and_then(DispatchHandle(dispatch))
}

thread_local! {
    /// Whether this thread is reading a span's trace ids (for a line).
    static READING_IDS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The formatter (span fields must be recorded with [`JsonFields`]). Reading a
/// span's trace ids takes the dispatcher, which `tracing` does not hand out to
/// an event's formatter under a scoped (test) dispatcher: [`DispatchHandle`]
/// keeps it.
#[derive(Debug)]
struct JsonLines {
    dispatch: Arc<OnceLock<WeakDispatch>>,
}

/// Keeps (weakly) the dispatcher it is registered with.
#[derive(Debug)]
struct DispatchHandle(Arc<OnceLock<WeakDispatch>>);

impl<S: Subscriber> tracing_subscriber::Layer<S> for DispatchHandle {
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        let _ = self.0.set(subscriber.downgrade());
    }
}

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        let mut line = Map::new();
        let mut leaf = None;
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                if let Some(fields) = extensions.get::<FormattedFields<JsonFields>>()
                    && let Ok(Value::Object(map)) = serde_json::from_str::<Value>(fields)
                {
                    for (key, value) in map {
                        if !key.starts_with("otel.") {
                            line.insert(key.replace('.', "_"), value);
                        }
                    }
                }
                leaf = Some(span.id());
            }
        }
        event.record(&mut EventFields(&mut line));
        // Written last: no field can stand in for them.
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        // The span's trace ids. Reading them locks the span's OpenTelemetry
        // data: never from an event logged while this thread already reads
        // them (it would lock it twice).
        if let Some(id) = leaf
            && let Some(dispatch) = self.dispatch.get().and_then(WeakDispatch::upgrade)
            && !READING_IDS.replace(true)
        {
            let cx = tracing_opentelemetry::get_otel_context(&id, &dispatch);
            READING_IDS.set(false);
            if let Some(cx) = cx {
                let span = cx.span();
                let span_context = span.span_context();
                if span_context.is_valid() {
                    line.insert(
                        "trace_id".into(),
                        span_context.trace_id().to_string().into(),
                    );
                    line.insert("span_id".into(), span_context.span_id().to_string().into());
                }
            }
        }
        let text = serde_json::to_string(&line).map_err(|_| fmt::Error)?;
        writeln!(writer, "{text}")
    }
}

struct EventFields<'a>(&'a mut Map<String, Value>);

impl EventFields<'_> {
    fn put(&mut self, field: &Field, value: Value) {
        self.0.insert(field.name().replace('.', "_"), value);
    }
}

impl Visit for EventFields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_line_in_a_request_names_its_tenant_request_and_trace() {
        use opentelemetry::trace::TracerProvider as _;
        let lines = Lines::default();
        let writer = lines.clone();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(layer_writing_to(move || writer.clone()))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let rpc = tracing::info_span!(
                "rpc",
                otel.name = "x",
                tenant.id = tracing::field::Empty,
                request.id = "req-1"
            );
            rpc.record("tenant.id", "t-1");
            let _rpc = rpc.enter();
            let db = tracing::info_span!("db", db.operation.name = "SELECT");
            let _db = db.enter();
            tracing::warn!(user.id = "u-1", "refused");
        });
        tracing::info!("outside any subscriber");
        let text = String::from_utf8(lines.0.lock().expect("lock").clone()).expect("utf-8");
        let line: Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["message"], "refused", "{line}");
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["tenant_id"], "t-1", "{line}");
        assert_eq!(line["request_id"], "req-1", "{line}");
        assert_eq!(line["user_id"], "u-1", "{line}");
        assert_eq!(line["db_operation_name"], "SELECT", "{line}");
        assert!(line.get("otel_name").is_none(), "{line}");
        let trace = line["trace_id"].as_str().expect("trace id");
        let span = line["span_id"].as_str().expect("span id");
        assert_eq!((trace.len(), span.len()), (32, 16), "{line}");
        let _ = std::io::stdout().flush();
    }
}
