//! The W3C trace context (`traceparent`, `tracestate`) across processes:
//! on gRPC metadata (client: [`inject_grpc`]; server: [`server_span`]) and
//! on bus record headers ([`MessageTrace::headers`],
//! [`MessageTrace::from_headers`]); and [`MessageTrace`], the trace a
//! message carries through the stages that handle many messages at once.

use im_core::ports::RecordHeaders;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::codegen::http;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

const TRACEPARENT: &str = "traceparent";
/// A W3C trace context whose flags say "not sampled": receivers follow it and
/// record nothing. The ids are fixed (valid, never recorded): a random pair
/// per call would cost what skipping the span saved.
const NOT_SAMPLED: &str = "00-00000000000000000000000000000001-0000000000000001-00";

/// The trace of one message while it passes the batched stages (pipeline,
/// router, publishers, consumers): the context of its `im.send` span when
/// that trace is sampled, else nothing. Those stages make spans only for
/// the sampled messages of a batch, so an unsampled one costs an `Option`
/// check per stage, and carrying it costs no allocation.
#[derive(Clone, Debug, Default)]
pub struct MessageTrace(Option<Context>);

impl MessageTrace {
    /// The trace `span` belongs to, if it is sampled.
    pub fn of(span: &Span) -> Self {
        if span.is_none() {
            return Self(None);
        }
        Self::sampled(span.context())
    }

    fn sampled(cx: Context) -> Self {
        Self(cx.span().span_context().is_sampled().then_some(cx))
    }

    /// The context to make this message's spans the children of, when it
    /// is sampled.
    pub fn context(&self) -> Option<&Context> {
        self.0.as_ref()
    }

    /// Whether both are sampled and name the same span (one message's).
    pub fn is_same_span(&self, other: &MessageTrace) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) => a.span().span_context().span_id() == b.span().span_context().span_id(),
            _ => false,
        }
    }

    /// The trace a consumed record carries, if sampled.
    pub fn from_headers(headers: &RecordHeaders) -> Self {
        if headers.get(TRACEPARENT).is_none() {
            return Self(None);
        }
        Self::sampled(TraceContextPropagator::new().extract(&RecordExtractor(headers)))
    }

    /// The headers that carry this trace on a bus record: none when it is
    /// not sampled (the consumer then makes no span).
    pub fn headers(&self) -> RecordHeaders {
        let mut headers = RecordHeaders::default();
        if let Some(cx) = &self.0 {
            TraceContextPropagator::new().inject_context(cx, &mut RecordInjector(&mut headers));
        }
        headers
    }
}

/// A span named `$name` as the child of a [`MessageTrace`] when that is
/// sampled; `Span::none()` otherwise. `parent: None` keeps it out of
/// whatever span happens to be current: its parent is the message's.
macro_rules! message_span {
    ($trace:expr, $name:literal $(, $($fields:tt)+)?) => {
        match $crate::telemetry::MessageTrace::context($trace) {
            Some(cx) => {
                let span = tracing::info_span!(target: "im_trace", parent: None, $name $(, $($fields)+)?);
                $crate::telemetry::propagation::adopt(&span, cx);
                span
            }
            None => tracing::Span::none(),
        }
    };
}
pub(crate) use message_span;

/// One `$name` span per sampled message of a batch, each the child of its
/// message's trace: a stage done once for many messages (one dedup lookup,
/// one commit) shows in the trace of each. Ended when the `Vec` is dropped.
/// Empty, without allocating, when no message of the batch is sampled.
macro_rules! stage_spans {
    ($traces:expr, $name:literal $(, $($fields:tt)+)?) => {
        $traces
            .filter(|trace: &&$crate::telemetry::MessageTrace| trace.context().is_some())
            .map(|trace| $crate::telemetry::propagation::message_span!(trace, $name $(, $($fields)+)?))
            .collect::<Vec<tracing::Span>>()
    };
}
pub(crate) use stage_spans;

/// Makes `cx` the parent of `span` (a fresh span, not yet entered).
pub fn adopt(span: &Span, cx: &Context) {
    // Fails only when tracing is off for this span: then there is nothing
    // to attach.
    let _ = span.set_parent(cx.clone());
}

