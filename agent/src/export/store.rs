//! The latest value of every series, per source: what `/metrics` and the status page
//! show. The OTLP export does not read it; it queues every batch with its own time.

use crate::sync::LockExt;
use std::collections::HashMap;
use std::sync::Mutex;

use opentelemetry::KeyValue;

use crate::model::{Batch, MetricDesc};

/// Points of one metric: per source, `(attributes, value)`.
type SourcePoints = HashMap<String, Vec<(Vec<KeyValue>, f64)>>;

/// Latest values by metric name, then by source. A new batch from a source
/// replaces everything that source reported before, so vanished series disappear.
#[derive(Debug, Default)]
pub struct LatestValues {
    metrics: Mutex<HashMap<String, SourcePoints>>,
    descs: Mutex<HashMap<String, MetricDesc>>,
}

/// One metric and all its current points (attributes, value).
pub type Family = (MetricDesc, Vec<(Vec<KeyValue>, f64)>);

impl LatestValues {
    /// Replaces the values of `batch.source` with those in `batch`.
    /// Returns the metrics seen for the first time.
    pub fn replace(&self, batch: &Batch) -> Vec<MetricDesc> {
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
        let mut metrics = self.metrics.locked();
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

    /// Every metric with its current points, by name.
    pub fn families(&self) -> Vec<Family> {
        let descs = self.descs.locked().clone();
        let metrics = self.metrics.locked();
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
            std::slice::from_ref(&m),
            "first sight of m"
        );
        let mut b = BatchBuilder::new("b", "h");
        b.point(&m, vec![], 10.0);
        store.replace(&b.build());
        let mut a2 = BatchBuilder::new("a", "h");
        a2.point(&m, attrs([("k", "1")]), 3.0);
        assert!(store.replace(&a2.build()).is_empty(), "m is known by now");
        let families = store.families();
        let mut seen: Vec<f64> = families[0].1.iter().map(|(_, v)| *v).collect();
        seen.sort_by(f64::total_cmp);
        assert_eq!(seen, [3.0, 10.0]);
    }
}
