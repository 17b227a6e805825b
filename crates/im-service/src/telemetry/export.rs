//! The OTLP gRPC exporter behind a bounded batch queue, with every dropped
//! span counted.
//!
//! The SDK's `BatchSpanProcessor` already never blocks the thread that ends
//! a span (a full queue drops it) and exports from a thread of its own; but
//! it keeps its drop count to itself. So a span goes through [`Bounded`]
//! first, which admits at most [`MAX_QUEUE`] spans not yet handed to the
//! exporter — the processor's own queue has the same size, so it never
//! drops — and counts what it turns away (`queue_full`). [`Counted`] sits
//! between the processor and the OTLP exporter: it marks the spans as no
//! longer queued, and counts those of a failed export (`export_failed`: the
//! collector is down or refused them; the SDK does not retry).
//!
//! The counters are process-wide, like the tracer provider and the
//! `tracing` subscriber they belong to: the processes' metrics registries
//! serve clones of them.

use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, Span, SpanData, SpanExporter, SpanProcessor};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use crate::metrics::ReasonLabel;

/// Spans waiting for export, at most. About 2k spans a second at 1 %
/// sampling of a saturated node: the queue holds more than the default
/// one-second export interval's worth, and costs at most a few MB.
pub const MAX_QUEUE: usize = 8192;
/// Spans per export call (the SDK's default).
const MAX_EXPORT_BATCH: usize = 512;
/// How long the processor waits to fill a batch.
const EXPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Bounds one export call: a collector that does not answer costs its
/// spans, not the queue behind them for long.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

static SPANS_DROPPED: LazyLock<Family<ReasonLabel, Counter>> = LazyLock::new(Family::default);

/// Spans never exported, by reason (`queue_full`, `export_failed`):
/// `im_trace_spans_dropped_total`.
pub fn spans_dropped() -> &'static Family<ReasonLabel, Counter> {
    &SPANS_DROPPED
}

fn dropped(reason: &'static str) -> Counter {
    SPANS_DROPPED.get_or_create(&ReasonLabel { reason }).clone()
}

/// The processor for `endpoint`: OTLP over gRPC, batched, bounded.
pub fn processor(endpoint: &str) -> anyhow::Result<Bounded<BatchSpanProcessor>> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(EXPORT_TIMEOUT)
        .build()?;
    Ok(bounded(exporter, MAX_QUEUE))
}

/// `exporter` behind a batch processor that holds at most `capacity` spans.
pub fn bounded<E: SpanExporter + 'static>(exporter: E, capacity: usize) -> Bounded<BatchSpanProcessor> {
    let queued = Arc::new(AtomicUsize::new(0));
    let counted = Counted { inner: exporter, queued: queued.clone(), failed: dropped("export_failed") };
    let config = BatchConfigBuilder::default()
        .with_max_queue_size(capacity)
        .with_max_export_batch_size(MAX_EXPORT_BATCH.min(capacity))
        .with_scheduled_delay(EXPORT_INTERVAL)
        .build();
    let inner = BatchSpanProcessor::builder(counted).with_batch_config(config).build();
    Bounded { inner, queued, capacity, full: dropped("queue_full") }
}

/// Admits a span to `inner` only while fewer than `capacity` are queued.
#[derive(Debug)]
pub struct Bounded<P> {
    inner: P,
    /// Spans admitted and not yet handed to the exporter.
    queued: Arc<AtomicUsize>,
    capacity: usize,
    full: Counter,
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // Reserve a place first: two threads ending spans at once cannot
        // both take the last one.
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.full.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter as the batch processor calls it: releases the spans'
/// places in the queue, counts the spans of a failed export.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
    failed: Counter,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        self.queued.fetch_sub(spans, Ordering::Relaxed);
        let result = self.inner.export(batch).await;
        if result.is_err() {
            self.failed.inc_by(spans as u64);
        }
        result
    }

    fn shutdown_with_timeout(&mut self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&mut self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opentelemetry::trace::{Tracer, TracerProvider};
    use opentelemetry_sdk::error::OTelSdkError;
    use opentelemetry_sdk::trace::SdkTracerProvider;

    use super::*;

    /// Holds every export until `open`, then records or refuses it.
    #[derive(Debug, Clone, Default)]
    struct Gate {
        open: Arc<(Mutex<bool>, std::sync::Condvar)>,
        refuse: bool,
        exported: Arc<Mutex<usize>>,
    }

    impl Gate {
        fn open(&self) {
            *self.open.0.lock().unwrap() = true;
            self.open.1.notify_all();
        }
    }

    impl SpanExporter for Gate {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let (lock, opened) = &*self.open;
            drop(opened.wait_while(lock.lock().unwrap(), |open| !*open).unwrap());
            if self.refuse {
                return Err(OTelSdkError::InternalFailure("collector down".into()));
            }
            *self.exported.lock().unwrap() += batch.len();
            Ok(())
        }
    }

    fn count(reason: &'static str) -> u64 {
        dropped(reason).get()
    }

    /// Ends `spans` spans; returns how long the slowest end took.
    fn end_spans(provider: &SdkTracerProvider, spans: usize) -> Duration {
        let tracer = provider.tracer("test");
        (0..spans)
            .map(|_| {
                let started = std::time::Instant::now();
                drop(tracer.start("s"));
                started.elapsed()
            })
            .max()
            .unwrap_or_default()
    }

    // One test for both reasons: the counters are process-wide, and tests
    // of one binary run in parallel.
    #[test]
    fn a_stuck_or_refusing_collector_costs_counted_spans_never_a_wait() {
        let stuck = Gate::default();
        let provider = SdkTracerProvider::builder().with_span_processor(bounded(stuck.clone(), 64)).build();
        let full_before = count("queue_full");
        // The exporter holds its first batch: the queue fills and the rest
        // is turned away at once.
        let slowest = end_spans(&provider, 1000);
        assert!(slowest < Duration::from_millis(50), "ending a span waited {slowest:?}");
        let turned_away = count("queue_full") - full_before;
        // 64 in the batch the exporter holds, at most 64 queued behind it.
        assert!(turned_away >= 1000 - 2 * 64, "at most 128 spans held; {turned_away} of 1000 dropped");
        stuck.open();
        provider.shutdown().unwrap();
        let exported = *stuck.exported.lock().unwrap() as u64;
        assert_eq!(exported + turned_away, 1000, "every span is exported or counted");

        let refusing = Gate { refuse: true, ..Gate::default() };
        refusing.open();
        let provider = SdkTracerProvider::builder().with_span_processor(bounded(refusing, 64)).build();
        let failed_before = count("export_failed");
        end_spans(&provider, 10);
        let _ = provider.force_flush();
        assert_eq!(count("export_failed") - failed_before, 10, "the refused export's spans are counted");
        let _ = provider.shutdown();
    }
}
