//! What the agent knows about itself, for `/status` and the status page: collector
//! health, plugin health, firing alerts, the export queue, the tuning engine, and short
//! histories of a few key metrics for sparklines.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::alert::Alert;
use crate::config::{PolicyMode, TuningConfig};
use crate::export::ExportStats;
use crate::model::Batch;
use crate::plugin::{PluginKind, PluginStatus};
use crate::sync::LockExt;
use crate::tuning::TuningStats;

/// Samples kept per sparkline.
const HISTORY_LEN: usize = 120;

/// Health of one collector.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CollectorStatus {
    /// Whether the last round succeeded.
    pub up: bool,
    pub rounds: u64,
    pub failures: u64,
    #[serde(serialize_with = "crate::model::optional_time_as_rfc3339")]
    pub last_success: Option<SystemTime>,
    #[serde(serialize_with = "crate::model::optional_time_as_rfc3339")]
    pub last_error_at: Option<SystemTime>,
    /// The last error message (collectors never put credentials in their errors).
    pub last_error: Option<String>,
}

impl CollectorStatus {
    /// Records a successful round.
    pub fn succeeded(&mut self, at: SystemTime) {
        self.up = true;
        self.rounds += 1;
        self.last_success = Some(at);
    }

    /// Records a failed round.
    pub fn failed(&mut self, at: SystemTime, error: String) {
        self.up = false;
        self.failures += 1;
        self.last_error_at = Some(at);
        self.last_error = Some(error);
    }
}

/// One series shown as a sparkline: which point of which metric it follows.
struct Tracked {
    label: &'static str,
    source: &'static str,
    metric: &'static str,
    /// Attribute that must be present with this value (`None`: the point without attributes).
    attribute: Option<(&'static str, &'static str)>,
    /// Sum every matching point instead of taking one.
    sum: bool,
}

const TRACKED: &[Tracked] = &[
    Tracked {
        label: "CPU utilization",
        source: "system",
        metric: "system.cpu.utilization",
        attribute: None,
        sum: false,
    },
    Tracked {
        label: "Memory utilization",
        source: "system",
        metric: "system.memory.utilization",
        attribute: Some(("system.memory.state", "used")),
        sum: false,
    },
    Tracked {
        label: "Load average (1m)",
        source: "system",
        metric: "system.cpu.load_average.1m",
        attribute: None,
        sum: false,
    },
    Tracked {
        label: "Alerts firing",
        source: "vigil",
        metric: "vigil.alerts.firing",
        attribute: None,
        sum: true,
    },
    Tracked {
        label: "Export queue (datapoints)",
        source: "vigil.export",
        metric: "vigil.export.queue.size",
        attribute: Some(("signal", "metrics")),
        sum: false,
    },
];

/// The latest samples of the tracked series.
#[derive(Debug, Default)]
pub struct History {
    series: BTreeMap<&'static str, VecDeque<(u64, f64)>>,
}

/// One sparkline: `(unix seconds, value)` pairs, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct Sparkline {
    pub label: &'static str,
    pub metric: &'static str,
    pub points: Vec<(u64, f64)>,
}

impl History {
    /// Takes the tracked values out of `batch`.
    pub fn record(&mut self, batch: &Batch) {
        let at = batch
            .timestamp
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        for tracked in TRACKED.iter().filter(|t| t.source == batch.source) {
            let mut matched = batch.points().filter(|(m, attributes, _)| {
                m.name == tracked.metric
                    && match tracked.attribute {
                        Some((key, value)) => {
                            attributes.iter().any(|(k, v)| k == key && v == value)
                        }
                        None => tracked.sum || attributes.is_empty(),
                    }
            });
            let value = if tracked.sum {
                matched.map(|(_, _, v)| v).sum::<f64>()
            } else {
                match matched.next() {
                    Some((_, _, v)) => v,
                    None => continue,
                }
            };
            let samples = self.series.entry(tracked.label).or_default();
            if samples.len() == HISTORY_LEN {
                samples.pop_front();
            }
            samples.push_back((at, value));
        }
    }

    /// Every tracked series that has samples.
    pub fn sparklines(&self) -> Vec<Sparkline> {
        TRACKED
            .iter()
            .filter_map(|t| {
                let samples = self.series.get(t.label)?;
                Some(Sparkline {
                    label: t.label,
                    metric: t.metric,
                    points: samples.iter().copied().collect(),
                })
            })
            .collect()
    }
}

