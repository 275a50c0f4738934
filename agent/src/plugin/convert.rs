//! Crossing the component boundary (contracts 0.4.0, 0.3.0 and 0.2.0): batches into WIT values (only the
//! metrics a plugin asked for; a source's series table only when it changed), findings
//! back into host types (validated: a plugin's output is outside input).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, UNIX_EPOCH};

use super::bindings::v0_4::vigil::plugin::types as wit;
use crate::model::{Batch, Finding, MetricKind, Severity};

/// Longest rule name a finding may carry.
pub const MAX_RULE_BYTES: usize = 128;
/// Longest finding key.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest summary.
pub const MAX_SUMMARY_BYTES: usize = 1024;
/// Most labels on one finding.
pub const MAX_LABELS: usize = 32;
/// Longest label key or value.
pub const MAX_LABEL_BYTES: usize = 512;
/// Longest `for` a finding may ask for.
pub const MAX_HOLD: Duration = Duration::from_secs(7 * 24 * 3600);

/// The metric names a plugin wants: exact names and `prefix*` patterns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Interests {
    exact: HashSet<String>,
    prefixes: Vec<String>,
}

impl Interests {
    /// Parses the patterns a plugin's `describe` returned.
    pub fn new(patterns: &[String]) -> Self {
        let mut interests = Interests::default();
        for pattern in patterns {
            match pattern.strip_suffix('*') {
                Some(prefix) => interests.prefixes.push(prefix.to_owned()),
                None => {
                    interests.exact.insert(pattern.clone());
                }
            }
        }
        interests
    }

    /// Whether the plugin wants metric `name`.
    pub fn wants(&self, name: &str) -> bool {
        self.exact.contains(name) || self.prefixes.iter().any(|p| name.starts_with(p))
    }
}

/// Most table views one instance keeps (one per distinct series table it was sent; past
/// this they are rebuilt on demand).
const MAX_VIEWS: usize = 32;

/// A plugin's view of one series table: the metrics it wants and where their values are.
#[derive(Debug)]
struct TableView {
    /// The table as the plugin sees it (`None`: it wants none of the batch's metrics).
    table: Option<wit::SeriesTable>,
    /// Indexes of the wanted scalar series in the batch; `None` when it wants every one
    /// (the values then cross as they are).
    picked: Option<Vec<u32>>,
    /// Indexes of the wanted histogram series in the batch (they follow the scalar series
    /// in the table).
    picked_histograms: Vec<u32>,
}

impl TableView {
    fn new(batch: &Batch, interests: &Interests, id: u64) -> Self {
        let mut remap = vec![u32::MAX; batch.metrics.len()];
        let mut metrics = Vec::new();
        for (i, metric) in batch.metrics.iter().enumerate() {
            if interests.wants(&metric.name) {
                remap[i] = metrics.len() as u32;
                metrics.push(wit::Metric {
                    name: metric.name.clone(),
                    unit: metric.unit.clone(),
                    kind: metric_kind(metric.kind),
                });
            }
        }
        if metrics.is_empty() {
            return TableView {
                table: None,
                picked: None,
                picked_histograms: Vec::new(),
            };
        }
        let mut series = Vec::new();
        let mut pick = |batch_series: &[crate::model::Series]| {
            let mut picked = Vec::new();
            for (i, s) in batch_series.iter().enumerate() {
                let metric = remap[s.metric as usize];
                if metric != u32::MAX {
                    series.push(wit::Series {
                        metric,
                        attributes: attributes(&s.attributes),
                    });
                    picked.push(i as u32);
                }
            }
            picked
        };
        let picked = pick(&batch.series);
        let picked_histograms = pick(&batch.histogram_series);
        let every_series = picked.len() == batch.series.len();
        TableView {
            table: Some(wit::SeriesTable {
                id,
                metrics,
                series,
            }),
            picked: (!every_series).then_some(picked),
            picked_histograms,
        }
    }
}

impl TableView {
    /// The values of the wanted series of `batch`, in the view's order.
    fn values(&self, batch: &Batch) -> Vec<f64> {
        match &self.picked {
            None => batch.values.clone(),
            Some(picked) => picked.iter().map(|&i| batch.values[i as usize]).collect(),
        }
    }

