//! The latest value of every series, per source: what `/metrics` and the status page
//! show. The OTLP export does not read it; it queues every batch with its own time.
//!
//! Each source's latest batch is kept as it is (shared with the export queue, nothing
//! copied per round); the families are built from them only when asked for.

use crate::sync::LockExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;

use crate::model::{Attributes, Batch, Histogram, MetricDesc};

/// The latest batch of each source. A new batch from a source replaces everything that
/// source reported before, so vanished series disappear.
#[derive(Debug, Default)]
pub struct LatestValues {
    batches: Mutex<HashMap<String, Arc<Batch>>>,
    /// The first description seen of each metric name.
    descs: Mutex<HashMap<String, MetricDesc>>,
}

/// A point's current value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Histogram(Histogram),
}

/// One metric and all its current points (attributes, value).
pub type Family = (MetricDesc, Vec<(Vec<KeyValue>, Value)>);

impl LatestValues {
    /// Makes `batch` the latest values of `batch.source`.
    /// Returns the metrics seen for the first time.
    pub fn replace(&self, batch: &Arc<Batch>) -> Vec<MetricDesc> {
        let mut new = Vec::new();
        {
            let mut descs = self.descs.locked();
            for metric in &batch.metrics {
                if !descs.contains_key(&metric.name) {
                    descs.insert(metric.name.clone(), metric.clone());
                    new.push(metric.clone());
                }
            }
        }
        let mut batches = self.batches.locked();
        match batches.get_mut(&batch.source) {
            Some(latest) => *latest = batch.clone(),
            None => {
                batches.insert(batch.source.clone(), batch.clone());
            }
        }
        new
    }

    /// Every metric with its current points, by name.
    pub fn families(&self) -> Vec<Family> {
        let batches: Vec<Arc<Batch>> = self.batches.locked().values().cloned().collect();
        let descs = self.descs.locked().clone();
        let mut points: BTreeMap<&str, Vec<(Vec<KeyValue>, Value)>> = BTreeMap::new();
        let key_values = |attributes: &Attributes| -> Vec<KeyValue> {
            attributes
                .iter()
                .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
                .collect()
        };
        for batch in &batches {
            for (metric, attributes, value) in batch.points() {
                points
                    .entry(metric.name.as_str())
                    .or_default()
                    .push((key_values(attributes), Value::Number(value)));
            }
            for (metric, attributes, histogram) in batch.histogram_points() {
                points
                    .entry(metric.name.as_str())
                    .or_default()
                    .push((key_values(attributes), Value::Histogram(histogram.clone())));
            }
        }
        points
            .into_iter()
            .filter_map(|(name, points)| Some((descs.get(name)?.clone(), points)))
            .collect()
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
            store.replace(&Arc::new(a.build())),
            std::slice::from_ref(&m),
            "first sight of m"
        );
        let mut b = BatchBuilder::new("b", "h");
        b.point(&m, vec![], 10.0);
        store.replace(&Arc::new(b.build()));
        let mut a2 = BatchBuilder::new("a", "h");
        a2.point(&m, attrs([("k", "1")]), 3.0);
        assert!(
            store.replace(&Arc::new(a2.build())).is_empty(),
            "m is known by now"
        );
        let families = store.families();
        assert_eq!(families.len(), 1);
        let mut seen: Vec<f64> = families[0]
            .1
            .iter()
            .filter_map(|(_, v)| match v {
                Value::Number(n) => Some(*n),
                Value::Histogram(_) => None,
            })
            .collect();
        seen.sort_by(f64::total_cmp);
        assert_eq!(seen, [3.0, 10.0]);
        store.replace(&Arc::new(BatchBuilder::new("a", "h").build()));
        store.replace(&Arc::new(BatchBuilder::new("b", "h").build()));
        assert!(store.families().is_empty(), "no source reports m any more");
    }

    #[test]
    fn histograms_are_kept_with_their_buckets() {
        let d = MetricDesc::new("d", "s", MetricKind::Histogram, "");
        let h = Histogram {
            count: 3,
            sum: 1.5,
            bounds: vec![1.0],
            bucket_counts: vec![2, 1],
            min: None,
            max: None,
        };
        let store = LatestValues::default();
        let mut a = BatchBuilder::new("a", "h");
        a.histogram(&d, attrs([("route", "/")]), h.clone());
        store.replace(&Arc::new(a.build()));
        let families = store.families();
        assert_eq!(families.len(), 1);
        assert_eq!(families[0].1[0].1, Value::Histogram(h));
    }
}