/// What the stages report about themselves and `/status` reads: collector health,
/// the last export attempt and the sparkline history. Each part has its own small lock,
/// held only to copy a value in or out (never across a collection, export or plugin call).
#[derive(Debug)]
pub struct StatusBoard {
    started_at: SystemTime,
    collectors: Mutex<BTreeMap<String, CollectorStatus>>,
    /// Last export attempt: `None` before the first, else its error if it failed.
    export: Mutex<Option<Result<(), String>>>,
    history: Mutex<History>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard {
            started_at: SystemTime::now(),
            collectors: Mutex::default(),
            export: Mutex::default(),
            history: Mutex::default(),
        }
    }
}

impl StatusBoard {
    /// When the agent started.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// Lists collector `name` (not ready until its first round).
    pub fn collector_added(&self, name: &str) {
        self.collectors.locked().entry(name.to_owned()).or_default();
    }

    /// Forgets collector `name` (no longer configured).
    pub fn collector_removed(&self, name: &str) {
        self.collectors.locked().remove(name);
    }

    /// Records a round of collector `name` that reached its source.
    pub fn collector_succeeded(&self, name: &str, at: SystemTime) {
        self.collectors
            .locked()
            .entry(name.to_owned())
            .or_default()
            .succeeded(at);
    }

    /// Records a failed round of collector `name`.
    pub fn collector_failed(&self, name: &str, at: SystemTime, error: String) {
        self.collectors
            .locked()
            .entry(name.to_owned())
            .or_default()
            .failed(at, error);
    }

    /// Every collector's health.
    pub fn collectors(&self) -> BTreeMap<String, CollectorStatus> {
        self.collectors.locked().clone()
    }

    /// Whether every collector has finished a round (successful or not).
    pub fn is_ready(&self) -> bool {
        self.collectors
            .locked()
            .values()
            .all(|c| c.rounds + c.failures > 0)
    }

    /// Records the outcome of an export attempt.
    pub fn export_attempted(&self, outcome: Result<(), String>) {
        *self.export.locked() = Some(outcome);
    }

    /// The last export attempt's outcome (`None` before the first).
    pub fn last_export(&self) -> Option<Result<(), String>> {
        self.export.locked().clone()
    }

    /// Samples the tracked series of `batch` for the sparklines.
    pub fn record_history(&self, batch: &Batch) {
        self.history.locked().record(batch);
    }

    /// The sparklines.
    pub fn sparklines(&self) -> Vec<Sparkline> {
        self.history.locked().sparklines()
    }
}

/// What the HTTP endpoint reads: implemented by the supervisor, so the endpoint knows
/// nothing about the stages behind it.
pub trait StatusSource: Send + Sync {
    /// Everything `/status` shows.
    fn status(&self) -> AgentStatus;
    /// Whether every collector has finished a round (`/readyz`).
    fn is_ready(&self) -> bool;
    /// The latest value of every series, for `/metrics`.
    fn metric_families(&self) -> Vec<crate::export::store::Family>;
}

/// The document `/status` serves.
#[derive(Debug, Clone, Serialize)]
pub struct AgentStatus {
    pub host: String,
    pub version: &'static str,
    #[serde(serialize_with = "crate::model::optional_time_as_rfc3339")]
    pub started_at: Option<SystemTime>,
    pub ready: bool,
    pub collectors: BTreeMap<String, CollectorStatus>,
    pub plugins: Vec<PluginStatus>,
    /// Plugin files still waiting to be loaded (compiling) by a scan of the plugin directory.
    pub plugins_loading: usize,
    pub plugin_load_failures: BTreeMap<String, String>,
    pub firing_alerts: Vec<Alert>,
    pub export: ExportStatus,
    pub tuning: TuningStatus,
    pub sparklines: Vec<Sparkline>,
}

/// Tuning side of the status: where decisions are audited, each policy's mode, and the
/// engine's counts.
#[derive(Debug, Clone, Serialize)]
pub struct TuningStatus {
    /// The append-only audit file (`vigil actions list` reads it).
    pub audit_file: PathBuf,
    /// `[[tuning.allow]]` entries: with none, nothing is ever changed.
    pub allow_entries: usize,
    /// Every tuning policy loaded or named under `[tuning.policies]`, by name.
    pub policies: BTreeMap<String, PolicyStatus>,
    /// Decisions by policy and verdict, repeats, dropped and throttled proposals, and
    /// changes under an automatic-revert watch (as in self-telemetry).
    pub counts: TuningStats,
}

/// One tuning policy in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyStatus {
    /// `dry-run` (the default) or `enforce`.
    pub mode: PolicyMode,
    /// Whether a tuning-policy plugin of that name is loaded.
    pub loaded: bool,
}