    /// The wanted histogram points of `batch`, each naming its series in the view's table.
    fn histograms(&self, batch: &Batch) -> Vec<wit::Histogram> {
        let scalars = self.picked.as_ref().map_or(batch.series.len(), Vec::len);
        self.picked_histograms
            .iter()
            .enumerate()
            .map(|(at, &i)| {
                let h = &batch.histograms[i as usize];
                wit::Histogram {
                    series: (scalars + at) as u32,
                    count: h.count,
                    sum: h.sum,
                    bounds: h.bounds.clone(),
                    bucket_counts: h.bucket_counts.clone(),
                }
            })
            .collect()
    }
}

/// The part of `batch` a plugin wants, built afresh with no view kept: its series table
/// (scalar series first, then histogram series) and values (for the 0.1.0 contract,
/// which takes the table with every batch); `None` when that is nothing.
pub fn wanted_part(batch: &Batch, interests: &Interests) -> Option<(wit::SeriesTable, Vec<f64>)> {
    let view = TableView::new(batch, interests, batch.table_id());
    let values = view.values(batch);
    Some((view.table?, values))
}

/// Builds the batches one plugin instance is sent: each source's series table crosses
/// only when the instance has not been given it yet (first batch, a changed table, a
/// restarted instance); the values always cross, as one flat list.
#[derive(Debug, Default)]
pub struct BatchSender {
    /// The table id each source's last delivered batch carried.
    delivered: HashMap<String, u64>,
    /// Views of recent tables by table id.
    views: HashMap<u64, TableView>,
}

impl BatchSender {
    /// The part of `batch` a plugin with `interests` wants, as a WIT value; `None` when
    /// that is nothing.
    pub fn batch_for(&mut self, batch: &Batch, interests: &Interests) -> Option<wit::Batch> {
        let id = batch.table_id();
        if !self.views.contains_key(&id) && self.views.len() >= MAX_VIEWS {
            self.views.clear();
        }
        let view = self
            .views
            .entry(id)
            .or_insert_with(|| TableView::new(batch, interests, id));
        let table = view.table.as_ref()?;
        let values = view.values(batch);
        let known = self.delivered.get(&batch.source) == Some(&id);
        Some(wit::Batch {
            source: batch.source.clone(),
            host: batch.host.clone(),
            timestamp_ns: unix_nanos(batch.timestamp),
            table_id: id,
            table: (!known).then(|| table.clone()),
            values,
            histograms: view.histograms(batch),
        })
    }

    /// Records that the instance took `batch` (so it holds its table now).
    pub fn delivered(&mut self, batch: &wit::Batch) {
        self.delivered.insert(batch.source.clone(), batch.table_id);
    }

    /// Forgets what was delivered: the next batch of every source carries its table
    /// (after the instance was restarted).
    pub fn forget_delivered(&mut self) {
        self.delivered.clear();
    }
}

fn metric_kind(kind: MetricKind) -> wit::MetricKind {
    match kind {
        MetricKind::Gauge => wit::MetricKind::Gauge,
        MetricKind::Counter => wit::MetricKind::Counter,
        MetricKind::UpDownCounter => wit::MetricKind::UpDownCounter,
        MetricKind::Histogram => wit::MetricKind::Histogram,
    }
}

