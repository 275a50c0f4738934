//! The latest value of every series, per source, read by the OpenTelemetry SDK's
//! observable instruments whenever it collects.
//!
//! Counter resets: when a cumulative counter of a source goes down (its server
//! restarted), the source's series start anew. The SDK keeps one start time per
//! instrument, set when the instrument is created, so the source moves to a new
//! *epoch*: its metrics are registered again in a meter of their own (scope `vigil`
//! with the attributes `vigil.collector` and `vigil.series.epoch`), whose sums start
//! at the reset; the instruments of the old epoch stop reporting that source.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use opentelemetry::KeyValue;

use crate::model::{Attributes, Batch, MetricDesc, MetricKind};

/// Points of one metric: per source, `(attributes, value)`.
type SourcePoints = HashMap<String, Vec<(Vec<KeyValue>, f64)>>;

/// Which meter an instrument lives in: `None` for the shared meter (sources that
/// never reset), or a source and its epoch (1, 2, ...) after counter resets.
pub type MeterKey = Option<(String, u32)>;

/// Latest values by metric name, then by source. A new batch from a source
/// replaces everything that source reported before, so vanished series disappear.
#[derive(Debug, Default)]
pub struct LatestValues {
    metrics: Mutex<HashMap<String, SourcePoints>>,
    descs: Mutex<HashMap<String, MetricDesc>>,
    epochs: Mutex<Epochs>,
}

/// Counter-reset bookkeeping: each source's epoch, its last counter values, and the
/// instruments registered so far.
#[derive(Debug, Default)]
struct Epochs {
    current: HashMap<String, u32>,
    /// Per source, the counter values of its last batch that had counters (a round that
    /// found the server down has none, and must not hide the reset that follows it).
    counters: HashMap<String, HashMap<(String, Attributes), f64>>,
    registered: HashSet<(String, MeterKey)>,
}

impl Epochs {
    fn key(&self, source: &str) -> MeterKey {
        match self.current.get(source) {
            None | Some(0) => None,
            Some(epoch) => Some((source.to_owned(), *epoch)),
        }
    }

    /// Records the counters of `batch`; whether one of them went down.
    fn counters_went_down(&mut self, batch: &Batch) -> bool {
        let counters: HashMap<(String, Attributes), f64> = batch
            .points()
            .filter(|(m, _, _)| m.kind == MetricKind::Counter)
            .map(|(m, a, v)| ((m.name.clone(), a.clone()), v))
            .collect();
        if counters.is_empty() {
            return false;
        }
        let reset = self.counters.get(&batch.source).is_some_and(|previous| {
            counters
                .iter()
                .any(|(series, value)| previous.get(series).is_some_and(|p| value < p))
        });
        self.counters.insert(batch.source.clone(), counters);
        reset
    }
}

/// One metric and all its current points (attributes, value).
pub type Family = (MetricDesc, Vec<(Vec<KeyValue>, f64)>);

impl LatestValues {
    /// Replaces the values of `batch.source` with those in `batch`. When one of its
    /// counters went down, the source starts a new epoch. Returns the instruments to
    /// register: metrics not yet registered in the meter of the source's epoch.
    pub fn replace(&self, batch: &Batch) -> Vec<(MetricDesc, MeterKey)> {
        let mut fresh: HashMap<&str, Vec<(Vec<KeyValue>, f64)>> = HashMap::new();
        for (metric, attributes, value) in batch.points() {
            let attributes = attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .collect();
            fresh
                .entry(metric.name.as_str())
                .or_default()
                .push((attributes, value));
        }
        if let Ok(mut descs) = self.descs.lock() {
            for metric in &batch.metrics {
                if !descs.contains_key(&metric.name) {
                    descs.insert(metric.name.clone(), metric.clone());
                }
            }
        }
        let mut new = Vec::new();
        if let Ok(mut epochs) = self.epochs.lock() {
            if epochs.counters_went_down(batch) {
                let epoch = epochs.current.entry(batch.source.clone()).or_default();
                *epoch += 1;
                tracing::info!(
                    collector = %batch.source,
                    "a counter of {} went down (server restart?): its cumulative series start anew (epoch {epoch})",
                    batch.source
                );
            }
            let key = epochs.key(&batch.source);
            for metric in &batch.metrics {
                if epochs.registered.insert((metric.name.clone(), key.clone())) {
                    new.push((metric.clone(), key.clone()));
                }
            }
        }
        let Ok(mut metrics) = self.metrics.lock() else {
            return new;
        };
        for per_source in metrics.values_mut() {
            per_source.remove(&batch.source);
        }
        for (name, points) in fresh {
            metrics
                .entry(name.to_owned())
                .or_default()
                .insert(batch.source.clone(), points);
        }
        new
    }