impl TuningStatus {
    /// The status of `[tuning]` as configured, with the loaded `plugins`' policies and
    /// the engine's `counts`.
    pub fn new(config: &TuningConfig, plugins: &[PluginStatus], counts: TuningStats) -> Self {
        let mut policies: BTreeMap<String, PolicyStatus> = config
            .policies
            .iter()
            .map(|(name, policy)| {
                let status = PolicyStatus {
                    mode: policy.mode,
                    loaded: false,
                };
                (name.clone(), status)
            })
            .collect();
        for plugin in plugins
            .iter()
            .filter(|p| p.kind == PluginKind::TuningPolicy)
        {
            policies
                .entry(plugin.name.clone())
                .or_insert(PolicyStatus {
                    mode: config.mode(&plugin.name),
                    loaded: true,
                })
                .loaded = true;
        }
        TuningStatus {
            audit_file: config.audit_file.clone(),
            allow_entries: config.allow.len(),
            policies,
            counts,
        }
    }
}

/// Export side of the status.
#[derive(Debug, Clone, Serialize)]
pub struct ExportStatus {
    pub endpoint: String,
    pub protocol: String,
    /// Whether the last export attempt succeeded (`None` before the first).
    pub healthy: Option<bool>,
    pub last_error: Option<String>,
    pub queue: ExportStats,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BatchBuilder, MetricDesc, MetricKind, attrs};

    #[test]
    fn history_follows_the_tracked_points_only() {
        let cpu = MetricDesc::new("system.cpu.utilization", "1", MetricKind::Gauge, "");
        let mut history = History::default();
        for value in [0.25, 0.5] {
            let mut b = BatchBuilder::new("system", "h");
            b.point(&cpu, vec![], value)
                .point(&cpu, attrs([("cpu.logical_number", "0")]), 0.9);
            history.record(&b.build());
        }
        let lines = history.sparklines();
        assert_eq!(lines.len(), 1);
        let values: Vec<f64> = lines[0].points.iter().map(|(_, v)| *v).collect();
        assert_eq!(values, [0.25, 0.5]);
    }

    #[test]
    fn firing_alerts_are_summed_over_severities() {
        let firing = MetricDesc::new("vigil.alerts.firing", "{alert}", MetricKind::Gauge, "");
        let mut b = BatchBuilder::new("vigil", "h");
        b.point(&firing, attrs([("vigil.alert.severity", "warning")]), 2.0)
            .point(&firing, attrs([("vigil.alert.severity", "critical")]), 1.0);
        let mut history = History::default();
        history.record(&b.build());
        assert_eq!(history.sparklines()[0].points[0].1, 3.0);
    }

    fn plugin(name: &str, kind: PluginKind) -> PluginStatus {
        PluginStatus {
            name: name.into(),
            version: "1.0.0".into(),
            contract: "0.3.0".into(),
            kind,
            content_hash: String::new(),
            quarantined: false,
            consecutive_failures: 0,
            memory_bytes: 0,
            skipped_batches: 0,
        }
    }

    #[test]
    fn tuning_status_lists_loaded_and_configured_policies_with_their_mode_and_counts() {
        let config = crate::config::Config::parse(
            r#"
[tuning]
audit_file = "/var/lib/vigil/test-actions.jsonl"

[tuning.policies.redis-memory]
mode = "enforce"

[tuning.policies.not-here]
mode = "dry-run"

[[tuning.allow]]
target = "collector"
instance = "system"
parameter = "interval-ms"
min = "1s"
max = "1m"
"#,
            "t.toml",
        )
        .unwrap();
        let plugins = [
            plugin("redis-memory", PluginKind::TuningPolicy),
            plugin("pg-work-mem", PluginKind::TuningPolicy),
            plugin("threshold", PluginKind::AlertRule),
        ];
        let counts = TuningStats {
            decisions: [(
                "redis-memory".to_owned(),
                [("applied".to_owned(), 2)].into(),
            )]
            .into(),
            repeats: 3,
            watching: 1,
            ..TuningStats::default()
        };
        let status = TuningStatus::new(&config.tuning, &plugins, counts);
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "audit_file": "/var/lib/vigil/test-actions.jsonl",
                "allow_entries": 1,
                "policies": {
                    "not-here": {"mode": "dry-run", "loaded": false},
                    "pg-work-mem": {"mode": "dry-run", "loaded": true},
                    "redis-memory": {"mode": "enforce", "loaded": true},
                },
                "counts": {
                    "decisions": {"redis-memory": {"applied": 2}},
                    "repeats": 3,
                    "dropped": 0,
                    "throttled": 0,
                    "watching": 1,
                },
            })
        );
    }
}