/// A span named `$name` as the child of the current span; `Span::none()`
/// when there is none, so a stage reached outside any trace does not start
/// one of its own.
macro_rules! child_span {
    ($name:literal $(, $($fields:tt)+)?) => {
        if tracing::Span::current().is_none() {
            tracing::Span::none()
        } else {
            tracing::info_span!(target: "im_trace", $name $(, $($fields)+)?)
        }
    };
}
pub(crate) use child_span;

/// Adds the current span's trace context to an outgoing call, so the
/// callee's spans join the caller's trace (or follow its decision not to
/// sample). Outside any span, while trace export is on, an explicit "not
/// sampled" context: a callee that starts traces for calls without one (an
/// `im.v1` server) must not start its own for a message the gateway chose
/// not to trace.
pub fn inject_grpc(metadata: &mut MetadataMap) {
    let current = Span::current();
    if current.is_none() {
        if tracing::enabled!(target: "im_trace", tracing::Level::INFO) {
            metadata.insert(TRACEPARENT, MetadataValue::from_static(NOT_SAMPLED));
        }
        return;
    }
    let cx = current.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(metadata));
    }
}

/// The `traceparent` of the current span when its trace is sampled, for a
/// send on the relay stream (one stream carries many sends, so the context
/// rides in each send, not in the call's metadata); empty otherwise, which
/// the node reads as "not sampled".
pub fn sampled_traceparent() -> String {
    let current = Span::current();
    if current.is_none() {
        return String::new();
    }
    let cx = current.context();
    if !cx.span().span_context().is_sampled() {
        return String::new();
    }
    let mut fields = RecordHeaders::default();
    TraceContextPropagator::new().inject_context(&cx, &mut RecordInjector(&mut fields));
    fields.get(TRACEPARENT).and_then(|value| std::str::from_utf8(value).ok()).unwrap_or_default().to_owned()
}

/// The node's span for one send of the relay stream (`im.Relay`), the child
/// of the gateway's span that `traceparent` names; `Span::none()` when it is
/// empty or not sampled.
pub fn relay_span(traceparent: &str) -> Span {
    if traceparent.is_empty()
        || !sampled_flag(traceparent.as_bytes())
        || !tracing::enabled!(target: "im_trace", tracing::Level::INFO)
    {
        return Span::none();
    }
    let cx = TraceContextPropagator::new().extract(&TraceparentExtractor(traceparent));
    if !cx.span().span_context().is_sampled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: "im_trace",
        "grpc.server",
        otel.name = "im.Relay",
        otel.kind = "server",
        rpc.method = "/im.v1.RelayService/Relay",
    );
    adopt(&span, &cx);
    span
}

/// The span a gRPC server call runs in (tonic's `trace_fn`): the child of
/// the caller's sampled trace; `Span::none()` when the caller's trace is not
/// sampled. A call without a trace context starts one only when
/// `starts_trace` says its path is a client-facing API (`im.v1`), where a
/// client that is not a gateway calls; a call between services outside any
/// trace stays untraced.
pub fn server_span(request: &http::Request<()>, starts_trace: fn(&str) -> bool) -> Span {
    if !tracing::enabled!(target: "im_trace", tracing::Level::INFO) {
        return Span::none();
    }
    let path = request.uri().path();
    let parent = match request.headers().get(TRACEPARENT) {
        // Most calls carry an unsampled trace: read its flags before
        // parsing (and allocating) anything.
        Some(value) if !sampled_flag(value.as_bytes()) => return Span::none(),
        Some(_) => {
            let cx = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
            if !cx.span().span_context().is_sampled() {
                return Span::none();
            }
            Some(cx)
        }
        None if starts_trace(path) => None,
        None => return Span::none(),
    };
    let span = tracing::info_span!(
        target: "im_trace",
        "grpc.server",
        otel.name = %span_name(path),
        otel.kind = "server",
        rpc.method = path,
    );
    if let Some(cx) = parent {
        adopt(&span, &cx);
    }
    span
}

/// Whether a `traceparent` value (`version-trace-parent-flags`) has the
/// sampled flag; false for anything that is not hex where the flags go.
fn sampled_flag(traceparent: &[u8]) -> bool {
    let Some(flags) = traceparent.len().checked_sub(2).and_then(|at| std::str::from_utf8(&traceparent[at..]).ok())
    else {
        return false;
    };
    u8::from_str_radix(flags, 16).is_ok_and(|flags| flags & 1 == 1)
}

