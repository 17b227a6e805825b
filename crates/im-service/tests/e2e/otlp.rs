//! An OTLP/gRPC trace collector inside the test: the `TraceService` server
//! of `opentelemetry-proto`, keeping every span the processes export, with
//! the `service.name` of the process that sent it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// A span as the collector received it.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// `service.name` of the exporting process.
    pub service: String,
    pub name: String,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    /// Empty for a root.
    pub parent_span_id: Vec<u8>,
    pub attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Store(Arc<Mutex<Vec<ReceivedSpan>>>);

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut spans = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans.resource.map(|r| attributes(&r.attributes)).unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                spans.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: span.trace_id,
                    span_id: span.span_id,
                    parent_span_id: span.parent_span_id,
                    attributes: attributes(&span.attributes),
                });
            }
        }
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter().map(|kv| (kv.key.clone(), kv.value.as_ref().map(text).unwrap_or_default())).collect()
}

fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// The collector, listening on a free loopback port until dropped.
pub struct Collector {
    endpoint: String,
    store: Store,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Collector {
    pub async fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let store = Store::default();
        let service = TraceServiceServer::new(store.clone());
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .expect("the test collector serves");
        });
        Collector { endpoint, store, server }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for the processes.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.0.lock().unwrap().clone()
    }

    /// The spans of the trace that has an `im.send` span for `msg_id`, once
    /// it holds a span of every name in `names`; panics after `within`
    /// naming what is missing.
    pub async fn trace_of(&self, msg_id: u64, names: &[&str], within: Duration) -> Vec<ReceivedSpan> {
        let deadline = Instant::now() + within;
        loop {
            let spans = self.spans();
            let trace_id = spans
                .iter()
                .find(|s| s.name == "im.send" && s.attributes.get("msg_id") == Some(&msg_id.to_string()))
                .map(|s| s.trace_id.clone());
            let trace: Vec<ReceivedSpan> = match &trace_id {
                Some(id) => spans.into_iter().filter(|s| &s.trace_id == id).collect(),
                None => Vec::new(),
            };
            let present: HashSet<&str> = trace.iter().map(|s| s.name.as_str()).collect();
            let missing: Vec<&str> = names.iter().copied().filter(|name| !present.contains(name)).collect();
            if trace_id.is_some() && missing.is_empty() {
                return trace;
            }
            assert!(
                Instant::now() < deadline,
                "within {within:?}, the trace of message {msg_id} lacks {missing:?} (found: {present:?})"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
