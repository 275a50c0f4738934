//! Batch fixtures: a readable JSON form of a batch, for `vigil plugin test` and tests.
//!
//! ```json
//! {"source": "system", "host": "web-1", "points": [
//!   {"metric": "system.memory.utilization", "unit": "1", "kind": "gauge",
//!    "attributes": {"system.memory.state": "used"}, "value": 0.93}]}
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::model::{Batch, BatchBuilder, MetricDesc, MetricKind};

/// A batch as written in a fixture file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchFixture {
    #[serde(default = "default_source")]
    pub source: String,
    #[serde(default = "default_host")]
    pub host: String,
    pub points: Vec<PointFixture>,
}

/// One datapoint of a fixture.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointFixture {
    pub metric: String,
    #[serde(default = "default_unit")]
    pub unit: String,
    #[serde(default = "default_kind")]
    pub kind: MetricKind,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub value: f64,
}

fn default_source() -> String {
    "fixture".into()
}
fn default_host() -> String {
    "fixture-host".into()
}
fn default_unit() -> String {
    "1".into()
}
fn default_kind() -> MetricKind {
    MetricKind::Gauge
}

impl BatchFixture {
    /// Parses fixture JSON; `origin` names it in the error.
    pub fn parse(json: &str, origin: &str) -> Result<Self, String> {
        serde_json::from_str(json).map_err(|e| format!("invalid batch fixture {origin}: {e}"))
    }

    /// The batch the fixture describes, stamped now.
    pub fn to_batch(&self) -> Batch {
        let mut builder = BatchBuilder::new(self.source.clone(), self.host.clone());
        for p in &self.points {
            let desc = MetricDesc::new(&p.metric, &p.unit, p.kind, "");
            let attributes = p
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            builder.point(&desc, attributes, p.value);
        }
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_becomes_a_batch() {
        let f = BatchFixture::parse(
            r#"{"points":[{"metric":"m","kind":"counter","attributes":{"a":"b"},"value":2}]}"#,
            "t",
        )
        .unwrap();
        let batch = f.to_batch();
        assert_eq!(batch.source, "fixture");
        assert_eq!(batch.metrics[0].kind, MetricKind::Counter);
        assert_eq!(batch.series[0].attributes, vec![("a".into(), "b".into())]);
        assert!(
            BatchFixture::parse(r#"{"pointz":[]}"#, "t")
                .unwrap_err()
                .contains("pointz")
        );
    }
}
