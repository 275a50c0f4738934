//! Metric batches: the data type every stage shares.

use std::sync::OnceLock;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// How a metric's value behaves over time (mirrors OpenTelemetry instrument kinds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MetricKind {
    /// A sampled value that can go up and down.
    Gauge,
    /// A monotonic cumulative total.
    Counter,
    /// A non-monotonic cumulative total.
    UpDownCounter,
    /// A cumulative explicit-bucket histogram; its points are [`Batch::histograms`].
    Histogram,
}

/// A metric's identity: semantic-convention name, UCUM unit and kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MetricDesc {
    pub name: String,
    pub unit: String,
    pub kind: MetricKind,
    pub description: String,
}

impl MetricDesc {
    /// A description from static parts (what collectors use).
    pub fn new(name: &str, unit: &str, kind: MetricKind, description: &str) -> Self {
        MetricDesc {
            name: name.to_owned(),
            unit: unit.to_owned(),
            kind,
            description: description.to_owned(),
        }
    }
}

/// Attributes of a series, as ordered key/value pairs.
pub type Attributes = Vec<(String, String)>;

/// One time series in a batch: an index into [`Batch::metrics`] and its attributes.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub metric: u32,
    pub attributes: Attributes,
}

/// One explicit-bucket histogram point, cumulative since its series started.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Number of observations.
    pub count: u64,
    /// Sum of the observations.
    pub sum: f64,
    /// Upper bounds of the buckets, strictly ascending; the last bucket (to +Inf) has none.
    pub bounds: Vec<f64>,
    /// Observations per bucket: `bounds.len() + 1` entries adding up to `count`.
    pub bucket_counts: Vec<u64>,
    /// Smallest observation, when the source knows it.
    pub min: Option<f64>,
    /// Largest observation, when the source knows it.
    pub max: Option<f64>,
}

impl Histogram {
    /// What is wrong with the point, if anything: its buckets must match its bounds and
    /// count, its bounds ascend, its numbers be finite.
    pub fn problem(&self) -> Option<&'static str> {
        if self.bucket_counts.len() != self.bounds.len() + 1 {
            return Some("bucket counts must number one more than the bounds");
        }
        if self.bounds.iter().any(|b| !b.is_finite()) || !self.sum.is_finite() {
            return Some("bounds and sum must be finite numbers");
        }
        if self.bounds.windows(2).any(|w| w[0] >= w[1]) {
            return Some("bounds must be strictly ascending");
        }
        if self
            .bucket_counts
            .iter()
            .try_fold(0u64, |a, c| a.checked_add(*c))
            != Some(self.count)
        {
            return Some("bucket counts must add up to the count");
        }
        if [self.min, self.max]
            .iter()
            .flatten()
            .any(|v| !v.is_finite())
        {
            return Some("min and max must be finite numbers");
        }
        None
    }
}

/// Where a batch received from an application came from: the sender's OTLP resource and
/// instrumentation scope, forwarded as they were.
#[derive(Debug, Clone, PartialEq)]
pub struct Origin {
    pub resource: opentelemetry_proto::tonic::resource::v1::Resource,
    pub scope: opentelemetry_proto::tonic::common::v1::InstrumentationScope,
}

/// When one received point was taken: its start (cumulative points; `None` for gauges)
/// and its time, as the sender stamped them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PointTime {
    pub start: Option<SystemTime>,
    pub time: SystemTime,
}

/// What a received batch carries beyond a collected one: its origin and the sender's
/// time of every point (`values` in [`Batch::values`] order, `histograms` in
/// [`Batch::histograms`] order), which export keeps instead of stamping its own.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub origin: std::sync::Arc<Origin>,
    pub values: Vec<PointTime>,
    pub histograms: Vec<PointTime>,
}

/// What one collector produced in one round.
///
/// Metric descriptions appear once; `series[i]` has the value `values[i]`, and
/// `histogram_series[i]` the histogram point `histograms[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub source: String,
    pub host: String,
    pub timestamp: SystemTime,
    pub metrics: Vec<MetricDesc>,
    pub series: Vec<Series>,
    pub values: Vec<f64>,
    pub histogram_series: Vec<Series>,
    pub histograms: Vec<Histogram>,
    /// Set on batches received from an application (`[receive.otlp]`), `None` on collected ones.
    pub received: Option<Box<Received>>,
    table_id: TableId,
}

