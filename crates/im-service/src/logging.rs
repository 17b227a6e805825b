//! Logs go to stderr through `tracing`: human-readable text, or one JSON
//! object per line with `LOG_FORMAT=json`. `RUST_LOG`, when set, refines
//! `LOG_LEVEL` per module. Text logs are coloured only when stderr is a
//! terminal.
//!
//! Trace spans (target `im_trace`, [`crate::telemetry`]) go to the
//! OpenTelemetry layer only, when there is one: the log output never shows
//! them, so with tracing off no layer wants them and they are never made.

use std::io::IsTerminal;

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber, span};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt};
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
    subscriber(level, json, tracer, std::io::stderr).init();
}

/// The subscriber [`init`] installs, writing the log to `writer`.
fn subscriber<W>(
    level: &str,
    json: bool,
    tracer: Option<opentelemetry_sdk::trace::Tracer>,
    writer: W,
) -> impl Subscriber + Send + Sync
where
    W: for<'writer> MakeWriter<'writer> + Send + Sync + 'static,
{
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let mut filter =
        filter.add_directive(format!("{}=off", crate::telemetry::TARGET).parse().expect("a valid directive"));
    for library in QUIET_LIBRARIES {
        filter = filter.add_directive(format!("{library}=info").parse().expect("a valid directive"));
    }
    // Colours only on a terminal: a log file or journal gets plain text.
    let output = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(std::io::stderr().is_terminal());
    let output: Box<dyn Layer<Registry> + Send + Sync> = if json {
        output.json().flatten_event(true).with_current_span(false).with_span_list(false).boxed()
    } else {
        output.boxed()
    };
    tracing_subscriber::registry().with(output.with_filter(AskEachTime(filter))).with(tracer.map(spans_layer))
}

/// A per-layer filter that answers "sometimes" where `F` answers "always",
/// so that the layer's `enabled` runs before each of its events and spans.
///
/// Why: a per-layer filter hands its verdict to its layer through a
/// thread-local set in `enabled` and read in `on_event`. A check that asks
/// `enabled` and then emits nothing (`log::log_enabled!` through the `log`
/// bridge, as sqlx does after every query; `tracing::enabled!`) leaves a
/// "no" there, and the next event from an "always" callsite, which skips
/// `enabled`, reads that stale "no" and is dropped without a trace
/// (tracing issue 2519). That lost the filter's "list not reloaded" error
/// line under load. Callsites `F` never wants stay "never": they cost
/// nothing, as before.
struct AskEachTime<F>(F);

impl<S, F: Filter<S>> Filter<S> for AskEachTime<F> {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        self.0.enabled(meta, cx)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        let interest = self.0.callsite_enabled(meta);
        if interest.is_always() { Interest::sometimes() } else { interest }
    }

    fn event_enabled(&self, event: &Event<'_>, cx: &Context<'_, S>) -> bool {
        self.0.event_enabled(event, cx)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_new_span(attrs, id, cx)
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, cx: Context<'_, S>) {
        self.0.on_record(id, values, cx)
    }

    fn on_enter(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_enter(id, cx)
    }

    fn on_exit(&self, id: &span::Id, cx: Context<'_, S>) {
        self.0.on_exit(id, cx)
    }

    fn on_close(&self, id: span::Id, cx: Context<'_, S>) {
        self.0.on_close(id, cx)
    }
}

/// The OpenTelemetry layer, for trace spans only (not log events: a span's
/// attributes say what it needs). Location, thread and timing extras are
/// off: each would cost every span an allocation.
///
/// The filter is a `Targets`, not a closure: it tells `tracing` at each
/// callsite, once, that only `im_trace` at INFO matters (asked again per
/// span there: [`AskEachTime`]; the log output's "never" made those spans
/// "sometimes" anyway), and its level caps
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
        .with_filter(AskEachTime(Targets::new().with_target(crate::telemetry::TARGET, Level::INFO)))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tracing::callsite::{DefaultCallsite, Identifier};
    use tracing::field::FieldSet;
    use tracing::metadata::Kind;

    use super::*;

    /// The log output, kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'writer> MakeWriter<'writer> for Captured {
        type Writer = Captured;

        fn make_writer(&'writer self) -> Captured {
            self.clone()
        }
    }

    /// What the `log` bridge asks for a record from a library: an INFO
    /// event outside any callsite the filter has seen.
    static LIBRARY_RECORD: Metadata<'static> = Metadata::new(
        "log record",
        "some_library",
        Level::INFO,
        None,
        None,
        None,
        FieldSet::new(&[], Identifier(&LIBRARY_CALLSITE)),
        Kind::EVENT,
    );
    static LIBRARY_CALLSITE: DefaultCallsite = DefaultCallsite::new(&LIBRARY_RECORD);

    #[test]
    fn an_error_after_a_refused_check_is_still_written() {
        let captured = Captured::default();
        tracing::subscriber::with_default(subscriber("warn", false, None, captured.clone()), || {
            for round in 0..3 {
                // Asked, and nothing emitted: `log_enabled!`, `tracing::enabled!`.
                tracing::dispatcher::get_default(|dispatch| dispatch.enabled(&LIBRARY_RECORD));
                tracing::error!(round, "the line that must not be lost");
            }
        });
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(log.matches("the line that must not be lost").count(), 3, "{log}");
        assert!(!log.contains("log record"), "{log}");
    }
}
