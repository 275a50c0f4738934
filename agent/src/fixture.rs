//! Fixtures for `vigil plugin test` and tests: a readable JSON form of a batch, and for
//! tuning policies the firing alerts and current settings they are shown.
//!
//! ```json
//! {"source": "system", "host": "web-1", "points": [
//!   {"metric": "system.memory.utilization", "unit": "1", "kind": "gauge",
//!    "attributes": {"system.memory.state": "used"}, "value": 0.93},
//!   {"metric": "http.server.request.duration", "unit": "s", "kind": "histogram",
//!    "histogram": {"count": 6, "sum": 1.2, "bounds": [0.1, 0.5], "bucket_counts": [3, 2, 1]}}]}
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::alert::{Alert, AlertKey, AlertState};
use crate::model::{Batch, BatchBuilder, Histogram, MetricDesc, MetricKind, Severity};
use crate::tuning::{CurrentSetting, SettingKey, Target};

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

/// One datapoint of a fixture: a `value`, or for kind `histogram` a `histogram`.
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
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub histogram: Option<HistogramFixture>,
}

/// A histogram point of a fixture (cumulative, explicit buckets).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistogramFixture {
    pub count: u64,
    pub sum: f64,
    pub bounds: Vec<f64>,
    pub bucket_counts: Vec<u64>,
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

impl HistogramFixture {
    fn to_histogram(&self) -> Histogram {
        Histogram {
            count: self.count,
            sum: self.sum,
            bounds: self.bounds.clone(),
            bucket_counts: self.bucket_counts.clone(),
            min: self.min,
            max: self.max,
        }
    }
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
    /// Parses fixture JSON and checks its points; `origin` names it in the error.
    pub fn parse(json: &str, origin: &str) -> Result<Self, String> {
        let fixture: Self = serde_json::from_str(json)
            .map_err(|e| format!("invalid batch fixture {origin}: {e}"))?;
        fixture
            .check()
            .map_err(|e| format!("invalid batch fixture {origin}: {e}"))?;
        Ok(fixture)
    }

    /// Checks that every point has what its kind needs: a histogram for kind
    /// `histogram` (a sound one), a value otherwise.
    pub fn check(&self) -> Result<(), String> {
        for (i, p) in self.points.iter().enumerate() {
            let problem = match (p.kind, &p.value, &p.histogram) {
                (MetricKind::Histogram, None, Some(h)) => h.to_histogram().problem(),
                (MetricKind::Histogram, _, _) => {
                    Some("a point of kind histogram has a `histogram` and no `value`")
                }
                (_, Some(_), None) => None,
                (_, _, _) => Some("a point has a `value` (only kind histogram has a `histogram`)"),
            };
            if let Some(problem) = problem {
                return Err(format!("point #{i} ({}): {problem}", p.metric));
            }
        }
        Ok(())
    }

    /// The batch the fixture describes, stamped now (points failing [`Self::check`] are
    /// left out).
    pub fn to_batch(&self) -> Batch {
        let mut builder = BatchBuilder::new(self.source.clone(), self.host.clone());
        for p in &self.points {
            let desc = MetricDesc::new(&p.metric, &p.unit, p.kind, "");
            let attributes = p
                .attributes
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            match (&p.histogram, p.value) {
                (Some(h), None) if p.kind == MetricKind::Histogram => {
                    builder.histogram(&desc, attributes, h.to_histogram());
                }
                (None, Some(value)) if p.kind != MetricKind::Histogram => {
                    builder.point(&desc, attributes, value);
                }
                _ => {}
            }
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

    #[test]
    fn a_fixture_may_hold_histograms_and_a_bad_one_is_named() {
        let f = BatchFixture::parse(
            r#"{"points":[{"metric":"d","unit":"s","kind":"histogram","attributes":{"http.route":"/a"},
                "histogram":{"count":3,"sum":0.7,"bounds":[0.1,0.5],"bucket_counts":[1,1,1]}},
               {"metric":"m","value":2}]}"#,
            "t",
        )
        .unwrap();
        let batch = f.to_batch();
        assert_eq!((batch.values.len(), batch.histograms.len()), (1, 1));
        assert_eq!(batch.histograms[0].bucket_counts, [1, 1, 1]);
        let error = BatchFixture::parse(
            r#"{"points":[{"metric":"d","kind":"histogram","histogram":{"count":3,"sum":0.7,"bounds":[0.1],"bucket_counts":[1,1,1]}}]}"#,
            "t.json",
        )
        .unwrap_err();
        assert!(
            error.contains("t.json") && error.contains("point #0 (d)") && error.contains("bounds"),
            "{error}"
        );
        assert!(
            BatchFixture::parse(
                r#"{"points":[{"metric":"d","kind":"histogram","value":1}]}"#,
                "t"
            )
            .unwrap_err()
            .contains("histogram")
        );
        assert!(BatchFixture::parse(r#"{"points":[{"metric":"m"}]}"#, "t").is_err());
    }
}

/// A firing alert as written in a `--firing` fixture (a JSON list of these):
/// `{"plugin": "threshold", "rule": "high-memory", "key": "", "severity": "warning",
///   "value": 0.95, "since": "2026-11-26T08:00:00Z"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FiringFixture {
    pub plugin: String,
    pub rule: String,
    #[serde(default)]
    pub key: String,
    #[serde(default = "default_severity")]
    pub severity: Severity,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub value: Option<f64>,
    /// When it started firing (RFC 3339); default: now.
    #[serde(default)]
    pub since: Option<String>,
}

