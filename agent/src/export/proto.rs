//! OTLP messages built from vigil's own data with the `opentelemetry-proto` types:
//! each batch becomes datapoints stamped with its collection time (several points of a
//! series in one request are fine), each alert event a log record.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::alert::{AlertEvent, Transition};
use crate::config::ResourceAttribute;
use crate::model::{
    Attributes, Batch, MetricDesc, MetricKind, Origin, PointTime, Series, Severity,
};
use crate::tuning::decision::{Decision, Verdict};

/// A batch as it waits for export: the start time of each of its points, in
/// [`Batch::points`] then [`Batch::histogram_points`] order (`None` for gauges).
#[derive(Debug, Clone)]
pub struct StampedBatch {
    pub batch: Arc<Batch>,
    pub starts: Vec<Option<SystemTime>>,
}

/// Nanoseconds since the Unix epoch (0 for a time before it).
pub fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn string(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn double(key: &str, value: f64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::DoubleValue(value)),
        }),
        ..Default::default()
    }
}

fn attributes(attributes: &Attributes) -> Vec<KeyValue> {
    attributes
        .iter()
        .map(|(k, v)| string(k, v.clone()))
        .collect()
}

/// The resource every request describes, from its attributes
/// ([`crate::config::ExportSettings::resource_attributes`]).
pub fn resource(attributes: &[ResourceAttribute]) -> Resource {
    Resource {
        attributes: attributes
            .iter()
            .map(|a| string(&a.key, a.value.clone()))
            .collect(),
        ..Default::default()
    }
}

/// vigil's own instrumentation scope.
pub(super) fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "vigil".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

/// An empty metric of `kind`: a gauge, a cumulative sum (monotonic for counters) or a
/// cumulative histogram.
fn empty_metric(name: &str, unit: &str, description: &str, kind: MetricKind) -> Metric {
    let sum = |is_monotonic| {
        metric::Data::Sum(Sum {
            data_points: Vec::new(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic,
        })
    };
    Metric {
        name: name.to_owned(),
        description: description.to_owned(),
        unit: unit.to_owned(),
        data: Some(match kind {
            MetricKind::Gauge => metric::Data::Gauge(Gauge {
                data_points: Vec::new(),
            }),
            MetricKind::Counter => sum(true),
            MetricKind::UpDownCounter => sum(false),
            MetricKind::Histogram => metric::Data::Histogram(Histogram {
                data_points: Vec::new(),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        }),
        ..Default::default()
    }
}

fn push_point(metric: &mut Metric, point: NumberDataPoint) {
    match &mut metric.data {
        Some(metric::Data::Gauge(g)) => g.data_points.push(point),
        Some(metric::Data::Sum(s)) => s.data_points.push(point),
        _ => {}
    }
}

/// `starts`, then `None` for ever.
fn padded(starts: &[Option<SystemTime>]) -> impl Iterator<Item = Option<SystemTime>> + '_ {
    starts.iter().copied().chain(std::iter::repeat(None))
}

fn histogram_point(
    attrs: &Attributes,
    h: &crate::model::Histogram,
    start: u64,
    time: u64,
) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes: attributes(attrs),
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: h.count,
        sum: Some(h.sum),
        bucket_counts: h.bucket_counts.clone(),
        explicit_bounds: h.bounds.clone(),
        min: h.min,
        max: h.max,
        ..Default::default()
    }
}

/// One point of a request, borrowed from its batch, with the start and time it goes out
/// with (nanoseconds since the Unix epoch; start 0: none).
pub(super) struct PointRef<'a> {
    pub attributes: &'a Attributes,
    pub start: u64,
    pub time: u64,
    pub value: Value<'a>,
}

/// A point's value: a number (gauges and sums) or a histogram.
#[derive(Clone, Copy)]
pub(super) enum Value<'a> {
    Number(f64),
    Histogram(&'a crate::model::Histogram),
}

/// One metric of a request and its points, in order.
pub(super) struct MetricPoints<'a> {
    pub desc: &'a MetricDesc,
    pub points: Vec<PointRef<'a>>,
}

