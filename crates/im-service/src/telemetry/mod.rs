//! Tracing over OTLP (`OTEL_EXPORTER_OTLP_ENDPOINT`): one trace per message,
//! from the gateway frame through the send pipeline to the recipient's
//! gateway, across the gRPC hops and the bus.
//!
//! - [`sampler`]: `OTEL_TRACES_SAMPLER` / `_ARG` as the SDK's sampler.
//! - [`export`]: the OTLP gRPC exporter behind a bounded batch queue; spans
//!   that do not fit, or that the collector refused, are dropped and counted
//!   (`im_trace_spans_dropped_total`), never waited for.
//! - [`propagation`]: the W3C trace context on gRPC metadata and on bus
//!   record headers, the span every gRPC server call runs in, and
//!   [`MessageTrace`], the trace a message carries through the batched
//!   stages (pipeline, router, publishers, consumers).
//!
//! Every span of this crate and of the crates it serves (`im-gateway`'s
//! `gateway.frame`) has the target [`TARGET`]. The log output filters that
//! target out and only the OpenTelemetry layer takes it, so with no endpoint
//! configured no such span is even created: a disabled callsite costs one
//! load of its cached interest.
//!
//! Spans are made only where a trace is sampled. The gateway decides per
//! client send before making its `gateway.frame` root
//! (`im_gateway::trace_sampling`, set from the sampler's ratio; the sampler
//! then keeps every `gateway.frame`), and an unsampled send carries a "not
//! sampled" `traceparent`. An `im.v1` call that arrives without any trace
//! context (a client calling a node directly) is sampled by the sampler.
//! Every other span is made as the child of a sampled context (an incoming
//! `traceparent` with the sampled flag, or a sampled [`MessageTrace`]), so
//! an unsampled message costs a random number in the gateway and an
//! `Option` check per stage elsewhere.

pub mod export;
pub mod propagation;
pub mod sampler;

use std::time::Duration;

use anyhow::Context as _;
use im_config::ObservabilityConfig;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

pub use export::spans_dropped;
pub use propagation::MessageTrace;

/// The `tracing` target of every span meant for export. Spelled out in the
/// macros (`target: "im_trace"`), which need a literal.
pub const TARGET: &str = "im_trace";

/// The tracer provider of this process, when an endpoint is configured.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// No tracing: nothing is recorded or exported.
    pub fn off() -> Self {
        Self { provider: None }
    }

    /// The exporter and tracer for `config`, named `default_service` unless
    /// `OTEL_SERVICE_NAME` says otherwise. Must run inside the Tokio runtime:
    /// the gRPC exporter's channel lives on it. `Telemetry::off()` when no
    /// endpoint is set.
    pub fn start(config: &ObservabilityConfig, default_service: &str) -> anyhow::Result<Self> {
        if config.otel_endpoint.is_empty() {
            return Ok(Self::off());
        }
        let service = match config.otel_service_name.as_str() {
            "" => default_service.to_owned(),
            name => name.to_owned(),
        };
        let processor = export::processor(&config.otel_endpoint)
            .context("observability.otel_endpoint (OTEL_EXPORTER_OTLP_ENDPOINT)")?;
        im_gateway::trace_sampling::set_root_ratio(sampler::gateway_root_ratio(
            config.otel_traces_sampler,
            config.otel_traces_sampler_arg,
        ));
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(sampler::sampler(config.otel_traces_sampler, config.otel_traces_sampler_arg))
            .with_resource(Resource::builder().with_service_name(service).build())
            .build();
        Ok(Self { provider: Some(provider) })
    }

    /// The tracer the `tracing` layer records into; none when tracing is off.
    pub fn tracer(&self) -> Option<opentelemetry_sdk::trace::Tracer> {
        self.provider.as_ref().map(|provider| provider.tracer("im-service"))
    }

    /// Exports what is queued and stops the exporter, waiting at most
    /// `timeout` (a collector that does not answer must not hold up the
    /// stop). Blocking: the batch processor joins its thread.
    pub async fn shutdown(self, timeout: Duration) {
        let Some(provider) = self.provider else { return };
        let flushed = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(timeout)).await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "trace exporter did not flush"),
            Err(e) => tracing::warn!(error = %e, "trace exporter shutdown panicked"),
        }
    }
}