fn default_severity() -> Severity {
    Severity::Warning
}

/// Parses a `--firing` fixture into the alerts a policy is shown; `origin` names it in errors.
pub fn firing_alerts(json: &str, origin: &str) -> Result<Vec<Alert>, String> {
    let fixtures: Vec<FiringFixture> = serde_json::from_str(json)
        .map_err(|e| format!("invalid firing-alerts fixture {origin}: {e}"))?;
    fixtures
        .into_iter()
        .map(|f| {
            let since = match &f.since {
                Some(text) => humantime::parse_rfc3339_weak(text).map_err(|e| {
                    format!("invalid firing-alerts fixture {origin}: since {text:?}: {e}")
                })?,
                None => SystemTime::now(),
            };
            Ok(Alert {
                key: AlertKey {
                    plugin: f.plugin,
                    rule: f.rule,
                    key: f.key,
                },
                source: "fixture".into(),
                state: AlertState::Firing,
                severity: f.severity,
                summary: f.summary,
                value: f.value,
                labels: Default::default(),
                hold_for: Duration::ZERO,
                active_since: since,
                firing_since: Some(since),
            })
        })
        .collect()
}

/// A setting's current value as written in a `--settings` fixture (a JSON list of these):
/// `{"target": "redis", "instance": "main", "parameter": "maxmemory", "value": "268435456"}`
/// (also the `current_settings` of a `vigil plugin test` file's step).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingFixture {
    pub target: Target,
    pub instance: String,
    pub parameter: String,
    pub value: String,
}

/// Parses a `--settings` fixture into the current settings a policy is shown (and the
/// gate's preview compares with); `origin` names it in errors.
pub fn current_settings(json: &str, origin: &str) -> Result<Vec<CurrentSetting>, String> {
    let fixtures: Vec<SettingFixture> = serde_json::from_str(json)
        .map_err(|e| format!("invalid settings fixture {origin}: {e}"))?;
    Ok(fixtures.into_iter().map(CurrentSetting::from).collect())
}

impl From<SettingFixture> for CurrentSetting {
    fn from(f: SettingFixture) -> Self {
        CurrentSetting {
            setting: SettingKey {
                target: f.target,
                instance: f.instance,
                parameter: f.parameter,
            },
            value: f.value,
        }
    }
}

#[cfg(test)]
mod policy_fixture_tests {
    use super::*;

    #[test]
    fn firing_and_settings_fixtures_parse_and_name_their_errors() {
        let alerts = firing_alerts(
            r#"[{"plugin":"threshold","rule":"high-memory","value":0.95,"since":"2026-11-26T08:00:00Z"}]"#,
            "a.json",
        )
        .unwrap();
        assert_eq!(alerts[0].key.rule, "high-memory");
        assert_eq!(alerts[0].severity, Severity::Warning);
        assert!(alerts[0].firing_since.is_some());
        let error = firing_alerts(
            r#"[{"plugin":"x","rule":"r","since":"yesterday"}]"#,
            "a.json",
        )
        .unwrap_err();
        assert!(
            error.contains("a.json") && error.contains("yesterday"),
            "{error}"
        );
        let settings = current_settings(
            r#"[{"target":"redis","instance":"main","parameter":"maxmemory","value":"100"}]"#,
            "s.json",
        )
        .unwrap();
        assert_eq!(settings[0].setting.target, Target::Redis);
        let error = current_settings(r#"[{"target":"oracle"}]"#, "s.json").unwrap_err();
        assert!(error.contains("s.json"), "{error}");
    }
}