impl MetricPoints<'_> {
    fn to_message(&self) -> Metric {
        let desc = self.desc;
        let mut metric = empty_metric(&desc.name, &desc.unit, &desc.description, desc.kind);
        for point in &self.points {
            match point.value {
                Value::Number(value) => push_point(
                    &mut metric,
                    NumberDataPoint {
                        attributes: attributes(point.attributes),
                        start_time_unix_nano: point.start,
                        time_unix_nano: point.time,
                        value: Some(number_data_point::Value::AsDouble(value)),
                        ..Default::default()
                    },
                ),
                Value::Histogram(h) => {
                    if let Some(metric::Data::Histogram(histogram)) = &mut metric.data {
                        histogram.data_points.push(histogram_point(
                            point.attributes,
                            h,
                            point.start,
                            point.time,
                        ));
                    }
                }
            }
        }
        metric
    }
}

/// The metrics of one resource and scope, each appearing once, in order of first appearance.
#[derive(Default)]
pub(super) struct Metrics<'a> {
    pub metrics: Vec<MetricPoints<'a>>,
    index: HashMap<(&'a str, MetricKind), usize>,
}

impl<'a> Metrics<'a> {
    /// Where the metric `desc` describes is, added without points on first use.
    fn slot(&mut self, desc: &'a MetricDesc) -> usize {
        *self
            .index
            .entry((desc.name.as_str(), desc.kind))
            .or_insert_with(|| {
                self.metrics.push(MetricPoints {
                    desc,
                    points: Vec::new(),
                });
                self.metrics.len() - 1
            })
    }

    /// Adds every point of `stamped` (a received batch has no starts of export's making:
    /// it carries the sender's), each stamped with its batch's collection time, or
    /// for a received batch with the sender's own start and time.
    fn add(&mut self, stamped: &'a StampedBatch) {
        let batch = &stamped.batch;
        let time = unix_nanos(batch.timestamp);
        let (value_starts, histogram_starts) = stamped
            .starts
            .split_at(batch.values.len().min(stamped.starts.len()));
        let received = batch.received.as_deref();
        // Each of the batch's metrics looked up once, not once per point.
        self.index.reserve(batch.metrics.len());
        let slots: Vec<usize> = batch.metrics.iter().map(|d| self.slot(d)).collect();
        let values = batch.values.iter().map(|v| Value::Number(*v));
        let times = received.map(|r| r.values.as_slice());
        self.add_points(&slots, &batch.series, values, value_starts, times, time);
        let histograms = batch.histograms.iter().map(Value::Histogram);
        let times = received.map(|r| r.histograms.as_slice());
        self.add_points(
            &slots,
            &batch.histogram_series,
            histograms,
            histogram_starts,
            times,
            time,
        );
    }

    /// Adds the points of `series` with their `values`: a received point with its sender's
    /// start and time (`times`), a collected one with its start and the batch's `time`.
    fn add_points(
        &mut self,
        slots: &[usize],
        series: &'a [Series],
        values: impl Iterator<Item = Value<'a>>,
        starts: &[Option<SystemTime>],
        times: Option<&[PointTime]>,
        time: u64,
    ) {
        for (i, ((series, value), start)) in
            series.iter().zip(values).zip(padded(starts)).enumerate()
        {
            let (start, time) = match times.and_then(|t| t.get(i)) {
                Some(sent) => (sent.start.map_or(0, unix_nanos), unix_nanos(sent.time)),
                None => (start.map_or(0, unix_nanos), time),
            };
            self.metrics[slots[series.metric as usize]]
                .points
                .push(PointRef {
                    attributes: &series.attributes,
                    start,
                    time,
                    value,
                });
        }
    }
}

/// Every point of one metrics request, grouped by resource and scope: collected batches
/// under vigil's own (`None`), received batches under their sender's, in order of first
/// appearance. A group without points is left out, unless it is the only one.
pub(super) struct Layout<'a> {
    pub groups: Vec<(Option<&'a Origin>, Metrics<'a>)>,
}