/// The seed of [`Batch::table_id`], random per process: series attributes come from
/// outside (statement texts, say), and a seeded hash cannot be steered into a collision.
fn table_id_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        use std::hash::BuildHasher;
        std::collections::hash_map::RandomState::new().hash_one("vigil table id")
    })
}

/// A batch's series-table fingerprint, computed on first use and then kept (batches are
/// not changed once handed on). Never part of a batch's equality.
#[derive(Debug, Clone, Default)]
struct TableId(OnceLock<u64>);

impl PartialEq for TableId {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Batch {
    /// An empty batch from `source` on `host`, stamped now.
    pub fn new(source: impl Into<String>, host: impl Into<String>) -> Self {
        Batch {
            source: source.into(),
            host: host.into(),
            timestamp: SystemTime::now(),
            metrics: Vec::new(),
            series: Vec::new(),
            values: Vec::new(),
            histogram_series: Vec::new(),
            histograms: Vec::new(),
            received: None,
            table_id: TableId::default(),
        }
    }

    /// A fingerprint of the batch's series table (its metrics and every series' metric
    /// and attributes, scalar then histogram series, in order; not the values): batches with the same table have the
    /// same id, so what is derived from a table (a plugin's view of it) can be reused.
    /// Computed once, on first use: change `metrics` or `series` only before that.
    pub fn table_id(&self) -> u64 {
        *self.table_id.0.get_or_init(|| {
            // The table laid out as bytes (lengths before strings), hashed in one pass:
            // an order of magnitude faster than feeding a Hasher field by field.
            let mut bytes = Vec::with_capacity(64 * (self.metrics.len() + self.series.len()));
            fn text(bytes: &mut Vec<u8>, s: &str) {
                bytes.extend_from_slice(&(s.len() as u32).to_le_bytes());
                bytes.extend_from_slice(s.as_bytes());
            }
            for metric in &self.metrics {
                text(&mut bytes, &metric.name);
                text(&mut bytes, &metric.unit);
                text(&mut bytes, &metric.description);
                bytes.push(metric.kind as u8);
            }
            bytes.extend_from_slice(&(self.series.len() as u32).to_le_bytes());
            for series in self.series.iter().chain(&self.histogram_series) {
                bytes.extend_from_slice(&series.metric.to_le_bytes());
                bytes.extend_from_slice(&(series.attributes.len() as u32).to_le_bytes());
                for (key, value) in &series.attributes {
                    text(&mut bytes, key);
                    text(&mut bytes, value);
                }
            }
            xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, table_id_seed())
        })
    }

    /// Number of datapoints (scalar and histogram).
    pub fn len(&self) -> usize {
        self.values.len() + self.histograms.len()
    }

    /// Whether the batch holds no datapoint.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.histograms.is_empty()
    }

    /// Iterates over `(metric, attributes, value)` of every datapoint.
    pub fn points(&self) -> impl Iterator<Item = (&MetricDesc, &Attributes, f64)> {
        self.series
            .iter()
            .zip(&self.values)
            .map(|(s, v)| (&self.metrics[s.metric as usize], &s.attributes, *v))
    }

    /// Iterates over `(metric, attributes, histogram)` of every histogram point.
    pub fn histogram_points(&self) -> impl Iterator<Item = (&MetricDesc, &Attributes, &Histogram)> {
        self.histogram_series
            .iter()
            .zip(&self.histograms)
            .map(|(s, h)| (&self.metrics[s.metric as usize], &s.attributes, h))
    }
}

/// Builds a [`Batch`], describing each metric once however many series it has.
#[derive(Debug)]
pub struct BatchBuilder {
    batch: Batch,
    /// Where each metric is, by name (foldhash: a few lookups per point add up).
    index: hashbrown::HashMap<String, u32>,
}

