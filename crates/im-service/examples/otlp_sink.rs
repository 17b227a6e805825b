//! A minimal OTLP/gRPC trace collector for benchmarks: accepts every export,
//! keeps nothing, and prints the spans received per second and in all.
//!
//!   cargo run --release -p im-service --example otlp_sink [ADDR]   (default 127.0.0.1:4317)

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use tonic::{Request, Response, Status};

#[derive(Clone, Default)]
struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let spans: usize =
            request.into_inner().resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len()).sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:4317".to_owned());
    let sink = Sink::default();
    let total = sink.0.clone();
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let now = total.load(Ordering::Relaxed);
            if now != last {
                println!("{} spans/s, {now} in all", now - last);
                last = now;
            }
        }
    });
    println!("OTLP sink on {addr}");
    tonic::transport::Server::builder().add_service(TraceServiceServer::new(sink)).serve(addr.parse()?).await?;
    Ok(())
}