fn attributes(attributes: &crate::model::Attributes) -> Vec<wit::Attribute> {
    attributes
        .iter()
        .map(|(key, value)| wit::Attribute {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

/// Nanoseconds since the Unix epoch (0 before it).
pub fn unix_nanos(time: std::time::SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Checks a plugin's findings and converts them. All or nothing: the first problem
/// rejects the whole output, so a half-broken plugin never resolves alerts by accident.
pub fn findings_from(
    found: Vec<wit::Finding>,
    max_findings: usize,
) -> Result<Vec<Finding>, String> {
    if found.len() > max_findings {
        return Err(format!(
            "{} findings; the limit is {max_findings} (plugins.max_findings)",
            found.len()
        ));
    }
    found
        .into_iter()
        .enumerate()
        .map(|(i, f)| finding_from(f).map_err(|e| format!("finding #{i}: {e}")))
        .collect()
}

fn finding_from(f: wit::Finding) -> Result<Finding, String> {
    check_len("rule", &f.rule, 1, MAX_RULE_BYTES)?;
    check_len("key", &f.key, 0, MAX_KEY_BYTES)?;
    check_len("summary", &f.summary, 0, MAX_SUMMARY_BYTES)?;
    if f.labels.len() > MAX_LABELS {
        return Err(format!(
            "{} labels; the limit is {MAX_LABELS}",
            f.labels.len()
        ));
    }
    check_attributes("label", &f.labels)?;
    if let Some(value) = f.value
        && !value.is_finite()
    {
        return Err(format!("value is {value}; it must be a finite number"));
    }
    let hold_for = Duration::from_millis(f.for_ms);
    if hold_for > MAX_HOLD {
        return Err(format!("for-ms is {}; the limit is 7 days", f.for_ms));
    }
    Ok(Finding {
        rule: f.rule,
        key: f.key,
        severity: match f.severity {
            wit::Severity::Info => Severity::Info,
            wit::Severity::Warning => Severity::Warning,
            wit::Severity::Critical => Severity::Critical,
        },
        summary: f.summary,
        value: f.value,
        labels: f.labels.into_iter().map(|a| (a.key, a.value)).collect(),
        hold_for,
    })
}

/// Checks that `text` (named `field` in the error) is `min..=max` bytes long.
pub(super) fn check_len(field: &str, text: &str, min: usize, max: usize) -> Result<(), String> {
    if text.len() < min {
        return Err(format!("{field} is empty"));
    }
    if text.len() > max {
        return Err(format!(
            "{field} is {} bytes; the limit is {max}",
            text.len()
        ));
    }
    Ok(())
}

/// Checks each attribute's key (1 to [`MAX_LABEL_BYTES`] bytes) and value (at most that);
/// errors name them `{what} key` and `{what} value`.
pub(super) fn check_attributes(what: &str, attributes: &[wit::Attribute]) -> Result<(), String> {
    for a in attributes {
        check_len(&format!("{what} key"), &a.key, 1, MAX_LABEL_BYTES)?;
        check_len(&format!("{what} value"), &a.value, 0, MAX_LABEL_BYTES)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BatchBuilder, MetricDesc, attrs};

    fn finding(rule: &str) -> wit::Finding {
        wit::Finding {
            rule: rule.into(),
            key: "k".into(),
            severity: wit::Severity::Warning,
            summary: "s".into(),
            value: Some(1.0),
            labels: vec![],
            for_ms: 1500,
        }
    }

    #[test]
    fn only_wanted_metrics_cross() {
        let mut b = BatchBuilder::new("system", "h");
        let cpu = MetricDesc::new("system.cpu.utilization", "1", MetricKind::Gauge, "");
        let mem = MetricDesc::new("system.memory.usage", "By", MetricKind::UpDownCounter, "");
        let net = MetricDesc::new("system.network.io", "By", MetricKind::Counter, "");
        b.point(&cpu, vec![], 0.5)
            .point(&mem, attrs([("system.memory.state", "used")]), 7.0)
            .point(&net, vec![], 9.0);
        let batch = b.build();
        let wanted = Interests::new(&["system.memory.*".into(), "system.network.io".into()]);
        let w = BatchSender::default().batch_for(&batch, &wanted).unwrap();
        let table = w.table.unwrap();
        assert_eq!(table.metrics.len(), 2);
        assert_eq!(table.metrics[0].name, "system.memory.usage");
        assert_eq!(w.values, [7.0, 9.0]);
        assert_eq!(table.series[1].metric, 1);
        assert_eq!(table.series[0].attributes[0].value, "used");
        let mut sender = BatchSender::default();
        assert!(
            sender
                .batch_for(&batch, &Interests::new(&["redis.*".into()]))
                .is_none()
        );
        assert!(
            BatchSender::default()
                .batch_for(&batch, &Interests::new(&[]))
                .is_none()
        );
    }

    fn batch_of(source: &str, series: &[(&str, f64)]) -> Batch {
        let metric = MetricDesc::new("m", "1", MetricKind::Gauge, "");
        let mut b = BatchBuilder::new(source, "h");
        for (name, value) in series {
            b.point(&metric, attrs([("s", *name)]), *value);
        }
        b.build()
    }

    #[test]
    fn a_table_crosses_once_per_source_until_it_changes_or_is_forgotten() {
        let all = Interests::new(&["*".into()]);
        let mut sender = BatchSender::default();
        let send = |batch: &Batch, sender: &mut BatchSender| {
            let w = sender.batch_for(batch, &all).unwrap();
            sender.delivered(&w);
            w
        };
        let first = send(&batch_of("a", &[("x", 1.0), ("y", 2.0)]), &mut sender);
        assert!(first.table.is_some());
        // Same series, new values: only the values cross, under the same table id.
        let second = send(&batch_of("a", &[("x", 3.0), ("y", 4.0)]), &mut sender);
        assert!(second.table.is_none());
        assert_eq!(second.table_id, first.table_id);
        assert_eq!(second.values, [3.0, 4.0]);
        // Another source has a table of its own.
        assert!(
            send(&batch_of("b", &[("x", 1.0), ("y", 2.0)]), &mut sender)
                .table
                .is_some()
        );
        // A changed table crosses again.
        let changed = send(&batch_of("a", &[("x", 1.0), ("z", 2.0)]), &mut sender);
        assert_ne!(changed.table_id, first.table_id);
        assert_eq!(changed.table.unwrap().series[1].attributes[0].value, "z");
        // A batch that was not delivered (the call failed) is sent with its table again.
        let undelivered = sender
            .batch_for(&batch_of("a", &[("x", 1.0)]), &all)
            .unwrap();
        assert!(undelivered.table.is_some());
        assert!(
            sender
                .batch_for(&batch_of("a", &[("x", 1.0)]), &all)
                .unwrap()
                .table
                .is_some()
        );
        // A restarted instance is sent every table again.
        sender.forget_delivered();
        assert!(
            send(&batch_of("b", &[("x", 1.0), ("y", 2.0)]), &mut sender)
                .table
                .is_some()
        );
    }

    #[test]
    fn histograms_cross_after_the_scalar_series_filtered_like_them() {
        let duration = MetricDesc::new(
            "http.server.request.duration",
            "s",
            MetricKind::Histogram,
            "",
        );
        let size = MetricDesc::new(
            "http.server.request.body.size",
            "By",
            MetricKind::Histogram,
            "",
        );
        let cpu = MetricDesc::new("system.cpu.utilization", "1", MetricKind::Gauge, "");
        let mem = MetricDesc::new("system.memory.usage", "By", MetricKind::UpDownCounter, "");
        let h = |counts: [u64; 3]| crate::model::Histogram {
            count: counts.iter().sum(),
            sum: 2.5,
            bounds: vec![0.1, 1.0],
            bucket_counts: counts.to_vec(),
            min: None,
            max: None,
        };
        let mut b = BatchBuilder::new("otlp:shop", "h");
        b.point(&cpu, vec![], 0.5)
            .histogram(&size, vec![], h([1, 0, 0]))
            .histogram(&duration, attrs([("http.route", "/a")]), h([4, 1, 0]))
            .point(&mem, vec![], 7.0)
            .histogram(&duration, attrs([("http.route", "/b")]), h([0, 2, 1]));
        let batch = b.build();
        let wanted = Interests::new(&[
            "http.server.request.duration".into(),
            "system.memory.*".into(),
        ]);
        let w = BatchSender::default().batch_for(&batch, &wanted).unwrap();
        let table = w.table.unwrap();
        assert_eq!(w.values, [7.0]);
        assert_eq!(
            table.series.len(),
            3,
            "one scalar series, then two histogram series"
        );
        assert_eq!(w.histograms.len(), 2);
        let routes: Vec<_> = w
            .histograms
            .iter()
            .map(|h| {
                let series = &table.series[h.series as usize];
                assert_eq!(
                    table.metrics[series.metric as usize].kind,
                    wit::MetricKind::Histogram
                );
                (
                    series.attributes[0].value.as_str(),
                    h.bucket_counts.clone(),
                    h.count,
                )
            })
            .collect();
        assert_eq!(routes, [("/a", vec![4, 1, 0], 5), ("/b", vec![0, 2, 1], 3)]);
        assert_eq!(w.histograms[0].bounds, [0.1, 1.0]);
        // A 0.1.0 plugin gets the scalars only.
        let old = super::super::legacy::batch_for(&batch, &wanted).unwrap();
        assert_eq!((old.series.len(), old.values.len()), (1, 1));
        // Histograms only: the table holds just their series.
        let only = Interests::new(&["http.server.request.body.size".into()]);
        let w = BatchSender::default().batch_for(&batch, &only).unwrap();
        assert!(w.values.is_empty());
        assert_eq!(w.histograms.len(), 1);
        assert_eq!(w.histograms[0].series, 0);
    }

    #[test]
    fn findings_are_checked_all_or_nothing() {
        let ok = findings_from(vec![finding("r")], 10).unwrap();
        assert_eq!(ok[0].hold_for, Duration::from_millis(1500));
        assert!(
            findings_from(vec![finding("r"), finding("")], 10)
                .unwrap_err()
                .contains("#1")
        );
        assert!(findings_from(vec![finding(&"x".repeat(200))], 10).is_err());
        assert!(
            findings_from(vec![finding("a"), finding("b")], 1)
                .unwrap_err()
                .contains("limit")
        );
        let mut nan = finding("r");
        nan.value = Some(f64::NAN);
        assert!(findings_from(vec![nan], 10).is_err());
    }
}
