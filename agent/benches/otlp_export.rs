//! Cost of exporting datapoints over OTLP: a batch recorded, queued at an export tick,
//! encoded, gzipped (the default compression) and sent to a receiver on loopback, at 1k
//! and 10k datapoints per batch, over gRPC (the default protocol) and HTTP/protobuf.
//! The receivers in this file take the request (the gRPC one decodes it, as tonic does)
//! and answer "all accepted" without keeping anything.
//!
//! Printed after the measurements: datapoints/s and the ratio to the target of
//! 1 M datapoints/s (issue 16).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use vigil::config::Config;
use vigil::export::OtlpExporter;
use vigil::model::{Batch, BatchBuilder, MetricDesc, MetricKind, attrs};

use common::{Mean, millions};

/// Datapoints per second the export path should sustain (issue 16).
const TARGET: f64 = 1e6;

/// A gRPC receiver that accepts everything and keeps nothing.
struct Discard;

#[tonic::async_trait]
impl MetricsService for Discard {
    async fn export(
        &self,
        _request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Starts the gRPC receiver (gzip accepted) on a free loopback port; its address.
async fn grpc_receiver() -> SocketAddr {
    let incoming = tonic::transport::server::TcpIncoming::bind("127.0.0.1:0".parse().unwrap())
        .expect("bind a loopback port");
    let addr = incoming.local_addr().expect("bound address");
    let service = MetricsServiceServer::new(Discard)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .max_decoding_message_size(64 << 20);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(incoming),
    );
    addr
}

/// Starts the HTTP/protobuf receiver (reads the whole body, answers 200 with an empty
/// body: everything accepted) on a free loopback port; its address.
async fn http_receiver() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("bound address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = service_fn(|request: hyper::Request<hyper::body::Incoming>| async {
                    request.into_body().collect().await?;
                    Ok::<_, hyper::Error>(hyper::Response::new(Full::new(Bytes::new())))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

/// A system-like batch of `points` series: 20 metrics, gauges and counters, two
/// attributes per series; `round` moves the values (counters grow).
fn batch(points: usize, round: usize) -> Batch {
    let metrics: Vec<MetricDesc> = (0..20_u32)
        .map(|m| {
            let kind = if m.is_multiple_of(2) {
                MetricKind::Gauge
            } else {
                MetricKind::Counter
            };
            MetricDesc::new(&format!("bench.metric_{m}"), "By", kind, "a bench metric")
        })
        .collect();
    let mut b = BatchBuilder::new("bench", "h");
    for i in 0..points {
        let device = format!("device{}", i / 40);
        let direction = if i.is_multiple_of(2) { "read" } else { "write" };
        b.point(
            &metrics[i % 20],
            attrs([("device", &device), ("direction", direction)]),
            (i * 1000 + round) as f64,
        );
    }
    b.build()
}

fn exporter(protocol: &str, addr: SocketAddr) -> OtlpExporter {
    let config = Config::parse(
        &format!(
            "[export.otlp]\nprotocol = \"{protocol}\"\nendpoint = \"http://{addr}\"\ncompression = \"gzip\"\n"
        ),
        "bench",
    )
    .expect("bench config");
    OtlpExporter::new(&config.export, "bench-host").expect("exporter")
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let receivers = runtime.block_on(async {
        [
            ("grpc", grpc_receiver().await),
            ("http/protobuf", http_receiver().await),
        ]
    });
    let mut group = c.benchmark_group("otlp_export");
    group.sample_size(20);
    let mut results = Vec::new();
    for (protocol, addr) in receivers {
        let exporter = runtime.block_on(async { exporter(protocol, addr) });
        for points in [1_000, 10_000] {
            let rounds = [Arc::new(batch(points, 0)), Arc::new(batch(points, 1))];
            let mean = Mean::default();
            group.throughput(Throughput::Elements(points as u64));
            let id = BenchmarkId::new(protocol.replace('/', "_"), points);
            group.bench_function(id, |b| {
                let mut round = 0;
                b.iter_custom(|iterations| {
                    mean.time(iterations, || {
                        round += 1;
                        exporter.record(&rounds[round % 2]);
                        exporter.snapshot();
                        runtime
                            .block_on(exporter.send())
                            .expect("the receiver takes it")
                    })
                })
            });
            results.push((protocol, points, mean.per_second(points)));
        }
    }
    group.finish();
    println!("\nOTLP export (record + encode + gzip + send + answer), target 1 M datapoints/s:");
    for (protocol, points, rate) in results {
        println!(
            "  {protocol:>13} {points:>6} datapoints/batch: {}datapoints/s = {:.2}x the target",
            millions(rate),
            rate / TARGET
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
