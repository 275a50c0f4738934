//! OTLP datapoints received, passed through a plugin and re-exported, on one core: the
//! protobuf request decoded, turned into batches, evaluated by the `threshold` plugin
//! (built from source), and the export request built and encoded — everything the agent
//! does with a received request but the sockets.
//!
//! The target is 1 M datapoints/s. The OpenTelemetry Collector's published sizing is about
//! 2.5 % of a core per 1k datapoints/s, i.e. ~40k datapoints/s per core; the bench prints
//! its own rate as ratios to both.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use vigil::config::Config;
use vigil::export::proto::{StampedBatch, resource};
use vigil::export::wire::metrics_request;
use vigil::plugin::{PluginInstance, PluginLimits, PluginRuntime};
use vigil::receive::to_batches;
use vigil_testkit::plugins::THRESHOLD;

/// Series of each kind per request: as many request counters as duration histograms.
const SERIES: usize = 500;
const TARGET_PER_SECOND: f64 = 1_000_000.0;
/// The OpenTelemetry Collector: ~2.5 % of a core per 1k datapoints/s.
const COLLECTOR_PER_CORE: f64 = 1_000.0 / 0.025;

const SETTINGS: &str =
    r#"{"rules":[{"name":"many-requests","metric":"app.requests","op":">","value":1e12}]}"#;

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An SDK-like export: `SERIES` cumulative request counters and as many duration
/// histograms (11 buckets), one per route, at `round`.
fn request(round: u64) -> ExportMetricsServiceRequest {
    let start = 1_700_000_000_000_000_000;
    let time = start + round * 10_000_000_000;
    let route = |i: usize| vec![string("http.route", &format!("/api/v1/items/{i}"))];
    let counters = (0..SERIES)
        .map(|i| NumberDataPoint {
            attributes: route(i),
            start_time_unix_nano: start,
            time_unix_nano: time,
            value: Some(number_data_point::Value::AsInt(
                (round * 100 + i as u64) as i64,
            )),
            ..Default::default()
        })
        .collect();
    let histograms = (0..SERIES)
        .map(|i| {
            let bucket_counts: Vec<u64> = (0..11).map(|b| round + ((i + b) % 7) as u64).collect();
            HistogramDataPoint {
                attributes: route(i),
                start_time_unix_nano: start,
                time_unix_nano: time,
                count: bucket_counts.iter().sum(),
                sum: Some(round as f64 * 1.5),
                bucket_counts,
                explicit_bounds: vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
                ..Default::default()
            }
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![
                    string("service.name", "shop"),
                    string("telemetry.sdk.language", "python"),
                ],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "shop.http".into(),
                    ..Default::default()
                }),
                metrics: vec![
                    Metric {
                        name: "app.requests".into(),
                        unit: "{request}".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: counters,
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "http.server.request.duration".into(),
                        unit: "s".into(),
                        data: Some(metric::Data::Histogram(Histogram {
                            data_points: histograms,
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// One received request through the agent: decoded, converted, evaluated, re-encoded.
/// Returns the datapoints taken and the export request's size.
fn receive_once(body: &[u8], plugin: &mut PluginInstance, own: &Resource) -> (usize, usize) {
    let request = ExportMetricsServiceRequest::decode(body).expect("decodes");
    let converted = to_batches(request, "bench-host");
    let mut stamped = Vec::with_capacity(converted.batches.len());
    for batch in converted.batches {
        plugin.evaluate(&batch).expect("evaluates");
        stamped.push(StampedBatch {
            batch: Arc::new(batch),
            starts: Vec::new(),
        });
    }
    // As the agent sends it over OTLP/HTTP: encoded straight from the batches.
    let out = metrics_request(own, &stamped);
    (converted.accepted as usize, out.len())
}

fn bench(c: &mut Criterion) {
    let config = Config::default_embedded().expect("embedded config");
    let runtime = PluginRuntime::new(PluginLimits::from_config(&config.plugins)).expect("runtime");
    let mut plugin =
        PluginInstance::load(&runtime, THRESHOLD.as_ref(), "threshold", SETTINGS.into())
            .expect("threshold plugin loads");
    let own = resource(&[]);
    // Rounds alternate, as an application's exports do: same series, new values.
    let bodies: Vec<Vec<u8>> = (1..=2).map(|r| request(r).encode_to_vec()).collect();
    let points = 2 * SERIES;

    // The headline figure, measured plainly over a few seconds.
    let started = Instant::now();
    let mut taken = 0usize;
    let mut round = 0usize;
    while started.elapsed() < Duration::from_secs(3) {
        round += 1;
        taken += receive_once(&bodies[round % 2], &mut plugin, &own).0;
    }
    let rate = taken as f64 / started.elapsed().as_secs_f64();
    println!(
        "otlp_receive: {:.2} M datapoints/s received, evaluated and re-exported on one core \
         ({points} per request, {} bytes in): {:.2}x the 1 M/s target, {:.1}x the OpenTelemetry \
         Collector's ~{:.0}k/s per core (2.5 % of a core per 1k datapoints/s)",
        rate / 1e6,
        bodies[0].len(),
        rate / TARGET_PER_SECOND,
        rate / COLLECTOR_PER_CORE,
        COLLECTOR_PER_CORE / 1e3,
    );

    let mut group = c.benchmark_group("otlp_receive");
    group.throughput(Throughput::Elements(points as u64));
    group.bench_function("decode_convert_evaluate_export", |b| {
        let mut round = 0;
        b.iter(|| {
            round += 1;
            receive_once(&bodies[round % 2], &mut plugin, &own)
        })
    });
    group.bench_function("decode_convert", |b| {
        let mut round = 0;
        b.iter(|| {
            round += 1;
            let request =
                ExportMetricsServiceRequest::decode(bodies[round % 2].as_slice()).expect("decodes");
            to_batches(request, "bench-host").accepted
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