impl BatchBuilder {
    /// Starts a batch from `source` on `host`, stamped now.
    pub fn new(source: impl Into<String>, host: impl Into<String>) -> Self {
        BatchBuilder {
            batch: Batch::new(source, host),
            // A collector's batch describes a few dozen metrics: no regrowing for those.
            index: hashbrown::HashMap::with_capacity(64),
        }
    }

    /// Adds one datapoint. A non-finite value is skipped: it has no meaning downstream.
    pub fn point(&mut self, metric: &MetricDesc, attributes: Attributes, value: f64) -> &mut Self {
        if !value.is_finite() {
            return self;
        }
        let metric = self.metric_index(metric);
        self.batch.series.push(Series { metric, attributes });
        self.batch.values.push(value);
        self
    }

    /// Adds one histogram point of `metric` (whose kind should be
    /// [`MetricKind::Histogram`]). A point with a [`Histogram::problem`] is skipped: check
    /// outside input first to say why.
    pub fn histogram(
        &mut self,
        metric: &MetricDesc,
        attributes: Attributes,
        histogram: Histogram,
    ) -> &mut Self {
        if histogram.problem().is_some() {
            return self;
        }
        let metric = self.metric_index(metric);
        self.batch
            .histogram_series
            .push(Series { metric, attributes });
        self.batch.histograms.push(histogram);
        self
    }

    /// The index of `metric` in the batch, described on first use.
    fn metric_index(&mut self, metric: &MetricDesc) -> u32 {
        // Points usually come metric by metric: the last one described is the likely one.
        if let Some(last) = self.batch.metrics.last()
            && last.name == metric.name
        {
            return (self.batch.metrics.len() - 1) as u32;
        }
        match self.index.get(&metric.name) {
            Some(i) => *i,
            None => {
                let i = self.batch.metrics.len() as u32;
                self.batch.metrics.push(metric.clone());
                self.index.insert(metric.name.clone(), i);
                i
            }
        }
    }

    /// The finished batch.
    pub fn build(self) -> Batch {
        self.batch
    }
}

/// Serializes attributes as a JSON object (keys in their order).
pub fn attributes_as_map<S: serde::Serializer>(
    attributes: &Attributes,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(attributes.iter().map(|(k, v)| (k, v)))
}

/// Serializes a time as RFC 3339 text (milliseconds, UTC).
pub fn time_as_rfc3339<S: serde::Serializer>(
    time: &std::time::SystemTime,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_millis(*time).to_string())
}

/// Serializes an optional time as RFC 3339 text, or null.
pub fn optional_time_as_rfc3339<S: serde::Serializer>(
    time: &Option<std::time::SystemTime>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(t) => time_as_rfc3339(t, s),
        None => s.serialize_none(),
    }
}