impl<'a> Layout<'a> {
    pub fn new(batches: impl IntoIterator<Item = &'a StampedBatch>) -> Self {
        // Groups by origin (`None`: vigil's own), in order of first appearance.
        let mut groups: Vec<(Option<&'a Arc<Origin>>, Metrics<'a>)> =
            vec![(None, Metrics::default())];
        for stamped in batches {
            let origin = stamped.batch.received.as_ref().map(|r| &r.origin);
            let same = |a: &Arc<Origin>, b: &Arc<Origin>| Arc::ptr_eq(a, b) || **a == **b;
            let at = groups.iter().position(|(o, _)| match (o, origin) {
                (None, None) => true,
                (Some(a), Some(b)) => same(a, b),
                _ => false,
            });
            let at = at.unwrap_or_else(|| {
                groups.push((origin, Metrics::default()));
                groups.len() - 1
            });
            groups[at].1.add(stamped);
        }
        let only_own = groups.len() == 1;
        let groups = groups
            .into_iter()
            .filter(|(origin, metrics)| {
                !metrics.metrics.is_empty() || (origin.is_none() && only_own)
            })
            .map(|(origin, metrics)| (origin.map(|o| &**o), metrics))
            .collect();
        Layout { groups }
    }
}

/// One metrics request holding every point of `batches`: collected batches under
/// `resource` and vigil's scope, each point stamped with its batch's collection time;
/// received batches under their sender's resource and scope, with the sender's times.
/// A metric appears once per resource and scope, with the points of all batches in order.
/// ([`super::wire::metrics_request`] encodes the same request without building it.)
pub fn metrics_request<'a>(
    resource: &Resource,
    batches: impl IntoIterator<Item = &'a StampedBatch>,
) -> ExportMetricsServiceRequest {
    let layout = Layout::new(batches);
    let resource_metrics = layout
        .groups
        .iter()
        .map(|(origin, metrics)| ResourceMetrics {
            resource: Some(origin.map_or(resource, |o| &o.resource).clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(origin.map_or_else(scope, |o| o.scope.clone())),
                metrics: metrics
                    .metrics
                    .iter()
                    .map(MetricPoints::to_message)
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest { resource_metrics }
}

/// An alert event as a log record (event name `vigil.alert`): firing alerts by their
/// severity, resolved and cancelled ones as INFO.
pub fn alert_record(event: &AlertEvent) -> LogRecord {
    let alert = &event.alert;
    let (number, text) = match (event.transition, alert.severity) {
        (Transition::Resolved | Transition::Cancelled, _) => (SeverityNumber::Info, "INFO"),
        (_, Severity::Info) => (SeverityNumber::Info, "INFO"),
        (_, Severity::Warning) => (SeverityNumber::Warn, "WARN"),
        (_, Severity::Critical) => (SeverityNumber::Error, "ERROR"),
    };
    let mut attrs = vec![
        string("vigil.alert.state", event.transition.as_str()),
        string("vigil.alert.rule", alert.key.rule.clone()),
        string("vigil.alert.key", alert.key.key.clone()),
        string("vigil.alert.severity", alert.severity.as_str()),
        string("vigil.alert.summary", alert.summary.clone()),
        string("vigil.alert.source", alert.source.clone()),
        string("vigil.plugin", alert.key.plugin.clone()),
    ];
    if let Some(reason) = &event.reason {
        attrs.push(string("vigil.alert.reason", reason.clone()));
    }
    if let Some(value) = alert.value {
        attrs.push(double("vigil.alert.value", value));
    }
    for (key, value) in &alert.labels {
        attrs.push(string(&format!("vigil.alert.label.{key}"), value.clone()));
    }
    LogRecord {
        time_unix_nano: unix_nanos(event.at),
        observed_time_unix_nano: unix_nanos(SystemTime::now()),
        severity_number: number as i32,
        severity_text: text.to_owned(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(format!(
                "alert {} {}: {}",
                alert.key.rule,
                event.transition.as_str(),
                alert.summary
            ))),
        }),
        attributes: attrs,
        event_name: "vigil.alert".to_owned(),
        ..Default::default()
    }
}

/// A tuning decision as a log record (event name `vigil.tuning.decision`): applied changes
/// and reverts as WARN (a server setting changed), failures as ERROR, the rest as INFO.
pub fn decision_record(decision: &Decision) -> LogRecord {
    let (number, text) = match decision.verdict {
        Verdict::Failed => (SeverityNumber::Error, "ERROR"),
        Verdict::Applied => (SeverityNumber::Warn, "WARN"),
        _ => (SeverityNumber::Info, "INFO"),
    };
    LogRecord {
        time_unix_nano: unix_nanos(decision.time),
        observed_time_unix_nano: unix_nanos(SystemTime::now()),
        severity_number: number as i32,
        severity_text: text.to_owned(),
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(decision.summary())),
        }),
        attributes: decision
            .attributes()
            .into_iter()
            .map(|(key, value)| string(key, value))
            .collect(),
        event_name: "vigil.tuning.decision".to_owned(),
        ..Default::default()
    }
}

