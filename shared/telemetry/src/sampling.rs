//! Which traces are kept: our decision, never the caller's. The standard
//! `OTEL_TRACES_SAMPLER` / `_ARG` choose the share of traces kept (`always_on`
//! by default, `always_off`, `traceidratio` and their `parentbased_` forms);
//! a span inside this process follows its parent; but a span continuing a
//! *remote* parent (a caller's `traceparent`) is decided by its trace id, as a
//! root is — whatever the caller's sampled flag says. Anyone may send a
//! `traceparent`: obeying its flag would let a caller force every request of a
//! flood into the exporter's queue (crowding out real traces) or keep its own
//! requests out of every trace. The decision by trace id is the same in every
//! service, so a trace stays whole across them.

use opentelemetry_sdk::trace::{ParentBasedSampler, Sampler};

/// The sampler of `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, with
/// remote parents decided as roots are.
pub(crate) fn from_env() -> ParentBasedSampler {
    let ratio = |default: f64| {
        std::env::var("OTEL_TRACES_SAMPLER_ARG")
            .ok()
            .and_then(|r| r.parse::<f64>().ok())
            .filter(|r| (0.0..=1.0).contains(r))
            .unwrap_or(default)
    };
    let by_trace_id = match std::env::var("OTEL_TRACES_SAMPLER").as_deref() {
        Ok("always_off" | "parentbased_always_off") => Sampler::AlwaysOff,
        Ok("traceidratio" | "parentbased_traceidratio") => Sampler::TraceIdRatioBased(ratio(1.0)),
        _ => Sampler::AlwaysOn,
    };
    ours(by_trace_id)
}

fn ours(by_trace_id: Sampler) -> ParentBasedSampler {
    ParentBasedSampler::new(by_trace_id.clone())
        .with_remote_parent_sampled(by_trace_id.clone())
        .with_remote_parent_not_sampled(by_trace_id)
}

#[cfg(test)]
mod tests {
    use opentelemetry::Context;
    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::trace::{SamplingDecision, ShouldSample as _};

    use super::*;

    fn remote(sampled: bool) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex"),
            SpanId::from_hex("00f067aa0ba902b7").expect("hex"),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        ))
    }

    fn decide(sampler: &ParentBasedSampler, parent: &Context) -> SamplingDecision {
        sampler
            .should_sample(
                Some(parent),
                parent.span().span_context().trace_id(),
                "rpc",
                &SpanKind::Server,
                &[],
                &[],
            )
            .decision
    }

    #[test]
    fn a_callers_sampled_flag_neither_forces_nor_hides_a_trace() {
        let never = ours(Sampler::AlwaysOff);
        assert_eq!(decide(&never, &remote(true)), SamplingDecision::Drop);
        let always = ours(Sampler::AlwaysOn);
        assert_eq!(
            decide(&always, &remote(false)),
            SamplingDecision::RecordAndSample
        );
        // By trace id: the same answer in every service, whatever the flag.
        let half = ours(Sampler::TraceIdRatioBased(0.5));
        assert_eq!(decide(&half, &remote(true)), decide(&half, &remote(false)));
    }
}
