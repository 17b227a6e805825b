//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` as the SDK's sampler.
//!
//! The words are the OpenTelemetry specification's; `im-config` has parsed
//! and range-checked them. With a `parentbased_*` sampler (the default) only
//! the process that starts a trace decides — the gateway, per message — and
//! every other process follows the `traceparent` it receives, so a message
//! is traced in all processes or in none.

use im_config::{Ratio, TraceSampler};
use opentelemetry_sdk::trace::Sampler;

pub fn sampler(kind: TraceSampler, ratio: Ratio) -> Sampler {
    let ratio = ratio.get();
    match kind {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
        TraceSampler::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        TraceSampler::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        TraceSampler::ParentBasedTraceIdRatio => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::Context;
    use opentelemetry::trace::{
        SamplingDecision, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::trace::ShouldSample;

    use super::*;

    fn decide(sampler: &Sampler, parent: Option<&Context>, trace_id: TraceId) -> SamplingDecision {
        sampler.should_sample(parent, trace_id, "test", &SpanKind::Internal, &[], &[]).decision
    }

    fn remote_parent(sampled: bool) -> Context {
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let span = SpanContext::new(TraceId::from(7), SpanId::from(9), flags, true, TraceState::default());
        Context::new().with_remote_span_context(span)
    }

    #[test]
    fn parent_based_ratio_follows_the_parent_and_samples_roots_by_trace_id() {
        let none = sampler(TraceSampler::ParentBasedTraceIdRatio, Ratio::new(0.0).unwrap());
        assert_eq!(decide(&none, Some(&remote_parent(true)), TraceId::from(1)), SamplingDecision::RecordAndSample);
        assert_eq!(decide(&none, Some(&remote_parent(false)), TraceId::from(1)), SamplingDecision::Drop);
        assert_eq!(decide(&none, None, TraceId::from(1)), SamplingDecision::Drop, "ratio 0: no root is kept");

        let half = sampler(TraceSampler::ParentBasedTraceIdRatio, Ratio::new(0.5).unwrap());
        let kept = (0..1000u128)
            .map(|n| TraceId::from(n.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)))
            .filter(|id| decide(&half, None, *id) == SamplingDecision::RecordAndSample)
            .count();
        assert!((400..600).contains(&kept), "about half the roots are kept, not {kept} of 1000");
    }

    #[test]
    fn always_off_ignores_a_sampled_parent_and_parent_based_always_off_does_not() {
        let parent = remote_parent(true);
        let off = sampler(TraceSampler::AlwaysOff, Ratio::ONE);
        assert_eq!(decide(&off, Some(&parent), TraceId::from(1)), SamplingDecision::Drop);
        let parent_based_off = sampler(TraceSampler::ParentBasedAlwaysOff, Ratio::ONE);
        assert_eq!(decide(&parent_based_off, Some(&parent), TraceId::from(1)), SamplingDecision::RecordAndSample);
        assert_eq!(decide(&parent_based_off, None, TraceId::from(1)), SamplingDecision::Drop);
    }
}