/// Builds attributes from string pairs.
pub fn attrs<const N: usize>(pairs: [(&str, &str); N]) -> Attributes {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// How bad a finding (and so its alert) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// Lower-case name, as used in attributes.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A condition an alert rule reported for one batch, validated by the host.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule: String,
    pub key: String,
    pub severity: Severity,
    pub summary: String,
    pub value: Option<f64>,
    #[serde(serialize_with = "attributes_as_map")]
    pub labels: Attributes,
    /// How long the condition must hold before its alert fires.
    #[serde(with = "humantime_serde")]
    pub hold_for: std::time::Duration,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_id_follows_the_series_not_the_values() {
        let metric = MetricDesc::new("m", "1", MetricKind::Gauge, "");
        let batch = |series: &[(&str, &str)], value: f64| {
            let mut b = BatchBuilder::new("src", "h");
            for (key, name) in series {
                b.point(&metric, attrs([(*key, *name)]), value);
            }
            b.build()
        };
        let base = batch(&[("s", "a"), ("s", "b")], 1.0).table_id();
        assert_eq!(batch(&[("s", "a"), ("s", "b")], 2.0).table_id(), base);
        assert_ne!(batch(&[("s", "a"), ("s", "c")], 1.0).table_id(), base);
        assert_ne!(batch(&[("s", "b"), ("s", "a")], 1.0).table_id(), base);
        // Lengths delimit the strings: moving a byte from a key to its value is a new table.
        assert_ne!(batch(&[("sa", ""), ("s", "b")], 1.0).table_id(), base);
        let mut other_unit = BatchBuilder::new("src", "h");
        let percent = MetricDesc::new("m", "%", MetricKind::Gauge, "");
        other_unit.point(&percent, attrs([("s", "a")]), 1.0).point(
            &percent,
            attrs([("s", "b")]),
            1.0,
        );
        assert_ne!(other_unit.build().table_id(), base);
    }

    #[test]
    fn builder_describes_each_metric_once() {
        let cpu = MetricDesc::new("system.cpu.utilization", "1", MetricKind::Gauge, "");
        let mem = MetricDesc::new("system.memory.usage", "By", MetricKind::UpDownCounter, "");
        let mut b = BatchBuilder::new("system", "h");
        b.point(&cpu, attrs([("cpu.logical_number", "0")]), 0.5)
            .point(&cpu, attrs([("cpu.logical_number", "1")]), 0.25)
            .point(&mem, attrs([("system.memory.state", "used")]), 10.0)
            .point(&mem, Vec::new(), f64::NAN);
        let batch = b.build();
        assert_eq!(batch.metrics.len(), 2);
        assert_eq!(batch.len(), 3);
        let names: Vec<_> = batch
            .points()
            .map(|(m, _, v)| (m.name.as_str(), v))
            .collect();
        assert_eq!(
            names,
            [
                ("system.cpu.utilization", 0.5),
                ("system.cpu.utilization", 0.25),
                ("system.memory.usage", 10.0)
            ]
        );
    }

    fn histogram(bounds: &[f64], counts: &[u64]) -> Histogram {
        Histogram {
            count: counts.iter().sum(),
            sum: 1.5,
            bounds: bounds.to_vec(),
            bucket_counts: counts.to_vec(),
            min: None,
            max: None,
        }
    }

    #[test]
    fn histograms_sit_beside_the_values_and_bad_ones_are_skipped() {
        let duration = MetricDesc::new(
            "http.server.request.duration",
            "s",
            MetricKind::Histogram,
            "",
        );
        let cpu = MetricDesc::new("system.cpu.utilization", "1", MetricKind::Gauge, "");
        let mut b = BatchBuilder::new("otlp:shop", "h");
        b.point(&cpu, vec![], 0.5)
            .histogram(
                &duration,
                attrs([("http.route", "/a")]),
                histogram(&[0.1, 0.5], &[3, 2, 1]),
            )
            .histogram(
                &duration,
                attrs([("http.route", "/b")]),
                histogram(&[0.5, 0.1], &[1, 1, 1]),
            )
            .histogram(
                &duration,
                attrs([("http.route", "/c")]),
                histogram(&[0.1], &[1, 1, 1]),
            );
        let batch = b.build();
        assert_eq!(
            batch.len(),
            2,
            "one scalar, one histogram; two bad points skipped"
        );
        assert_eq!(batch.metrics.len(), 2);
        let (metric, attributes, h) = batch.histogram_points().next().unwrap();
        assert_eq!(metric.kind, MetricKind::Histogram);
        assert_eq!(attributes, &attrs([("http.route", "/a")]));
        assert_eq!((h.count, h.bucket_counts.as_slice()), (6, &[3, 2, 1][..]));
        assert_eq!(histogram(&[0.1], &[1, 1]).problem(), None);
        let mut wrong_count = histogram(&[0.1], &[1, 1]);
        wrong_count.count = 3;
        assert!(wrong_count.problem().unwrap().contains("add up"));
        // A series moved from the scalars to the histograms is another table.
        let mut as_scalar = BatchBuilder::new("otlp:shop", "h");
        let as_gauge = MetricDesc {
            kind: MetricKind::Histogram,
            ..cpu.clone()
        };
        as_scalar.point(&as_gauge, vec![], 1.0);
        let mut as_histogram = BatchBuilder::new("otlp:shop", "h");
        as_histogram.histogram(&as_gauge, vec![], histogram(&[], &[1]));
        assert_ne!(
            as_scalar.build().table_id(),
            as_histogram.build().table_id()
        );
    }
}
