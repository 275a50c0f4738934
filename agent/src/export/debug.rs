//! `[export.debug]`: every batch, alert event and tuning decision printed to stdout, for
//! trying things out (the OpenTelemetry Collector's `debug` exporter is the model).
//!
//! It is independent of the OTLP exporter (it prints with `[export.otlp] enabled = false`
//! too) and sees what the OTLP exporter is given, as it is given. Each batch or event is
//! written whole, with one write; a failed write (stdout closed) is logged once.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use crate::alert::AlertEvent;
use crate::config::Verbosity;
use crate::model::{Attributes, Batch, MetricKind};
use crate::tuning::decision::Decision;

/// Prints batches, alert events and tuning decisions at a verbosity.
pub struct DebugExporter {
    verbosity: Verbosity,
    /// Whether a write failed already (reported once).
    failed: AtomicBool,
}

impl DebugExporter {
    /// Prints to stdout.
    pub fn stdout(verbosity: Verbosity) -> Self {
        DebugExporter {
            verbosity,
            failed: AtomicBool::new(false),
        }
    }

    /// Prints `batch` (nothing for an empty one).
    pub fn batch(&self, batch: &Batch) {
        if !batch.is_empty() {
            self.write(&batch_text(batch, self.verbosity));
        }
    }

    /// Prints an alert event.
    pub fn alert(&self, event: &AlertEvent) {
        self.write(&alert_text(event, self.verbosity));
    }

    /// Prints a tuning decision.
    pub fn decision(&self, decision: &Decision) {
        self.write(&decision_text(decision, self.verbosity));
    }

    fn write(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let result = out.write_all(text.as_bytes()).and_then(|()| out.flush());
        if let Err(error) = result
            && !self.failed.swap(true, Ordering::Relaxed)
        {
            tracing::warn!(
                "[export.debug] cannot write to stdout: {error}; its output is lost until stdout takes writes again (reported once)"
            );
        }
    }
}

/// `batch source=S host=H metrics=M datapoints=N` (+ `time=T` when detailed), then at
/// `normal` and above one line per datapoint.
pub fn batch_text(batch: &Batch, verbosity: Verbosity) -> String {
    let mut text = format!(
        "batch source={} host={} metrics={} datapoints={}",
        batch.source,
        batch.host,
        batch.metrics.len(),
        batch.len()
    );
    if verbosity == Verbosity::Detailed {
        let _ = write!(text, " time={}", rfc3339(batch.timestamp));
    }
    text.push('\n');
    if verbosity == Verbosity::Basic {
        return text;
    }
    for (metric, attributes, value) in batch.points() {
        let _ = write!(
            text,
            "  {}{} {value}",
            metric.name,
            attributes_text(attributes)
        );
        if verbosity == Verbosity::Detailed {
            let _ = write!(
                text,
                " unit={} kind={} time={}",
                metric.unit,
                kind_name(metric.kind),
                rfc3339(batch.timestamp)
            );
        }
        text.push('\n');
    }
    for (metric, attributes, h) in batch.histogram_points() {
        let _ = write!(
            text,
            "  {}{} count={} sum={} bounds={:?} buckets={:?}",
            metric.name,
            attributes_text(attributes),
            h.count,
            h.sum,
            h.bounds,
            h.bucket_counts
        );
        if verbosity == Verbosity::Detailed {
            let _ = write!(text, " unit={} kind=histogram", metric.unit);
        }
        text.push('\n');
    }
    text
}

/// `alert TRANSITION plugin=P rule=R key=K severity=S: SUMMARY`, detailed with its value,
/// labels, times and reason.
pub fn alert_text(event: &AlertEvent, verbosity: Verbosity) -> String {
    let alert = &event.alert;
    let mut text = format!(
        "alert {} plugin={} rule={} key={} severity={}: {}",
        event.transition.as_str(),
        alert.key.plugin,
        alert.key.rule,
        alert.key.key,
        alert.severity.as_str(),
        alert.summary
    );
    if let Some(reason) = &event.reason {
        let _ = write!(text, " (reason: {reason})");
    }
    if verbosity == Verbosity::Detailed {
        let _ = write!(
            text,
            "\n  source={} labels={} value={} at={} active_since={}",
            alert.source,
            attributes_text(&alert.labels),
            alert
                .value
                .map_or_else(|| "none".to_owned(), |v| v.to_string()),
            rfc3339(event.at),
            rfc3339(alert.active_since)
        );
        if let Some(since) = alert.firing_since {
            let _ = write!(text, " firing_since={}", rfc3339(since));
        }
    }
    text.push('\n');
    text
}

/// `decision [id=N] policy=P: SUMMARY`, detailed with its reason, values and time.
pub fn decision_text(decision: &Decision, verbosity: Verbosity) -> String {
    let id = decision
        .id
        .map(|id| format!(" id={id}"))
        .unwrap_or_default();
    let mut text = format!(
        "decision{id} policy={}: {}",
        decision.policy,
        decision.summary()
    );
    if verbosity == Verbosity::Detailed {
        let _ = write!(
            text,
            "\n  reason={:?} before={} after={} time={}",
            decision.reason,
            decision.before.as_deref().unwrap_or("unknown"),
            decision.after.as_deref().unwrap_or("unknown"),
            rfc3339(decision.time)
        );
    }
    text.push('\n');
    text
}

/// `{k="v", ...}`, or nothing without attributes.
fn attributes_text(attributes: &Attributes) -> String {
    if attributes.is_empty() {
        return String::new();
    }
    let pairs: Vec<String> = attributes
        .iter()
        .map(|(key, value)| format!("{key}={value:?}"))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

fn kind_name(kind: MetricKind) -> &'static str {
    match kind {
        MetricKind::Gauge => "gauge",
        MetricKind::Counter => "counter",
        MetricKind::UpDownCounter => "updowncounter",
        MetricKind::Histogram => "histogram",
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BatchBuilder, MetricDesc, attrs};

    fn batch() -> Batch {
        let keys = MetricDesc::new("redis.db.keys", "{key}", MetricKind::Gauge, "");
        let mut b = BatchBuilder::new("redis:main", "web-1");
        b.point(&keys, attrs([("db", "0")]), 3.0);
        b.point(&keys, attrs([("db", "1")]), 0.5);
        b.build()
    }

    #[test]
    fn basic_prints_one_line_per_batch() {
        assert_eq!(
            batch_text(&batch(), Verbosity::Basic),
            "batch source=redis:main host=web-1 metrics=1 datapoints=2\n"
        );
    }

    #[test]
    fn normal_prints_every_datapoint_with_its_attributes() {
        let text = batch_text(&batch(), Verbosity::Normal);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[1..],
            [
                "  redis.db.keys{db=\"0\"} 3",
                "  redis.db.keys{db=\"1\"} 0.5"
            ]
        );
    }

    #[test]
    fn detailed_adds_unit_kind_and_collection_time() {
        let b = batch();
        let time = rfc3339(b.timestamp);
        let text = batch_text(&b, Verbosity::Detailed);
        assert!(text.starts_with(&format!(
            "batch source=redis:main host=web-1 metrics=1 datapoints=2 time={time}\n"
        )));
        assert!(
            text.contains(&format!(
                "  redis.db.keys{{db=\"0\"}} 3 unit={{key}} kind=gauge time={time}\n"
            )),
            "{text}"
        );
    }
}