/// One logs request holding `records`.
pub fn logs_request(resource: &Resource, records: Vec<LogRecord>) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(resource.clone()),
            scope_logs: vec![ScopeLogs {
                scope: Some(scope()),
                log_records: records,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::{BatchBuilder, MetricDesc, attrs};

    #[test]
    fn every_batch_keeps_its_time_and_a_metric_appears_once() {
        let load = MetricDesc::new("load", "1", MetricKind::Gauge, "load");
        let calls = MetricDesc::new("calls", "{call}", MetricKind::Counter, "calls");
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let stamped = |s: u64, value: f64| {
            let mut b = BatchBuilder::new("src", "h");
            b.point(&load, attrs([("k", "v")]), value)
                .point(&calls, vec![], value * 10.0);
            let mut batch = b.build();
            batch.timestamp = t0 + Duration::from_secs(s);
            StampedBatch {
                batch: Arc::new(batch),
                starts: vec![None, Some(t0)],
            }
        };
        let batches = [stamped(0, 1.0), stamped(2, 2.0)];
        let request = metrics_request(&resource(&[]), &batches);
        let metrics = &request.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 2);
        let Some(metric::Data::Gauge(gauge)) = &metrics[0].data else {
            panic!("load is a gauge: {:?}", metrics[0]);
        };
        let times: Vec<u64> = gauge.data_points.iter().map(|p| p.time_unix_nano).collect();
        assert_eq!(times, [1_000_000_000_000, 1_002_000_000_000]);
        assert!(
            gauge
                .data_points
                .iter()
                .all(|p| p.start_time_unix_nano == 0)
        );
        let Some(metric::Data::Sum(sum)) = &metrics[1].data else {
            panic!("calls is a sum: {:?}", metrics[1]);
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert!(
            sum.data_points
                .iter()
                .all(|p| p.start_time_unix_nano == 1_000_000_000_000)
        );
        assert_eq!(
            sum.data_points[1].value,
            Some(number_data_point::Value::AsDouble(20.0))
        );
    }

    #[test]
    fn histograms_go_out_as_cumulative_histograms_with_their_start() {
        let duration = MetricDesc::new(
            "http.server.request.duration",
            "s",
            MetricKind::Histogram,
            "d",
        );
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut b = BatchBuilder::new("src", "h");
        b.histogram(
            &duration,
            attrs([("http.route", "/a")]),
            crate::model::Histogram {
                count: 3,
                sum: 0.9,
                bounds: vec![0.1, 0.5],
                bucket_counts: vec![1, 1, 1],
                min: Some(0.05),
                max: Some(0.6),
            },
        );
        let mut batch = b.build();
        batch.timestamp = t0 + Duration::from_secs(5);
        let stamped = StampedBatch {
            batch: Arc::new(batch),
            starts: vec![Some(t0)],
        };
        let request = metrics_request(&resource(&[]), [&stamped]);
        let metric = &request.resource_metrics[0].scope_metrics[0].metrics[0];
        assert_eq!(
            (metric.name.as_str(), metric.unit.as_str()),
            ("http.server.request.duration", "s")
        );
        let Some(metric::Data::Histogram(h)) = &metric.data else {
            panic!("a histogram: {metric:?}");
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let p = &h.data_points[0];
        assert_eq!(
            (p.count, p.sum, p.min, p.max),
            (3, Some(0.9), Some(0.05), Some(0.6))
        );
        assert_eq!(
            (p.bucket_counts.as_slice(), p.explicit_bounds.as_slice()),
            (&[1, 1, 1][..], &[0.1, 0.5][..])
        );
        assert_eq!(
            (p.start_time_unix_nano, p.time_unix_nano),
            (1_000_000_000_000, 1_005_000_000_000)
        );
    }
}
