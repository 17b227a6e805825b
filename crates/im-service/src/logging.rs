//! Logs go to stderr through `tracing`: human-readable text, or one JSON
//! object per line with `LOG_FORMAT=json`. `RUST_LOG`, when set, refines
//! `LOG_LEVEL` per module. Text logs are coloured only when stderr is a
//! terminal.
//!
//! Trace spans (target `im_trace`, [`crate::telemetry`]) go to the
//! OpenTelemetry layer only, when there is one: the log output never shows
//! them, so with tracing off no layer wants them and they are never made.

use std::io::IsTerminal;

use tracing::{Level, Subscriber};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Libraries whose debug and trace events carry what must never reach a
/// log (message bodies in WebSocket and HTTP/2 frames, tokens in request
/// headers, data keys in KMS request bodies): capped at INFO whatever
/// `LOG_LEVEL` or `RUST_LOG` say.
const QUIET_LIBRARIES: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower",
    "reqwest",
    "aws_smithy_runtime",
    "aws_smithy_http",
    "aws_smithy_runtime_api",
    "aws_sdk_kms",
    "aws_config",
];

/// Installs the process's subscriber: the log output, and the span export
/// to `tracer` when tracing is on.
pub fn init(level: &str, json: bool, tracer: Option<opentelemetry_sdk::trace::Tracer>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let mut filter =
        filter.add_directive(format!("{}=off", crate::telemetry::TARGET).parse().expect("a valid directive"));
    for library in QUIET_LIBRARIES {
        filter = filter.add_directive(format!("{library}=info").parse().expect("a valid directive"));
    }
    // Colours only on a terminal: a log file or journal gets plain text.
    let output =
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    let output: Box<dyn Layer<Registry> + Send + Sync> = if json {
        output.json().flatten_event(true).with_current_span(false).with_span_list(false).boxed()
    } else {
        output.boxed()
    };
    tracing_subscriber::registry().with(output.with_filter(filter)).with(tracer.map(spans_layer)).init();
}

/// The OpenTelemetry layer, for trace spans only (not log events: a span's
/// attributes say what it needs). Location, thread and timing extras are
/// off: each would cost every span an allocation.
///
/// The filter is a `Targets`, not a closure: it tells `tracing` at each
/// callsite, once, that only `im_trace` at INFO matters, and its level caps
/// the process's maximum level. A closure filter is asked at every event,
/// so every `trace!` in h2, hyper and tungstenite went through the filters
/// per frame: with it, tracing at 1 % cost the node 4.3 µs per message at
/// saturation instead of 1.3 (BENCHMARKS.md, "Tracing").
fn spans_layer<S>(tracer: opentelemetry_sdk::trace::Tracer) -> impl Layer<S>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        // Our spans find their parents through `tracing` (and `set_parent`),
        // never through OpenTelemetry's current context, so no span's
        // context is made current on each poll (that showed as the layer's
        // `on_enter` in the gateway's profile; the saturation figures did
        // not move beyond their noise without it).
        .with_context_activation(false)
        .with_level(false)
        .with_target(false)
        .with_filter(Targets::new().with_target(crate::telemetry::TARGET, Level::INFO))
}
