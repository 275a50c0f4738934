//! Crossing the component boundary: batches into WIT values (only the metrics a
//! plugin asked for), findings back into host types (validated: a plugin's output
//! is outside input).

use std::collections::HashSet;
use std::time::{Duration, UNIX_EPOCH};

use super::bindings::vigil::plugin::types as wit;
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

/// The part of `batch` a plugin wants, as a WIT value; `None` when that is nothing.
pub fn batch_for(batch: &Batch, interests: &Interests) -> Option<wit::Batch> {
    let mut remap = vec![u32::MAX; batch.metrics.len()];
    let mut metrics = Vec::new();
    for (i, metric) in batch.metrics.iter().enumerate() {
        if interests.wants(&metric.name) {
            remap[i] = metrics.len() as u32;
            metrics.push(wit::Metric {
                name: metric.name.clone(),
                unit: metric.unit.clone(),
                kind: match metric.kind {
                    MetricKind::Gauge => wit::MetricKind::Gauge,
                    MetricKind::Counter => wit::MetricKind::Counter,
                    MetricKind::UpDownCounter => wit::MetricKind::UpDownCounter,
                },
            });
        }
    }
    if metrics.is_empty() {
        return None;
    }
    let mut series = Vec::new();
    let mut values = Vec::new();
    for (s, value) in batch.series.iter().zip(&batch.values) {
        let metric = remap[s.metric as usize];
        if metric != u32::MAX {
            series.push(wit::Series {
                metric,
                attributes: s
                    .attributes
                    .iter()
                    .map(|(key, value)| wit::Attribute {
                        key: key.clone(),
                        value: value.clone(),
                    })
                    .collect(),
            });
            values.push(*value);
        }
    }
    Some(wit::Batch {
        source: batch.source.clone(),
        host: batch.host.clone(),
        timestamp_ns: batch
            .timestamp
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
        metrics,
        series,
        values,
    })
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
    for label in &f.labels {
        check_len("label key", &label.key, 1, MAX_LABEL_BYTES)?;
        check_len("label value", &label.value, 0, MAX_LABEL_BYTES)?;
    }
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

fn check_len(field: &str, text: &str, min: usize, max: usize) -> Result<(), String> {
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
        let w = batch_for(&batch, &wanted).unwrap();
        assert_eq!(w.metrics.len(), 2);
        assert_eq!(w.metrics[0].name, "system.memory.usage");
        assert_eq!(w.values, [7.0, 9.0]);
        assert_eq!(w.series[1].metric, 1);
        assert_eq!(w.series[0].attributes[0].value, "used");
        assert!(batch_for(&batch, &Interests::new(&["redis.*".into()])).is_none());
        assert!(batch_for(&batch, &Interests::new(&[])).is_none());
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
