//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` as the SDK's sampler.
//!
//! The words are the OpenTelemetry specification's; `im-config` has parsed
//! and range-checked them. With a `parentbased_*` sampler (the default) only
//! the process that starts a trace decides — the gateway, per message — and
//! every other process follows the `traceparent` it receives, so a message
//! is traced in all processes or in none.

use im_config::{Ratio, TraceSampler};
use opentelemetry::KeyValue;
use opentelemetry::trace::{Link, SamplingDecision, SamplingResult, SpanKind, TraceId, TraceState};
use opentelemetry::{Context, trace::TraceContextExt};
use opentelemetry_sdk::trace::{Sampler, ShouldSample};

/// The gateway's root span: the gateway has already decided to trace this
/// message (`im_gateway::trace_sampling`), with the ratio of
/// [`gateway_root_ratio`].
const GATEWAY_FRAME: &str = "gateway.frame";

/// The configured sampler, except that a `gateway.frame` it is given is
/// kept: its sampling was decided before it was made, so applying the ratio
/// again would trace ratio² of the messages.
#[derive(Clone, Debug)]
pub struct KeepGatewayRoots(Sampler);

impl ShouldSample for KeepGatewayRoots {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let is_root = parent_context.is_none_or(|cx| !cx.has_active_span());
        if is_root && name == GATEWAY_FRAME {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                attributes: Vec::new(),
                trace_state: TraceState::default(),
            };
        }
        self.0.should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

pub fn sampler(kind: TraceSampler, ratio: Ratio) -> KeepGatewayRoots {
    let ratio = ratio.get();
    KeepGatewayRoots(match kind {
        TraceSampler::AlwaysOn => Sampler::AlwaysOn,
        TraceSampler::AlwaysOff => Sampler::AlwaysOff,
        TraceSampler::TraceIdRatio => Sampler::TraceIdRatioBased(ratio),
        TraceSampler::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
        TraceSampler::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
        TraceSampler::ParentBasedTraceIdRatio => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio))),
    })
}

/// The share of client sends the gateway starts a trace for: what the
/// configured sampler would keep of new roots.
pub fn gateway_root_ratio(kind: TraceSampler, ratio: Ratio) -> f64 {
    match kind {
        TraceSampler::AlwaysOn | TraceSampler::ParentBasedAlwaysOn => 1.0,
        TraceSampler::AlwaysOff | TraceSampler::ParentBasedAlwaysOff => 0.0,
        TraceSampler::TraceIdRatio | TraceSampler::ParentBasedTraceIdRatio => ratio.get(),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags};

    use super::*;

    fn decide(sampler: &impl ShouldSample, parent: Option<&Context>, trace_id: TraceId) -> SamplingDecision {
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

    #[test]
    fn a_gateway_root_is_kept_whatever_the_ratio_because_the_gateway_decided_first() {
        let none = sampler(TraceSampler::ParentBasedTraceIdRatio, Ratio::new(0.0).unwrap());
        let frame = none.should_sample(None, TraceId::from(1), GATEWAY_FRAME, &SpanKind::Server, &[], &[]);
        assert_eq!(frame.decision, SamplingDecision::RecordAndSample);
        let other = none.should_sample(None, TraceId::from(1), "im.SendMessage", &SpanKind::Server, &[], &[]);
        assert_eq!(other.decision, SamplingDecision::Drop);
        assert_eq!(gateway_root_ratio(TraceSampler::ParentBasedTraceIdRatio, Ratio::new(0.01).unwrap()), 0.01);
        assert_eq!(gateway_root_ratio(TraceSampler::ParentBasedAlwaysOff, Ratio::ONE), 0.0);
    }
}
