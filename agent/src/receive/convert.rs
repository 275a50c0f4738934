//! OTLP metrics into batches: one batch per resource and scope, from source
//! `otlp:<service.name>`, with the sender's resource, scope and point times kept for
//! export. Gauges, cumulative sums and cumulative explicit-bucket histograms are taken;
//! every other point is refused with a reason, and counted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, HistogramDataPoint, NumberDataPoint, metric, number_data_point,
};

use crate::model::{
    Attributes, Batch, BatchBuilder, Histogram, MetricDesc, MetricKind, Origin, PointTime, Received,
};

/// Why a received point was not taken (the `reason` of `vigil.receive.refused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refused {
    /// Exponential histograms have no place in the model (explicit buckets only).
    ExponentialHistogram,
    /// Summaries (precomputed quantiles) cannot be aggregated or judged again.
    Summary,
    /// Delta sums and histograms: vigil keeps cumulative series.
    Delta,
    /// A histogram whose buckets do not match its bounds or count, or has no sum.
    InvalidHistogram,
    /// A point without a value (or flagged as having none), or a NaN/infinite one.
    NoValue,
    /// A metric without data or a name.
    Empty,
}

impl Refused {
    /// The reason as counted and reported.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::ExponentialHistogram => "exponential_histogram",
            Refused::Summary => "summary",
            Refused::Delta => "delta_temporality",
            Refused::InvalidHistogram => "invalid_histogram",
            Refused::NoValue => "no_value",
            Refused::Empty => "empty_metric",
        }
    }

    /// What the sender can do about it.
    fn advice(self) -> &'static str {
        match self {
            Refused::ExponentialHistogram => {
                "exponential histograms are not supported: use explicit-bucket histograms (the SDK's default aggregation)"
            }
            Refused::Summary => "summaries are not supported: send histograms",
            Refused::Delta => {
                "delta temporality is not supported: set the exporter's temporality preference to cumulative"
            }
            Refused::InvalidHistogram => {
                "histograms need a sum, ascending bounds and one bucket count more than bounds, adding up to the count"
            }
            Refused::NoValue => "points need a finite value",
            Refused::Empty => "metrics need a name and data",
        }
    }
}

/// What one request became.
#[derive(Debug, Default)]
pub struct Converted {
    pub batches: Vec<Batch>,
    /// Datapoints taken.
    pub accepted: u64,
    /// Datapoints refused, by reason.
    pub refused: BTreeMap<Refused, u64>,
}

impl Converted {
    /// Datapoints refused in all.
    pub fn refused_total(&self) -> u64 {
        self.refused.values().sum()
    }