/// `user.GetUser` for `/im.user.v1.UserService/GetUser`: the service's part
/// in the system, then the method.
fn span_name(path: &str) -> String {
    let Some((service, method)) = path.trim_start_matches('/').rsplit_once('/') else {
        return path.to_owned();
    };
    let part = match service {
        "im.v1.MessageService" | "im.v1.RelayService" => "im",
        "im.v1.GroupService" => "im.groups",
        "im.gateway.v1.PushService" => "gateway",
        "im.user.v1.UserService" => "user",
        "im.user.v1.GroupDirectory" => "user.groups",
        other => other,
    };
    format!("{part}.{method}")
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // An empty `tracestate` says nothing.
        if value.is_empty() {
            return;
        }
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value)) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct TraceparentExtractor<'a>(&'a str);

impl Extractor for TraceparentExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

struct RecordInjector<'a>(&'a mut RecordHeaders);

impl Injector for RecordInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if !value.is_empty() {
            self.0.insert(key, value);
        }
    }
}

struct RecordExtractor<'a>(&'a RecordHeaders);

impl Extractor for RecordExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| std::str::from_utf8(value).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name).collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    fn context(sampled: bool) -> Context {
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let span = SpanContext::new(TraceId::from(0xabc), SpanId::from(0xdef), flags, false, TraceState::default());
        Context::new().with_remote_span_context(span)
    }

    #[test]
    fn a_sampled_trace_travels_on_record_headers_and_an_unsampled_one_adds_none() {
        let sampled = MessageTrace::sampled(context(true));
        let headers = sampled.headers();
        assert_eq!(
            headers.get(TRACEPARENT).map(|v| v.as_ref()),
            Some(&b"00-00000000000000000000000000000abc-0000000000000def-01"[..])
        );
        let received = MessageTrace::from_headers(&headers);
        let span = received.context().expect("sampled").span();
        assert_eq!(span.span_context().trace_id(), TraceId::from(0xabc));
        assert_eq!(span.span_context().span_id(), SpanId::from(0xdef));

        assert!(MessageTrace::sampled(context(false)).context().is_none());
        assert!(MessageTrace::sampled(context(false)).headers().is_empty());
        assert!(MessageTrace::from_headers(&RecordHeaders::default()).context().is_none());
    }

    #[test]
    fn a_record_whose_traceparent_is_not_sampled_or_garbled_carries_no_trace() {
        for value in ["00-00000000000000000000000000000abc-0000000000000def-00", "garbage"] {
            let mut headers = RecordHeaders::default();
            headers.insert(TRACEPARENT, value.to_owned());
            assert!(MessageTrace::from_headers(&headers).context().is_none(), "{value}");
        }
    }

    #[test]
    fn the_sampled_flag_is_read_from_the_last_two_hex_digits() {
        assert!(sampled_flag(b"00-00000000000000000000000000000abc-0000000000000def-01"));
        assert!(sampled_flag(b"00-00000000000000000000000000000abc-0000000000000def-03"));
        assert!(!sampled_flag(b"00-00000000000000000000000000000abc-0000000000000def-00"));
        assert!(!sampled_flag(b"0"));
        assert!(!sampled_flag(b"zz"));
    }

    #[test]
    fn a_relayed_sends_traceparent_names_the_gateways_span() {
        let traceparent = "00-00000000000000000000000000000abc-0000000000000def-01";
        let cx = TraceContextPropagator::new().extract(&TraceparentExtractor(traceparent));
        let span = cx.span();
        assert!(span.span_context().is_sampled());
        assert_eq!(span.span_context().trace_id(), TraceId::from(0xabc));
        assert_eq!(span.span_context().span_id(), SpanId::from(0xdef));
        // Outside any span (and with no subscriber) nothing is sampled.
        assert_eq!(sampled_traceparent(), "");
        assert!(relay_span(traceparent).is_none(), "no subscriber records im_trace here");
        assert!(relay_span("").is_none());
    }

    #[test]
    fn span_names_say_which_service_and_method() {
        assert_eq!(span_name("/im.user.v1.UserService/GetUser"), "user.GetUser");
        assert_eq!(span_name("/im.gateway.v1.PushService/Push"), "gateway.Push");
        assert_eq!(span_name("/im.v1.MessageService/SendMessage"), "im.SendMessage");
        assert_eq!(span_name("/im.v1.RelayService/Relay"), "im.Relay");
        assert_eq!(span_name("/other.Svc/Call"), "other.Svc.Call");
    }
}
