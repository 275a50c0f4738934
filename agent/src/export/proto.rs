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
    AggregationTemporality, Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use crate::alert::{AlertEvent, Transition};
use crate::config::ResourceAttribute;
use crate::model::{Attributes, Batch, MetricKind, Severity};
use crate::tuning::decision::{Decision, Verdict};

/// A batch as it waits for export: the start time of each of its points, in
/// [`Batch::points`] order (`None` for gauges).
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

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "vigil".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

/// An empty metric of `kind`: a gauge, or a cumulative sum (monotonic for counters).
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

/// One metrics request holding every point of `batches`, each stamped with its batch's
/// collection time; a metric appears once, with the points of all batches in order.
pub fn metrics_request<'a>(
    resource: &Resource,
    batches: impl IntoIterator<Item = &'a StampedBatch>,
) -> ExportMetricsServiceRequest {
    let mut metrics: Vec<Metric> = Vec::new();
    let mut index: HashMap<(&str, MetricKind), usize> = HashMap::new();
    for stamped in batches {
        let batch: &'a Batch = &stamped.batch;
        let time = unix_nanos(batch.timestamp);
        // Where each of the batch's metrics goes, looked up once per metric, not per point.
        let slots: Vec<usize> = batch
            .metrics
            .iter()
            .map(|desc| {
                *index
                    .entry((desc.name.as_str(), desc.kind))
                    .or_insert_with(|| {
                        metrics.push(empty_metric(
                            &desc.name,
                            &desc.unit,
                            &desc.description,
                            desc.kind,
                        ));
                        metrics.len() - 1
                    })
            })
            .collect();
        let points = batch.series.iter().zip(&batch.values).zip(&stamped.starts);
        for ((series, value), start) in points {
            push_point(
                &mut metrics[slots[series.metric as usize]],
                NumberDataPoint {
                    attributes: attributes(&series.attributes),
                    start_time_unix_nano: start.map_or(0, unix_nanos),
                    time_unix_nano: time,
                    value: Some(number_data_point::Value::AsDouble(*value)),
                    ..Default::default()
                },
            );
        }
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
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
}