    /// The partial-success message for the sender: what was refused and why.
    pub fn refusal_message(&self) -> String {
        self.refused
            .iter()
            .map(|(reason, count)| format!("{count} {} ({})", reason.as_str(), reason.advice()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn refuse(&mut self, reason: Refused, points: usize) {
        if points > 0 {
            *self.refused.entry(reason).or_default() += points as u64;
        }
    }
}

/// The value of an OTLP attribute as text (strings as they are, other scalars printed,
/// arrays and maps as their debug form).
fn text(value: &Option<AnyValue>) -> String {
    match value.as_ref().and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
    }
}

/// The value of an OTLP attribute as text, taking a string as it is (no copy).
fn into_text(value: Option<AnyValue>) -> String {
    match value.and_then(|v| v.value) {
        Some(any_value::Value::StringValue(s)) => s,
        other => text(&other.map(|value| AnyValue { value: Some(value) })),
    }
}

/// A point's attributes, their strings moved out of the request.
fn attributes(attributes: Vec<KeyValue>) -> Attributes {
    attributes
        .into_iter()
        .map(|kv| (kv.key, into_text(kv.value)))
        .collect()
}

/// A time in nanoseconds since the Unix epoch; 0 (unset) is `None`.
fn time(nanos: u64) -> Option<SystemTime> {
    (nanos != 0).then(|| UNIX_EPOCH + Duration::from_nanos(nanos))
}

/// The source name for a resource: `otlp:` and its `service.name`
/// (`unknown_service` without one, as the SDKs say).
fn source(resource_attributes: &[KeyValue]) -> String {
    let service = resource_attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .map(|kv| text(&kv.value))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown_service".to_owned());
    format!("otlp:{service}")
}

fn number(point: &NumberDataPoint) -> Option<f64> {
    // Bit 0 of the flags: no recorded value (a series that went stale).
    if point.flags & 1 != 0 {
        return None;
    }
    let value = match point.value? {
        number_data_point::Value::AsDouble(d) => d,
        number_data_point::Value::AsInt(i) => i as f64,
    };
    value.is_finite().then_some(value)
}

/// The histogram of a point, its buckets moved out of the request; `None` when invalid.
fn histogram(point: &mut HistogramDataPoint) -> Option<Histogram> {
    let h = Histogram {
        count: point.count,
        sum: point.sum?,
        bounds: std::mem::take(&mut point.explicit_bounds),
        bucket_counts: std::mem::take(&mut point.bucket_counts),
        min: point.min,
        max: point.max,
    };
    h.problem().is_none().then_some(h)
}

/// Builds one batch of a resource and scope.
struct Building {
    builder: BatchBuilder,
    values: Vec<PointTime>,
    histograms: Vec<PointTime>,
    latest: Option<SystemTime>,
}

impl Building {
    fn stamp(&mut self, start: u64, at: u64) -> PointTime {
        let point = PointTime {
            start: time(start),
            time: time(at).unwrap_or_else(SystemTime::now),
        };
        self.latest = self.latest.max(Some(point.time));
        point
    }

    fn number(&mut self, desc: &MetricDesc, point: NumberDataPoint, out: &mut Converted) {
        let Some(value) = number(&point) else {
            return out.refuse(Refused::NoValue, 1);
        };
        let stamp = self.stamp(point.start_time_unix_nano, point.time_unix_nano);
        self.builder
            .point(desc, attributes(point.attributes), value);
        self.values.push(stamp);
        out.accepted += 1;
    }

    fn histogram(&mut self, desc: &MetricDesc, mut point: HistogramDataPoint, out: &mut Converted) {
        if point.flags & 1 != 0 {
            return out.refuse(Refused::NoValue, 1);
        }
        let Some(h) = histogram(&mut point) else {
            return out.refuse(Refused::InvalidHistogram, 1);
        };
        let stamp = self.stamp(point.start_time_unix_nano, point.time_unix_nano);
        self.builder
            .histogram(desc, attributes(point.attributes), h);
        self.histograms.push(stamp);
        out.accepted += 1;
    }
}

/// Converts one OTLP request into batches from `host`.
pub fn to_batches(request: ExportMetricsServiceRequest, host: &str) -> Converted {
    let mut out = Converted::default();
    for resource_metrics in request.resource_metrics {
        let resource = resource_metrics.resource.unwrap_or_default();
        let source = source(&resource.attributes);
        for scope_metrics in resource_metrics.scope_metrics {
            let origin = Arc::new(Origin {
                resource: resource.clone(),
                scope: scope_metrics.scope.unwrap_or_default(),
            });
            let mut building = Building {
                builder: BatchBuilder::new(source.clone(), host),
                values: Vec::new(),
                histograms: Vec::new(),
                latest: None,
            };
            for m in scope_metrics.metrics {
                convert_metric(m, &mut building, &mut out);
            }
            let Building {
                builder,
                values,
                histograms,
                latest,
            } = building;
            let mut batch = builder.build();
            if batch.is_empty() {
                continue;
            }
            batch.timestamp = latest.unwrap_or_else(SystemTime::now);
            batch.received = Some(Box::new(Received {
                origin,
                values,
                histograms,
            }));
            out.batches.push(batch);
        }
    }
    out
}

fn convert_metric(
    m: opentelemetry_proto::tonic::metrics::v1::Metric,
    building: &mut Building,
    out: &mut Converted,
) {
    let cumulative = |temporality: i32| temporality == AggregationTemporality::Cumulative as i32;
    let Some(data) = m.data else {
        return out.refuse(Refused::Empty, 1);
    };
    if m.name.is_empty() {
        let points = match &data {
            metric::Data::Gauge(g) => g.data_points.len(),
            metric::Data::Sum(s) => s.data_points.len(),
            metric::Data::Histogram(h) => h.data_points.len(),
            metric::Data::ExponentialHistogram(h) => h.data_points.len(),
            metric::Data::Summary(s) => s.data_points.len(),
        };
        return out.refuse(Refused::Empty, points.max(1));
    }
    let desc = |kind| MetricDesc {
        name: m.name,
        unit: m.unit,
        kind,
        description: m.description,
    };
    match data {
        metric::Data::Gauge(gauge) => {
            let desc = desc(MetricKind::Gauge);
            for point in gauge.data_points {
                building.number(&desc, point, out);
            }
        }
        metric::Data::Sum(sum) if cumulative(sum.aggregation_temporality) => {
            let desc = desc(if sum.is_monotonic {
                MetricKind::Counter
            } else {
                MetricKind::UpDownCounter
            });
            for point in sum.data_points {
                building.number(&desc, point, out);
            }
        }
        metric::Data::Histogram(h) if cumulative(h.aggregation_temporality) => {
            let desc = desc(MetricKind::Histogram);
            for point in h.data_points {
                building.histogram(&desc, point, out);
            }
        }
        metric::Data::Sum(sum) => out.refuse(Refused::Delta, sum.data_points.len()),
        metric::Data::Histogram(h) => out.refuse(Refused::Delta, h.data_points.len()),
        metric::Data::ExponentialHistogram(h) => {
            out.refuse(Refused::ExponentialHistogram, h.data_points.len())
        }
        metric::Data::Summary(s) => out.refuse(Refused::Summary, s.data_points.len()),
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Metric, ResourceMetrics,
        ScopeMetrics, Sum, Summary, SummaryDataPoint,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn metric(name: &str, data: metric::Data) -> Metric {
        Metric {
            name: name.into(),
            unit: "s".into(),
            data: Some(data),
            ..Default::default()
        }
    }

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", any_value::Value::StringValue("shop".into())),
                        kv("process.pid", any_value::Value::IntValue(42)),
                    ],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "shop.http".into(),
                        ..Default::default()
                    }),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    const T0: u64 = 1_700_000_000_000_000_000;

