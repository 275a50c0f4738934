//! `/metrics`: the latest value of every series in the OpenMetrics text format, for
//! people who scrape (histograms as cumulative `_bucket`s with `_sum` and `_count`). Names
//! follow the OpenTelemetry-to-Prometheus compatibility rules: `.` and other invalid
//! characters become `_`, the unit becomes a suffix (`By` -> `_bytes`, `s` ->
//! `_seconds`, `1` on gauges -> `_ratio`), counters end in `_total`.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::export::store::{Family, Value};
use crate::model::{Histogram, MetricKind};

/// The content type of what [`encode`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A metric or label name with every character Prometheus does not allow replaced by `_`.
pub fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// A label value escaped as the text format requires (`prometheus-client` writes
/// values as they are).
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn unit(otel_unit: &str, kind: MetricKind) -> Option<Unit> {
    match (otel_unit, kind) {
        ("By", _) => Some(Unit::Bytes),
        ("s", _) => Some(Unit::Seconds),
        ("1", MetricKind::Gauge) => Some(Unit::Other("ratio".to_owned())),
        _ => None,
    }
}

/// A histogram's current value: its `_bucket` (cumulative, `le`), `_sum` and `_count`.
struct ConstHistogram<'a>(&'a Histogram);

impl EncodeMetric for ConstHistogram<'_> {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let h = self.0;
        // prometheus-client writes the bound f64::MAX as `+Inf` and adds the counts up.
        let buckets: Vec<(f64, u64)> = h
            .bounds
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(h.bucket_counts.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// A scrape's worth of families, owned, so the registry can encode them.
#[derive(Debug)]
struct Families(Vec<Family>);

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (desc, points) in &self.0 {
            let name = sanitize(&desc.name);
            let unit = unit(&desc.unit, desc.kind);
            let counter = desc.kind == MetricKind::Counter;
            let metric_type = match desc.kind {
                MetricKind::Counter => MetricType::Counter,
                MetricKind::Histogram => MetricType::Histogram,
                _ => MetricType::Gauge,
            };
            let mut family =
                encoder.encode_descriptor(&name, &desc.description, unit.as_ref(), metric_type)?;
            for (attributes, value) in points {
                let labels: Vec<(String, String)> = attributes
                    .iter()
                    .map(|kv| (sanitize(kv.key.as_str()), escape(&kv.value.to_string())))
                    .collect();
                let point = family.encode_family(&labels)?;
                match value {
                    Value::Histogram(h) => ConstHistogram(h).encode(point)?,
                    Value::Number(n) if counter => ConstCounter::new(*n).encode(point)?,
                    Value::Number(n) => ConstGauge::new(*n).encode(point)?,
                }
            }
        }
        Ok(())
    }
}

/// Encodes `families` as OpenMetrics text.
pub fn encode(families: Vec<Family>) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families(families)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MetricDesc;
    use opentelemetry::KeyValue;

    #[test]
    fn names_units_and_labels_follow_prometheus_rules() {
        let families = vec![
            (
                MetricDesc::new(
                    "system.memory.usage",
                    "By",
                    MetricKind::UpDownCounter,
                    "mem",
                ),
                vec![(
                    vec![KeyValue::new("system.memory.state", "used")],
                    Value::Number(42.0),
                )],
            ),
            (
                MetricDesc::new(
                    "vigil.plugin.evaluations",
                    "{evaluation}",
                    MetricKind::Counter,
                    "n",
                ),
                vec![(
                    vec![KeyValue::new("vigil.plugin", "a\"b")],
                    Value::Number(3.0),
                )],
            ),
            (
                MetricDesc::new(
                    "http.server.request.duration",
                    "s",
                    MetricKind::Histogram,
                    "d",
                ),
                vec![(
                    vec![KeyValue::new("http.route", "/a")],
                    Value::Histogram(Histogram {
                        count: 4,
                        sum: 2.5,
                        bounds: vec![0.1, 1.0],
                        bucket_counts: vec![1, 2, 1],
                        min: None,
                        max: None,
                    }),
                )],
            ),
        ];
        let text = encode(families).unwrap();
        assert!(
            text.contains("system_memory_usage_bytes{system_memory_state=\"used\"} 42"),
            "{text}"
        );
        assert!(
            text.contains("vigil_plugin_evaluations_total{vigil_plugin=\"a\\\"b\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE vigil_plugin_evaluations counter"),
            "{text}"
        );
        for line in [
            "# TYPE http_server_request_duration_seconds histogram",
            "http_server_request_duration_seconds_bucket{le=\"0.1\",http_route=\"/a\"} 1",
            "http_server_request_duration_seconds_bucket{le=\"1.0\",http_route=\"/a\"} 3",
            "http_server_request_duration_seconds_bucket{le=\"+Inf\",http_route=\"/a\"} 4",
            "http_server_request_duration_seconds_sum{http_route=\"/a\"} 2.5",
            "http_server_request_duration_seconds_count{http_route=\"/a\"} 4",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn leading_digits_and_dots_are_replaced() {
        assert_eq!(
            sanitize("system.cpu.load_average.1m"),
            "system_cpu_load_average_1m"
        );
        assert_eq!(sanitize("1x"), "_1x");
    }
}