    /// Calls `observe` with every current point of metric `name` from the sources
    /// whose epoch lives in the meter `key`.
    pub fn for_each(&self, name: &str, key: &MeterKey, mut observe: impl FnMut(f64, &[KeyValue])) {
        let Ok(metrics) = self.metrics.lock() else {
            return;
        };
        let Some(per_source) = metrics.get(name) else {
            return;
        };
        let Ok(epochs) = self.epochs.lock() else {
            return;
        };
        for (source, points) in per_source {
            if epochs.key(source) != *key {
                continue;
            }
            for (attributes, value) in points {
                observe(*value, attributes);
            }
        }
    }
}

impl LatestValues {
    /// Every metric with its current points, by name.
    pub fn families(&self) -> Vec<Family> {
        let descs = match self.descs.lock() {
            Ok(d) => d.clone(),
            Err(_) => return Vec::new(),
        };
        let Ok(metrics) = self.metrics.lock() else {
            return Vec::new();
        };
        let mut families: Vec<Family> = metrics
            .iter()
            .filter_map(|(name, per_source)| {
                let desc = descs.get(name)?.clone();
                let points: Vec<_> = per_source.values().flatten().cloned().collect();
                (!points.is_empty()).then_some((desc, points))
            })
            .collect();
        families.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BatchBuilder, MetricDesc, MetricKind, attrs};

    #[test]
    fn a_source_replaces_only_its_own_points() {
        let m = MetricDesc::new("m", "1", MetricKind::Gauge, "");
        let store = LatestValues::default();
        let mut a = BatchBuilder::new("a", "h");
        a.point(&m, attrs([("k", "1")]), 1.0)
            .point(&m, attrs([("k", "2")]), 2.0);
        assert_eq!(
            store.replace(&a.build()),
            [(m.clone(), None)],
            "first sight of m"
        );
        let mut b = BatchBuilder::new("b", "h");
        b.point(&m, vec![], 10.0);
        store.replace(&b.build());
        let mut a2 = BatchBuilder::new("a", "h");
        a2.point(&m, attrs([("k", "1")]), 3.0);
        assert!(store.replace(&a2.build()).is_empty(), "m is known by now");
        let mut seen = Vec::new();
        store.for_each("m", &None, |v, _| seen.push(v));
        seen.sort_by(f64::total_cmp);
        assert_eq!(seen, [3.0, 10.0]);
    }

    #[test]
    fn a_counter_going_down_starts_a_new_epoch_for_its_source_only() {
        let c = MetricDesc::new("c", "1", MetricKind::Counter, "");
        let up = MetricDesc::new("up", "1", MetricKind::Gauge, "");
        let store = LatestValues::default();
        let batch = |source: &str, value: Option<f64>| {
            let mut b = BatchBuilder::new(source, "h");
            b.point(&up, vec![], 1.0);
            if let Some(v) = value {
                b.point(&c, vec![], v);
            }
            b.build()
        };
        assert_eq!(store.replace(&batch("a", Some(10.0))).len(), 2);
        assert_eq!(store.replace(&batch("b", Some(10.0))).len(), 0);
        assert!(store.replace(&batch("a", Some(12.0))).is_empty());
        // Down (no counters), then back with its counters restarted.
        assert!(store.replace(&batch("a", None)).is_empty());
        let new = store.replace(&batch("a", Some(1.0)));
        let key = Some(("a".to_owned(), 1));
        assert_eq!(new, [(up.clone(), key.clone()), (c.clone(), key.clone())]);
        let mut shared = Vec::new();
        store.for_each("c", &None, |v, _| shared.push(v));
        assert_eq!(shared, [10.0], "b stays in the shared meter");
        let mut own = Vec::new();
        store.for_each("c", &key, |v, _| own.push(v));
        assert_eq!(own, [1.0]);
    }
}