    fn duration_histogram(temporality: AggregationTemporality, counts: Vec<u64>) -> metric::Data {
        metric::Data::Histogram(opentelemetry_proto::tonic::metrics::v1::Histogram {
            data_points: vec![HistogramDataPoint {
                attributes: vec![kv("http.route", any_value::Value::StringValue("/a".into()))],
                start_time_unix_nano: T0,
                time_unix_nano: T0 + 5,
                count: counts.iter().sum(),
                sum: Some(1.25),
                bucket_counts: counts,
                explicit_bounds: vec![0.1, 0.5],
                ..Default::default()
            }],
            aggregation_temporality: temporality as i32,
        })
    }

    #[test]
    fn gauges_sums_and_histograms_become_one_batch_per_scope_with_their_times() {
        let gauge = metric::Data::Gauge(Gauge {
            data_points: vec![NumberDataPoint {
                time_unix_nano: T0 + 7,
                value: Some(number_data_point::Value::AsInt(3)),
                ..Default::default()
            }],
        });
        let sum = metric::Data::Sum(Sum {
            data_points: vec![NumberDataPoint {
                start_time_unix_nano: T0,
                time_unix_nano: T0 + 7,
                value: Some(number_data_point::Value::AsDouble(9.5)),
                ..Default::default()
            }],
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        });
        let out = to_batches(
            request(vec![
                metric("queue", gauge),
                metric("requests", sum),
                metric(
                    "http.server.request.duration",
                    duration_histogram(AggregationTemporality::Cumulative, vec![2, 1, 1]),
                ),
            ]),
            "h",
        );
        assert_eq!((out.accepted, out.refused_total()), (3, 0));
        let batch = &out.batches[0];
        assert_eq!(batch.source, "otlp:shop");
        assert_eq!(batch.values, [3.0, 9.5]);
        assert_eq!(batch.metrics[1].kind, MetricKind::Counter);
        let (desc, attrs, h) = batch.histogram_points().next().unwrap();
        assert_eq!(desc.kind, MetricKind::Histogram);
        assert_eq!(attrs, &crate::model::attrs([("http.route", "/a")]));
        assert_eq!((h.count, h.bucket_counts.clone()), (4, vec![2, 1, 1]));
        let received = batch.received.as_ref().unwrap();
        assert_eq!(received.origin.scope.name, "shop.http");
        assert_eq!(received.origin.resource.attributes.len(), 2);
        assert_eq!(received.values[0].start, None, "the gauge has no start");
        assert_eq!(received.values[1].start, time(T0));
        assert_eq!(received.histograms[0].time, time(T0 + 5).unwrap());
        assert_eq!(
            batch.timestamp,
            time(T0 + 7).unwrap(),
            "the latest point time"
        );
    }

    #[test]
    fn what_the_model_cannot_hold_is_refused_with_a_reason() {
        let out = to_batches(
            request(vec![
                metric(
                    "exp",
                    metric::Data::ExponentialHistogram(ExponentialHistogram {
                        data_points: vec![ExponentialHistogramDataPoint::default(); 2],
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    }),
                ),
                metric(
                    "summary",
                    metric::Data::Summary(Summary {
                        data_points: vec![SummaryDataPoint::default()],
                    }),
                ),
                metric(
                    "delta",
                    duration_histogram(AggregationTemporality::Delta, vec![1, 1, 1]),
                ),
                metric(
                    "bad",
                    duration_histogram(AggregationTemporality::Cumulative, vec![1, 1]),
                ),
                metric(
                    "nan",
                    metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            value: Some(number_data_point::Value::AsDouble(f64::NAN)),
                            ..Default::default()
                        }],
                    }),
                ),
            ]),
            "h",
        );
        assert!(out.batches.is_empty(), "nothing was taken: no batch");
        assert_eq!(out.accepted, 0);
        let reasons: Vec<(&str, u64)> = out.refused.iter().map(|(r, n)| (r.as_str(), *n)).collect();
        assert_eq!(
            reasons,
            [
                ("exponential_histogram", 2),
                ("summary", 1),
                ("delta_temporality", 1),
                ("invalid_histogram", 1),
                ("no_value", 1)
            ]
        );
        assert!(
            out.refusal_message()
                .contains("2 exponential_histogram (exponential histograms are not supported")
        );
    }
}
